package audit

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
)

// SpoolOptions configures a Spool. The zero value is usable.
type SpoolOptions struct {
	// QueueSize is how many events may wait for the writer; Append blocks
	// when the queue is full. Zero means 1024. With MaxEventSize events the
	// queue holds at most QueueSize*64 KiB of memory.
	QueueSize int
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

	// beforeCommit, when set, runs in the writer goroutine before each
	// group commit. Tests use it to hold the writer.
	beforeCommit func()
}

// Spool is a gateway's durable, append-only queue of audit events waiting
// to be shipped to the coordinator. See the package documentation for its
// guarantees. Open starts its writer goroutine and Close stops it; all
// methods are safe for concurrent use.
type Spool struct {
	dir  string
	opts SpoolOptions
	log  *slog.Logger
	lock *os.File // holds the directory lock for the spool's lifetime

	queue      chan pending
	closing    chan struct{} // closed first by Close: unblocks waiting callers
	stop       chan struct{} // closed by Close once no send can happen: writer drains and exits
	writerDone chan struct{}
	closeOnce  sync.Once
	closeErr   error

	// gate makes Close wait for Appends that are sending on queue, so the
	// writer's final drain sees every event whose Append returned nil.
	gate   sync.RWMutex
	closed bool

	mu      sync.Mutex
	segs    []*segment // ordered by start; the last one is active
	durable uint64     // position after the last fsynced record
	ack     uint64     // position after the last acknowledged record
	failed  error      // sticky writer failure
	changed chan struct{}

	// Owned by the writer goroutine.
	active *os.File
	wbuf   []byte

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

// pending is one item on the writer's queue: an encoded record, or a flush
// barrier (rec nil). done, if not nil, receives the commit's outcome.
type pending struct {
	rec  []byte
	done chan error
}

// Batch is a run of consecutive spooled events returned by Next. Pass it to
// Ack once the coordinator has stored it.
type Batch struct {
	// Events are the spooled events, oldest first.
	Events []Event

	spool    *Spool
	from, to uint64 // spool positions [from, to)
}

// OpenSpool opens (creating if needed) the spool in dir, repairs a torn
// tail left by a crash, deletes acknowledged segments and starts the writer.
// Only one process may have a spool open; a second OpenSpool fails.
func OpenSpool(dir string, opts SpoolOptions) (*Spool, error) {
	if opts.QueueSize <= 0 {
		opts.QueueSize = 1024
	}
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
		queue:      make(chan pending, opts.QueueSize),
		closing:    make(chan struct{}),
		stop:       make(chan struct{}),
		writerDone: make(chan struct{}),
		changed:    make(chan struct{}),
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("audit: open spool: %w", err)
	}
	lock, err := lockDir(filepath.Join(dir, "lock"))
	if err != nil {
		return nil, fmt.Errorf("audit: open spool %s: %w", dir, err)
	}
	s.lock = lock
	if err := s.recover(); err != nil {
		s.closeFiles()
		return nil, fmt.Errorf("audit: open spool %s: %w", dir, err)
	}
	go s.writeLoop()
	return s, nil
}

// recover reads the ack pointer and the segments, truncates a torn tail,
// deletes acknowledged segments and opens the active segment for writing.
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
		sg, f, err := createSegment(s.dir, ack)
		if err != nil {
			return err
		}
		s.segs, s.active = []*segment{sg}, f
		s.durable, s.ack, s.ackDisk = ack, ack, ack
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
	f, err := os.OpenFile(last.path, os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	s.segs, s.active = segs, f
	s.durable, s.ack, s.ackDisk = end, ack, ack
	return nil
}

// Append validates e and queues it for the next group commit. It returns
// once the event is queued, before it is on disk; it waits while the queue
// is full, until ctx is done. See AppendSync and Flush for durability.
func (s *Spool) Append(ctx context.Context, e *Event) error {
	rec, err := encodeRecord(e)
	if err != nil {
		return err
	}
	return s.enqueue(ctx, pending{rec: rec})
}

// AppendSync is Append, then waits until the event is fsynced. If ctx ends
// first it returns ctx's error; the event may still become durable.
func (s *Spool) AppendSync(ctx context.Context, e *Event) error {
	rec, err := encodeRecord(e)
	if err != nil {
		return err
	}
	return s.wait(ctx, pending{rec: rec, done: make(chan error, 1)})
}

// Flush waits until every event whose Append returned before Flush was
// called is fsynced.
func (s *Spool) Flush(ctx context.Context) error {
	return s.wait(ctx, pending{done: make(chan error, 1)})
}

func (s *Spool) wait(ctx context.Context, p pending) error {
	if err := s.enqueue(ctx, p); err != nil {
		return err
	}
	select {
	case err := <-p.done:
		return err
	case <-ctx.Done():
		return fmt.Errorf("audit: spool: %w", ctx.Err())
	}
}

func (s *Spool) enqueue(ctx context.Context, p pending) error {
	s.gate.RLock()
	defer s.gate.RUnlock()
	if s.closed {
		return ErrClosed
	}
	if err := s.failure(); err != nil {
		return err
	}
	select {
	case s.queue <- p:
		return nil
	case <-s.closing:
		return ErrClosed
	case <-ctx.Done():
		return fmt.Errorf("audit: spool append: %w", ctx.Err())
	}
}

func (s *Spool) failure() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.failed
}

// encodeRecord validates e and returns its spool record: header, then the
// canonical encoding.
func encodeRecord(e *Event) ([]byte, error) {
	if p := e.problem(); p != "" {
		return nil, fmt.Errorf("audit: spool append %.40q: %w: %s", e.ID, ErrInvalidEvent, p)
	}
	rec, err := appendCanonical(make([]byte, recordHeader, recordHeader+512), e)
	if err != nil {
		return nil, fmt.Errorf("audit: spool append %.40q: %w: %w", e.ID, ErrInvalidEvent, err)
	}
	if len(rec)-recordHeader > MaxEventSize {
		return nil, fmt.Errorf("audit: spool append %s: %w: %d bytes encoded, limit %d", e.ID, ErrInvalidEvent, len(rec)-recordHeader, MaxEventSize)
	}
	sealRecord(rec)
	return rec, nil
}

// writeLoop is the writer goroutine: it takes whatever is queued, commits
// it, and repeats. After stop it drains the queue and exits.
func (s *Spool) writeLoop() {
	defer close(s.writerDone)
	batch := make([]pending, 0, 256)
	for {
		var p pending
		stopping := false
		select {
		case p = <-s.queue:
		case <-s.stop:
			stopping = true
		}
		batch = batch[:0]
		if !stopping {
			batch = append(batch, p)
		}
		size := len(p.rec)
	drain:
		for size < maxCommitBytes {
			select {
			case p := <-s.queue:
				batch = append(batch, p)
				size += len(p.rec)
			default:
				break drain
			}
		}
		if len(batch) > 0 {
			s.commit(batch)
		}
		if stopping && len(s.queue) == 0 {
			return
		}
	}
}

// maxCommitBytes bounds one group commit, so a deep queue of large events
// is written in steps rather than one huge buffer.
const maxCommitBytes = 4 << 20

// commit writes the batch's records to the active segment (rotating when it
// is full), fsyncs, publishes the new durable position and answers waiters.
func (s *Spool) commit(batch []pending) {
	err := s.failure()
	if err == nil {
		if h := s.opts.beforeCommit; h != nil {
			h()
		}
		err = s.writeBatch(batch)
		if err != nil {
			err = fmt.Errorf("audit: spool write: %w", err)
			s.log.Error("audit: spool write failed; refusing further events", "err", err)
			s.mu.Lock()
			s.failed = err
			s.notifyLocked()
			s.mu.Unlock()
		}
	}
	for _, p := range batch {
		if p.done != nil {
			p.done <- err
		}
	}
}

func (s *Spool) writeBatch(batch []pending) error {
	s.mu.Lock()
	cur := s.segs[len(s.segs)-1]
	s.mu.Unlock()
	size, n := cur.size, uint64(0) // bytes and records of cur including what is buffered
	buf := s.wbuf[:0]
	for _, p := range batch {
		if p.rec == nil {
			continue
		}
		if size > 0 && size+int64(len(p.rec)) > s.opts.SegmentSize {
			if err := s.syncActive(cur, buf, n); err != nil {
				return err
			}
			next, f, err := createSegment(s.dir, cur.start+cur.count)
			if err != nil {
				return err
			}
			if err := s.active.Close(); err != nil {
				return err
			}
			s.active = f
			s.mu.Lock()
			s.segs = append(s.segs, next)
			s.mu.Unlock()
			cur, size, n, buf = next, 0, 0, buf[:0]
		}
		buf = append(buf, p.rec...)
		size += int64(len(p.rec))
		n++
	}
	err := s.syncActive(cur, buf, n)
	if cap(buf) <= maxCommitBytes+MaxEventSize {
		s.wbuf = buf[:0]
	}
	return err
}

// syncActive writes buf (n records) to the active segment, fsyncs it and
// publishes the records.
func (s *Spool) syncActive(cur *segment, buf []byte, n uint64) error {
	if n == 0 {
		return nil
	}
	if _, err := s.active.Write(buf); err != nil {
		return err
	}
	if err := s.active.Sync(); err != nil {
		return err
	}
	s.mu.Lock()
	cur.count += n
	cur.size += int64(len(buf))
	s.durable += n
	s.notifyLocked()
	s.mu.Unlock()
	return nil
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
	for {
		s.mu.Lock()
		ack, durable, failed, changed := s.ack, s.durable, s.failed, s.changed
		s.mu.Unlock()
		select {
		case <-s.closing:
			return Batch{}, ErrClosed
		default:
		}
		if durable > ack {
			break
		}
		if failed != nil {
			return Batch{}, failed
		}
		select {
		case <-changed:
		case <-s.closing:
			return Batch{}, ErrClosed
		case <-ctx.Done():
			return Batch{}, fmt.Errorf("audit: spool next: %w", ctx.Err())
		}
	}
	s.rmu.Lock()
	defer s.rmu.Unlock()
	return s.read(max)
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

// Close stops accepting events, writes and fsyncs everything already
// queued, stops the writer and releases the spool. Appends waiting on a
// full queue return ErrClosed. Close is idempotent.
func (s *Spool) Close() error {
	s.closeOnce.Do(func() {
		close(s.closing)
		s.gate.Lock()
		s.closed = true
		s.gate.Unlock()
		close(s.stop)
		<-s.writerDone
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
		errs = append(errs, s.active.Close())
		s.active = nil
	}
	if s.lock != nil {
		errs = append(errs, unlockDir(s.lock))
		s.lock = nil
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("audit: close spool: %w", err)
	}
	return nil
}
