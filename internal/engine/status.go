package engine

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/agentmesh/agentmesh/internal/controlclient"
	"github.com/agentmesh/agentmesh/internal/identity"
	"github.com/agentmesh/agentmesh/internal/netmap"
	"github.com/agentmesh/agentmesh/internal/nodestate"
	"github.com/agentmesh/agentmesh/internal/pki"
	"github.com/agentmesh/agentmesh/internal/reason"
	"github.com/agentmesh/agentmesh/internal/transport"
)

// ServingProbeTimeout bounds Status's TLS dial to the node's own gateway.
const ServingProbeTimeout = 2 * time.Second

// NodeStatus is what Status finds about a node: 'agentmesh status' prints
// it, as JSON with --json. OK is false exactly when the node cannot work
// (the command then exits with status 1); Problems then says why.
type NodeStatus struct {
	ID   string `json:"id"`
	Name string `json:"name"`
	Kind string `json:"kind"`
	// Tags are the node's own (its incarnation's) in the newest view it
	// has: the coordinator's answer, else its cache.
	Tags               []string  `json:"tags"`
	CertNotAfter       time.Time `json:"cert_not_after"`
	CertExpired        bool      `json:"cert_expired"`
	Revoked            bool      `json:"revoked"`
	Coordinator        string    `json:"coordinator"`
	CoordinatorReached bool      `json:"coordinator_reachable"`
	CoordinatorError   string    `json:"coordinator_error,omitempty"`
	NetmapVersion      int64     `json:"netmap_version"`
	PolicyVersion      int64     `json:"policy_version"`
	Nodes              int       `json:"nodes"`

	// Coordinator (above) is the coordinator the node talks to now: the
	// one that answered, else the one it would try first. Coordinators
	// are every one it knows, that one among them.
	Coordinators []string `json:"coordinators"`

	// NetmapConfirmed is when the coordinator last confirmed this node's
	// view (netmap.Netmap.Fresh), by this machine's clock.
	NetmapConfirmed time.Time `json:"netmap_confirmed,omitzero"`
	NetmapStale     bool      `json:"netmap_stale"`

	// Addrs are the addresses a tool or model node registered with the
	// coordinator; Serving (tool and model nodes only) is whether a
	// gateway with this node's identity answers on one of them, and
	// ServingError why not.
	Addrs        []string `json:"addrs,omitempty"`
	Serving      *bool    `json:"serving,omitempty"`
	ServingError string   `json:"serving_error,omitempty"`

	OK       bool     `json:"ok"`
	Problems []string `json:"problems,omitempty"`
}

// assess sets OK and Problems from the rest: the node cannot work when it
// is revoked, its certificate has expired, or the coordinator is away and
// the cached view is no longer fresh (a gateway then admits nobody).
func (st *NodeStatus) assess() {
	st.Problems = nil
	if st.Revoked {
		st.Problems = append(st.Problems, "revoked: the coordinator refuses this node and gateways cut it off; join again with a new auth key")
	}
	if st.CertExpired && !st.Revoked {
		st.Problems = append(st.Problems, "certificate expired at "+st.CertNotAfter.Local().Format(time.RFC3339)+": peers refuse it; join again")
	}
	if !st.CoordinatorReached && !st.Revoked && st.NetmapStale {
		st.Problems = append(st.Problems, "the coordinator is unreachable and the cached view is no longer fresh: a gateway admits nobody until it answers")
	}
	st.OK = len(st.Problems) == 0
}

// Status reports on the node whose state is in dir, at now: it asks the
// coordinator for the node's view once (falling back to the cache), probes
// the node's gateway if it serves, and assesses whether the node can work.
// An error means the state could not be read.
func Status(ctx context.Context, dir string, now time.Time) (NodeStatus, error) {
	d, err := nodestate.Open(dir)
	if err != nil {
		return NodeStatus{}, err
	}
	cl, err := controlclient.New(d, controlclient.Options{})
	if err != nil {
		return NodeStatus{}, err
	}
	defer cl.Close()
	leaf := cl.Certificate().Leaf
	st := NodeStatus{ID: cl.ID().String(), Name: string(cl.ID().Name), Kind: string(cl.ID().Kind), Tags: []string{},
		CertNotAfter: leaf.NotAfter.UTC(), CertExpired: now.After(leaf.NotAfter)}
	nm, _ := cl.CachedNetmap()
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	fresh, err := cl.Netmap(pctx, -1)
	cancel()
	st.Coordinator, st.Coordinators = cl.Coordinator(), cl.Coordinators()
	st.NetmapConfirmed, _ = d.NetmapConfirmed()
	var refused *controlclient.APIError
	switch {
	case err == nil && fresh != nil:
		st.CoordinatorReached = true
		nm = fresh
		st.NetmapConfirmed = now
	case errors.As(err, &refused) && refused.Code == string(reason.Revoked):
		// The coordinator answered: this incarnation is revoked (or
		// replaced by a newer node of the same name).
		st.CoordinatorReached, st.Revoked = true, true
	case err != nil:
		st.CoordinatorError = err.Error()
	}
	st.NetmapStale = !nm.Fresh(st.NetmapConfirmed, now)
	var self netmap.Node
	if nm != nil {
		st.NetmapVersion, st.PolicyVersion, st.Nodes = nm.Version, nm.Policy.Version, len(nm.Nodes)
		var ok bool
		if self, ok = ownEntry(nm, cl.ID().Name, pki.Incarnation(leaf)); ok {
			st.Tags = identity.TagStrings(self.Tags)
		}
	}
	if cl.ID().Kind.Serves() {
		st.Addrs = self.Addrs
		err := probeServing(ctx, cl, self.Addrs)
		serving := err == nil
		st.Serving = &serving
		if err != nil {
			st.ServingError = err.Error()
		}
	}
	st.assess()
	return st, nil
}

// ownEntry returns the node's own entry in nm: its name and its
// incarnation, so that another node that holds or held the same name (a
// predecessor revoked, or the successor of a revoked node) is never taken
// for it.
func ownEntry(nm *netmap.Netmap, name identity.Name, incarnation string) (netmap.Node, bool) {
	if incarnation == "" {
		return netmap.Node{}, false
	}
	for _, n := range nm.Nodes {
		if n.Name == name && n.Incarnation == incarnation {
			return n, true
		}
	}
	return netmap.Node{}, false
}

// probeServing reports whether a gateway that holds this node's identity
// answers on one of addrs: a TLS handshake with the node's certificate,
// verified as a connector would verify it, within ServingProbeTimeout.
func probeServing(ctx context.Context, cl *controlclient.Client, addrs []string) error {
	if len(addrs) == 0 {
		return errors.New("no address registered with the coordinator")
	}
	ctx, cancel := context.WithTimeout(ctx, ServingProbeTimeout)
	defer cancel()
	self := cl.ID()
	dialer := &tls.Dialer{Config: transport.ClientTLS(cl.Certificate, cl.Verifier(), func() (identity.ID, error) { return self, nil })}
	var errs []error
	for _, a := range addrs {
		conn, err := dialer.DialContext(ctx, "tcp", a)
		if err == nil {
			conn.Close()
			return nil
		}
		var op *net.OpError
		if errors.As(err, &op) && op.Err != nil {
			err = op.Err
		}
		errs = append(errs, fmt.Errorf("%s: %w", a, err))
	}
	return errors.Join(errs...)
}
