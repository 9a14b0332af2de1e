package backoff

import (
	"context"
	"errors"
	"math/rand/v2"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestBackoffDoublesUpToMaxWithEqualJitter(t *testing.T) {
	for _, tt := range []struct {
		u    float64
		want []time.Duration
	}{
		{0, []time.Duration{500 * time.Millisecond, time.Second, 1500 * time.Millisecond, 1500 * time.Millisecond}},
		{0.5, []time.Duration{750 * time.Millisecond, 1500 * time.Millisecond, 2250 * time.Millisecond, 2250 * time.Millisecond}},
	} {
		b := Backoff{Min: time.Second, Max: 3 * time.Second, Rand: func() float64 { return tt.u }}
		for i, want := range tt.want {
			if got := b.Next(); got != want {
				t.Errorf("u=%v: wait %d = %v, want %v", tt.u, i+1, got, want)
			}
		}
		if b.Failures() != len(tt.want) {
			t.Errorf("Failures = %d, want %d", b.Failures(), len(tt.want))
		}
	}
}

func TestBackoffWaitsStayBetweenHalfAndAllOfTheDelay(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	b := Backoff{Min: 10 * time.Millisecond, Max: time.Second, Rand: r.Float64}
	delay := 10 * time.Millisecond
	for range 100 {
		got := b.Next()
		if got < delay/2 || got > delay {
			t.Fatalf("wait %v outside [%v, %v]", got, delay/2, delay)
		}
		delay = min(delay*2, time.Second)
	}
}

func TestBackoffResetStartsOverAtMin(t *testing.T) {
	b := Backoff{Min: time.Second, Max: time.Minute, Rand: func() float64 { return 0 }}
	for range 5 {
		b.Next()
	}
	b.Reset()
	if got := b.Next(); got != 500*time.Millisecond || b.Failures() != 1 {
		t.Fatalf("after Reset: wait %v, %d failures; want 500ms, 1", got, b.Failures())
	}
}

func TestZeroBackoffUsesTheDefaults(t *testing.T) {
	var b Backoff
	b.Rand = func() float64 { return 0 }
	if got := b.Next(); got != DefaultMin/2 {
		t.Fatalf("first wait %v, want %v", got, DefaultMin/2)
	}
	for range 20 {
		b.Next()
	}
	if got := b.Next(); got != DefaultMax/2 {
		t.Fatalf("capped wait %v, want %v", got, DefaultMax/2)
	}
	// A Max below Min means the larger of DefaultMax and Min.
	b = Backoff{Min: time.Second, Max: time.Millisecond, Rand: func() float64 { return 0 }}
	for range 20 {
		b.Next()
	}
	if got := b.Next(); got != DefaultMax/2 {
		t.Fatalf("capped wait %v with Max < Min, want %v", got, DefaultMax/2)
	}
	b = Backoff{Min: time.Minute, Max: time.Second, Rand: func() float64 { return 0 }}
	b.Next()
	if got := b.Next(); got != 30*time.Second {
		t.Fatalf("second wait %v with Max < Min above DefaultMax, want 30s (capped at Min)", got)
	}
}

// fakeClock hands every After to the test, which fires it.
type fakeClock struct{ afters chan fakeAfter }

type fakeAfter struct {
	d  time.Duration
	ch chan time.Time
}

func (c *fakeClock) After(d time.Duration) <-chan time.Time {
	ch := make(chan time.Time, 1)
	c.afters <- fakeAfter{d, ch}
	return ch
}

func TestWaitWaitsOnTheInjectedClock(t *testing.T) {
	clock := &fakeClock{afters: make(chan fakeAfter)}
	b := Backoff{Min: time.Hour, Max: time.Hour, Rand: func() float64 { return 0.5 }, Clock: clock}
	done := make(chan error, 1)
	go func() { done <- b.Wait(context.Background()) }()
	a := <-clock.afters
	if a.d != 45*time.Minute {
		t.Fatalf("waited for %v, want 45m", a.d)
	}
	select {
	case err := <-done:
		t.Fatalf("Wait returned %v before the clock fired", err)
	default:
	}
	a.ch <- time.Time{}
	if err := <-done; err != nil {
		t.Fatalf("Wait = %v", err)
	}
}

func TestWaitEndsWithTheContext(t *testing.T) {
	clock := &fakeClock{afters: make(chan fakeAfter)}
	b := Backoff{Clock: clock}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- b.Wait(ctx) }()
	<-clock.afters // never fired
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Wait = %v, want context.Canceled", err)
	}
	// The wall clock is used when none is injected, and a cancelled
	// context still wins.
	if err := Sleep(ctx, nil, time.Hour); !errors.Is(err, context.Canceled) {
		t.Fatalf("Sleep = %v, want context.Canceled", err)
	}
	if err := Sleep(context.Background(), nil, 0); err != nil {
		t.Fatalf("Sleep(0) = %v", err)
	}
}

func TestAfterFuncIsAClock(t *testing.T) {
	var got time.Duration
	var c Clock = AfterFunc(func(d time.Duration) <-chan time.Time {
		got = d
		ch := make(chan time.Time, 1)
		ch <- time.Time{}
		return ch
	})
	if err := Sleep(context.Background(), c, time.Minute); err != nil || got != time.Minute {
		t.Fatalf("Sleep = %v after %v", err, got)
	}
}
