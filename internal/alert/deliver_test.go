package alert

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// stepClock hands each wait to the test, which fires it: the backoff is
// observed, and nothing sleeps.
type stepClock struct{ waits chan wait }

type wait struct {
	d    time.Duration
	fire chan time.Time
}

func (c *stepClock) After(d time.Duration) <-chan time.Time {
	w := wait{d: d, fire: make(chan time.Time, 1)}
	c.waits <- w
	return w.fire
}

func TestSenderRetriesWithBackoffUntilDelivered(t *testing.T) {
	secret := []byte("0123456789abcdef-receiver")
	var calls atomic.Int32
	got := make(chan []byte, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if err := Verify(secret, r.Header.Get(SignatureHeader), body, time.Now(), 0); err != nil {
			t.Errorf("delivery %d: %v", calls.Load()+1, err)
		}
		if calls.Add(1) <= 2 {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		got <- body
	}))
	defer srv.Close()

	clock := &stepClock{waits: make(chan wait)}
	attempts := make(chan Attempt, 10)
	s := NewSender([]Receiver{{Name: "ops", URL: srv.URL + "/hook", Secret: secret}}, Options{
		MinDelay: time.Second, MaxDelay: time.Minute, Clock: clock, Rand: func() float64 { return 0.999 },
		OnAttempt: func(a Attempt) { attempts <- a },
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); s.Run(ctx) }()
	defer func() { cancel(); <-done }()

	a := New(Denials, "spiffe://t/agent/a", "burst", time.Now())
	s.Send(a)
	var delays []time.Duration
	for i := 1; i <= 3; i++ {
		at := <-attempts
		if at.N != i || at.Receiver != "ops" || at.Alert.ID != a.ID {
			t.Fatalf("attempt %+v, want number %d of alert %s to ops", at, i, a.ID)
		}
		if i < 3 {
			if at.Delivered() || at.Final || at.Status != http.StatusServiceUnavailable {
				t.Fatalf("attempt %d: %+v, want a 503 to retry", i, at)
			}
			w := <-clock.waits
			if w.d != at.RetryIn {
				t.Fatalf("waited %v, attempt said %v", w.d, at.RetryIn)
			}
			delays = append(delays, w.d)
			w.fire <- time.Time{}
			continue
		}
		if !at.Delivered() || !at.Final || at.Status != http.StatusOK {
			t.Fatalf("attempt 3: %+v, want delivered", at)
		}
	}
	if !(delays[1] > delays[0]) {
		t.Errorf("backoff delays %v do not grow", delays)
	}
	var sent Alert
	if err := json.Unmarshal(<-got, &sent); err != nil || sent.ID != a.ID || sent.Kind != Denials {
		t.Fatalf("received %+v (%v)", sent, err)
	}
}

func TestSenderGivesUpAfterMaxAttemptsAndDoesNotRetryA4xx(t *testing.T) {
	for _, tc := range []struct {
		name   string
		status int
		want   int // attempts
	}{
		{"500 until given up", http.StatusInternalServerError, 3},
		{"429 until given up", http.StatusTooManyRequests, 3},
		{"400 at once", http.StatusBadRequest, 1},
		{"redirect not followed", http.StatusFound, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var calls atomic.Int32
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				calls.Add(1)
				if tc.status == http.StatusFound {
					http.Redirect(w, r, "/elsewhere", tc.status)
					return
				}
				w.WriteHeader(tc.status)
			}))
			defer srv.Close()
			attempts := make(chan Attempt, 10)
			immediate := AfterFuncClock(func(time.Duration) <-chan time.Time {
				c := make(chan time.Time, 1)
				c <- time.Time{}
				return c
			})
			s := NewSender([]Receiver{{Name: "r", URL: srv.URL, Secret: []byte("0123456789abcdef")}}, Options{
				MaxAttempts: 3, Clock: immediate, OnAttempt: func(a Attempt) { attempts <- a }})
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan struct{})
			go func() { defer close(done); s.Run(ctx) }()
			defer func() { cancel(); <-done }()
			s.Send(New(Denials, "s", "", time.Now()))
			for i := 1; ; i++ {
				at := <-attempts
				if at.Delivered() {
					t.Fatalf("attempt %d delivered", i)
				}
				if at.Final {
					if i != tc.want {
						t.Fatalf("gave up after %d attempts, want %d", i, tc.want)
					}
					break
				}
			}
			if int(calls.Load()) != tc.want {
				t.Fatalf("receiver saw %d requests, want %d", calls.Load(), tc.want)
			}
		})
	}
}

// AfterFuncClock adapts a function to a backoff clock in these tests.
type AfterFuncClock func(time.Duration) <-chan time.Time

func (f AfterFuncClock) After(d time.Duration) <-chan time.Time { return f(d) }

func TestSenderBoundsEachRequestAndTheAnswerItReads(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/hang":
			select {
			case <-release:
			case <-r.Context().Done():
			}
		case "/flood":
			// Far more than MaxResponseBody: the sender reads its bound
			// and hangs up; the handler's writes then fail.
			chunk := make([]byte, 64<<10)
			for i := 0; i < 1024; i++ {
				if _, err := w.Write(chunk); err != nil {
					return
				}
			}
		}
	}))
	defer srv.Close()
	defer close(release)
	attempts := make(chan Attempt, 10)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }()
	// A short timeout for the receiver that never answers; the default
	// for the flood, so that a slow machine does not time it out.
	for _, r := range []struct {
		name    string
		timeout time.Duration
	}{{"hang", 50 * time.Millisecond}, {"flood", 0}} {
		s := NewSender([]Receiver{{Name: r.name, URL: srv.URL + "/" + r.name, Secret: []byte("0123456789abcdef")}},
			Options{MaxAttempts: 1, Timeout: r.timeout, OnAttempt: func(a Attempt) { attempts <- a }})
		wg.Go(func() { s.Run(ctx) })
		s.Send(New(Denials, "s", "", time.Now()))
	}
	got := map[string]Attempt{}
	for len(got) < 2 {
		a := <-attempts
		got[a.Receiver] = a
	}
	if a := got["hang"]; a.Delivered() || !a.Final || a.Err == nil || !strings.Contains(a.Err.Error(), "timed out") {
		t.Errorf("a receiver that never answers: %+v, want a final timeout", a)
	}
	if a := got["flood"]; !a.Delivered() || a.Status != http.StatusOK {
		t.Errorf("a receiver answering 200 with 64 MiB: %+v, want delivered", a)
	}
}
