package spool

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/agentmesh/agentmesh/internal/audit"
	"github.com/agentmesh/agentmesh/internal/durable"
)

// A spool record is an 8-byte header followed by the event's canonical
// encoding:
//
//	uint32be length of the payload
//	uint32be CRC-32C of the length bytes and the payload
//
// The CRC covers the length, so a torn or zero-filled header is never
// mistaken for a record.
const recordHeader = 8

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// sealRecord fills in the header of rec, whose payload starts at
// recordHeader.
func sealRecord(rec []byte) {
	binary.BigEndian.PutUint32(rec[0:4], uint32(len(rec)-recordHeader))
	crc := crc32.Update(0, castagnoli, rec[0:4])
	crc = crc32.Update(crc, castagnoli, rec[recordHeader:])
	binary.BigEndian.PutUint32(rec[4:8], crc)
}

// errBadRecord marks a record that is torn, truncated or fails its CRC.
var errBadRecord = errors.New("bad record")

// readRecord reads one record from r into buf (grown as needed) and returns
// the payload. It returns io.EOF at a clean end and errBadRecord for a
// partial or damaged record.
func readRecord(r io.Reader, buf []byte) ([]byte, error) {
	var h [recordHeader]byte
	if n, err := io.ReadFull(r, h[:]); err != nil {
		if err == io.EOF && n == 0 {
			return nil, io.EOF
		}
		if err == io.ErrUnexpectedEOF {
			return nil, errBadRecord
		}
		return nil, err
	}
	n := binary.BigEndian.Uint32(h[0:4])
	if n == 0 || n > audit.MaxEventSize {
		return nil, errBadRecord
	}
	buf = slices.Grow(buf[:0], int(n))[:n]
	if _, err := io.ReadFull(r, buf); err != nil {
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			return nil, errBadRecord
		}
		return nil, err
	}
	crc := crc32.Update(0, castagnoli, h[0:4])
	crc = crc32.Update(crc, castagnoli, buf)
	if crc != binary.BigEndian.Uint32(h[4:8]) {
		return nil, errBadRecord
	}
	return buf, nil
}

// segment is one spool file. count and size cover every record written to
// it (readers stop at the spool's durable position).
type segment struct {
	path  string
	start uint64 // spool position of the first record
	count uint64
	size  int64
}

const (
	segPrefix = "seg-"
	segSuffix = ".log"
	ackFile   = "ack"
)

func segmentPath(dir string, start uint64) string {
	return filepath.Join(dir, fmt.Sprintf("%s%020d%s", segPrefix, start, segSuffix))
}

// listSegments returns dir's segments ordered by start, not yet scanned.
func listSegments(dir string) ([]*segment, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var segs []*segment
	for _, e := range ents {
		name := e.Name()
		if !strings.HasPrefix(name, segPrefix) || !strings.HasSuffix(name, segSuffix) {
			continue
		}
		start, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimPrefix(name, segPrefix), segSuffix), 10, 64)
		if err != nil {
			return nil, fmt.Errorf("%w: unexpected file %s", ErrCorrupt, name)
		}
		segs = append(segs, &segment{path: filepath.Join(dir, name), start: start})
	}
	slices.SortFunc(segs, func(a, b *segment) int {
		switch {
		case a.start < b.start:
			return -1
		case a.start > b.start:
			return 1
		}
		return 0
	})
	return segs, nil
}

// scan counts the segment's records. In the newest segment (tail) a bad
// record is a write that a crash interrupted before it was reported
// durable: the file is truncated there. Anywhere else it is corruption.
func (sg *segment) scan(tail bool) error {
	f, err := os.OpenFile(sg.path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	r := bufio.NewReaderSize(f, 256<<10)
	var buf []byte
	for {
		p, err := readRecord(r, buf)
		if err == io.EOF {
			return nil
		}
		if errors.Is(err, errBadRecord) {
			if !tail {
				return fmt.Errorf("%w: %s: damaged record %d at byte %d", ErrCorrupt, filepath.Base(sg.path), sg.count, sg.size)
			}
			if err := f.Truncate(sg.size); err != nil {
				return fmt.Errorf("truncate torn tail of %s: %w", filepath.Base(sg.path), err)
			}
			return f.Sync()
		}
		if err != nil {
			return err
		}
		buf = p
		sg.count++
		sg.size += int64(recordHeader + len(p))
	}
}

// createSegment creates an empty segment starting at start, makes its
// directory entry durable and opens it as the active file with room for
// prealloc bytes.
func createSegment(dir string, start uint64, prealloc int64) (*segment, *activeFile, error) {
	path := segmentPath(dir, start)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, nil, err
	}
	if err := durable.SyncDir(dir); err != nil {
		f.Close()
		return nil, nil, err
	}
	return &segment{path: path, start: start}, newActive(f, 0, prealloc), nil
}

// The ack file holds one line: ackMagic, a space, the position after the
// last acknowledged record.
const ackMagic = "agentmesh-audit-spool-ack-v1"

func readAck(path string) (uint64, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	rest, ok := strings.CutPrefix(string(b), ackMagic+" ")
	rest, nl := strings.CutSuffix(rest, "\n")
	if !ok || !nl {
		return 0, fmt.Errorf("%w: ack file %s is malformed", ErrCorrupt, path)
	}
	n, err := strconv.ParseUint(rest, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%w: ack file %s is malformed", ErrCorrupt, path)
	}
	return n, nil
}

// writeAck replaces the ack file atomically (durable.WriteFile): a crash
// leaves the old position or the new one.
func writeAck(dir string, pos uint64) error {
	return durable.WriteFile(filepath.Join(dir, ackFile), fmt.Appendf(nil, "%s %d\n", ackMagic, pos), 0o600, true)
}

// readCursor remembers where the last Next stopped reading, so sequential
// reads do not rescan a segment from its start.
type readCursor struct {
	f     *os.File
	src   *boundedReader // reads f
	r     *bufio.Reader  // buffers src
	path  string
	pos   uint64 // spool position of the next record r returns
	limit uint64 // end position of the segment f belongs to, when read
	buf   []byte
}

// boundedReader reads f sequentially up to limit bytes, the end of the
// records written to it: the active segment's blocks beyond them are
// allocated ahead and will be written later, so read-ahead must not buffer
// them. Raising limit makes the following reads go on.
type boundedReader struct {
	f          *os.File
	off, limit int64
}

func (b *boundedReader) Read(p []byte) (int, error) {
	if b.off >= b.limit {
		return 0, io.EOF
	}
	p = p[:min(int64(len(p)), b.limit-b.off)]
	n, err := b.f.ReadAt(p, b.off)
	b.off += int64(n)
	if err == io.EOF && n > 0 {
		err = nil
	}
	return n, err
}

func (c *readCursor) close() {
	if c.f != nil {
		c.f.Close()
	}
	*c = readCursor{buf: c.buf}
}

// read returns the durable, unacknowledged events from the ack pointer on,
// at most max of them and about MaxBatchBytes. s.rmu must be held.
func (s *Spool) read(max int) (Batch, error) {
	s.mu.Lock()
	from, durable := s.ack, s.durable
	segs := make([]segment, len(s.segs))
	for i, sg := range s.segs {
		segs[i] = *sg
	}
	s.mu.Unlock()
	to := min(durable, from+uint64(max))
	b := Batch{spool: s, from: from, to: from}
	bytes := 0
	for pos := from; pos < to; pos++ {
		payload, err := s.recordAt(segs, pos)
		if err != nil {
			s.rc.close()
			return Batch{}, fmt.Errorf("audit: spool read at %d: %w", pos, err)
		}
		if bytes > 0 && bytes+len(payload) > s.opts.MaxBatchBytes {
			break
		}
		e, err := audit.DecodeEvent(payload)
		if err != nil {
			s.rc.close()
			return Batch{}, fmt.Errorf("audit: spool read at %d: %w: %w", pos, ErrCorrupt, err)
		}
		b.Events = append(b.Events, e)
		b.to = pos + 1
		bytes += len(payload)
	}
	return b, nil
}

// recordAt returns the payload at pos (valid until the next call), moving
// the cursor there; sequential positions cost one record read each.
func (s *Spool) recordAt(segs []segment, pos uint64) ([]byte, error) {
	c := &s.rc
	if c.f == nil || c.pos != pos || pos >= c.limit {
		i, ok := slices.BinarySearchFunc(segs, pos, func(sg segment, p uint64) int {
			switch {
			case sg.start+sg.count <= p:
				return -1
			case sg.start > p:
				return 1
			}
			return 0
		})
		if !ok {
			return nil, fmt.Errorf("%w: no segment holds record %d", ErrCorrupt, pos)
		}
		sg := segs[i]
		if c.f == nil || c.path != sg.path || c.pos > pos {
			c.close()
			f, err := os.Open(sg.path)
			if err != nil {
				return nil, err
			}
			c.f, c.path, c.pos = f, sg.path, sg.start
			c.src = &boundedReader{f: f}
			c.r = bufio.NewReaderSize(c.src, 256<<10)
		}
		c.limit = sg.start + sg.count
		c.src.limit = sg.size
		for c.pos < pos {
			if _, err := s.nextRecord(); err != nil {
				return nil, err
			}
		}
	}
	return s.nextRecord()
}

func (s *Spool) nextRecord() ([]byte, error) {
	c := &s.rc
	p, err := readRecord(c.r, c.buf)
	if err != nil {
		if err == io.EOF || errors.Is(err, errBadRecord) {
			err = fmt.Errorf("%w: %s: record %d unreadable", ErrCorrupt, filepath.Base(c.path), c.pos)
		}
		return nil, err
	}
	c.buf = p
	c.pos++
	return p, nil
}
