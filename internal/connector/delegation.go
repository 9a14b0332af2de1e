package connector

import (
	"errors"
	"net/http"

	"github.com/agentmesh/agentmesh/internal/delegation"
	"github.com/agentmesh/agentmesh/internal/reason"
)

// WithDelegation returns a RoundTripper that sends every request through
// base with the delegation token returns in the delegation.Header header
// (the agent acting for a person: package delegation), replacing any the
// request had. token is asked on every request, so that a newer
// delegation is used as soon as it is known; when it fails, the request
// is not sent (without its delegation the call would be the agent's own),
// and the agent is answered with the error's text: a *ResolveError's code,
// or delegation_expired (the delegation it held has lapsed, or was
// revoked, and no newer one has arrived).
func WithDelegation(base http.RoundTripper, token func() (string, error)) http.RoundTripper {
	return &delegatingTransport{base: base, token: token}
}

type delegatingTransport struct {
	base  http.RoundTripper
	token func() (string, error)
}

func (t *delegatingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	tok, err := t.token()
	if err != nil {
		if req.Body != nil {
			req.Body.Close()
		}
		var re *ResolveError
		if !errors.As(err, &re) {
			err = &ResolveError{Code: reason.DelegationExpired, Err: err}
		}
		return nil, err
	}
	r2 := req.Clone(req.Context())
	r2.Header.Set(delegation.Header, tok)
	return t.base.RoundTrip(r2)
}

// CloseIdleConnections passes on to base, as http.Client expects of its
// transport.
func (t *delegatingTransport) CloseIdleConnections() {
	if c, ok := t.base.(interface{ CloseIdleConnections() }); ok {
		c.CloseIdleConnections()
	}
}
