package cli

import (
	"context"
	"strings"
	"time"

	"agentmesh/internal/controlclient"
	"agentmesh/internal/identity"
	"agentmesh/internal/nodestate"
)

func init() {
	register(&command{
		name:  "status",
		usage: "--state DIR [--json]",
		short: "show this node's identity, certificate, netmap and coordinator reachability",
		long: `Examples:
  agentmesh status --state ./payments
  agentmesh status --json | jq .cert_not_after`,
		run: runStatus,
	})
}

// Status is what 'agentmesh status --json' prints.
type Status struct {
	ID                 string    `json:"id"`
	Name               string    `json:"name"`
	Kind               string    `json:"kind"`
	Tags               []string  `json:"tags"`
	CertNotAfter       time.Time `json:"cert_not_after"`
	CertExpired        bool      `json:"cert_expired"`
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
	cfg, _ := d.Config()
	leaf := cl.Certificate().Leaf
	st := Status{ID: cl.ID().String(), Name: string(cl.ID().Name), Kind: string(cl.ID().Kind), Tags: []string{},
		CertNotAfter: leaf.NotAfter.UTC(), CertExpired: time.Now().After(leaf.NotAfter), Coordinator: cfg.CoordinatorURL}
	nm, _ := cl.CachedNetmap()
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	fresh, err := cl.Netmap(pctx, -1)
	cancel()
	st.NetmapConfirmed, _ = d.NetmapConfirmed()
	if err == nil && fresh != nil {
		st.CoordinatorReached = true
		nm = fresh
		st.NetmapConfirmed = time.Now()
	} else if err != nil {
		st.CoordinatorError = err.Error()
	}
	st.NetmapStale = !nm.Fresh(st.NetmapConfirmed, time.Now())
	if nm != nil {
		st.NetmapVersion, st.PolicyVersion, st.Nodes = nm.Version, nm.Policy.Version, len(nm.Nodes)
		if n, ok := nm.Node(cl.ID().Name); ok {
			st.Tags = identity.TagStrings(n.Tags)
		}
	}
	if *asJSON {
		return printJSON(env.Stdout, st)
	}
	w := env.Stdout
	printf(w, "identity:     %s\n", st.ID)
	printf(w, "kind:         %s\n", st.Kind)
	printf(w, "tags:         %s\n", strings.Join(st.Tags, ", "))
	exp := "valid until " + st.CertNotAfter.Local().Format(time.RFC3339)
	if st.CertExpired {
		exp = "EXPIRED at " + st.CertNotAfter.Local().Format(time.RFC3339) + " (renews when a long-running command starts; or join again)"
	}
	printf(w, "certificate:  %s\n", exp)
	reach := "reachable"
	if !st.CoordinatorReached {
		reach = "UNREACHABLE (" + st.CoordinatorError + "); using the cached netmap"
	}
	printf(w, "coordinator:  %s, %s\n", st.Coordinator, reach)
	confirmed := "never confirmed"
	if !st.NetmapConfirmed.IsZero() {
		confirmed = "confirmed " + st.NetmapConfirmed.Local().Format(time.RFC3339)
	}
	if st.NetmapStale {
		confirmed += ", STALE: a gateway admits nobody until the coordinator answers"
	}
	printf(w, "netmap:       version %d, %d nodes in this node's view, %s\n", st.NetmapVersion, st.Nodes, confirmed)
	printf(w, "policy:       version %d\n", st.PolicyVersion)
	return nil
}
