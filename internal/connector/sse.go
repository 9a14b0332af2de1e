package connector

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
)

// sseEvent is one server-sent event.
type sseEvent struct {
	name string // "" means "message"
	data []byte
	id   string
	// hasID reports whether the event carried an id field (possibly empty,
	// which resets the last event id).
	hasID bool
}

// sseReader parses a text/event-stream body (the WHATWG event stream format)
// with a bound on the size of one event.
type sseReader struct {
	br   *bufio.Reader
	max  int
	line []byte
}

func newSSEReader(r io.Reader, max int) *sseReader {
	return &sseReader{br: bufio.NewReaderSize(r, 16<<10), max: max}
}

// errEventTooLarge is returned when an event exceeds the reader's bound.
var errEventTooLarge = errors.New("sse event too large")

// readLine returns the next line without its terminator. The slice is only
// valid until the next call.
func (r *sseReader) readLine() ([]byte, error) {
	r.line = r.line[:0]
	for {
		frag, err := r.br.ReadSlice('\n')
		if len(r.line)+len(frag) > r.max {
			return nil, errEventTooLarge
		}
		if err == bufio.ErrBufferFull {
			r.line = append(r.line, frag...)
			continue
		}
		if err != nil {
			if err == io.EOF && len(frag)+len(r.line) > 0 {
				// A final line without terminator is not dispatched.
				return nil, io.ErrUnexpectedEOF
			}
			return nil, err
		}
		var line []byte
		if len(r.line) == 0 {
			line = frag
		} else {
			r.line = append(r.line, frag...)
			line = r.line
		}
		line = line[:len(line)-1]
		if n := len(line); n > 0 && line[n-1] == '\r' {
			line = line[:n-1]
		}
		return line, nil
	}
}

// next returns the next event that has data. io.EOF means the stream ended
// cleanly between events.
func (r *sseReader) next() (sseEvent, error) {
	var ev sseEvent
	var data []byte
	dataLines := 0
	for {
		line, err := r.readLine()
		if err != nil {
			if err == io.EOF && (dataLines > 0 || ev.hasID || ev.name != "") {
				err = io.ErrUnexpectedEOF // the stream ended inside an event
			}
			return sseEvent{}, err
		}
		if len(line) == 0 {
			if dataLines == 0 {
				// An event without data (a priming event may carry only an
				// id) is not dispatched, but its id still counts.
				if ev.hasID {
					return ev, nil
				}
				ev = sseEvent{}
				continue
			}
			ev.data = data
			return ev, nil
		}
		if line[0] == ':' {
			continue // comment, e.g. keep-alive
		}
		field, value, _ := bytes.Cut(line, []byte(":"))
		value = bytes.TrimPrefix(value, []byte(" "))
		switch string(field) {
		case "event":
			ev.name = string(value)
		case "data":
			if len(data)+len(value)+1 > r.max {
				return sseEvent{}, fmt.Errorf("%w (%d bytes)", errEventTooLarge, r.max)
			}
			if dataLines > 0 {
				data = append(data, '\n')
			}
			data = append(data, value...)
			dataLines++
		case "id":
			if bytes.IndexByte(value, 0) < 0 {
				ev.id = string(value)
				ev.hasID = true
			}
		}
	}
}
