package modelgw

import (
	"errors"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/agentmesh/agentmesh/internal/policy"
	"github.com/agentmesh/agentmesh/internal/reason"
)

var (
	rpm2   = policy.Limit{Key: "k-rpm", RPM: 2}
	tokens = policy.Limit{Key: "k-tok", TokensPerDay: 100}
)

func TestCountersWindowsRollOnTheMinuteAndTheUTCDay(t *testing.T) {
	c, err := loadCounters("")
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2026, 11, 28, 23, 58, 10, 0, time.UTC)
	steps := []struct {
		name    string
		at      time.Time
		tokens  int64
		reason  reason.Code
		retryIn time.Duration
	}{
		{"first", t0, 0, "", 0},
		{"second", t0.Add(time.Second), 60, "", 0},
		{"third in the same minute", t0.Add(2 * time.Second), 0, reason.LimitRPM, 48 * time.Second},
		{"next minute", t0.Add(50 * time.Second), 50, "", 0},
		{"tokens used up", t0.Add(51 * time.Second), 0, reason.LimitTokens, 59 * time.Second},
		{"next UTC day", t0.Add(110 * time.Second), 0, "", 0},
	}
	for _, s := range steps {
		v, err := c.admit("agent-a", []policy.Limit{rpm2, tokens}, s.at)
		if err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		switch {
		case s.reason == "" && v != nil:
			t.Fatalf("%s: refused %+v", s.name, v)
		case s.reason != "" && (v == nil || v.reason != s.reason || v.retryAfter != s.retryIn):
			t.Fatalf("%s: verdict %+v, want %s retry %v", s.name, v, s.reason, s.retryIn)
		}
		if err := c.addTokens("agent-a", []policy.Limit{rpm2, tokens}, s.tokens, s.at); err != nil {
			t.Fatal(err)
		}
	}
	// Another identity has counters of its own.
	if v, _ := c.admit("agent-b", []policy.Limit{rpm2, tokens}, t0.Add(70*time.Second)); v != nil {
		t.Fatalf("agent-b refused: %+v", v)
	}
}

func TestCountersRefuseNewCountersWhenFull(t *testing.T) {
	c, _ := loadCounters("")
	c.max = 2
	now := time.Date(2026, 11, 28, 10, 0, 0, 0, time.UTC)
	for _, src := range []string{"a", "b"} {
		if _, err := c.admit(src, []policy.Limit{rpm2}, now); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.admit("c", []policy.Limit{rpm2}, now); !errors.Is(err, ErrLimitStore) {
		t.Fatalf("admit with a full table = %v, want ErrLimitStore", err)
	}
	// Known identities go on being counted.
	if v, err := c.admit("a", []policy.Limit{rpm2}, now); err != nil || v != nil {
		t.Fatalf("known identity: %+v %v", v, err)
	}
	// Once the windows of a and b have ended there is room again.
	if _, err := c.admit("c", []policy.Limit{rpm2}, now.Add(25*time.Hour)); err != nil {
		t.Fatalf("after the windows ended: %v", err)
	}
}

func TestCountersPersistEveryConcurrentChange(t *testing.T) {
	path := filepath.Join(t.TempDir(), CountersFile)
	c, err := loadCounters(path)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 11, 28, 10, 0, 0, 0, time.UTC)
	many := policy.Limit{Key: "k", RPM: 1000, TokensPerDay: 1 << 40}
	var wg sync.WaitGroup
	for range 20 {
		wg.Go(func() {
			if _, err := c.admit("a", []policy.Limit{many}, now); err != nil {
				t.Error(err)
			}
			if err := c.addTokens("a", []policy.Limit{many}, 3, now); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	// Every admit and addTokens returned only once its change was on disk.
	d, err := loadCounters(path)
	if err != nil {
		t.Fatal(err)
	}
	got := d.m[counterKey("a", many)]
	if got == nil || got.Requests != 20 || got.Tokens != 60 {
		t.Fatalf("reloaded counter %+v, want 20 requests and 60 tokens", got)
	}
}
