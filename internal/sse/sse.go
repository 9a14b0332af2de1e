// Package sse reads and writes Server-Sent Events (the text/event-stream
// format of the WHATWG HTML standard, §9.2), the stream format of MCP's
// Streamable HTTP transport and of streamed model answers. It is the one
// SSE reader of agentmesh: the gateway reads upstream streams with it to
// filter the lists inside events, and the connector reads gateway streams
// with it to relay messages to the agent.
//
// A [Reader] splits a stream into events and keeps each event's bytes as
// they arrived ([Event.Raw]), so that an event nobody needs to change
// passes on byte for byte; [Event.Rewrite] and [Message] encode the events
// agentmesh writes itself.
//
// # Threat model
//
// The gateway passes through untouched every event it does not need to
// filter and relies on this reader to find the data a client will see. A
// reader that splits a stream differently from the client's parser is a
// policy bypass: an upstream that ends lines with a lone CR, or starts the
// stream with a byte order mark, could otherwise hide a data line from the
// gateway (which would then pass the event on unfiltered) that the client
// reads. The reader therefore follows the standard's parsing rules exactly:
// lines end in CRLF, LF or a lone CR; a UTF-8 byte order mark at the very
// start is ignored; a line starting with a colon is a comment; a field name
// ends at the first colon and one space after it is dropped; data lines are
// joined with LF; an id containing NUL is ignored; retry must be all ASCII
// digits. The encoder splits data on every line break the reader
// recognises, so what it writes reads back as the data it was given.
//
// Events are bounded ([NewReader]'s max): a stream cannot make a reader
// hold more than one event of max bytes.
package sse

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
)

// ErrTooLarge is returned by [Reader.Next] for an event of more bytes than
// the reader's bound.
var ErrTooLarge = errors.New("sse: event too large")

// Event is one event: the lines up to and including the blank line that
// ends it.
type Event struct {
	// Raw is the event exactly as read, comments and line terminators
	// included. It is only valid until the next call to Next.
	Raw []byte
	// Name is the last event field; "" means "message".
	Name string
	// Data is the event's data lines joined with LF, and HasData reports
	// whether there was at least one data line (possibly empty). A client
	// dispatches only events with data.
	Data    []byte
	HasData bool
	// ID is the last valid id field, and HasID reports whether there was
	// one (an empty id resets a client's last event id).
	ID    string
	HasID bool
	// Retry is the last valid retry field (ASCII digits), "" if none.
	Retry string
}

// bom is the UTF-8 byte order mark, which a client ignores at the start of
// a stream.
var bom = []byte("\xEF\xBB\xBF")

// Reader splits a text/event-stream into events.
type Reader struct {
	br  *bufio.Reader
	max int
	raw []byte
	// skipLF: the last line ended with a CR whose LF (if any) had not
	// arrived yet; an LF that comes next completes that line break.
	skipLF bool
	// started: a line was read already, so a BOM is no longer special.
	started bool
}

// NewReader returns a Reader of r that refuses events of more than max
// bytes (line terminators and comments included). Its buffer is small: a
// stream that stays open mostly idle holds it for as long as it is open,
// and longer lines are assembled as they come.
func NewReader(r io.Reader, max int) *Reader {
	return &Reader{br: bufio.NewReaderSize(r, 4<<10), max: max}
}

// Next returns the next event, including events a client would not
// dispatch (comments only, an id only), so that they can be passed on.
// It returns io.EOF when the stream ended between events, and
// io.ErrUnexpectedEOF when it ended inside one (an event whose blank line
// never came is never returned), ErrTooLarge for an event over the bound,
// and the underlying reader's other errors as they are.
func (r *Reader) Next() (Event, error) {
	r.raw = r.raw[:0]
	var ev Event
	for lines := 0; ; lines++ {
		line, err := r.readLine()
		if err != nil {
			if errors.Is(err, io.EOF) && lines > 0 {
				err = io.ErrUnexpectedEOF
			}
			return Event{}, err
		}
		if len(line) == 0 {
			ev.Raw = r.raw
			return ev, nil
		}
		if err := r.field(&ev, line); err != nil {
			return Event{}, err
		}
	}
}

// field applies one non-empty line to ev.
func (r *Reader) field(ev *Event, line []byte) error {
	if line[0] == ':' {
		return nil // a comment, such as a keep-alive
	}
	name, value, _ := bytes.Cut(line, []byte(":"))
	value = bytes.TrimPrefix(value, []byte(" "))
	switch string(name) {
	case "event":
		ev.Name = string(value)
	case "data":
		if len(ev.Data)+len(value)+1 > r.max {
			return fmt.Errorf("%w (%d bytes)", ErrTooLarge, r.max)
		}
		if ev.HasData {
			ev.Data = append(ev.Data, '\n')
		}
		ev.Data = append(ev.Data, value...)
		ev.HasData = true
	case "id":
		if bytes.IndexByte(value, 0) < 0 {
			ev.ID, ev.HasID = string(value), true
		}
	case "retry":
		if len(value) > 0 && allDigits(value) {
			ev.Retry = string(value)
		}
	}
	return nil
}

func allDigits(b []byte) bool {
	for _, c := range b {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// readLine reads the next line, appends it with its terminator to r.raw
// and returns it without the terminator (a slice of r.raw, valid until
// the next call). A final line without a terminator is an
// io.ErrUnexpectedEOF.
func (r *Reader) readLine() ([]byte, error) {
	if r.skipLF {
		r.skipLF = false
		b, err := r.br.Peek(1)
		if err != nil {
			return nil, err
		}
		if b[0] == '\n' {
			r.br.Discard(1)
			if err := r.keep([]byte{'\n'}); err != nil {
				return nil, err
			}
		}
	}
	start := len(r.raw)
	for {
		if r.br.Buffered() == 0 {
			if _, err := r.br.Peek(1); err != nil {
				if errors.Is(err, io.EOF) && len(r.raw) > start {
					return nil, io.ErrUnexpectedEOF
				}
				return nil, err
			}
		}
		buf, _ := r.br.Peek(r.br.Buffered())
		end := bytes.IndexByte(buf, '\n')
		search := buf
		if end >= 0 {
			search = buf[:end]
		}
		if i := bytes.IndexByte(search, '\r'); i >= 0 {
			end = i
		}
		if end < 0 {
			if err := r.keep(buf); err != nil {
				return nil, err
			}
			r.br.Discard(len(buf))
			continue
		}
		if err := r.keep(buf[:end+1]); err != nil {
			return nil, err
		}
		r.br.Discard(end + 1)
		lineEnd := len(r.raw) - 1
		if buf[end] == '\r' {
			// CRLF is one line break, a lone CR another: look at what is
			// already here, and leave the rest to the next line.
			if r.br.Buffered() > 0 {
				if b, _ := r.br.Peek(1); b[0] == '\n' {
					r.br.Discard(1)
					if err := r.keep([]byte{'\n'}); err != nil {
						return nil, err
					}
				}
			} else {
				r.skipLF = true
			}
		}
		line := r.raw[start:lineEnd]
		if !r.started {
			r.started = true
			line = bytes.TrimPrefix(line, bom)
		}
		return line, nil
	}
}

// keep appends b to the event's raw bytes within the bound.
func (r *Reader) keep(b []byte) error {
	if len(r.raw)+len(b) > r.max {
		return fmt.Errorf("%w (%d bytes)", ErrTooLarge, r.max)
	}
	r.raw = append(r.raw, b...)
	return nil
}

// Rewrite returns ev encoded with data in place of its data: its name, id
// and retry are kept, its comments are not.
func (ev Event) Rewrite(data []byte) []byte {
	out := make([]byte, 0, len(data)+len(ev.Name)+len(ev.ID)+32)
	if ev.Name != "" {
		out = appendField(out, "event", []byte(ev.Name))
	}
	if ev.HasID {
		out = appendField(out, "id", []byte(ev.ID))
	}
	if ev.Retry != "" {
		out = appendField(out, "retry", []byte(ev.Retry))
	}
	return appendData(out, data)
}

// Message returns data framed as one event named message, as MCP sends
// JSON-RPC messages on a stream.
func Message(data []byte) []byte {
	out := make([]byte, 0, len(data)+24)
	out = appendField(out, "event", []byte("message"))
	return appendData(out, data)
}

// appendData appends data as data lines, one per line of data (split as the
// reader splits lines), and the blank line that ends the event.
func appendData(out, data []byte) []byte {
	for {
		i := bytes.IndexAny(data, "\r\n")
		if i < 0 {
			out = appendField(out, "data", data)
			return append(out, '\n')
		}
		out = appendField(out, "data", data[:i])
		if data[i] == '\r' && i+1 < len(data) && data[i+1] == '\n' {
			i++
		}
		data = data[i+1:]
	}
}

// appendField appends one "name: value" line. Values never hold a line
// break: names and ids come from the reader, which splits at them.
func appendField(out []byte, name string, value []byte) []byte {
	out = append(out, name...)
	out = append(out, ": "...)
	out = append(out, value...)
	return append(out, '\n')
}
