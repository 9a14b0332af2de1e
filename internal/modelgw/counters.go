package modelgw

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/agentmesh/agentmesh/internal/durable"
	"github.com/agentmesh/agentmesh/internal/policy"
	"github.com/agentmesh/agentmesh/internal/reason"
)

// CountersFile is the name of the limit counters log in the state
// directory.
const CountersFile = "model-limits.log"

// legacyCountersFile is the JSON snapshot that earlier versions rewrote on
// every change; loadCounters takes it over into the log once and removes it.
const legacyCountersFile = "model-limits.json"

// SyncInterval bounds what a crash of the machine can lose: a change is
// written to the log (the kernel's page cache) before the request it
// counts goes on, and fsynced at most SyncInterval later. A crash of the
// process loses nothing, a clean stop (Close) loses nothing, and a crash
// of the machine or the kernel loses at most the changes of the last
// SyncInterval: a caller can then go over a limit by at most what it was
// counted in that second.
const SyncInterval = time.Second

// countersHeader starts every log. A file without it was not written by
// this code (or was wiped), and starting from zero would lift every limit,
// so it is refused.
const countersHeader = "agentmesh model-limits v1\n"

// compactMin is the size above which the log is rewritten (compacted) once
// it is also four times what its last compaction wrote.
const compactMin = 4 << 20

// maxCounters bounds the counters kept (and a compacted log's size, about
// 100 bytes each). Counters whose windows have ended are dropped; when the
// live ones fill the table, requests that need a new counter are refused
// (limits_unavailable) rather than a limit lifted.
const maxCounters = 50_000

// counter is the usage of one source identity under one limit.
type counter struct {
	Minute   int64 `json:"minute"`   // Unix minute of the rpm window
	Requests int64 `json:"requests"` // requests in that minute
	Day      int64 `json:"day"`      // Unix day (UTC) of the token window
	Tokens   int64 `json:"tokens"`   // tokens used that day
}

// record is one line of the log: the whole state of one counter after a
// change. Replaying the log keeps the last record of each key, so a record
// written twice or a log read up to any complete line is consistent.
type record struct {
	Key string `json:"k"`
	counter
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

// logFile is the open counters log (an *os.File; tests inject failures).
type logFile interface {
	Write([]byte) (int, error)
	Sync() error
	Close() error
}

// counters holds limit counters, keyed by source identity and limit key,
// and (when path is set) appends every change to a log before the request
// it counts goes on: one write(2) of about 100 bytes per counter, no fsync
// on the request path. A timer fsyncs the log at most SyncInterval after
// a change (see SyncInterval for what each kind of crash loses), and the
// log is rewritten to the live counters (temporary file, fsync, rename)
// when it is loaded, when it has grown past compactMin and four times its
// last compaction, and when a write or fsync failed.
//
// Failing closed: once a write or fsync fails, every change is refused
// (ErrLimitStore, limits_unavailable) until a compaction succeeds, which
// each later change tries; after close, every change is refused.
type counters struct {
	mu   sync.Mutex
	path string
	max  int // maxCounters, lowered by tests
	m    map[string]*counter
	// pruned is the Unix minute of the last pruneLocked.
	pruned int64

	// The log, when path is set; all under mu, so that the log's order
	// is the order of the changes.
	log    logFile
	size   int64 // bytes in the log
	base   int64 // bytes its last compaction wrote
	dirty  bool  // written since the last fsync; a sync is scheduled
	err    error // the log's failure, until a compaction succeeds
	closed bool
	buf    []byte
	stop   func() bool // cancels the scheduled sync

	// create writes data durably as path and opens it for appending;
	// after schedules f in d. Tests replace them.
	create func(path string, data []byte) (logFile, error)
	after  func(d time.Duration, f func()) (stop func() bool)
}

func counterKey(src string, l policy.Limit) string { return src + " " + l.Key }

// loadCounters reads the log at path ("" keeps counters in memory only),
// takes over a legacy JSON file beside it, and starts a fresh log holding
// the live counters. A missing file is empty; an unreadable or corrupt one
// is an error, because starting from zero would silently lift every limit.
// Only the end of the log may be incomplete (the tail of a write a machine
// crash cut short): that line is dropped.
func loadCounters(path string) (*counters, error) {
	c := &counters{path: path, max: maxCounters, m: map[string]*counter{}, create: createLog, after: afterFunc}
	if path == "" {
		return c, nil
	}
	legacy := filepath.Join(filepath.Dir(path), legacyCountersFile)
	hadLegacy, err := c.readLegacy(legacy)
	if err != nil {
		return nil, err
	}
	b, err := os.ReadFile(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return nil, fmt.Errorf("load limit counters: %w: %w", ErrLimitStore, err)
	default:
		if err := c.replay(b); err != nil {
			return nil, fmt.Errorf("load limit counters %s: %w: %w", path, ErrLimitStore, err)
		}
	}
	c.mu.Lock()
	err = c.compactLocked()
	c.mu.Unlock()
	if err != nil {
		return nil, fmt.Errorf("load limit counters: %w", err)
	}
	if hadLegacy {
		if err := os.Remove(legacy); err != nil {
			c.close()
			return nil, fmt.Errorf("load limit counters: %w: %w", ErrLimitStore, err)
		}
	}
	return c, nil
}

// readLegacy loads the JSON map earlier versions kept in path, if any.
func (c *counters) readLegacy(path string) (bool, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err == nil {
		err = json.Unmarshal(b, &c.m)
	}
	if err != nil {
		return false, fmt.Errorf("load limit counters %s: %w: %w", path, ErrLimitStore, err)
	}
	for k, v := range c.m {
		if v == nil {
			delete(c.m, k)
		}
	}
	return true, nil
}

// replay applies the records of a log to c.m.
func (c *counters) replay(b []byte) error {
	if !bytes.HasPrefix(b, []byte(countersHeader)) {
		return errors.New("not a limit counters log (no header)")
	}
	b = b[len(countersHeader):]
	// A machine crash can leave the blocks of the last writes allocated
	// but never written: zeros at the end.
	b = bytes.TrimRight(b, "\x00")
	for line := 1; len(b) > 0; line++ {
		i := bytes.IndexByte(b, '\n')
		if i < 0 {
			break // a write cut short by a crash: it was never synced
		}
		var r record
		d := json.NewDecoder(bytes.NewReader(b[:i]))
		d.DisallowUnknownFields()
		if err := d.Decode(&r); err != nil || r.Key == "" || d.More() {
			return fmt.Errorf("record %d is corrupt", line)
		}
		c.m[r.Key] = &r.counter
		b = b[i+1:]
	}
	return nil
}

// verdict is the outcome of admit for a request that is over a limit.
type verdict struct {
	reason     reason.Code
	limit      policy.Limit
	retryAfter time.Duration
}

// admit checks every limit for src at now and, if none is used up, counts
// the request against each. It returns nil when the request may go ahead,
// which is only once the counts are in the log.
func (c *counters) admit(src string, limits []policy.Limit, now time.Time) (*verdict, error) {
	if len(limits) == 0 {
		return nil, nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.usableLocked(); err != nil {
		return nil, fmt.Errorf("admit: %w", err)
	}
	now = now.UTC()
	for _, l := range limits {
		k := counterKey(src, l)
		ct := c.m[k]
		if ct == nil {
			continue
		}
		ct.roll(now)
		if l.RPM > 0 && ct.Requests >= l.RPM {
			return &verdict{reason: reason.LimitRPM, limit: l, retryAfter: time.Unix((ct.Minute+1)*60, 0).Sub(now)}, nil
		}
		if l.TokensPerDay > 0 && ct.Tokens >= l.TokensPerDay {
			return &verdict{reason: reason.LimitTokens, limit: l, retryAfter: time.Unix((ct.Day+1)*86400, 0).Sub(now)}, nil
		}
	}
	if c.needRoomLocked(src, limits, now) {
		return nil, fmt.Errorf("admit: %w: more than %d counters in use", ErrLimitStore, maxCounters)
	}
	c.buf = c.buf[:0]
	for _, l := range limits {
		k := counterKey(src, l)
		c.get(k, now).Requests++
		c.encodeLocked(k)
	}
	c.changedLocked(now)
	if err := c.appendLocked(); err != nil {
		return nil, fmt.Errorf("admit: %w", err)
	}
	return nil, nil
}

// addTokens counts n tokens used by src against limits that have a token
// budget.
func (c *counters) addTokens(src string, limits []policy.Limit, n int64, now time.Time) error {
	if n <= 0 {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.usableLocked(); err != nil {
		return fmt.Errorf("count tokens: %w", err)
	}
	now = now.UTC()
	c.buf = c.buf[:0]
	for _, l := range limits {
		if l.TokensPerDay <= 0 {
			continue
		}
		k := counterKey(src, l)
		c.get(k, now).Tokens += n
		c.encodeLocked(k)
	}
	if len(c.buf) == 0 {
		return nil
	}
	c.changedLocked(now)
	if err := c.appendLocked(); err != nil {
		return fmt.Errorf("count tokens: %w", err)
	}
	return nil
}

// usableLocked reports whether changes can be logged: not after close,
// and after a failure only once a compaction has rewritten the log from
// the counters in memory. c.mu must be held.
func (c *counters) usableLocked() error {
	switch {
	case c.path == "":
		return nil
	case c.closed:
		return fmt.Errorf("%w: closed", ErrLimitStore)
	case c.err != nil:
		return c.compactLocked()
	}
	return nil
}

// encodeLocked adds the record of counter k to c.buf. c.mu must be held.
func (c *counters) encodeLocked(k string) {
	if c.path == "" {
		return
	}
	b, err := json.Marshal(record{Key: k, counter: *c.m[k]})
	if err != nil {
		panic(err) // a string and four integers always encode
	}
	c.buf = append(append(c.buf, b...), '\n')
}

// appendLocked writes c.buf to the log and makes sure a sync follows
// within SyncInterval. A failed write leaves the log in doubt (part of a
// record may be in it), so every change is refused until a compaction
// rewrites it. c.mu must be held.
func (c *counters) appendLocked() error {
	if c.path == "" || len(c.buf) == 0 {
		return nil
	}
	n, err := c.log.Write(c.buf)
	c.size += int64(n)
	if err != nil {
		c.err = err
		return fmt.Errorf("%w: %w", ErrLimitStore, err)
	}
	if !c.dirty {
		c.dirty = true
		c.stop = c.after(SyncInterval, c.sync)
	}
	return nil
}

// sync fsyncs the log (what the timer that appendLocked schedules runs),
// or compacts it when it has grown enough. The fsync runs outside c.mu, so
// requests go on being counted meanwhile.
func (c *counters) sync() {
	c.mu.Lock()
	if c.closed || !c.dirty || c.err != nil {
		c.mu.Unlock()
		return
	}
	c.dirty = false
	if c.size > compactMin && c.size > 4*c.base {
		// Error kept in c.err; the next change retries.
		_ = c.compactLocked()
		c.mu.Unlock()
		return
	}
	f := c.log
	c.mu.Unlock()
	err := f.Sync()
	if err != nil {
		c.mu.Lock()
		// A compaction may have replaced (and closed) f meanwhile: what
		// f held is then in the new, synced log.
		if c.log == f && c.err == nil {
			c.err = err
		}
		c.mu.Unlock()
	}
}

// compactLocked writes the live counters as a new log (temporary file,
// fsync, rename, directory fsync) and appends to it from then on. On
// success the log is synced and healthy again. c.mu must be held.
func (c *counters) compactLocked() error {
	buf := append([]byte(nil), countersHeader...)
	for k := range c.m {
		b, err := json.Marshal(record{Key: k, counter: *c.m[k]})
		if err != nil {
			panic(err)
		}
		buf = append(append(buf, b...), '\n')
	}
	f, err := c.create(c.path, buf)
	if err != nil {
		c.err = err
		return fmt.Errorf("%w: rewrite %s: %w", ErrLimitStore, c.path, err)
	}
	if c.log != nil {
		c.log.Close()
	}
	c.log, c.size, c.base, c.err, c.dirty = f, int64(len(buf)), int64(len(buf)), nil, false
	if c.stop != nil {
		c.stop()
		c.stop = nil
	}
	return nil
}

// close fsyncs what was logged since the last sync and closes the log:
// after a clean stop nothing counted is lost. Later changes are refused.
func (c *counters) close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.path == "" || c.closed {
		return nil
	}
	if c.stop != nil {
		c.stop()
		c.stop = nil
	}
	// Synced even when no sync is due: the timer's fsync may be running
	// outside c.mu on the file this closes.
	err := c.err
	if err == nil {
		err = c.log.Sync()
	}
	if err != nil {
		err = c.compactLocked()
	}
	c.closed = true
	if cerr := c.log.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("%w: %w", ErrLimitStore, cerr)
	}
	c.log = nil
	if err != nil {
		return fmt.Errorf("close limit counters: %w", err)
	}
	return nil
}

// createLog is counters.create: durable.WriteFile, then open to append.
func createLog(path string, data []byte) (logFile, error) {
	if err := durable.WriteFile(path, data, 0o600, true); err != nil {
		return nil, err
	}
	return os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
}

// afterFunc is counters.after: a timer, which holds no goroutine while it
// waits.
func afterFunc(d time.Duration, f func()) func() bool { return time.AfterFunc(d, f).Stop }

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

// changedLocked records a change made at now: once a minute it drops
// counters whose windows have both ended (the log keeps their last records
// until the next compaction; replayed, they are as ended). c.mu must be
// held.
func (c *counters) changedLocked(now time.Time) {
	if m := now.Unix() / 60; m != c.pruned {
		c.pruneLocked(now)
		c.pruned = m
	}
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
