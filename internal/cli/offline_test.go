package cli

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/agentmesh/agentmesh/internal/admission"
	"github.com/agentmesh/agentmesh/internal/controlapi"
	"github.com/agentmesh/agentmesh/internal/controlclient"
	"github.com/agentmesh/agentmesh/internal/coordinator"
	"github.com/agentmesh/agentmesh/internal/netmap"
	"github.com/agentmesh/agentmesh/internal/node"
	"github.com/agentmesh/agentmesh/internal/nodestate"
	"github.com/agentmesh/agentmesh/internal/pki/pkitest"
	"github.com/agentmesh/agentmesh/internal/reason"
)

// admitsAs says how the gateway state of view v (at the node self) answers
// a client presenting the certificate in state dir: "" when admitted, else
// the reason code.
func admitsAs(t *testing.T, v node.View, n *node.Node, dir string) reason.Code {
	t.Helper()
	d, err := nodestate.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	_, leaf, err := d.Certificate()
	if err != nil {
		t.Fatal(err)
	}
	r, _ := http.NewRequest(http.MethodPost, "https://gateway/mcp", nil)
	r.TLS = &tls.ConnectionState{PeerCertificates: []*x509.Certificate{leaf}}
	_, why := admission.Identify(admission.NewState(n.ID(), v.Netmap, v.Policy, v.Stale), r, nil)
	return why
}

// TestGatewayOnAnOldCacheAdmitsNobodyUntilTheCoordinatorAnswers: a gateway
// that restarts from its cache while the coordinator is away still admits
// a node revoked meanwhile, but only while its view is younger than a
// certificate lifetime (so at most until that node's certificate expires);
// past that it admits nobody (stale_netmap) until the coordinator answers,
// and then it knows of the revocation.
func TestGatewayOnAnOldCacheAdmitsNobodyUntilTheCoordinatorAnswers(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	start := time.Now()
	clock := pkitest.NewClock(start)
	const ttl = time.Hour
	startCo := func(now func() time.Time, listen string) *coordinator.Coordinator {
		t.Helper()
		co, err := coordinator.Start(ctx, coordinator.Config{DataDir: filepath.Join(dir, "co"), Listen: listen, CertTTL: ttl,
			Now: now, LongPoll: 20 * time.Millisecond, Logger: testLogger(t)})
		if err != nil {
			t.Fatal(err)
		}
		return co
	}
	co := startCo(clock.Now, "127.0.0.1:0")
	defer func() { co.Close() }()
	adminDir := co.AdminDir()
	admin := func(method, path string, in, out any) {
		t.Helper()
		if err := adminCall(ctx, adminDir, method, path, in, out); err != nil {
			t.Fatal(err)
		}
	}
	states := map[string]string{}
	for _, n := range []struct{ name, kind string }{{"files", "tool"}, {"teller", "agent"}, {"auditor", "agent"}} {
		var resp controlapi.KeyCreateResponse
		admin(http.MethodPost, controlapi.PathKeys, controlapi.KeyCreateRequest{Kind: n.kind}, &resp)
		states[n.name] = filepath.Join(dir, n.name)
		if _, err := controlclient.Join(ctx, controlclient.JoinOptions{AuthKey: resp.Key, Name: n.name, State: states[n.name], Now: clock.Now}); err != nil {
			t.Fatal(err)
		}
	}
	admin(http.MethodPost, controlapi.PathPolicy, controlapi.PolicyApplyRequest{Document: `{"grants": [{"src": ["agent:teller", "agent:auditor"], "dst": ["tool:files"], "tools": ["*"]}]}`}, nil)

	startNode := func(clk *pkitest.Clock) *node.Node {
		t.Helper()
		o := node.Options{Logger: testLogger(t)}
		if clk != nil {
			o.Clock = clk
		}
		n, err := node.Start(ctx, states["files"], o)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	wait := func(n *node.Node, what string, cond func(node.View) bool) node.View {
		t.Helper()
		wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
		v, err := n.WaitView(wctx, cond)
		if err != nil {
			t.Fatalf("waiting for %s: %v (view: stale %v, confirmed %v)", what, err, v.Stale, v.Confirmed)
		}
		return v
	}
	// A gateway's view keeps a revoked peer's registration (to refuse it
	// as revoked): teller counts while it is an active peer.
	hasTeller := func(v node.View) bool { n, ok := v.Netmap.Node("teller"); return ok && n.Status == netmap.StatusActive }

	// The gateway runs with the coordinator up: teller is admitted, and
	// every answer of the long poll confirms the view.
	n := startNode(clock)
	v := wait(n, "a view with teller", func(v node.View) bool { return v.Policy != nil && hasTeller(v) && !v.Stale })
	if got := admitsAs(t, v, n, states["teller"]); got != "" {
		t.Fatalf("teller refused with the coordinator up: %s", got)
	}
	clock.Advance(30 * time.Minute)
	confirmedAt := clock.Now()
	wait(n, "a confirmation", func(v node.View) bool { return !v.Confirmed.Before(confirmedAt) })
	n.Close()

	// While the gateway is down, teller is revoked, then the coordinator
	// goes away too.
	admin(http.MethodPost, controlapi.PathNodes+"/teller/revoke", nil, nil)
	co.Close()

	// Restarted from its cache, the gateway does not know: teller is
	// admitted, at most until its certificate expires (it cannot renew),
	// which is before the view goes stale.
	n = startNode(clock)
	v = wait(n, "the cached view", func(v node.View) bool { return v.Netmap != nil })
	if v.Stale || !hasTeller(v) {
		t.Fatalf("cached view: stale %v, teller %v", v.Stale, hasTeller(v))
	}
	if got := admitsAs(t, v, n, states["teller"]); got != "" {
		t.Fatalf("teller refused from a fresh cache: %s", got)
	}
	d, _ := nodestate.Open(states["teller"])
	if _, leaf, _ := d.Certificate(); leaf.NotAfter.After(v.Confirmed.Add(ttl)) {
		t.Fatalf("teller's certificate outlives the view's window: %v > %v", leaf.NotAfter, v.Confirmed.Add(ttl))
	}
	// One lifetime after the last confirmation, nobody is admitted.
	clock.Advance(ttl + time.Second)
	v = wait(n, "the view to go stale", func(v node.View) bool { return v.Stale })
	for _, who := range []string{"teller", "auditor"} {
		if got := admitsAs(t, v, n, states[who]); got != reason.StaleNetmap {
			t.Errorf("%s on a stale view: %q, want %s", who, got, reason.StaleNetmap)
		}
	}
	n.Close()

	// A restart from a cache last confirmed long ago starts stale, and
	// the coordinator's first answer makes the view fresh: teller is gone.
	co = startCo(time.Now, co.Addr().String())
	fd, _ := nodestate.Open(states["files"])
	if err := fd.SaveNetmapConfirmed(time.Now().Add(-2 * ttl)); err != nil {
		t.Fatal(err)
	}
	views := make(chan node.View, 16)
	n, err := node.Start(ctx, states["files"], node.Options{Logger: testLogger(t), OnView: func(v node.View) { views <- v }})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	first := <-views
	if !first.Stale || !hasTeller(first) {
		t.Fatalf("view from an old cache: stale %v, teller %v; want stale", first.Stale, hasTeller(first))
	}
	if got := admitsAs(t, first, n, states["auditor"]); got != reason.StaleNetmap {
		t.Errorf("auditor on the old cache: %q, want %s", got, reason.StaleNetmap)
	}
	v = wait(n, "the coordinator's answer", func(v node.View) bool { return !v.Stale })
	if hasTeller(v) {
		t.Error("the fresh view still lists the revoked teller")
	}
	if got := admitsAs(t, v, n, states["auditor"]); got != "" {
		t.Errorf("auditor refused on the fresh view: %s", got)
	}
	if got := admitsAs(t, v, n, states["teller"]); got != reason.Revoked {
		t.Errorf("the revoked teller on the fresh view: %q, want %s", got, reason.Revoked)
	}
}
