package budget

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// readResult is what a test handler saw of one Read.
type readResult struct {
	n     int
	lease int64
	err   error
	// cancelled: the request's context ended after the body was read
	// (the read deadline outlived the body).
	cancelled bool
}

// bodyServer serves a handler that reads each body with br as peer "p" and
// reports what it got on the returned channel. With hold set, the handler
// keeps the request open (watching its context) for hold after the body.
func bodyServer(t *testing.T, br *BodyReader, h2 bool, hold time.Duration) (*httptest.Server, <-chan readResult) {
	t.Helper()
	results := make(chan readResult, 16)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, lease, err := br.Read(w, r, "p")
		res := readResult{n: len(b), lease: lease.Size(), err: err}
		if err == nil && hold > 0 {
			w.WriteHeader(http.StatusOK)
			http.NewResponseController(w).Flush()
			select {
			case <-r.Context().Done():
				res.cancelled = true
			case <-time.After(hold):
			}
		}
		lease.Release()
		results <- res
		if err != nil {
			w.WriteHeader(http.StatusTeapot)
		}
	}))
	srv.EnableHTTP2 = h2
	if h2 {
		srv.StartTLS()
	} else {
		srv.Start()
	}
	t.Cleanup(srv.Close)
	return srv, results
}

func post(t *testing.T, srv *httptest.Server, body io.Reader, length int64) *http.Response {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, srv.URL, body)
	if err != nil {
		t.Fatal(err)
	}
	req.ContentLength = length
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatalf("POST: %v", err)
	}
	return resp
}

func newReader(t *testing.T, max int64, b Bodies) *BodyReader {
	t.Helper()
	br, err := NewBodyReader(max, b)
	if err != nil {
		t.Fatal(err)
	}
	return br
}

func TestBodyReaderHoldsDeclaredAndChunkedBodiesInTheBudget(t *testing.T) {
	br := newReader(t, 1<<20, Bodies{})
	srv, results := bodyServer(t, br, false, 0)
	for _, tc := range []struct {
		name   string
		length int64
	}{{"declared", 100 << 10}, {"chunked", -1}} {
		t.Run(tc.name, func(t *testing.T) {
			body := bytes.Repeat([]byte("x"), 100<<10)
			// A reader without Len makes the client send chunks.
			resp := post(t, srv, io.MultiReader(bytes.NewReader(body)), tc.length)
			resp.Body.Close()
			r := <-results
			if r.err != nil || r.n != len(body) {
				t.Fatalf("read %d bytes, %v; want %d", r.n, r.err, len(body))
			}
			if r.lease < int64(len(body)) || r.lease > 2*int64(len(body)) {
				t.Fatalf("lease %d for a %d-byte body: the budget must account the buffer", r.lease, len(body))
			}
			if br.Budget().Used() != 0 {
				t.Fatalf("%d bytes still held after release", br.Budget().Used())
			}
		})
	}
}

func TestBodyReaderRefusesBeforeReadingWhatTheBudgetCannotHold(t *testing.T) {
	br := newReader(t, 64<<10, Bodies{PerPeer: 100 << 10, Total: 1 << 20})
	srv, results := bodyServer(t, br, false, 0)
	// Another request of the same peer holds 64 KiB of its 100 KiB share.
	held, err := br.Budget().Take("p", 64<<10)
	if err != nil {
		t.Fatal(err)
	}
	defer held.Release()

	for _, tc := range []struct {
		name   string
		length int64
		want   error
	}{
		{"declared over the share", 50 << 10, ErrPeerShare},
		{"declared over the largest body", 1 << 30, ErrTooLarge},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// The body never comes: the answer must not wait for it.
			pr, pw := io.Pipe()
			defer pw.Close()
			resp := post(t, srv, pr, tc.length)
			resp.Body.Close()
			if r := <-results; !errors.Is(r.err, tc.want) {
				t.Fatalf("err %v, want %v", r.err, tc.want)
			}
		})
	}
	t.Run("chunked growing over the share", func(t *testing.T) {
		resp := post(t, srv, io.MultiReader(bytes.NewReader(make([]byte, 60<<10))), -1)
		resp.Body.Close()
		if r := <-results; !errors.Is(r.err, ErrPeerShare) {
			t.Fatalf("err %v, want ErrPeerShare once the buffer outgrows the share", r.err)
		}
	})
	if got := br.Budget().UsedBy("p"); got != 64<<10 {
		t.Fatalf("peer holds %d after the refusals, want only the other request's %d", got, 64<<10)
	}
}

func TestBodyReaderEndsATricklingBodyAtItsDeadline(t *testing.T) {
	for _, h2 := range []bool{false, true} {
		t.Run(map[bool]string{false: "http1", true: "http2"}[h2], func(t *testing.T) {
			br := newReader(t, 1<<20, Bodies{Timeout: 50 * time.Millisecond})
			srv, results := bodyServer(t, br, h2, 0)
			pr, pw := io.Pipe()
			go func() {
				// A few bytes, then nothing: the body never completes.
				pw.Write([]byte(`{"jsonrpc":`))
			}()
			resp := post(t, srv, pr, 1<<10)
			resp.Body.Close()
			pw.Close()
			if r := <-results; !errors.Is(r.err, ErrTimeout) {
				t.Fatalf("err %v, want ErrTimeout", r.err)
			}
			if br.Budget().Used() != 0 {
				t.Fatalf("%d bytes held after the timeout", br.Budget().Used())
			}
		})
	}
}

// TestBodyReaderDeadlineDoesNotOutliveTheBody keeps a request open for ten
// body deadlines after its body: a deadline that bounded the whole request
// (a context timeout, a server ReadTimeout on the stream) would cut slow
// answers and long-lived streams.
func TestBodyReaderDeadlineDoesNotOutliveTheBody(t *testing.T) {
	for _, h2 := range []bool{false, true} {
		t.Run(map[bool]string{false: "http1", true: "http2"}[h2], func(t *testing.T) {
			const timeout = 20 * time.Millisecond
			br := newReader(t, 1<<20, Bodies{Timeout: timeout})
			// The response stays open ten deadlines long after the body.
			srv, results := bodyServer(t, br, h2, 10*timeout)
			resp := post(t, srv, strings.NewReader(`{"jsonrpc":"2.0"}`), -1)
			r := <-results
			resp.Body.Close()
			if r.err != nil || r.cancelled {
				t.Fatalf("err %v, cancelled %v: the body's deadline cut the request after the body", r.err, r.cancelled)
			}
		})
	}
}

func TestNewBodyReaderChecksItsBounds(t *testing.T) {
	br := newReader(t, 4<<20, Bodies{})
	if br.Budget().perPeer != 64<<20 || br.Budget().total != 256<<20 || br.timeout != DefaultBodyTimeout {
		t.Fatalf("defaults: per peer %d, total %d, timeout %s", br.Budget().perPeer, br.Budget().total, br.timeout)
	}
	for _, tc := range []struct {
		max int64
		b   Bodies
	}{
		{0, Bodies{}},
		{1 << 20, Bodies{PerPeer: 1 << 19}},
		{1 << 20, Bodies{PerPeer: 4 << 20, Total: 2 << 20}},
		{1 << 20, Bodies{Timeout: -1}},
	} {
		if _, err := NewBodyReader(tc.max, tc.b); err == nil {
			t.Errorf("NewBodyReader(%d, %+v) accepted", tc.max, tc.b)
		}
	}
}

// FuzzBodyReader sends arbitrary bodies, declared or chunked in arbitrary
// pieces, through a real HTTP server: a body is returned exactly as sent
// or refused, never longer than the largest body, and the budget holds
// nothing afterwards.
func FuzzBodyReader(f *testing.F) {
	f.Add([]byte(`{"jsonrpc":"2.0","id":1,"method":"ping"}`), true, uint16(7))
	f.Add([]byte{}, false, uint16(1))
	f.Add(bytes.Repeat([]byte("a"), 5000), false, uint16(4096))
	f.Add(bytes.Repeat([]byte("b"), 4097), true, uint16(1))
	const largest = 4096
	br, err := NewBodyReader(largest, Bodies{PerPeer: 6000, Total: 6000})
	if err != nil {
		f.Fatal(err)
	}
	type got struct {
		b   []byte
		err error
	}
	results := make(chan got, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, lease, err := br.Read(w, r, "p")
		if err == nil && lease.Size() < int64(len(b)) {
			err = errors.New("lease smaller than the body")
		}
		lease.Release()
		results <- got{bytes.Clone(b), err}
	}))
	defer srv.Close()
	c := srv.Client()
	f.Fuzz(func(t *testing.T, body []byte, declared bool, piece uint16) {
		var rd io.Reader = &pieces{b: body, n: max(int(piece), 1)}
		length := int64(-1)
		if declared {
			length = int64(len(body))
		}
		req, _ := http.NewRequest(http.MethodPost, srv.URL, rd)
		req.ContentLength = length
		if length == 0 {
			req.Body = http.NoBody
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		g := <-results
		switch {
		case g.err == nil && !bytes.Equal(g.b, body):
			t.Fatalf("read %d bytes that differ from the %d sent", len(g.b), len(body))
		case g.err == nil && len(body) > largest:
			t.Fatalf("a %d-byte body was accepted over the largest %d", len(body), largest)
		case g.err != nil && len(body) <= largest:
			t.Fatalf("a %d-byte body was refused: %v", len(body), g.err)
		case g.err != nil && !errors.Is(g.err, ErrTooLarge):
			t.Fatalf("a %d-byte body was refused with %v, want ErrTooLarge", len(body), g.err)
		}
		if br.Budget().Used() != 0 {
			t.Fatalf("%d bytes held after the request", br.Budget().Used())
		}
	})
}

// pieces reads b at most n bytes at a time, so the client sends it in
// pieces of that size.
type pieces struct {
	b []byte
	n int
}

func (p *pieces) Read(out []byte) (int, error) {
	if len(p.b) == 0 {
		return 0, io.EOF
	}
	k := copy(out[:min(len(out), p.n)], p.b)
	p.b = p.b[k:]
	return k, nil
}
