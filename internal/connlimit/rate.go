package connlimit

import (
	"sync"
	"time"
)

// RateLimiter is a token bucket per key (a source, see SourceKey): each key
// may take Burst tokens at once and gets Rate tokens per second back. The
// number of keys it tracks is bounded, so that a client with many source
// addresses cannot grow it without limit: a full bucket is the same as no
// bucket, so full ones are dropped when room is needed, and when every
// tracked key is still short of tokens a new key is refused (fail closed)
// until some bucket fills up again.
type RateLimiter struct {
	rate    float64
	burst   float64
	maxKeys int
	now     func() time.Time

	mu        sync.Mutex
	buckets   map[string]*bucket
	lastSweep time.Time
}

type bucket struct {
	tokens float64
	at     time.Time
}

// DefaultMaxKeys bounds the keys a RateLimiter tracks unless told otherwise.
const DefaultMaxKeys = 16384

// NewRateLimiter returns a limiter granting each key burst tokens at once
// and rate tokens per second, tracking at most maxKeys keys (0:
// DefaultMaxKeys), on the clock now (nil: time.Now).
func NewRateLimiter(rate float64, burst, maxKeys int, now func() time.Time) *RateLimiter {
	if maxKeys <= 0 {
		maxKeys = DefaultMaxKeys
	}
	if now == nil {
		now = time.Now
	}
	return &RateLimiter{rate: rate, burst: float64(max(burst, 1)), maxKeys: maxKeys, now: now, buckets: make(map[string]*bucket)}
}

// Allow takes a token for key and reports whether there was one.
func (r *RateLimiter) Allow(key string) bool {
	now := r.now()
	r.mu.Lock()
	defer r.mu.Unlock()
	b := r.buckets[key]
	if b == nil {
		if len(r.buckets) >= r.maxKeys && !r.sweepLocked(now) {
			return false
		}
		b = &bucket{tokens: r.burst, at: now}
		r.buckets[key] = b
	}
	r.refill(b, now)
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

func (r *RateLimiter) refill(b *bucket, now time.Time) {
	if d := now.Sub(b.at); d > 0 {
		b.tokens = min(r.burst, b.tokens+d.Seconds()*r.rate)
	}
	b.at = now
}

// sweepLocked drops the buckets that have filled up again and reports
// whether that made room. A sweep that found nothing is not repeated for a
// second, so a flood of new keys costs one scan a second, not one a key.
func (r *RateLimiter) sweepLocked(now time.Time) bool {
	if !r.lastSweep.IsZero() && now.Sub(r.lastSweep) < time.Second {
		return false
	}
	r.lastSweep = now
	for k, b := range r.buckets {
		r.refill(b, now)
		if b.tokens >= r.burst {
			delete(r.buckets, k)
		}
	}
	return len(r.buckets) < r.maxKeys
}
