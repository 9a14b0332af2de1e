package spool

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/agentmesh/agentmesh/internal/audit"
	"github.com/agentmesh/agentmesh/internal/dirlock"
)

// Options configures a Spool. The zero value is usable.
type Options struct {
	// SyncInterval is the longest an appended event waits for its fsync,
	// and the shortest time between two fsyncs: the syncer fsyncs as soon
	// as there is something to sync, then rests for SyncInterval, so a busy
	// gateway pays at most one fsync per interval however many events it
	// appends. Flush and AppendSync do not wait for the rest. Zero means
	// 10 ms; values above 50 ms are capped at 50 ms.
	SyncInterval time.Duration
	// SegmentSize is the size at which the active segment file is closed
	// and a new one started. Acknowledged segments are deleted whole, so
	// smaller segments free disk sooner. Zero means 16 MiB.
	SegmentSize int64
	// MaxBatchBytes bounds the encoded size of a batch returned by Next, so
	// a batch of large events still fits the coordinator's request limit.
	// Next always returns at least one event. Zero means 4 MiB.
	MaxBatchBytes int
	// Logger receives operational messages; nil discards them.
	Logger *slog.Logger

	// beforeSync, when set, runs in the syncer goroutine before each
	// fsync. Tests use it to hold the syncer.
	beforeSync func()
}

// MaxSyncInterval is the longest SyncInterval a spool accepts.
const MaxSyncInterval = 50 * time.Millisecond

// Spool is a gateway's durable, append-only log of audit events waiting to
// be shipped to the coordinator. See the package documentation for its
// guarantees. Open starts its syncer goroutine and Close stops it; all
// methods are safe for concurrent use.
//
// Locks, always taken in this order: wmu (one writer at a time), syncMu
// (the active file is not closed under a running fsync), mu (positions and
// segments; never held across I/O).
type Spool struct {
	dir  string
	opts Options
	log  *slog.Logger
	lock *dirlock.Lock // held for the spool's lifetime

	wmu    sync.Mutex
	closed bool // under wmu: no Append writes after Close began

	syncMu sync.Mutex
	// active is the newest segment's file, opened for appending. It is
	// replaced under wmu, syncMu and mu together, so any one of them makes
	// reading it safe.
	active *activeFile

	syncReq    chan struct{} // capacity 1: "there is something to fsync"
	flushReq   chan struct{} // capacity 1: "someone waits: skip the rest"
	closing    chan struct{} // closed first by Close: unblocks waiting callers
	stop       chan struct{} // closed by Close once no write can happen
	syncerDone chan struct{}
	closeOnce  sync.Once
	closeErr   error

	mu      sync.Mutex
	segs    []*segment // ordered by start; the last one is active
	written uint64     // position after the last record handed to the kernel
	durable uint64     // position after the last fsynced record
	ack     uint64     // position after the last acknowledged record
	failed  error      // sticky write or fsync failure
	changed chan struct{}

	ackMu sync.Mutex // serialises ack file updates
	// ackDisk is the ack position last written to the ack file. It lags
	// ack: the file is rewritten (write, fsync, rename, fsync dir) only
	// when a segment can be deleted and at Close, not after every shipped
	// batch. After a crash the events between ackDisk and ack are shipped
	// again, which the coordinator ignores (ingest is idempotent by id).
	ackDisk uint64

	// rmu guards the read cursor used by Next.
	rmu sync.Mutex
	rc  readCursor
}

// Batch is a run of consecutive spooled events returned by Next. Pass it to
// Ack once the coordinator has stored it.
type Batch struct {
	// Events are the spooled events, oldest first.
	Events []audit.Event

	spool    *Spool
	from, to uint64 // spool positions [from, to)
}

// Open opens (creating if needed) the spool in dir, repairs a torn tail
// left by a crash, deletes acknowledged segments and starts the syncer.
// Only one process may have a spool open; a second Open fails.
func Open(dir string, opts Options) (*Spool, error) {
	if opts.SyncInterval <= 0 {
		opts.SyncInterval = 10 * time.Millisecond
	}
	opts.SyncInterval = min(opts.SyncInterval, MaxSyncInterval)
	if opts.SegmentSize <= 0 {
		opts.SegmentSize = 16 << 20
	}
	if opts.MaxBatchBytes <= 0 {
		opts.MaxBatchBytes = 4 << 20
	}
	s := &Spool{
		dir:        dir,
		opts:       opts,
		log:        opts.Logger,
		syncReq:    make(chan struct{}, 1),
		flushReq:   make(chan struct{}, 1),
		closing:    make(chan struct{}),
		stop:       make(chan struct{}),
		syncerDone: make(chan struct{}),
		changed:    make(chan struct{}),
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("audit: open spool: %w", err)
	}
	// One writer per spool; the holder's description (its pid) is in
	// the lock file, for the error a second opener gets.
	lock, err := dirlock.Acquire(dir, "audit spool", dirlock.Holder{})
	if err != nil {
		return nil, fmt.Errorf("audit: open spool: %w", err)
	}
	s.lock = lock
	if err := s.recover(); err != nil {
		s.closeFiles()
		return nil, fmt.Errorf("audit: open spool %s: %w", dir, err)
	}
	go s.syncLoop()
	return s, nil
}

// recover reads the ack pointer and the segments, truncates a torn tail,
// deletes acknowledged segments and opens the active segment for writing.
// Records that reached the files before a crash count as durable: the
// kernel had them, and recovery fsyncs the active segment before use.
func (s *Spool) recover() error {
	ack, err := readAck(filepath.Join(s.dir, ackFile))
	if err != nil {
		return err
	}
	segs, err := listSegments(s.dir)
	if err != nil {
		return err
	}
	for i, sg := range segs {
		last := i == len(segs)-1
		if err := sg.scan(last); err != nil {
			return err
		}
		if !last && sg.start+sg.count != segs[i+1].start {
			return fmt.Errorf("%w: segment %s ends at %d, next starts at %d", ErrCorrupt, filepath.Base(sg.path), sg.start+sg.count, segs[i+1].start)
		}
	}
	if len(segs) == 0 {
		sg, f, err := createSegment(s.dir, ack, s.opts.SegmentSize)
		if err != nil {
			return err
		}
		s.segs, s.active = []*segment{sg}, f
		s.written, s.durable, s.ack, s.ackDisk = ack, ack, ack, ack
		return nil
	}
	first, last := segs[0], segs[len(segs)-1]
	end := last.start + last.count
	if ack < first.start || ack > end {
		return fmt.Errorf("%w: ack pointer %d outside the spooled records [%d, %d]", ErrCorrupt, ack, first.start, end)
	}
	for len(segs) > 1 && segs[0].start+segs[0].count <= ack {
		if err := os.Remove(segs[0].path); err != nil {
			return err
		}
		segs = segs[1:]
	}
	f, err := os.OpenFile(last.path, os.O_RDWR, 0o600)
	if err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	s.segs, s.active = segs, newActive(f, last.size, s.opts.SegmentSize)
	s.written, s.durable, s.ack, s.ackDisk = end, end, ack, ack
	return nil
}

// Append validates e and writes it to the active segment before it
// returns: once Append returned nil the event is in the kernel's page
// cache, so killing the process (SIGKILL, a panic, an OOM kill) loses
// nothing. It is fsynced by the syncer within SyncInterval; AppendSync and
// Flush wait for that. Appends are serialised; a slow disk makes them wait,
// and nothing is ever dropped. After a write failure every Append fails.
func (s *Spool) Append(ctx context.Context, e *audit.Event) error {
	rec, err := encodeRecord(e)
	if err != nil {
		return err
	}
	return s.write(ctx, rec)
}

// AppendSync is Append, then waits until the event is fsynced. If ctx ends
// first it returns ctx's error; the event may still become durable.
func (s *Spool) AppendSync(ctx context.Context, e *audit.Event) error {
	if err := s.Append(ctx, e); err != nil {
		return err
	}
	return s.Flush(ctx)
}

// Flush waits until every event whose Append returned before Flush was
// called is fsynced.
func (s *Spool) Flush(ctx context.Context) error {
	s.mu.Lock()
	target := s.written
	s.mu.Unlock()
	for {
		s.mu.Lock()
		durable, failed, changed := s.durable, s.failed, s.changed
		s.mu.Unlock()
		if failed != nil {
			return failed
		}
		if durable >= target {
			return nil
		}
		signal(s.flushReq)
		signal(s.syncReq)
		select {
		case <-changed:
		case <-s.syncerDone:
			// Close synced what it could; the loop reports the outcome.
			s.mu.Lock()
			durable, failed = s.durable, s.failed
			s.mu.Unlock()
			if failed != nil {
				return failed
			}
			if durable < target {
				return ErrClosed
			}
			return nil
		case <-ctx.Done():
			return fmt.Errorf("audit: spool flush: %w", ctx.Err())
		}
	}
}

// signal makes a pending wake-up on c, a channel of capacity 1.
func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

func (s *Spool) write(ctx context.Context, rec []byte) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("audit: spool append: %w", err)
	}
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if s.closed {
		return ErrClosed
	}
	if err := s.failure(); err != nil {
		return err
	}
	if err := s.writeRecord(rec); err != nil {
		err = fmt.Errorf("audit: spool write: %w", err)
		s.log.Error("audit: spool write failed; refusing further events", "err", err)
		s.fail(err)
		return err
	}
	signal(s.syncReq)
	return nil
}

// fail makes err the spool's sticky failure and wakes every waiter.
func (s *Spool) fail(err error) {
	s.mu.Lock()
	if s.failed == nil {
		s.failed = err
	}
	s.notifyLocked()
	s.mu.Unlock()
}

func (s *Spool) failure() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.failed
}

// encodeRecord validates e and returns its spool record: header, then the
// canonical encoding.
func encodeRecord(e *audit.Event) ([]byte, error) {
	rec, err := audit.AppendValid(make([]byte, recordHeader, recordHeader+512), e)
	if err != nil {
		return nil, fmt.Errorf("audit: spool append: %w", err)
	}
	if n := len(rec) - recordHeader; n > audit.MaxEventSize {
		// An integrity event may be larger, but nodes never record one.
		return nil, fmt.Errorf("audit: spool append %s: %w: %d bytes encoded, limit %d", e.ID, audit.ErrInvalidEvent, n, audit.MaxEventSize)
	}
	sealRecord(rec)
	return rec, nil
}

// writeRecord writes one record to the active segment, first starting a
// new segment when it is full. s.wmu must be held.
func (s *Spool) writeRecord(rec []byte) error {
	s.mu.Lock()
	cur := s.segs[len(s.segs)-1]
	s.mu.Unlock()
	if cur.size > 0 && cur.size+int64(len(rec)) > s.opts.SegmentSize {
		next, err := s.rotate(cur)
		if err != nil {
			return err
		}
		cur = next
	}
	if err := s.active.append(rec); err != nil {
		return err
	}
	s.mu.Lock()
	cur.count++
	cur.size += int64(len(rec))
	s.written++
	s.mu.Unlock()
	return nil
}

// rotate fsyncs and closes the full segment cur and starts the next one.
// s.wmu must be held. The full segment is cut to its records and synced
// before the next one exists, so that only the newest segment can ever end
// in anything but a record.
func (s *Spool) rotate(cur *segment) (*segment, error) {
	s.syncMu.Lock()
	defer s.syncMu.Unlock()
	if err := s.active.sync(); err != nil {
		return nil, err
	}
	if err := s.active.close(); err != nil {
		s.active = nil
		return nil, err
	}
	s.mu.Lock()
	s.active = nil
	s.durable = s.written // everything written so far was in cur
	s.notifyLocked()
	s.mu.Unlock()
	next, f, err := createSegment(s.dir, cur.start+cur.count, s.opts.SegmentSize)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	s.active = f
	s.segs = append(s.segs, next)
	s.mu.Unlock()
	return next, nil
}

// syncLoop is the syncer goroutine: it fsyncs whatever was written, then
// rests for SyncInterval unless someone is waiting in Flush. After stop it
// makes a last fsync and exits.
func (s *Spool) syncLoop() {
	defer close(s.syncerDone)
	rest := time.NewTimer(0)
	defer rest.Stop()
	for {
		select {
		case <-s.syncReq:
		case <-s.stop:
			s.syncNow()
			return
		}
		s.syncNow()
		rest.Reset(s.opts.SyncInterval)
		select {
		case <-rest.C:
		case <-s.flushReq:
		case <-s.stop:
			s.syncNow()
			return
		}
	}
}

// syncNow fsyncs the active segment if anything was written since the last
// fsync, and publishes the new durable position.
func (s *Spool) syncNow() {
	s.syncMu.Lock()
	defer s.syncMu.Unlock()
	s.mu.Lock()
	f, target, durable, failed := s.active, s.written, s.durable, s.failed
	s.mu.Unlock()
	if target <= durable || failed != nil || f == nil {
		return
	}
	if h := s.opts.beforeSync; h != nil {
		h()
	}
	if err := f.sync(); err != nil {
		err = fmt.Errorf("audit: spool fsync: %w", err)
		s.log.Error("audit: spool fsync failed; refusing further events", "err", err)
		s.fail(err)
		return
	}
	s.mu.Lock()
	if target > s.durable {
		s.durable = target
	}
	s.notifyLocked()
	s.mu.Unlock()
}

// notifyLocked wakes everyone waiting in Next. s.mu must be held.
func (s *Spool) notifyLocked() {
	close(s.changed)
	s.changed = make(chan struct{})
}

// Next returns up to max durable events that the coordinator has not yet
// acknowledged, oldest first, waiting until there is at least one. Until
// Ack, every call returns the same events again (and possibly more), so a
// shipper that failed to send simply asks again. max <= 0 means 1000.
func (s *Spool) Next(ctx context.Context, max int) (Batch, error) {
	if max <= 0 {
		max = 1000
	}
	if _, err := s.waitDurable(ctx); err != nil {
		return Batch{}, err
	}
	s.rmu.Lock()
	defer s.rmu.Unlock()
	return s.read(max)
}

// waitDurable waits until at least one durable event is unacknowledged
// and returns how many are, without reading them: Ship lingers on that
// count, so each batch is read once, sequentially (reading it before the
// linger and again after moved the read cursor past the ack pointer and
// re-read the segment from its start).
func (s *Spool) waitDurable(ctx context.Context) (uint64, error) {
	for {
		s.mu.Lock()
		ack, durable, failed, changed := s.ack, s.durable, s.failed, s.changed
		s.mu.Unlock()
		select {
		case <-s.closing:
			return 0, ErrClosed
		default:
		}
		if durable > ack {
			return durable - ack, nil
		}
		if failed != nil {
			return 0, failed
		}
		select {
		case <-changed:
		case <-s.closing:
			return 0, ErrClosed
		case <-ctx.Done():
			return 0, fmt.Errorf("audit: spool next: %w", ctx.Err())
		}
	}
}

// Ack records that the coordinator stored b, so its events are not shipped
// again, and deletes segments that are now fully acknowledged. Acking a
// batch that is already acknowledged is a no-op.
func (s *Spool) Ack(b Batch) error {
	s.ackMu.Lock()
	defer s.ackMu.Unlock()
	s.mu.Lock()
	ack, durable := s.ack, s.durable
	s.mu.Unlock()
	if b.spool != s || b.from > b.to {
		return fmt.Errorf("audit: spool ack: %w: batch from another spool", ErrAckMismatch)
	}
	if b.to <= ack {
		return nil
	}
	if b.from > ack || b.to > durable {
		return fmt.Errorf("audit: spool ack [%d, %d): %w: acknowledged up to %d, durable up to %d", b.from, b.to, ErrAckMismatch, ack, durable)
	}
	select {
	case <-s.closing:
		return ErrClosed
	default:
	}
	s.mu.Lock()
	s.ack = b.to
	freesSegment := len(s.segs) > 1 && s.segs[0].start+s.segs[0].count <= s.ack
	s.mu.Unlock()
	if !freesSegment {
		return nil
	}
	// A segment is deleted only after the ack file says it is acknowledged,
	// so that recovery never finds the ack pointing before a missing file.
	if err := writeAck(s.dir, b.to); err != nil {
		return fmt.Errorf("audit: spool ack: %w", err)
	}
	s.ackDisk = b.to
	s.mu.Lock()
	var drop []*segment
	for len(s.segs) > 1 && s.segs[0].start+s.segs[0].count <= s.ack {
		drop = append(drop, s.segs[0])
		s.segs = s.segs[1:]
	}
	s.mu.Unlock()
	for _, sg := range drop {
		if err := os.Remove(sg.path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("audit: spool ack: %w", err)
		}
	}
	return nil
}

// Pending reports how many durable events wait for acknowledgement.
func (s *Spool) Pending() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.durable - s.ack
}

// Close stops accepting events, fsyncs everything written, stops the
// syncer and releases the spool. Close is idempotent.
func (s *Spool) Close() error {
	s.closeOnce.Do(func() {
		close(s.closing)
		s.wmu.Lock()
		s.closed = true
		s.wmu.Unlock()
		close(s.stop)
		<-s.syncerDone
		s.ackMu.Lock()
		s.mu.Lock()
		ack := s.ack
		s.mu.Unlock()
		var ackErr error
		if ack > s.ackDisk {
			if ackErr = writeAck(s.dir, ack); ackErr == nil {
				s.ackDisk = ack
			}
		}
		s.ackMu.Unlock()
		s.rmu.Lock()
		s.rc.close()
		s.rmu.Unlock()
		s.closeErr = s.closeFiles()
		if s.closeErr == nil && ackErr != nil {
			s.closeErr = fmt.Errorf("audit: spool close: ack: %w", ackErr)
		}
		if s.closeErr == nil {
			s.closeErr = s.failure()
		}
	})
	return s.closeErr
}

func (s *Spool) closeFiles() error {
	var errs []error
	if s.active != nil {
		errs = append(errs, s.active.close())
		s.active = nil
	}
	if s.lock != nil {
		errs = append(errs, s.lock.Close())
		s.lock = nil
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("audit: close spool: %w", err)
	}
	return nil
}
