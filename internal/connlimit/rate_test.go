package connlimit_test

import (
	"strconv"
	"testing"
	"time"

	"github.com/agentmesh/agentmesh/internal/connlimit"
	"github.com/agentmesh/agentmesh/internal/pki/pkitest"
)

func TestRateLimiterAllowsABurstThenItsRatePerKey(t *testing.T) {
	clock := pkitest.NewClock(time.Unix(1_000_000, 0))
	r := connlimit.NewRateLimiter(2, 3, 0, clock.Now)
	for i := range 3 {
		if !r.Allow("127.0.0.2") {
			t.Fatalf("request %d of the burst refused", i)
		}
	}
	if r.Allow("127.0.0.2") {
		t.Fatal("request past the burst allowed")
	}
	if !r.Allow("127.0.0.3") {
		t.Fatal("another key shares the first one's bucket")
	}
	clock.Advance(500 * time.Millisecond) // one token at 2 per second
	if !r.Allow("127.0.0.2") || r.Allow("127.0.0.2") {
		t.Fatal("half a second did not give back exactly one token")
	}
	clock.Advance(time.Hour)
	for i := range 3 {
		if !r.Allow("127.0.0.2") {
			t.Fatalf("after an hour, request %d refused: the bucket did not refill to its burst", i)
		}
	}
	if r.Allow("127.0.0.2") {
		t.Fatal("the bucket refilled past its burst")
	}
}

func TestRateLimiterBoundsItsKeysAndFailsClosed(t *testing.T) {
	clock := pkitest.NewClock(time.Unix(1_000_000, 0))
	r := connlimit.NewRateLimiter(1, 1, 4, clock.Now)
	for i := range 4 {
		if !r.Allow("10.0.0." + strconv.Itoa(i)) {
			t.Fatalf("key %d refused", i)
		}
	}
	// Every tracked bucket is empty: a fifth source cannot be tracked, so
	// it is refused rather than let through untracked.
	if r.Allow("10.0.0.9") {
		t.Fatal("a key past the bound was allowed while every bucket is in use")
	}
	// Once buckets have refilled they are forgotten, making room.
	clock.Advance(2 * time.Second)
	if !r.Allow("10.0.0.9") {
		t.Fatal("no room after the buckets refilled")
	}
}
