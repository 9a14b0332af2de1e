package modelgw

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/agentmesh/agentmesh/internal/policy"
	"github.com/agentmesh/agentmesh/internal/reason"
)

// CountersFile is the name of the limit counters file in the state
// directory.
const CountersFile = "model-limits.json"

// maxCounters bounds the counters kept (and the file's size, about 100
// bytes each). Counters whose windows have ended are dropped; when the live
// ones fill the table, requests that need a new counter are refused
// (limits_unavailable) rather than a limit lifted.
const maxCounters = 50_000

// counter is the usage of one source identity under one limit.
type counter struct {
	Minute   int64 `json:"minute"`   // Unix minute of the rpm window
	Requests int64 `json:"requests"` // requests in that minute
	Day      int64 `json:"day"`      // Unix day (UTC) of the token window
	Tokens   int64 `json:"tokens"`   // tokens used that day
}

// roll resets windows that have ended at now.
func (c *counter) roll(now time.Time) {
	m, d := now.Unix()/60, now.Unix()/86400
	if c.Minute != m {
		c.Minute, c.Requests = m, 0
	}
	if c.Day != d {
		c.Day, c.Tokens = d, 0
	}
}

// counters holds limit counters, keyed by source identity and limit key, and
// writes them through to a file (when path is set) on every change: a
// request goes ahead only once the count that admitted it is on disk, so a
// restart or crash loses nothing that was counted. Concurrent changes share
// one write (group commit, see persist), and the file is written outside the
// lock that admission checks take.
type counters struct {
	mu   sync.Mutex
	path string
	max  int // maxCounters, lowered by tests
	m    map[string]*counter
	gen  uint64 // changes made to m so far
	// pruned is the Unix minute of the last pruneLocked.
	pruned int64

	// wmu serialises file writes; saved is the gen the file holds.
	wmu   sync.Mutex
	saved uint64
}

func counterKey(src string, l policy.Limit) string { return src + " " + l.Key }

// loadCounters reads path ("" keeps counters in memory only). A missing
// file is empty; an unreadable or corrupt one is an error, because starting
// from zero would silently lift every limit.
func loadCounters(path string) (*counters, error) {
	c := &counters{path: path, max: maxCounters, m: map[string]*counter{}}
	if path == "" {
		return c, nil
	}
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return c, nil
	}
	if err != nil {
		return nil, fmt.Errorf("load limit counters: %w: %w", ErrLimitStore, err)
	}
	if err := json.Unmarshal(b, &c.m); err != nil {
		return nil, fmt.Errorf("load limit counters %s: %w: %w", path, ErrLimitStore, err)
	}
	for k, v := range c.m {
		if v == nil {
			delete(c.m, k)
		}
	}
	return c, nil
}

// verdict is the outcome of admit for a request that is over a limit.
type verdict struct {
	reason     reason.Code
	limit      policy.Limit
	retryAfter time.Duration
}

// admit checks every limit for src at now and, if none is used up, counts
// the request against each. It returns nil when the request may go ahead.
func (c *counters) admit(src string, limits []policy.Limit, now time.Time) (*verdict, error) {
	if len(limits) == 0 {
		return nil, nil
	}
	c.mu.Lock()
	now = now.UTC()
	for _, l := range limits {
		k := counterKey(src, l)
		ct := c.m[k]
		if ct == nil {
			continue
		}
		ct.roll(now)
		if l.RPM > 0 && ct.Requests >= l.RPM {
			c.mu.Unlock()
			return &verdict{reason: reason.LimitRPM, limit: l, retryAfter: time.Unix((ct.Minute+1)*60, 0).Sub(now)}, nil
		}
		if l.TokensPerDay > 0 && ct.Tokens >= l.TokensPerDay {
			c.mu.Unlock()
			return &verdict{reason: reason.LimitTokens, limit: l, retryAfter: time.Unix((ct.Day+1)*86400, 0).Sub(now)}, nil
		}
	}
	if c.needRoomLocked(src, limits, now) {
		c.mu.Unlock()
		return nil, fmt.Errorf("admit: %w: more than %d counters in use", ErrLimitStore, maxCounters)
	}
	for _, l := range limits {
		ct := c.get(counterKey(src, l), now)
		ct.Requests++
	}
	gen := c.changedLocked(now)
	c.mu.Unlock()
	return nil, c.persist(gen)
}

// addTokens counts n tokens used by src against limits that have a token
// budget.
func (c *counters) addTokens(src string, limits []policy.Limit, n int64, now time.Time) error {
	if n <= 0 {
		return nil
	}
	c.mu.Lock()
	now = now.UTC()
	changed := false
	for _, l := range limits {
		if l.TokensPerDay <= 0 {
			continue
		}
		c.get(counterKey(src, l), now).Tokens += n
		changed = true
	}
	if !changed {
		c.mu.Unlock()
		return nil
	}
	gen := c.changedLocked(now)
	c.mu.Unlock()
	return c.persist(gen)
}

// needRoomLocked reports whether counting src under limits would need new
// counters that the table has no room for, even after dropping ended ones.
// The table is never made room in by forgetting live counters: that would
// lift limits. c.mu must be held.
func (c *counters) needRoomLocked(src string, limits []policy.Limit, now time.Time) bool {
	fresh := 0
	for _, l := range limits {
		if c.m[counterKey(src, l)] == nil {
			fresh++
		}
	}
	if fresh == 0 || len(c.m)+fresh <= c.max {
		return false
	}
	c.pruneLocked(now)
	return len(c.m)+fresh > c.max
}

func (c *counters) get(k string, now time.Time) *counter {
	ct := c.m[k]
	if ct == nil {
		ct = &counter{}
		c.m[k] = ct
	}
	ct.roll(now)
	return ct
}

// changedLocked records a change made at now and returns its generation
// for persist. Once a minute it drops counters whose windows have both
// ended. c.mu must be held.
func (c *counters) changedLocked(now time.Time) uint64 {
	if m := now.Unix() / 60; m != c.pruned {
		c.pruneLocked(now)
		c.pruned = m
	}
	c.gen++
	return c.gen
}

// pruneLocked drops counters whose windows have both ended at now.
func (c *counters) pruneLocked(now time.Time) {
	m, d := now.Unix()/60, now.Unix()/86400
	for k, v := range c.m {
		if v.Minute != m && v.Day != d {
			delete(c.m, k)
		}
	}
}

// persist returns once the file holds change gen or a later one. Writers
// queue on wmu; whoever gets it writes a snapshot of everything changed so
// far, so the writers queued behind it usually find their change already
// on disk and return at once. The file is written atomically (temporary
// file, fsync, rename, fsync of the directory).
func (c *counters) persist(gen uint64) error {
	if c.path == "" {
		return nil
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.saved >= gen {
		return nil
	}
	c.mu.Lock()
	snap := c.gen
	b, err := json.Marshal(c.m)
	c.mu.Unlock()
	if err != nil {
		return fmt.Errorf("save limit counters: %w: %w", ErrLimitStore, err)
	}
	if err := writeFileSync(c.path, b); err != nil {
		return fmt.Errorf("save limit counters: %w: %w", ErrLimitStore, err)
	}
	c.saved = snap
	return nil
}

func writeFileSync(path string, b []byte) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, ".model-limits-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return err
	}
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}
