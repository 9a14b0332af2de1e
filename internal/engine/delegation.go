package engine

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/agentmesh/agentmesh/internal/delegation"
	"github.com/agentmesh/agentmesh/internal/identity"
	"github.com/agentmesh/agentmesh/internal/netmap"
	"github.com/agentmesh/agentmesh/internal/node"
	"github.com/agentmesh/agentmesh/internal/pki"
)

// Acting for a person (ConnectConfig.OnBehalfOf): the coordinator puts the
// live delegations issued to this agent in its netmap; the connector sends
// the newest one the person gave with every request to the gateway (the
// header delegation.Header), and switches to a newer one as soon as a
// netmap brings it. Only delegations that verify for this node (the mesh
// CA's signature, this agent's identity and incarnation, unexpired) are
// used; which calls they allow is the gateway's decision.

// onBehalfOf checks cfg's OnBehalfOf against the rest of cfg and returns
// the person ("" when the connector acts for nobody).
func (cfg *ConnectConfig) onBehalfOf(kind identity.Kind) (identity.User, error) {
	if cfg.OnBehalfOf == "" {
		return "", nil
	}
	u, err := identity.ParseUser(cfg.OnBehalfOf)
	switch {
	case err != nil:
		return "", fmt.Errorf("%w: --on-behalf-of: %v", ErrConfig, err)
	case cfg.Tailnet != nil:
		return "", fmt.Errorf("%w: --on-behalf-of is for the mesh's mTLS: on a tailnet, WhoIs names the person behind a device", ErrConfig)
	case kind == identity.KindModel:
		return "", fmt.Errorf("%w: --on-behalf-of applies to tool services, not to models", ErrConfig)
	}
	return u, nil
}

// delegationSource picks the delegation to send from the node's view.
type delegationSource struct {
	n    *node.Node
	user identity.User

	mu  sync.Mutex
	of  *netmap.Netmap // the netmap tok was picked from
	inc string         // and the incarnation it was checked for
	tok string
	exp time.Time
}

func newDelegationSource(n *node.Node, user identity.User) *delegationSource {
	return &delegationSource{n: n, user: user}
}

// pick returns the newest delegation of nm from s.user that verifies for
// this node now, and its expiry ("" when there is none).
func (s *delegationSource) pick(nm *netmap.Netmap, now time.Time) (string, string, time.Time) {
	cert := s.n.Client.Certificate()
	if nm == nil || cert == nil || cert.Leaf == nil {
		return "", "", time.Time{}
	}
	inc := pki.Incarnation(cert.Leaf)
	o := delegation.VerifyOptions{Roots: s.n.Client.Verifier().Roots(), TrustDomain: s.n.ID().TrustDomain,
		Peer: s.n.ID(), Incarnation: inc, Now: now}
	var best *delegation.Claims
	tok := ""
	for _, t := range nm.Delegations {
		c, _, err := delegation.Verify(t, o)
		if err != nil || c.User != string(s.user) || now.Unix() >= c.Expires {
			continue
		}
		if best == nil || c.IssuedAt > best.IssuedAt || c.IssuedAt == best.IssuedAt && c.Expires > best.Expires {
			best, tok = c, t
		}
	}
	if best == nil {
		return "", inc, time.Time{}
	}
	return tok, inc, time.Unix(best.Expires, 0)
}

// token is connector.Config.Delegation: the delegation to send now.
func (s *delegationSource) token() (string, error) {
	nm := s.n.View().Netmap
	now := s.n.Client.Verifier().Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	cert := s.n.Client.Certificate()
	renewed := cert != nil && cert.Leaf != nil && pki.Incarnation(cert.Leaf) != s.inc
	if nm != s.of || renewed || s.tok == "" || !now.Before(s.exp) {
		s.of = nm
		s.tok, s.inc, s.exp = s.pick(nm, now)
	}
	if s.tok == "" {
		return "", s.missing()
	}
	return s.tok, nil
}

func (s *delegationSource) missing() error {
	return fmt.Errorf("%s has given this agent (%s) no live delegation: they can give one with 'agentmesh delegate --to agent:%s --ttl 1h' (and their login state)",
		s.user.Selector(), s.n.ID(), s.n.ID().Name)
}

// wait waits, up to resolveWait, for a netmap that holds a delegation
// from the person, so that connect fails at once, saying what to do,
// rather than at the first call. The node starts with the netmap it
// saved, which may hold a delegation revoked since: the view catches up
// with the coordinator's current netmap first, when it answers.
func (s *delegationSource) wait(ctx context.Context) error {
	wctx, cancel := context.WithTimeout(ctx, resolveWait)
	defer cancel()
	if nm, err := s.n.Client.Netmap(wctx, -1); err == nil && nm != nil {
		_, _ = s.n.WaitView(wctx, func(v node.View) bool { return v.Netmap != nil && v.Netmap.Version >= nm.Version })
	}
	if _, err := s.token(); err == nil {
		return nil
	}
	_, err := s.n.WaitView(wctx, func(v node.View) bool {
		tok, _, _ := s.pick(v.Netmap, s.n.Client.Verifier().Now())
		return tok != ""
	})
	if err != nil {
		return s.missing()
	}
	_, err = s.token()
	return err
}
