package cli

import (
	"context"
	"strings"
	"time"

	"github.com/agentmesh/agentmesh/internal/engine"
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
most ` + engine.ServingProbeTimeout.String() + `); a gateway that does not answer is reported, not an exit status.

Examples:
  agentmesh status --state ./payments
  agentmesh status --json | jq .cert_not_after
  agentmesh status --state ./payments >/dev/null || echo "payments cannot work"`,
		run: runStatus,
	})
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
	if err := loginStatus(env, *state, *asJSON); err != errNotLogin {
		return err
	}
	st, err := engine.Status(ctx, *state, time.Now())
	if err != nil {
		return err
	}
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

func printStatus(env Env, st engine.NodeStatus) {
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
	var others []string
	for _, u := range st.Coordinators {
		if u != st.Coordinator {
			others = append(others, u)
		}
	}
	if len(others) > 0 {
		printf(w, "failover:     %s (the other coordinators this node knows)\n", strings.Join(others, ", "))
	}
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
