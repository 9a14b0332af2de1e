package sse

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"testing/iotest"
)

// readAll reads every event of stream through a reader made by wrap, and
// returns them with the error that ended the stream.
func readAll(t testing.TB, stream string, max int, wrap func(io.Reader) io.Reader) ([]Event, error) {
	t.Helper()
	r := NewReader(wrap(strings.NewReader(stream)), max)
	var evs []Event
	for range 10000 {
		ev, err := r.Next()
		if err != nil {
			return evs, err
		}
		ev.Raw = bytes.Clone(ev.Raw)
		evs = append(evs, ev)
	}
	t.Fatal("the reader never ended")
	return nil, nil
}

func whole(r io.Reader) io.Reader { return r }

// summary is what a client makes of an event: "name|id|data", or "-" for
// an event it does not dispatch (no data).
func summary(ev Event) string {
	id := "∅"
	if ev.HasID {
		id = ev.ID
	}
	if !ev.HasData {
		return "-" + id
	}
	return ev.Name + "|" + id + "|" + string(ev.Data)
}

func TestReaderParsesEventsAsTheStandardSays(t *testing.T) {
	tests := []struct {
		name, stream string
		want         []string
		end          error
	}{
		{"fields", "id: 1\nevent: message\ndata: {\"a\":1}\n\n", []string{`message|1|{"a":1}`}, io.EOF},
		{"comment only", ": keep-alive\n\n", []string{"-∅"}, io.EOF},
		{"id only", "id: 9\n\n", []string{"-9"}, io.EOF},
		{"empty id", "id\ndata: x\n\n", []string{"||x"}, io.EOF},
		{"data lines joined with LF", "data: {\"b\":\ndata: 2}\n\n", []string{"|∅|{\"b\":\n2}"}, io.EOF},
		{"empty data is data", "data:\n\n", []string{"|∅|"}, io.EOF},
		{"one space dropped", "data:  x\ndata:y\n\n", []string{"|∅| x\ny"}, io.EOF},
		{"no colon: the line is the field name", "data\n\n", []string{"|∅|"}, io.EOF},
		{"CRLF", "data: a\r\ndata: b\r\n\r\n", []string{"|∅|a\nb"}, io.EOF},
		{"lone CR ends lines", "event: x\rdata: {\"hidden\":1}\r\r", []string{"x|∅|{\"hidden\":1}"}, io.EOF},
		{"CR then LF across events", "data: a\r\rdata: b\n\n", []string{"|∅|a", "|∅|b"}, io.EOF},
		{"BOM at the start is ignored", "\xEF\xBB\xBFdata: x\n\n", []string{"|∅|x"}, io.EOF},
		{"BOM later is part of the name", "data: a\n\n\xEF\xBB\xBFdata: x\n\n", []string{"|∅|a", "-∅"}, io.EOF},
		{"id with NUL is ignored", "id: a\x00b\ndata: x\n\n", []string{"|∅|x"}, io.EOF},
		{"unknown fields are ignored", "foo: bar\ndata: x\n\n", []string{"|∅|x"}, io.EOF},
		{"last event and id win", "event: a\nevent: b\nid: 1\nid: 2\ndata: x\n\n", []string{"b|2|x"}, io.EOF},
		{"truncated event", "data: a\n\ndata: tail\n", []string{"|∅|a"}, io.ErrUnexpectedEOF},
		{"truncated line", "data: a\n\ndata: tail", []string{"|∅|a"}, io.ErrUnexpectedEOF},
		{"trailing comment without blank line", "data: a\n\n: c\n", []string{"|∅|a"}, io.ErrUnexpectedEOF},
		{"empty stream", "", nil, io.EOF},
	}
	for _, tt := range tests {
		for _, wrap := range []struct {
			name string
			f    func(io.Reader) io.Reader
		}{{"whole", whole}, {"byte by byte", iotest.OneByteReader}} {
			t.Run(tt.name+"/"+wrap.name, func(t *testing.T) {
				evs, err := readAll(t, tt.stream, 1<<10, wrap.f)
				if !errors.Is(err, tt.end) || (tt.end == io.EOF && errors.Is(err, io.ErrUnexpectedEOF)) {
					t.Errorf("end = %v, want %v", err, tt.end)
				}
				var got []string
				for _, ev := range evs {
					got = append(got, summary(ev))
				}
				if strings.Join(got, ";") != strings.Join(tt.want, ";") {
					t.Errorf("events = %q, want %q", got, tt.want)
				}
			})
		}
	}
}

func TestReaderKeepsEventsByteForByte(t *testing.T) {
	stream := "event: message\nid: 1\ndata: {\"a\":1}\n\n: keep-alive\n\ndata: line1\r\ndata: line2\r\n\r\nretry: 10\rdata: x\r\r\n"
	for _, wrap := range []func(io.Reader) io.Reader{whole, iotest.OneByteReader} {
		evs, err := readAll(t, stream, 1<<10, wrap)
		if err != io.EOF {
			t.Fatalf("end = %v", err)
		}
		var raw bytes.Buffer
		for _, ev := range evs {
			raw.Write(ev.Raw)
		}
		// The LF after the last CR completes its line break; it belongs to
		// no event that was returned.
		if want := strings.TrimSuffix(stream, "\n"); raw.String() != want && raw.String() != stream {
			t.Fatalf("raw = %q, want %q", raw.String(), stream)
		}
	}
}

func TestReaderBoundsEventSize(t *testing.T) {
	for _, stream := range []string{
		"data: " + strings.Repeat("x", 100) + "\n\n",
		"data: a\n" + strings.Repeat(": comment\n", 10) + "\n",
		"data: " + strings.Repeat("x", 100), // never ends
	} {
		r := NewReader(strings.NewReader(stream), 64)
		if _, err := r.Next(); !errors.Is(err, ErrTooLarge) {
			t.Errorf("Next(%.20q...) = %v, want ErrTooLarge", stream, err)
		}
	}
}

func TestRewriteKeepsEventFields(t *testing.T) {
	r := NewReader(strings.NewReader("event: message\n: note\nid: 7\nretry: 5\ndata: old\n\n"), 1<<10)
	ev, err := r.Next()
	if err != nil {
		t.Fatal(err)
	}
	if got := string(ev.Rewrite([]byte("new"))); got != "event: message\nid: 7\nretry: 5\ndata: new\n\n" {
		t.Fatalf("Rewrite = %q", got)
	}
}

func TestEncodedDataReadsBackAsWritten(t *testing.T) {
	for _, data := range []string{"", "{}", "a\nb", "a\r\nb", "a\rb", "\n", " x", "a\n\nb\r"} {
		evs, err := readAll(t, string(Message([]byte(data))), 1<<10, whole)
		if err != io.EOF || len(evs) != 1 {
			t.Fatalf("Message(%q): %d events, %v", data, len(evs), err)
		}
		want := strings.NewReplacer("\r\n", "\n", "\r", "\n").Replace(data)
		if ev := evs[0]; ev.Name != "message" || string(ev.Data) != want {
			t.Errorf("Message(%q) reads back as %q %q, want %q", data, ev.Name, ev.Data, want)
		}
	}
}

// reference parses a whole stream the simplest way the standard allows,
// returning the summaries of its complete events.
func reference(stream string) []string {
	stream = strings.TrimPrefix(stream, "\xEF\xBB\xBF")
	var lines []string
	for {
		i := strings.IndexAny(stream, "\r\n")
		if i < 0 {
			break // an unterminated line ends nothing
		}
		lines = append(lines, stream[:i])
		if stream[i] == '\r' && i+1 < len(stream) && stream[i+1] == '\n' {
			i++
		}
		stream = stream[i+1:]
	}
	var out []string
	var ev Event
	for _, l := range lines {
		if l == "" {
			out = append(out, summary(ev))
			ev = Event{}
			continue
		}
		(&Reader{max: 1 << 30}).field(&ev, []byte(l))
	}
	return out
}

func FuzzSSEReader(f *testing.F) {
	f.Add([]byte("id: 1\ndata: {}\n\n"), uint8(0))
	f.Add([]byte("data: a\r\ndata: b\r\n\r\n:c\n"), uint8(1))
	f.Add([]byte("event: x\rdata: y\r\r\ndata: z\n\n"), uint8(3))
	f.Add([]byte("\xEF\xBB\xBFdata: a\n\n"), uint8(2))
	f.Fuzz(func(t *testing.T, b []byte, chunk uint8) {
		const max = 256
		wrap := whole
		if chunk%4 != 0 {
			wrap = func(r io.Reader) io.Reader { return &chunkReader{r: r, n: int(chunk % 4)} }
		}
		evs, err := readAll(t, string(b), max, wrap)
		var raw []byte
		var got []string
		for _, ev := range evs {
			if len(ev.Raw) > max || len(ev.Data) > max {
				t.Fatalf("event of %d bytes (%d of data) passed a %d-byte bound", len(ev.Raw), len(ev.Data), max)
			}
			raw = append(raw, ev.Raw...)
			got = append(got, summary(ev))
			// What the encoder writes reads back as the same event.
			back, berr := readAll(t, string(ev.Rewrite(ev.Data)), 1<<20, whole)
			if berr != io.EOF || len(back) != 1 || !bytes.Equal(back[0].Data, ev.Data) ||
				back[0].Name != ev.Name || back[0].ID != ev.ID || back[0].HasID != ev.HasID || back[0].Retry != ev.Retry {
				t.Fatalf("event %q rewritten reads back as %+v (%v)", ev.Raw, back, berr)
			}
		}
		// Events pass on byte for byte: together they are the stream read.
		if !bytes.HasPrefix(b, raw) {
			t.Fatalf("raw bytes %q are not the start of the stream %q", raw, b)
		}
		if errors.Is(err, ErrTooLarge) {
			return
		}
		// Within the bound, the streaming reader splits as a whole-input
		// reading of the standard does, however the bytes arrive.
		if want := reference(string(b)); strings.Join(got, "\x00") != strings.Join(want, "\x00") {
			t.Fatalf("events %q, reference %q (end %v)", got, want, err)
		}
	})
}

// chunkReader returns at most n bytes per Read.
type chunkReader struct {
	r io.Reader
	n int
}

func (c *chunkReader) Read(p []byte) (int, error) {
	if len(p) > c.n {
		p = p[:c.n]
	}
	return c.r.Read(p)
}

func ExampleReader() {
	r := NewReader(strings.NewReader(": keep-alive\n\nid: 1\nevent: message\ndata: {\"jsonrpc\":\"2.0\"}\n\n"), 1<<20)
	for {
		ev, err := r.Next()
		if err != nil {
			fmt.Println(err)
			return
		}
		if ev.HasData {
			fmt.Printf("%s id=%s %s\n", ev.Name, ev.ID, ev.Data)
		}
	}
	// Output:
	// message id=1 {"jsonrpc":"2.0"}
	// EOF
}
