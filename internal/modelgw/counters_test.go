package modelgw

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
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

// TestCountersProcessCrashLosesNothing: every admit and addTokens
// returned only once its change was in the log, so a process that dies
// without closing (here: the counters are abandoned, the log never
// synced) leaves every count to the next start.
func TestCountersProcessCrashLosesNothing(t *testing.T) {
	path := filepath.Join(t.TempDir(), CountersFile)
	c, err := loadCounters(path)
	if err != nil {
		t.Fatal(err)
	}
	c.after = func(time.Duration, func()) func() bool { return func() bool { return true } } // never syncs
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
	d, err := loadCounters(path)
	if err != nil {
		t.Fatal(err)
	}
	defer d.close()
	got := d.m[counterKey("a", many)]
	if got == nil || got.Requests != 20 || got.Tokens != 60 {
		t.Fatalf("reloaded counter %+v, want 20 requests and 60 tokens", got)
	}
	c.close()
}

// TestCountersCleanStopKeepsEveryCountAndRefusesLaterChanges: close syncs
// the log, a restart reads every count, and the closed counters count
// nothing more (a limited request is refused, not let through uncounted).
func TestCountersCleanStopKeepsEveryCountAndRefusesLaterChanges(t *testing.T) {
	path := filepath.Join(t.TempDir(), CountersFile)
	c, err := loadCounters(path)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 11, 28, 10, 0, 0, 0, time.UTC)
	for range 2 {
		if v, err := c.admit("a", []policy.Limit{rpm2, tokens}, now); v != nil || err != nil {
			t.Fatalf("admit: %+v %v", v, err)
		}
	}
	if err := c.addTokens("a", []policy.Limit{rpm2, tokens}, 40, now); err != nil {
		t.Fatal(err)
	}
	if err := c.close(); err != nil {
		t.Fatal(err)
	}
	if err := c.close(); err != nil {
		t.Fatalf("second close: %v", err)
	}
	if _, err := c.admit("a", []policy.Limit{tokens}, now); !errors.Is(err, ErrLimitStore) {
		t.Fatalf("admit after close = %v, want ErrLimitStore", err)
	}
	d, err := loadCounters(path)
	if err != nil {
		t.Fatal(err)
	}
	defer d.close()
	if v, err := d.admit("a", []policy.Limit{rpm2}, now); err != nil || v == nil || v.reason != reason.LimitRPM {
		t.Fatalf("third request after restart: %+v %v, want limit_rpm", v, err)
	}
	if got := d.m[counterKey("a", tokens)]; got == nil || got.Tokens != 40 {
		t.Fatalf("tokens after restart: %+v", got)
	}
}

// TestCountersMachineCrashLosesOnlyWhatFollowedTheLastSync: a change
// schedules an fsync SyncInterval later; a machine crash loses the page
// cache, simulated by cutting the log back to what the last sync covered
// (and leaving a torn record and zeroed blocks behind it, as a crash can):
// the restart keeps every count up to that sync.
func TestCountersMachineCrashLosesOnlyWhatFollowedTheLastSync(t *testing.T) {
	path := filepath.Join(t.TempDir(), CountersFile)
	c, err := loadCounters(path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.close()
	var due []time.Duration
	var pending func()
	c.after = func(d time.Duration, f func()) func() bool {
		due, pending = append(due, d), f
		return func() bool { return true }
	}
	now := time.Date(2026, 11, 28, 10, 0, 0, 0, time.UTC)
	many := policy.Limit{Key: "k", RPM: 1000}
	for range 3 {
		if _, err := c.admit("a", []policy.Limit{many}, now); err != nil {
			t.Fatal(err)
		}
	}
	if len(due) != 1 || due[0] != SyncInterval {
		t.Fatalf("syncs scheduled: %v, want one in %v", due, SyncInterval)
	}
	pending() // the timer fires: the log is fsynced
	synced, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if _, err := c.admit("a", []policy.Limit{many}, now); err != nil {
			t.Fatal(err)
		}
	}
	if len(due) != 2 {
		t.Fatalf("a change after the sync scheduled %d syncs in all, want 2", len(due))
	}
	// The crash: the unsynced tail is gone, a torn record and zeros remain.
	if err := os.Truncate(path, synced.Size()); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString(`{"k":"a k","minute":`)
	f.Write(make([]byte, 512))
	f.Close()
	d, err := loadCounters(path)
	if err != nil {
		t.Fatal(err)
	}
	defer d.close()
	if got := d.m[counterKey("a", many)]; got == nil || got.Requests != 3 {
		t.Fatalf("after the crash: %+v, want the 3 requests counted before the sync", got)
	}
	// The torn tail is gone from the new log: later records follow whole ones.
	if _, err := d.admit("a", []policy.Limit{many}, now); err != nil {
		t.Fatal(err)
	}
	d.close()
	e, err := loadCounters(path)
	if err != nil {
		t.Fatalf("reload after appending past a torn tail: %v", err)
	}
	defer e.close()
	if got := e.m[counterKey("a", many)]; got == nil || got.Requests != 4 {
		t.Fatalf("after another request: %+v, want 4", got)
	}
}

// brokenLog is a log whose writes and syncs fail, as on a full or failing
// disk.
type brokenLog struct{}

var errDisk = errors.New("no space left on device")

func (brokenLog) Write([]byte) (int, error) { return 0, errDisk }
func (brokenLog) Sync() error               { return errDisk }
func (brokenLog) Close() error              { return nil }

// TestCountersRefuseWhileTheLogCannotBeWritten: a failed write refuses the
// request it would have counted, and every later one while the log cannot
// be rewritten; once a rewrite works, counting resumes from the counts in
// memory, the refused request's included (over-counting, never under).
func TestCountersRefuseWhileTheLogCannotBeWritten(t *testing.T) {
	path := filepath.Join(t.TempDir(), CountersFile)
	c, err := loadCounters(path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.close()
	now := time.Date(2026, 11, 28, 10, 0, 0, 0, time.UTC)
	many := policy.Limit{Key: "k", RPM: 1000}
	if _, err := c.admit("a", []policy.Limit{many}, now); err != nil {
		t.Fatal(err)
	}
	create := c.create
	c.log.Close()
	c.log = brokenLog{}
	c.create = func(string, []byte) (logFile, error) { return nil, errDisk }
	for i := range 3 {
		if _, err := c.admit("a", []policy.Limit{many}, now); !errors.Is(err, ErrLimitStore) || !errors.Is(err, errDisk) {
			t.Fatalf("admit %d on a broken disk = %v, want ErrLimitStore", i, err)
		}
	}
	if err := c.addTokens("a", []policy.Limit{tokens}, 5, now); !errors.Is(err, ErrLimitStore) {
		t.Fatalf("addTokens on a broken disk = %v, want ErrLimitStore", err)
	}
	c.create = create
	if _, err := c.admit("a", []policy.Limit{many}, now); err != nil {
		t.Fatalf("admit once the log can be rewritten: %v", err)
	}
	if err := c.close(); err != nil {
		t.Fatal(err)
	}
	d, err := loadCounters(path)
	if err != nil {
		t.Fatal(err)
	}
	defer d.close()
	if got := d.m[counterKey("a", many)]; got == nil || got.Requests != 3 {
		t.Fatalf("reloaded %+v, want 3 (two admitted, one refused by its failed write)", got)
	}
}

// TestCountersRefuseALogTheyCannotTrust: starting from zero would lift
// every limit, so a log without its header or with a corrupt record before
// its end stops loading.
func TestCountersRefuseALogTheyCannotTrust(t *testing.T) {
	rec := `{"k":"a k","minute":1,"requests":2,"day":0,"tokens":0}` + "\n"
	for name, content := range map[string]string{
		"empty":          "",
		"no header":      rec,
		"corrupt record": countersHeader + rec + `{"k":"a k","minute":1,"requests":` + "\n" + rec,
		"unknown field":  countersHeader + `{"k":"a k","minute":1,"requests":2,"day":0,"tokens":0,"x":1}` + "\n",
		"no key":         countersHeader + `{"minute":1,"requests":2,"day":0,"tokens":0}` + "\n",
	} {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), CountersFile)
			if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
				t.Fatal(err)
			}
			if c, err := loadCounters(path); !errors.Is(err, ErrLimitStore) {
				if c != nil {
					c.close()
				}
				t.Fatalf("load = %v, want ErrLimitStore", err)
			}
		})
	}
}

// TestCountersTakeOverTheLegacyJSONFile: counters an earlier version
// wrote through to model-limits.json are carried into the log, and the
// old file is removed so that it is never read again.
func TestCountersTakeOverTheLegacyJSONFile(t *testing.T) {
	dir := t.TempDir()
	legacy := filepath.Join(dir, legacyCountersFile)
	if err := os.WriteFile(legacy, []byte(`{"a k-rpm":{"minute":29491200,"requests":2,"day":0,"tokens":0}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := loadCounters(filepath.Join(dir, CountersFile))
	if err != nil {
		t.Fatal(err)
	}
	c.close()
	if _, err := os.Stat(legacy); !os.IsNotExist(err) {
		t.Fatalf("legacy file still there: %v", err)
	}
	d, err := loadCounters(filepath.Join(dir, CountersFile))
	if err != nil {
		t.Fatal(err)
	}
	defer d.close()
	now := time.Unix(29491200*60, 0)
	if v, err := d.admit("a", []policy.Limit{rpm2}, now); err != nil || v == nil || v.reason != reason.LimitRPM {
		t.Fatalf("after taking over the legacy file: %+v %v, want limit_rpm", v, err)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, CountersFile)); !strings.HasPrefix(string(b), countersHeader) {
		t.Fatalf("log %q", b)
	}
}
