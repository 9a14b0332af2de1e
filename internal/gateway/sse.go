package gateway

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net/http"
	"sync"
)

// errEventTooLarge: an upstream SSE event exceeded the parse bound.
var errEventTooLarge = errors.New("SSE event too large")

// sseEvent is one Server-Sent Event as read: raw holds its lines exactly as
// received (so unmodified events pass through byte for byte), data the
// joined data field.
type sseEvent struct {
	raw  []byte
	data []byte
}

// eventReader splits an SSE stream into events.
type eventReader struct {
	br  *bufio.Reader
	max int
	raw []byte
}

func newEventReader(r io.Reader, max int64) *eventReader {
	// A small buffer: a session's standalone stream holds its reader for
	// as long as it is open, mostly idle; longer lines are assembled by
	// readLine.
	return &eventReader{br: bufio.NewReaderSize(r, 4<<10), max: int(max)}
}

// next returns the next complete event. Comment-only and empty events are
// returned too (raw only), so that keep-alives pass through.
func (er *eventReader) next() (sseEvent, error) {
	er.raw = er.raw[:0]
	var data []byte
	hasData := false
	for {
		line, err := er.readLine()
		if err != nil {
			if len(er.raw) > 0 && errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return sseEvent{}, err
		}
		er.raw = append(er.raw, line...)
		l := bytes.TrimRight(line, "\r\n")
		if len(l) == 0 {
			ev := sseEvent{raw: er.raw}
			if hasData {
				ev.data = data
			}
			return ev, nil
		}
		field, value, _ := bytes.Cut(l, []byte(":"))
		if string(field) == "data" {
			value = bytes.TrimPrefix(value, []byte(" "))
			if hasData {
				data = append(data, '\n')
			}
			data = append(data, value...)
			hasData = true
		}
	}
}

func (er *eventReader) readLine() ([]byte, error) {
	var out []byte
	for {
		frag, err := er.br.ReadSlice('\n')
		if len(er.raw)+len(out)+len(frag) > er.max {
			return nil, errEventTooLarge
		}
		if err == nil {
			if out == nil {
				return frag, nil
			}
			return append(out, frag...), nil
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			out = append(out, frag...)
			continue
		}
		return nil, err
	}
}

// rebuild returns ev with its data replaced by data, other fields (id,
// event, retry) kept.
func (ev sseEvent) rebuild(data []byte) []byte {
	var out []byte
	for line := range bytes.Lines(ev.raw) {
		l := bytes.TrimRight(line, "\r\n")
		if len(l) == 0 || bytes.HasPrefix(l, []byte("data")) {
			continue
		}
		out = append(out, l...)
		out = append(out, '\n')
	}
	out = append(out, "data: "...)
	out = append(out, data...)
	return append(out, '\n', '\n')
}

// eventBytes frames one JSON-RPC message as an SSE event.
func eventBytes(data []byte) []byte {
	out := make([]byte, 0, len(data)+24)
	out = append(out, "event: message\ndata: "...)
	out = append(out, data...)
	return append(out, '\n', '\n')
}

// flushWriter serialises writes to a streaming response and flushes each.
type flushWriter struct {
	mu  sync.Mutex
	w   http.ResponseWriter
	rc  *http.ResponseController
	err error
}

func newFlushWriter(w http.ResponseWriter) *flushWriter {
	return &flushWriter{w: w, rc: http.NewResponseController(w)}
}

func (f *flushWriter) write(p []byte) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return f.err
	}
	if _, err := f.w.Write(p); err != nil {
		f.err = err
		return err
	}
	if err := f.rc.Flush(); err != nil {
		f.err = err
	}
	return f.err
}
