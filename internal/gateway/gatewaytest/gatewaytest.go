// Package gatewaytest holds in-process fixtures for testing the gateway and
// the code around it: a test mesh (CA, certificates, TLS configurations), an
// audit recorder that keeps events in memory, and an MCP server with a few
// tools, prompts and resources that counts what reaches it, served over
// Streamable HTTP or stdio.
package gatewaytest

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/agentmesh/agentmesh/internal/audit"
	"github.com/agentmesh/agentmesh/internal/identity"
	"github.com/agentmesh/agentmesh/internal/mcpwire"
	"github.com/agentmesh/agentmesh/internal/pki"
	"github.com/agentmesh/agentmesh/internal/reason"
)

// TrustDomain is the fixtures' trust domain.
const TrustDomain identity.TrustDomain = "test.mesh"

// Mesh is a test CA with a verifier for its trust domain.
type Mesh struct {
	CA       *pki.CA
	Verifier *pki.Verifier
}

// NewMesh returns a fresh test mesh.
func NewMesh(tb testing.TB) *Mesh {
	tb.Helper()
	ca, err := pki.NewCA(TrustDomain, time.Now())
	if err != nil {
		tb.Fatalf("gatewaytest: new CA: %v", err)
	}
	return &Mesh{CA: ca, Verifier: pki.NewVerifier(TrustDomain, []*x509.Certificate{ca.Certificate()}, nil)}
}

// ID returns the identity kind/name in the test trust domain.
func ID(tb testing.TB, kind identity.Kind, name string) identity.ID {
	tb.Helper()
	id, err := identity.New(TrustDomain, kind, identity.Name(name))
	if err != nil {
		tb.Fatalf("gatewaytest: %v", err)
	}
	return id
}

// Issue returns a certificate for id with the given incarnation, valid for
// an hour.
func (m *Mesh) Issue(tb testing.TB, id identity.ID, incarnation string) *tls.Certificate {
	tb.Helper()
	key, err := pki.NewKey()
	if err != nil {
		tb.Fatalf("gatewaytest: %v", err)
	}
	der, err := pki.CreateCSR(key)
	if err != nil {
		tb.Fatalf("gatewaytest: %v", err)
	}
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		tb.Fatalf("gatewaytest: %v", err)
	}
	leaf, certDER, err := m.CA.Issue(csr, pki.IssueRequest{ID: id, Incarnation: incarnation, TTL: time.Hour, Now: time.Now()})
	if err != nil {
		tb.Fatalf("gatewaytest: issue: %v", err)
	}
	return &tls.Certificate{Certificate: [][]byte{certDER}, PrivateKey: key, Leaf: leaf}
}

// ServerTLS is the gateway's TLS configuration presenting cert.
func (m *Mesh) ServerTLS(cert *tls.Certificate) *tls.Config {
	return pki.NewServerTLS(pki.ServerOptions{
		Certificate: func() *tls.Certificate { return cert },
		Verifier:    m.Verifier,
		NextProtos:  []string{"http/1.1"},
	})
}

// Client returns an HTTP client presenting cert that accepts only server.
func (m *Mesh) Client(cert *tls.Certificate, server identity.ID) *http.Client {
	cfg := pki.ClientTLS(func() *tls.Certificate { return cert }, m.Verifier, pki.ExpectServer(server))
	return &http.Client{Transport: &http.Transport{
		TLSClientConfig:     cfg,
		MaxIdleConnsPerHost: 64,
		ForceAttemptHTTP2:   false,
	}}
}

// Recorder keeps audit events in memory. It is safe for concurrent use.
type Recorder struct {
	mu     sync.Mutex
	events []audit.Event
	wake   chan struct{}
	fail   error
}

// FailWith makes every later Record return err without storing the event
// (nil restores normal recording), as a spool whose disk failed would.
func (r *Recorder) FailWith(err error) {
	r.mu.Lock()
	r.fail = err
	r.mu.Unlock()
}

// NewRecorder returns an empty recorder.
func NewRecorder() *Recorder { return &Recorder{wake: make(chan struct{})} }

// Record stores a copy of e, or returns the error set by FailWith.
func (r *Recorder) Record(_ context.Context, e *audit.Event) error {
	r.mu.Lock()
	if r.fail != nil {
		defer r.mu.Unlock()
		return r.fail
	}
	r.events = append(r.events, *e)
	close(r.wake)
	r.wake = make(chan struct{})
	r.mu.Unlock()
	return nil
}

// Events returns a copy of every event recorded so far.
func (r *Recorder) Events() []audit.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]audit.Event(nil), r.events...)
}

// ByID returns the event with id, if recorded.
func (r *Recorder) ByID(id string) (audit.Event, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, e := range r.events {
		if e.ID == id {
			return e, true
		}
	}
	return audit.Event{}, false
}

// WaitFor blocks until an event satisfying match has been recorded, or ctx
// ends.
func (r *Recorder) WaitFor(ctx context.Context, match func(audit.Event) bool) (audit.Event, error) {
	for {
		r.mu.Lock()
		for _, e := range r.events {
			if match(e) {
				r.mu.Unlock()
				return e, nil
			}
		}
		wake := r.wake
		r.mu.Unlock()
		select {
		case <-wake:
		case <-ctx.Done():
			return audit.Event{}, fmt.Errorf("gatewaytest: no matching audit event: %w", ctx.Err())
		}
	}
}

// Upstream is an MCP server served over Streamable HTTP on loopback that
// records every body it receives. Sessions (protocols up to 2025-11-25) go
// to a stateful handler, 2026-07-28 requests to a stateless one.
type Upstream struct {
	URL    string
	Server *mcp.Server
	Calls  *Calls
	// Handler is what serves URL (recording bodies), for a gateway that
	// calls it in-process (gateway.HandlerUpstream).
	Handler http.Handler

	srv    *httptest.Server
	mu     sync.Mutex
	bodies [][]byte
}

// NewUpstream starts an upstream with NewServer's tools. Close it with
// Close (registered with tb.Cleanup too).
func NewUpstream(tb testing.TB) *Upstream { return NewUpstreamIdle(tb, 0) }

// NewUpstreamIdle is NewUpstream with the server closing keep-alive
// connections idle for longer than idle (0: never), to exercise the
// idle-close race.
func NewUpstreamIdle(tb testing.TB, idle time.Duration) *Upstream {
	tb.Helper()
	calls := NewCalls()
	srv := NewServer(calls)
	u := &Upstream{Server: srv, Calls: calls}
	get := func(*http.Request) *mcp.Server { return srv }
	stateful := mcp.NewStreamableHTTPHandler(get, nil)
	// A stateless (2026-07-28) request's POST is its whole lifecycle: its
	// end cancels the call (a call the gateway cuts ends at the server).
	stateless := mcp.NewStreamableHTTPHandler(get, &mcp.StreamableHTTPOptions{Stateless: true, PropagateRequestCancellation: true})
	u.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost {
			b, err := io.ReadAll(r.Body)
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			u.mu.Lock()
			u.bodies = append(u.bodies, b)
			u.mu.Unlock()
			r.Body = io.NopCloser(bytes.NewReader(b))
		}
		if r.Header.Get(mcpwire.HeaderSessionID) == "" && r.Header.Get(mcpwire.HeaderProtocolVersion) >= mcpwire.VersionStateless {
			stateless.ServeHTTP(w, r)
			return
		}
		stateful.ServeHTTP(w, r)
	})
	u.srv = httptest.NewUnstartedServer(u.Handler)
	u.srv.Config.IdleTimeout = idle
	u.srv.Start()
	u.URL = u.srv.URL + "/mcp"
	tb.Cleanup(u.Close)
	return u
}

// Close stops the upstream, ends its connections and closes the MCP
// sessions that clients left open.
func (u *Upstream) Close() {
	u.srv.CloseClientConnections()
	u.srv.Close()
	for ss := range u.Server.Sessions() {
		ss.Close()
	}
}

// Received reports whether any POST body that reached the upstream
// contains s.
func (u *Upstream) Received(s string) bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	for _, b := range u.bodies {
		if strings.Contains(string(b), s) {
			return true
		}
	}
	return false
}

// Bodies returns copies of the POST bodies received so far.
func (u *Upstream) Bodies() [][]byte {
	u.mu.Lock()
	defer u.mu.Unlock()
	out := make([][]byte, len(u.bodies))
	for i, b := range u.bodies {
		out[i] = bytes.Clone(b)
	}
	return out
}

// Refusals returns an aggregator of refused attempts that records into r,
// for a gateway's Config.Refusals; the test closes it to write its open
// windows.
func (r *Recorder) Refusals() *audit.Refusals {
	return audit.NewRefusals(audit.RefusalOptions{Record: r.Record})
}

// CheckAccounted fails tb unless the recorded events with reason why account
// for exactly the attempts told their ids (told maps an event id to how
// many refusal answers named it) and there are want of them.
func (r *Recorder) CheckAccounted(tb testing.TB, why reason.Code, told map[string]int64, want int) {
	tb.Helper()
	var events int
	var sum, attempts int64
	for _, n := range told {
		attempts += n
	}
	for _, e := range r.Events() {
		if e.Reason != why {
			continue
		}
		events++
		if told[e.ID] != e.Attempts() {
			tb.Fatalf("event %+v accounts for %d attempts, %d answers named it", e, e.Attempts(), told[e.ID])
		}
		sum += e.Attempts()
	}
	if events != want || sum != attempts {
		tb.Fatalf("%d events accounting for %d attempts, want %d accounting for %d", events, sum, want, attempts)
	}
}

// Log is a buffer safe for concurrent writers, for a gateway's log in a
// test (a handler panic that net/http recovers shows only there).
type Log struct {
	mu  sync.Mutex
	buf bytes.Buffer
	// grew is closed, and replaced, by every Write.
	grew chan struct{}
}

func (l *Log) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.grew != nil {
		close(l.grew)
		l.grew = nil
	}
	return l.buf.Write(p)
}

// WaitFor waits until the log contains s, or ctx ends.
func (l *Log) WaitFor(ctx context.Context, s string) error {
	for {
		l.mu.Lock()
		if strings.Contains(l.buf.String(), s) {
			l.mu.Unlock()
			return nil
		}
		if l.grew == nil {
			l.grew = make(chan struct{})
		}
		grew := l.grew
		l.mu.Unlock()
		select {
		case <-grew:
		case <-ctx.Done():
			return fmt.Errorf("the log never contained %q: %w", s, ctx.Err())
		}
	}
}

// String returns what was written.
func (l *Log) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}
