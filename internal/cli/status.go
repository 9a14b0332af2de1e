package cli

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"agentmesh/internal/controlclient"
	"agentmesh/internal/identity"
	"agentmesh/internal/netmap"
	"agentmesh/internal/nodestate"
	"agentmesh/internal/pki"
	"agentmesh/internal/reason"
	"agentmesh/internal/transport"
)

func init() {
	register(&command{
		name:  "status",
		usage: "--state DIR [--json]",
		short: "show this node's identity, certificate, netmap and coordinator reachability",
		long: `Exit status:
  0  the node can work (a coordinator that is away is fine while the cached view is fresh)
  1  the node cannot work: revoked, certificate expired, or the coordinator unreachable
     for longer than the cached view may be used; or the state could not be read
  2  usage error

A tool or model node also shows the address it registered and whether a
gateway answers there (a TLS handshake with the node's own identity, at
most ` + servingProbeTimeoutText + `); a gateway that does not answer is reported, not an exit status.

Examples:
  agentmesh status --state ./payments
  agentmesh status --json | jq .cert_not_after
  agentmesh status --state ./payments >/dev/null || echo "payments cannot work"`,
		run: runStatus,
	})
}

// servingProbeTimeout bounds status's TLS dial to the node's own gateway.
const (
	servingProbeTimeout     = 2 * time.Second
	servingProbeTimeoutText = "2 s"
)

// Status is what 'agentmesh status --json' prints. OK is false exactly
// when the command exits with status 1; Problems then says why.
type Status struct {
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
func (st *Status) assess() {
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

func runStatus(ctx context.Context, env Env, args []string) error {
	c := commands["status"]
	fs := newFlags(c, env)
	state := stateFlag(fs, env)
	asJSON := fs.Bool("json", false, "print JSON")
	if _, _, err := parse(fs, args); err != nil {
		return err
	}
	if err := needState(*state); err != nil {
		return err
	}
	d, err := nodestate.Open(*state)
	if err != nil {
		return err
	}
	cl, err := controlclient.New(d, controlclient.Options{})
	if err != nil {
		return err
	}
	defer cl.Close()
	st := nodeStatus(ctx, d, cl, time.Now())
	if *asJSON {
		if err := printJSON(env.Stdout, st); err != nil {
			return err
		}
	} else {
		printStatus(env, st)
	}
	if !st.OK {
		return errSilent
	}
	return nil
}

// nodeStatus asks the coordinator for the node's view (falling back to the
// cache), probes its gateway if it serves, and assesses the result.
func nodeStatus(ctx context.Context, d *nodestate.Dir, cl *controlclient.Client, now time.Time) Status {
	cfg, _ := d.Config()
	leaf := cl.Certificate().Leaf
	st := Status{ID: cl.ID().String(), Name: string(cl.ID().Name), Kind: string(cl.ID().Kind), Tags: []string{},
		CertNotAfter: leaf.NotAfter.UTC(), CertExpired: now.After(leaf.NotAfter), Coordinator: cfg.CoordinatorURL}
	nm, _ := cl.CachedNetmap()
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	fresh, err := cl.Netmap(pctx, -1)
	cancel()
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
	return st
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
// verified as a connector would verify it, within servingProbeTimeout.
func probeServing(ctx context.Context, cl *controlclient.Client, addrs []string) error {
	if len(addrs) == 0 {
		return errors.New("no address registered with the coordinator")
	}
	ctx, cancel := context.WithTimeout(ctx, servingProbeTimeout)
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

func printStatus(env Env, st Status) {
	w := env.Stdout
	printf(w, "identity:     %s\n", st.ID)
	printf(w, "kind:         %s\n", st.Kind)
	tags := strings.Join(st.Tags, ", ")
	if len(st.Tags) == 0 {
		tags = "(none)"
	}
	printf(w, "tags:         %s\n", tags)
	verdict := "ok"
	if !st.OK {
		verdict = "CANNOT WORK: " + strings.Join(st.Problems, "; ")
	}
	if st.Revoked {
		verdict = "REVOKED: the coordinator refuses this node and gateways cut it off; join again with a new auth key"
	}
	printf(w, "status:       %s\n", verdict)
	var cert string
	switch {
	case st.Revoked:
		cert = "revoked (it would expire at " + st.CertNotAfter.Local().Format(time.RFC3339) + ")"
	case st.CertExpired:
		cert = "EXPIRED at " + st.CertNotAfter.Local().Format(time.RFC3339) + " (renews when a long-running command starts; or join again)"
	default:
		cert = "valid until " + st.CertNotAfter.Local().Format(time.RFC3339)
	}
	printf(w, "certificate:  %s\n", cert)
	var reach string
	switch {
	case st.Revoked:
		reach = "reachable; it refuses this node (revoked)"
	case st.CoordinatorReached:
		reach = "reachable"
	default:
		reach = "UNREACHABLE (" + st.CoordinatorError + "); using the cached netmap"
	}
	printf(w, "coordinator:  %s, %s\n", st.Coordinator, reach)
	if st.Serving != nil {
		var serving string
		switch {
		case len(st.Addrs) == 0:
			serving = "not serving: no address registered (is `agentmesh serve` running?)"
		case *st.Serving:
			serving = strings.Join(st.Addrs, ", ") + ", answering"
		default:
			serving = strings.Join(st.Addrs, ", ") + ", NOT ANSWERING (" + st.ServingError + ")"
		}
		printf(w, "serving:      %s\n", serving)
	}
	confirmed := "never confirmed"
	if !st.NetmapConfirmed.IsZero() {
		confirmed = "confirmed " + st.NetmapConfirmed.Local().Format(time.RFC3339)
	}
	if st.NetmapStale {
		confirmed += ", STALE: a gateway admits nobody until the coordinator answers"
	}
	printf(w, "netmap:       version %d, %d nodes in this node's view, %s\n", st.NetmapVersion, st.Nodes, confirmed)
	printf(w, "policy:       version %d\n", st.PolicyVersion)
}
