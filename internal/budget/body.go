package budget

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"
)

// Bodies bounds the request bodies a server holds in memory. Zero fields
// take the defaults, which scale with the largest body the server accepts
// (its MaxBytes) so that raising that limit does not make every large body
// a refusal.
type Bodies struct {
	// Total bounds the bytes of request bodies held at once by all peers
	// together; zero is DefaultTotalBodies times the largest body.
	Total int64
	// PerPeer bounds the bytes of request bodies one peer holds at once;
	// zero is DefaultPeerBodies times the largest body. It must hold at
	// least one body of the largest size, and at most Total.
	PerPeer int64
	// Timeout bounds the time a body may take to arrive, from the handler's
	// first read to its last byte; zero is DefaultBodyTimeout. Streams that
	// carry no request body (GET, SSE responses) are not affected.
	Timeout time.Duration
}

// Defaults of Bodies. An agent sends one message per request, rarely more
// than a few at once and almost never near the largest size: sixteen
// largest bodies in flight per peer is far beyond a real agent, and the
// total leaves room for four peers at their share.
const (
	DefaultPeerBodies  = 16
	DefaultTotalBodies = 64
	DefaultBodyTimeout = 30 * time.Second
)

// Errors of BodyReader.Read besides the budget's ErrPeerShare and
// ErrExhausted; match them with errors.Is.
var (
	// ErrTooLarge: the body is larger than the largest body accepted
	// (HTTP 413).
	ErrTooLarge = errors.New("request body too large")
	// ErrTimeout: the body did not arrive whole within Bodies.Timeout
	// (HTTP 408).
	ErrTimeout = errors.New("request body not received in time")
)

// firstChunk is the first buffer for a body of undeclared length; it
// doubles as the body arrives, and each growth is reserved first.
const firstChunk = 2 << 10

// BodyReader reads request bodies into memory within a byte budget, a
// size limit and a deadline. It is safe for concurrent use.
type BodyReader struct {
	max     int64
	timeout time.Duration
	budget  *Budget
}

// NewBodyReader returns a reader of bodies of at most largest bytes within
// b.
func NewBodyReader(largest int64, b Bodies) (*BodyReader, error) {
	if largest <= 0 {
		return nil, fmt.Errorf("budget: the largest body must be positive, got %d", largest)
	}
	if b.Total < 0 || b.PerPeer < 0 || b.Timeout < 0 {
		return nil, fmt.Errorf("budget: body bounds must not be negative (total %d, per peer %d, timeout %s)", b.Total, b.PerPeer, b.Timeout)
	}
	if b.PerPeer == 0 {
		b.PerPeer = DefaultPeerBodies * largest
	}
	if b.Total == 0 {
		b.Total = max(DefaultTotalBodies*largest, b.PerPeer)
	}
	if b.Timeout == 0 {
		b.Timeout = DefaultBodyTimeout
	}
	if b.PerPeer < largest || b.Total < b.PerPeer {
		return nil, fmt.Errorf("budget: want largest body (%d) <= per-peer body budget (%d) <= total body budget (%d)", largest, b.PerPeer, b.Total)
	}
	return &BodyReader{max: largest, timeout: b.Timeout, budget: New(b.Total, b.PerPeer)}, nil
}

// Budget returns the byte budget the reader reserves from.
func (br *BodyReader) Budget() *Budget { return br.budget }

// Read reads r's body whole into memory for peer and returns it with the
// lease that holds its bytes in the budget: release it when the body is no
// longer needed (once the request is done). On error nothing stays
// reserved, and the body is left unread (see SkipBody). The bytes are
// reserved before they are read: all at once from
// a declared Content-Length (a body larger than the largest accepted is
// refused unread), else as the buffer grows. Errors: ErrTooLarge,
// ErrPeerShare, ErrExhausted, ErrTimeout, or the read error of a client
// that went away or sent a broken body.
//
// The deadline is set on the connection (HTTP/1) or stream (HTTP/2)
// through http.ResponseController and cleared once the body is in, so it
// never cuts the response. It is wall-clock time, as every network
// deadline is. A ResponseWriter that cannot set read deadlines (not one of
// net/http's) reads without one.
func (br *BodyReader) Read(w http.ResponseWriter, r *http.Request, peer string) ([]byte, *Lease, error) {
	if r.ContentLength > br.max {
		SkipBody(w, r)
		return nil, nil, ErrTooLarge
	}
	first := r.ContentLength
	if first < 0 {
		first = min(firstChunk, br.max)
	}
	lease, err := br.budget.Take(peer, first)
	if err != nil {
		SkipBody(w, r)
		return nil, nil, err
	}
	if br.timeout > 0 {
		rc := http.NewResponseController(w)
		if rc.SetReadDeadline(time.Now().Add(br.timeout)) == nil {
			// net/http's HTTP/1 server clears it too once the body is
			// in; an HTTP/2 stream keeps its timer until told.
			defer rc.SetReadDeadline(time.Time{})
		}
	}
	// MaxBytesReader also tells an HTTP/1 server to close the connection
	// after a body that was too large, instead of reading the rest.
	body := http.MaxBytesReader(w, r.Body, br.max)
	var b []byte
	if r.ContentLength >= 0 {
		b, err = readDeclared(body, r.ContentLength)
	} else {
		b, err = br.readGrowing(body, lease, first)
	}
	if err != nil {
		lease.Release()
		SkipBody(w, r)
		var mbe *http.MaxBytesError
		switch {
		case errors.As(err, &mbe):
			return nil, nil, ErrTooLarge
		case errors.Is(err, os.ErrDeadlineExceeded):
			return nil, nil, fmt.Errorf("%w: %w", ErrTimeout, err)
		}
		return nil, nil, err
	}
	return b, lease, nil
}

// SkipBody makes sure the server does not wait for a request body the
// handler will not read before it answers: net/http's HTTP/1 server would
// otherwise read up to 256 KiB of an unread body before writing the
// response head, so a refusal would wait as long as the peer trickles. On
// HTTP/1 the connection is closed after the answer instead (it cannot be
// reused with a body left on it); HTTP/2 resets the stream by itself, and
// its connection, shared by other requests, stays open.
func SkipBody(w http.ResponseWriter, r *http.Request) {
	if r.ProtoMajor == 1 && r.ContentLength != 0 {
		w.Header().Set("Connection", "close")
	}
}

// readDeclared reads a body of exactly n bytes, then its end.
func readDeclared(body io.Reader, n int64) ([]byte, error) {
	b := make([]byte, n)
	if _, err := io.ReadFull(body, b); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return nil, fmt.Errorf("read body: %w", err)
	}
	if err := readEOF(body); err != nil {
		return nil, err
	}
	return b, nil
}

// readGrowing reads a body of undeclared length into a buffer of first
// bytes that doubles, up to the largest body, each growth reserved in lease
// before it is allocated. A full buffer grows only once another byte has
// arrived, so a body that fills it exactly costs no more.
func (br *BodyReader) readGrowing(body io.Reader, lease *Lease, first int64) ([]byte, error) {
	b := make([]byte, 0, first)
	for {
		if len(b) == cap(b) {
			c, err := readByte(body)
			if errors.Is(err, io.EOF) {
				return b, nil
			}
			if err != nil {
				return nil, err
			}
			if int64(cap(b)) >= br.max {
				return nil, ErrTooLarge
			}
			more := min(int64(cap(b)), br.max-int64(cap(b)))
			if err := lease.Grow(more); err != nil {
				return nil, err
			}
			nb := make([]byte, len(b), int64(cap(b))+more)
			copy(nb, b)
			b = append(nb, c)
		}
		n, err := body.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		if errors.Is(err, io.EOF) {
			return b, nil
		}
		if err != nil {
			return nil, fmt.Errorf("read body: %w", err)
		}
	}
}

// readByte reads one byte of a body, or its end (io.EOF).
func readByte(body io.Reader) (byte, error) {
	var one [1]byte
	for {
		n, err := body.Read(one[:])
		if n > 0 {
			return one[0], nil
		}
		if errors.Is(err, io.EOF) {
			return 0, io.EOF
		}
		if err != nil {
			return 0, fmt.Errorf("read body: %w", err)
		}
	}
}

// readEOF reads the end of a body that must have no more bytes.
func readEOF(body io.Reader) error {
	_, err := readByte(body)
	switch {
	case err == nil:
		return ErrTooLarge
	case errors.Is(err, io.EOF):
		return nil
	}
	return err
}
