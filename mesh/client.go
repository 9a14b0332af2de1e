package mesh

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"sync"

	"github.com/agentmesh/agentmesh/internal/connector"
	"github.com/agentmesh/agentmesh/internal/transport"
)

// UnreachableError is a request's error when the service cannot be
// reached under the current netmap. Reason is one of the mesh's reason
// codes: unknown_service (no such service in this node's netmap: a typo,
// or no grant), not_serving (it joined but registers no address), revoked
// (this node has been revoked: join again).
type UnreachableError struct {
	Service string
	Reason  string
	Err     error
}

func (e *UnreachableError) Error() string {
	return fmt.Sprintf("mesh: %s unreachable (%s): %v", e.Service, e.Reason, e.Err)
}

func (e *UnreachableError) Unwrap() error { return e.Err }

// meshTransport sends each request to the service its URL names, at the
// address the netmap gives, with the connector's TLS rule (engine.Dial).
type meshTransport struct {
	n *Node

	mu       sync.Mutex
	services map[string]*service
	closed   bool
}

// service is how one service is reached: one pooled transport whose TLS
// checks the service's current SPIFFE ID at every handshake.
type service struct {
	rt      *http.Transport
	resolve func(context.Context) (string, error)
}

var _ http.RoundTripper = (*meshTransport)(nil)

func newMeshTransport(n *Node) *meshTransport {
	return &meshTransport{n: n, services: make(map[string]*service)}
}

// service returns the transport to name, making it the first time.
func (t *meshTransport) service(name string) (*service, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return nil, errors.New("mesh: the node is closed")
	}
	if s, ok := t.services[name]; ok {
		return s, nil
	}
	tlsCfg, resolve, err := t.n.e.Dial(name)
	if err != nil {
		return nil, wrapConfig(err)
	}
	rt, err := transport.New(transport.Config{TLS: tlsCfg})
	if err != nil {
		return nil, err
	}
	s := &service{rt: rt, resolve: resolve}
	t.services[name] = s
	return s, nil
}

// RoundTrip sends req, addressed to https://NAME/PATH, to the service
// NAME's current address.
func (t *meshTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	fail := func(err error) (*http.Response, error) {
		if req.Body != nil {
			req.Body.Close()
		}
		return nil, err
	}
	if req.URL.Scheme != "https" || req.URL.Port() != "" || req.URL.User != nil {
		return fail(fmt.Errorf("%w: %s: a mesh service's URL is https://NAME/PATH (see ServiceURL)", ErrConfig, req.URL.Redacted()))
	}
	name := req.URL.Hostname()
	s, err := t.service(name)
	if err != nil {
		return fail(err)
	}
	base, err := s.resolve(req.Context())
	if err != nil {
		return fail(unreachable(name, err))
	}
	u, err := url.Parse(base)
	if err != nil {
		return fail(fmt.Errorf("mesh: %s: %w", name, err))
	}
	out := req.Clone(req.Context())
	out.URL.Host = u.Host
	out.Host = ""
	return s.rt.RoundTrip(out)
}

// close closes every transport's idle connections; later requests fail.
func (t *meshTransport) close() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.closed = true
	for _, s := range t.services {
		s.rt.CloseIdleConnections()
	}
}

// unreachable turns a resolution failure into an UnreachableError, its
// reason the one a connector would answer with.
func unreachable(name string, err error) error {
	var re *connector.ResolveError
	if errors.As(err, &re) {
		return &UnreachableError{Service: name, Reason: string(re.Code), Err: re.Err}
	}
	return fmt.Errorf("mesh: %s: %w", name, err)
}
