// Package dirlock gives a directory one holder at a time: the
// coordinator's data directory, a serving gateway's node state directory,
// an audit spool. Acquire takes an exclusive advisory lock (flock) on the
// file LockFile in the directory and writes into it who holds it: the
// process id, what it runs, since when and, once it listens, where. A
// second process is refused with an error that says exactly that, so an
// operator knows what to stop.
//
// Why: two processes that write one directory damage each other silently.
// Two coordinators on one data directory each rewrite the admin identity's
// coordinator address, and two gateways on one node state share its audit
// spool. The lock is the only guard they need, because every writer of
// such a directory takes it before it writes anything else there.
//
// The kernel releases a flock when the last descriptor of the open file
// closes, and so when the holder exits or crashes, even by SIGKILL: a
// lock never outlives its process, and a restart never needs a stale lock
// file removed by hand. The lock file itself stays; its content is only a
// description, never a claim. The lock is advisory: it keeps agentmesh
// processes apart, not a person with a shell, and it means nothing on a
// network file system that does not implement flock. On platforms without
// flock (not unix), Acquire writes the description but does not lock.
package dirlock

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// LockFile is the name of the lock file inside a locked directory.
const LockFile = "lock"

// ErrInUse matches the error of Acquire when another process holds the
// directory; errors.As with *InUseError says who.
var ErrInUse = errors.New("directory in use")

// Holder describes the process that holds a directory, as written into its
// lock file.
type Holder struct {
	// PID is the holder's process id; Acquire fills in its own.
	PID int `json:"pid"`
	// Command is what the holder runs, such as "agentmesh coordinator"
	// ("" when it does not say).
	Command string `json:"command,omitempty"`
	// Listen is where the holder listens ("" when it does not, or not
	// yet).
	Listen string `json:"listen,omitempty"`
	// Since is when the holder took the lock; Acquire fills in the
	// current time when it is zero.
	Since time.Time `json:"since"`
}

// String describes h for people: "agentmesh coordinator (pid 12, listening
// on 127.0.0.1:7443, since 2025-01-02T15:04:05Z)".
func (h Holder) String() string {
	cmd := h.Command
	if cmd == "" {
		cmd = "another process"
	}
	details := []string{fmt.Sprintf("pid %d", h.PID)}
	if h.Listen != "" {
		details = append(details, "listening on "+h.Listen)
	}
	if !h.Since.IsZero() {
		details = append(details, "since "+h.Since.Format(time.RFC3339))
	}
	return cmd + " (" + strings.Join(details, ", ") + ")"
}

// InUseError is the error of Acquire when another process holds the
// directory. It matches ErrInUse.
type InUseError struct {
	// What names the directory for people ("data directory").
	What string
	Dir  string
	// Holder is what the lock file says; Known is false when it says
	// nothing readable (the holder may be writing it at this moment).
	Holder Holder
	Known  bool
}

func (e *InUseError) Error() string {
	if !e.Known {
		return fmt.Sprintf("%s %s is in use by another process (its lock file %s does not say which); stop it first",
			e.What, e.Dir, filepath.Join(e.Dir, LockFile))
	}
	return fmt.Sprintf("%s %s is in use by %s; stop it first", e.What, e.Dir, e.Holder)
}

// Is makes an InUseError match ErrInUse.
func (e *InUseError) Is(target error) bool { return target == ErrInUse }

// Lock is a held directory lock. Close releases it.
type Lock struct {
	mu     sync.Mutex
	f      *os.File // nil once closed
	holder Holder
}

// Acquire locks dir, which must exist, for this process, and records h
// (with this process's id, and the current time if h.Since is zero) in its
// lock file. what names the directory in the error for people ("data
// directory", "node state directory"). If another process holds the
// lock, Acquire does not wait: it returns an *InUseError naming the holder.
// A lock held by another Lock of this process is refused alike.
func Acquire(dir, what string, h Holder) (*Lock, error) {
	path := filepath.Join(dir, LockFile)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lock %s %s: %w", what, dir, err)
	}
	held, err := flock(f)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("lock %s %s: %w", what, dir, err)
	}
	if held {
		f.Close()
		e := &InUseError{What: what, Dir: dir}
		if b, err := os.ReadFile(path); err == nil && json.Unmarshal(b, &e.Holder) == nil && e.Holder.PID > 0 {
			e.Known = true
		}
		return nil, e
	}
	h.PID = os.Getpid()
	if h.Since.IsZero() {
		h.Since = time.Now()
	}
	l := &Lock{f: f}
	if err := l.write(h); err != nil {
		f.Close()
		return nil, fmt.Errorf("lock %s %s: %w", what, dir, err)
	}
	return l, nil
}

// SetListen records where the holder listens, once it knows.
func (l *Lock) SetListen(addr string) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f == nil {
		return os.ErrClosed
	}
	h := l.holder
	h.Listen = addr
	return l.writeLocked(h)
}

func (l *Lock) write(h Holder) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.writeLocked(h)
}

// writeLocked replaces the lock file's content by h. It is not fsynced:
// the description matters only while the holder lives.
func (l *Lock) writeLocked(h Holder) error {
	b, err := json.Marshal(h)
	if err != nil {
		return err
	}
	if err := l.f.Truncate(0); err != nil {
		return err
	}
	if _, err := l.f.WriteAt(append(b, '\n'), 0); err != nil {
		return err
	}
	l.holder = h
	return nil
}

// Close releases the lock. It is safe to call more than once and on a
// nil Lock.
func (l *Lock) Close() error {
	if l == nil {
		return nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f == nil {
		return nil
	}
	// Closing the only descriptor of the open file releases the flock.
	err := l.f.Close()
	l.f = nil
	return err
}
