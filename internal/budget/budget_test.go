package budget

import (
	"errors"
	"sync"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestBudgetRefusesOverThePeerShareBeforeTheTotal(t *testing.T) {
	b := New(10, 4)
	a1, err := b.Take("a", 3)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Take("a", 2); !errors.Is(err, ErrPeerShare) {
		t.Fatalf("a over its share: %v, want ErrPeerShare", err)
	}
	if got := b.UsedBy("a"); got != 3 {
		t.Fatalf("a failed reservation left %d held, want 3", got)
	}
	bs := []*Lease{}
	for _, p := range []string{"b", "c"} {
		l, err := b.Take(p, 3)
		if err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		bs = append(bs, l)
	}
	// 9 of 10 held: d fits its share but not the total.
	if _, err := b.Take("d", 2); !errors.Is(err, ErrExhausted) {
		t.Fatalf("over the total: %v, want ErrExhausted", err)
	}
	a1.Release()
	a1.Release() // idempotent
	if got := b.Used(); got != 6 {
		t.Fatalf("used %d after release, want 6", got)
	}
	if _, err := b.Take("d", 2); err != nil {
		t.Fatalf("after a release: %v", err)
	}
	if b.Peak() != 9 {
		t.Fatalf("peak %d, want 9", b.Peak())
	}
	for _, l := range bs {
		l.Release()
	}
}

func TestLeaseGrowsAllOrNothing(t *testing.T) {
	b := New(0, 10)
	l, err := b.Take("a", 4)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Grow(5); err != nil {
		t.Fatal(err)
	}
	if err := l.Grow(2); !errors.Is(err, ErrPeerShare) {
		t.Fatalf("grow over the share: %v", err)
	}
	if l.Size() != 9 || b.UsedBy("a") != 9 {
		t.Fatalf("lease %d, budget %d after a failed grow, want 9", l.Size(), b.UsedBy("a"))
	}
	l.Release()
	if err := l.Grow(1); err == nil {
		t.Fatal("a released lease grew")
	}
	if b.Used() != 0 || len(b.by) != 0 {
		t.Fatalf("budget holds %d (%v) after release", b.Used(), b.by)
	}
	var nilLease *Lease
	nilLease.Release()
	if nilLease.Grow(1) == nil {
		t.Fatal("a nil lease grew")
	}
}

func TestBudgetChangedSignalsEveryChange(t *testing.T) {
	b := New(0, 0)
	ch := b.Changed()
	l, err := b.Take("a", 1)
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-ch:
	default:
		t.Fatal("Take did not signal")
	}
	ch = b.Changed()
	l.Release()
	select {
	case <-ch:
	default:
		t.Fatal("Release did not signal")
	}
}

func TestBudgetNeverExceedsItsBoundsUnderConcurrency(t *testing.T) {
	b := New(50, 20)
	var wg sync.WaitGroup
	for p := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			peer := string(rune('a' + p))
			for range 2000 {
				l, err := b.Take(peer, 3)
				if err != nil {
					continue
				}
				if b.UsedBy(peer) > 20 {
					t.Errorf("peer %s holds %d > 20", peer, b.UsedBy(peer))
				}
				l.Release()
			}
		}()
	}
	wg.Wait()
	if b.Peak() > 50 || b.Used() != 0 {
		t.Fatalf("peak %d (bound 50), used %d after all released", b.Peak(), b.Used())
	}
}
