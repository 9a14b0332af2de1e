package httpserver_test

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"syscall"
	"testing"

	"go.uber.org/goleak"

	"github.com/agentmesh/agentmesh/internal/httpserver"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func listen(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

// TestRunEndsLongPollsBeforeItsGracePeriod: a stopping server first ends
// the context of a request that waits for ever (a long poll, a stream),
// which then answers in full; had the context ended only when the grace
// period ran out, the connection would have been cut under it instead.
func TestRunEndsLongPollsBeforeItsGracePeriod(t *testing.T) {
	ln := listen(t)
	waiting := make(chan struct{})
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "3")
		w.WriteHeader(http.StatusOK)
		w.(http.Flusher).Flush()
		close(waiting)
		<-r.Context().Done()
		io.WriteString(w, "bye")
	})}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- httpserver.Run(ctx, srv, ln) }()

	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Get("http://" + ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	<-waiting
	cancel()
	b, err := io.ReadAll(resp.Body)
	if err != nil || string(b) != "bye" {
		t.Fatalf("long poll answered %q, %v; want its whole answer", b, err)
	}
	if err := <-done; err != nil {
		t.Fatalf("Run = %v", err)
	}
	if c, err := net.Dial("tcp", ln.Addr().String()); err == nil {
		c.Close()
		t.Fatal("the listener is still open after Run returned")
	}
}

type key struct{}

// TestRunKeepsAnInnerBaseContext: a server's own BaseContext still gives
// requests its values and its cancellation, under Run's.
func TestRunKeepsAnInnerBaseContext(t *testing.T) {
	ln := listen(t)
	inner, cancelInner := context.WithCancel(context.WithValue(context.Background(), key{}, "inner"))
	srv := &http.Server{
		BaseContext: func(net.Listener) context.Context { return inner },
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/wait" {
				<-r.Context().Done()
			}
			v, _ := r.Context().Value(key{}).(string)
			io.WriteString(w, v)
		}),
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- httpserver.Run(ctx, srv, ln) }()
	c := &http.Client{Transport: &http.Transport{}}
	defer c.CloseIdleConnections()
	get := func(path string) string {
		resp, err := c.Get("http://" + ln.Addr().String() + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	if got := get("/"); got != "inner" {
		t.Fatalf("value %q, want the inner base context's", got)
	}
	cancelInner() // ends requests without stopping the server
	if got := get("/wait"); got != "inner" {
		t.Fatalf("after the inner cancel: %q", got)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run = %v", err)
	}
}

// failingListener fails its first Accept.
type failingListener struct{ net.Listener }

var errAccept = errors.New("accept failed for good")

func (l failingListener) Accept() (net.Conn, error) { return nil, errAccept }

func TestRunReturnsWhatStoppedServe(t *testing.T) {
	ln := listen(t)
	err := httpserver.Run(context.Background(), &http.Server{Handler: http.NotFoundHandler()}, failingListener{ln})
	if !errors.Is(err, errAccept) {
		t.Fatalf("Run = %v, want the listener's error", err)
	}
	if c, err := net.Dial("tcp", ln.Addr().String()); err == nil {
		c.Close()
		t.Fatal("the listener is still open after Run returned")
	}
}

func TestRunWithAnEndedContextStopsAtOnce(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := httpserver.Run(ctx, &http.Server{Handler: http.NotFoundHandler()}, listen(t)); err != nil {
		t.Fatalf("Run = %v", err)
	}
}

func TestListenExplainsTheMistakesOperatorsMake(t *testing.T) {
	held, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	for _, c := range []struct {
		addr, want string
		config     bool
	}{
		{"127.0.0.1", "want HOST:PORT", true},
		{"127.0.0.1:", "want HOST:PORT", true},
		{"127.0.0.1:http", "the port must be a number", true},
		{"127.0.0.1:70000", "the port must be a number", true},
		{held.Addr().String(), "cannot listen on " + held.Addr().String() + ": the address is in use by another process; stop it or choose another address", false},
	} {
		ln, err := httpserver.Listen(c.addr)
		if err == nil {
			ln.Close()
			t.Errorf("Listen(%q) succeeded", c.addr)
			continue
		}
		if !strings.Contains(err.Error(), c.want) || errors.Is(err, httpserver.ErrAddress) != c.config || strings.Contains(err.Error(), "\n") {
			t.Errorf("Listen(%q) = %v; want one line with %q (configuration mistake: %v)", c.addr, err, c.want, c.config)
		}
	}
	if _, err := httpserver.Listen(held.Addr().String()); !errors.Is(err, syscall.EADDRINUSE) {
		t.Errorf("a port in use: %v does not wrap EADDRINUSE", err)
	}
}
