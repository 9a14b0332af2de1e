package pkitest_test

import (
	"context"
	"testing"
	"time"

	"github.com/agentmesh/agentmesh/internal/pki/pkitest"
)

func TestClockFiresOnlyWhenAdvancedPastDeadline(t *testing.T) {
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	c := pkitest.NewClock(start)
	now := c.After(0)
	if got := <-now; !got.Equal(start) {
		t.Errorf("After(0) fired with %v, want %v", got, start)
	}
	ch := c.After(time.Minute)
	c.Advance(59 * time.Second)
	select {
	case <-ch:
		t.Fatal("fired a second early")
	default:
	}
	if w := c.Waiters(); len(w) != 1 || !w[0].Equal(start.Add(time.Minute)) {
		t.Fatalf("Waiters = %v", w)
	}
	c.Advance(time.Second)
	if got := <-ch; !got.Equal(start.Add(time.Minute)) {
		t.Errorf("fired with %v", got)
	}
	if len(c.Waiters()) != 0 {
		t.Error("fired waiter still pending")
	}
}

func TestClockWaitForWaitersUnblocksWhenSomeoneWaits(t *testing.T) {
	c := pkitest.NewClock(time.Unix(0, 0))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	done := make(chan struct{})
	go func() {
		defer close(done)
		c.After(time.Hour)
	}()
	w, err := c.WaitForWaiters(ctx, 1)
	<-done
	if err != nil || len(w) != 1 || !w[0].Equal(time.Unix(3600, 0)) {
		t.Fatalf("WaitForWaiters = %v, %v", w, err)
	}
	short, cancelShort := context.WithCancel(context.Background())
	cancelShort()
	if _, err := c.WaitForWaiters(short, 2); err == nil {
		t.Fatal("WaitForWaiters returned without enough waiters")
	}
}
