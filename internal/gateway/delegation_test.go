package gateway

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/agentmesh/agentmesh/internal/admission"
	"github.com/agentmesh/agentmesh/internal/audit"
	"github.com/agentmesh/agentmesh/internal/connector"
	"github.com/agentmesh/agentmesh/internal/delegation"
	"github.com/agentmesh/agentmesh/internal/gateway/gatewaytest"
	"github.com/agentmesh/agentmesh/internal/identity"
	"github.com/agentmesh/agentmesh/internal/policy"
	"github.com/agentmesh/agentmesh/internal/reason"
)

// delegationPolicy lets agent:fraud act for Alice (echo, query, progress)
// and for Bob (progress only); Alice herself may echo and progress but not
// query, Bob may echo and progress. agent:other, acting for Alice, may
// delegate on to agent:fraud (a sub-agent), and may echo only.
const delegationPolicy = `{"grants": [
  {"src": ["agent:fraud"], "dst": ["tool:payments-db"], "tools": ["echo", "query", "progress"], "on_behalf_of": ["user:alice@example.com"]},
  {"src": ["agent:fraud"], "dst": ["tool:payments-db"], "tools": ["progress"], "on_behalf_of": ["user:bob@example.com"]},
  {"src": ["user:alice@example.com"], "dst": ["tool:payments-db"], "tools": ["echo", "progress"]},
  {"src": ["user:bob@example.com"], "dst": ["tool:payments-db"], "tools": ["echo", "progress"]},
  {"src": ["agent:other"], "dst": ["tool:payments-db"], "tools": ["echo"], "on_behalf_of": ["*"]},
]}`

// delegState is f.state(doc) checking delegations against f's CA, with
// the given revocations.
func (f *fixture) delegState(doc string, revokedIDs, revokedUsers []string) *admission.State {
	st := f.state(doc)
	st.Delegations = &admission.Delegations{
		Roots: []*x509.Certificate{f.mesh.CA.Certificate()}, TrustDomain: gatewaytest.TrustDomain,
		Revoked: delegation.NewRevocations(revokedIDs, revokedUsers),
	}
	return st
}

// delegOpts shape a test delegation.
type delegOpts struct {
	user     string
	to       identity.Name // the agent it is issued to
	via      identity.Name // an agent between the person and to, or ""
	inc      string
	tools    []string
	iat, exp time.Time
}

// delegate signs a delegation with f's CA and returns it and its ID.
func (f *fixture) delegate(t *testing.T, o delegOpts) (string, string) {
	t.Helper()
	if o.user == "" {
		o.user = "alice@example.com"
	}
	if o.to == "" {
		o.to = "fraud"
	}
	if o.inc == "" {
		o.inc = "inc1"
	}
	if o.iat.IsZero() {
		o.iat = time.Now().Add(-time.Minute)
	}
	if o.exp.IsZero() {
		o.exp = o.iat.Add(time.Hour)
	}
	link := func(by string, to identity.Name) delegation.Link {
		id, err := delegation.NewID()
		if err != nil {
			t.Fatal(err)
		}
		return delegation.Link{ID: id, By: by, To: gatewaytest.ID(t, identity.KindAgent, string(to)).String()}
	}
	var chain []delegation.Link
	by := "user:" + o.user
	if o.via != "" {
		chain = append(chain, link(by, o.via))
		by = chain[0].To
	}
	chain = append(chain, link(by, o.to))
	c := &delegation.Claims{V: 1, TrustDomain: string(gatewaytest.TrustDomain), User: o.user, Chain: chain,
		Incarnation: o.inc, Tools: o.tools, IssuedAt: o.iat.Unix(), Expires: o.exp.Unix()}
	tok, err := delegation.Sign(f.mesh.CA, c)
	if err != nil {
		t.Fatal(err)
	}
	return tok, c.ID()
}

// delegClient is an HTTP client presenting cert and, on every request,
// the delegation tok.
func (f *fixture) delegClient(cert *tls.Certificate, tok string) *http.Client {
	c := f.httpClient(cert)
	// The connector's own carrier of the header.
	return &http.Client{Transport: connector.WithDelegation(c.Transport, func() (string, error) { return tok, nil })}
}

// delegCall makes a stateless tools/call as cert presenting tok ("" for
// none) and returns the refusal, or a zero denial when it was allowed.
func (f *fixture) delegCall(t *testing.T, ctx context.Context, c *http.Client, name string, hdr map[string]string) (int, denial) {
	t.Helper()
	h := map[string]string{"Mcp-Protocol-Version": "2025-11-25"}
	for k, v := range hdr {
		h[k] = v
	}
	status, _, b := f.rawPost(ctx, c, call(7, "tools/call", `{"name":"`+name+`","arguments":{"text":"x-`+name+`"}}`), h)
	if strings.Contains(string(b), `"error"`) {
		return status, rpcError(t, b)
	}
	return status, denial{}
}

func TestGatewayDecidesDelegatedCallsPerPerson(t *testing.T) {
	f := newFixture(t, fixtureOpts{})
	f.gw.Update(f.delegState(delegationPolicy, nil, nil))
	ctx := testContext(t)
	alice, aliceID := f.delegate(t, delegOpts{})
	bob, _ := f.delegate(t, delegOpts{user: "bob@example.com"})
	aliceEcho, _ := f.delegate(t, delegOpts{tools: []string{"payments-db/echo", "other-svc/*"}})
	subOK, _ := f.delegate(t, delegOpts{via: "other"})
	for _, c := range []struct {
		name, tok, tool string
		why             reason.Code
	}{
		{"alice's agent may echo", alice, "echo", ""},
		{"bob's agent may not echo", bob, "echo", reason.NotGranted},
		{"bob's agent may progress", bob, "progress", ""},
		{"no delegation: no on_behalf_of grant", "", "echo", reason.NotGranted},
		{"alice may not query herself", alice, "query", reason.DelegationExceedsGrantor},
		{"scoped to echo", aliceEcho, "echo", ""},
		{"progress is out of the scope", aliceEcho, "progress", reason.DelegationOutOfScope},
		{"sub-agent within its grantor's rights", subOK, "echo", ""},
		{"sub-agent beyond its grantor's rights", subOK, "progress", reason.DelegationExceedsGrantor},
	} {
		t.Run(c.name, func(t *testing.T) {
			cl := f.httpClient(f.fraud)
			if c.tok != "" {
				cl = f.delegClient(f.fraud, c.tok)
			}
			sid := f.rawSession(ctx, cl, "2025-11-25")
			n := f.up.Calls.Count("tool:" + c.tool)
			_, d := f.delegCall(t, ctx, cl, c.tool, map[string]string{"Mcp-Session-Id": sid})
			if d.Reason != c.why {
				t.Fatalf("got %+v, want %q", d, c.why)
			}
			if c.why == "" {
				if f.up.Calls.Count("tool:"+c.tool) != n+1 {
					t.Fatal("allowed call did not reach the upstream")
				}
				return
			}
			if f.up.Calls.Count("tool:"+c.tool) != n {
				t.Fatal("refused call reached the upstream")
			}
			ev, ok := f.rec.ByID(d.EventID)
			if !ok || ev.Reason != c.why || ev.Decision != audit.Deny {
				t.Fatalf("audit event %+v (found %v)", ev, ok)
			}
			if c.tok != "" && (ev.OnBehalfOf == nil || ev.OnBehalfOf.User == "") {
				t.Fatalf("refusal of a delegated call does not record the chain: %+v", ev)
			}
		})
	}
	// An allowed delegated call's event records both identities.
	ev, err := f.rec.WaitFor(ctx, func(e audit.Event) bool {
		return e.Kind == audit.KindRequest && e.Tool == "echo" && e.Decision == audit.Allow && e.OnBehalfOf != nil && e.OnBehalfOf.Delegation == aliceID
	})
	if err != nil {
		t.Fatal(err)
	}
	wantChain := []string{"user:alice@example.com", f.peers["fraud"].ID.String()}
	if ev.Src != f.peers["fraud"].ID.String() || ev.OnBehalfOf.User != "alice@example.com" || !slices.Equal(ev.OnBehalfOf.Chain, wantChain) {
		t.Fatalf("event %+v on behalf of %+v, want src fraud, chain %v", ev, ev.OnBehalfOf, wantChain)
	}
	if err := ev.Validate(); err != nil {
		t.Fatal(err)
	}
}

func TestGatewayRefusesBadDelegationsWithTheirCode(t *testing.T) {
	f := newFixture(t, fixtureOpts{})
	ctx := testContext(t)
	revoked, revokedID := f.delegate(t, delegOpts{})
	f.gw.Update(f.delegState(delegationPolicy, []string{revokedID}, []string{"carol@example.com"}))
	otherCA := gatewaytest.NewMesh(t)
	foreign, err := delegation.Sign(otherCA.CA, &delegation.Claims{V: 1, TrustDomain: string(gatewaytest.TrustDomain), User: "alice@example.com",
		Chain:       []delegation.Link{{ID: strings.Repeat("c", 32), By: "user:alice@example.com", To: f.peers["fraud"].ID.String()}},
		Incarnation: "inc1", IssuedAt: time.Now().Unix(), Expires: time.Now().Add(time.Hour).Unix()})
	if err != nil {
		t.Fatal(err)
	}
	toOther, _ := f.delegate(t, delegOpts{to: "other"})
	oldInc, _ := f.delegate(t, delegOpts{inc: "inc0"})
	expired, _ := f.delegate(t, delegOpts{iat: time.Now().Add(-3 * time.Hour), exp: time.Now().Add(-2 * time.Hour)})
	future, _ := f.delegate(t, delegOpts{iat: time.Now().Add(time.Hour)})
	carol, _ := f.delegate(t, delegOpts{user: "carol@example.com"})
	viaGone, _ := f.delegate(t, delegOpts{via: "gone"})
	for _, c := range []struct {
		name string
		hdr  map[string]string
		why  reason.Code
	}{
		{"not a delegation", map[string]string{delegation.Header: "hello"}, reason.DelegationMalformed},
		{"signed by another CA", map[string]string{delegation.Header: foreign}, reason.DelegationBadSignature},
		{"issued to another node", map[string]string{delegation.Header: toOther}, reason.DelegationWrongAgent},
		{"issued to an earlier incarnation", map[string]string{delegation.Header: oldInc}, reason.DelegationWrongAgent},
		{"expired", map[string]string{delegation.Header: expired}, reason.DelegationExpired},
		{"from the future", map[string]string{delegation.Header: future}, reason.DelegationClockSkew},
		{"revoked", map[string]string{delegation.Header: revoked}, reason.DelegationRevoked},
		{"person revoked", map[string]string{delegation.Header: carol}, reason.DelegationRevoked},
		{"made by an agent that is not a peer", map[string]string{delegation.Header: viaGone}, reason.DelegationRevoked},
	} {
		t.Run(c.name, func(t *testing.T) {
			n := len(f.up.Bodies())
			status, d := f.delegCall(t, ctx, f.httpClient(f.fraud), "echo", c.hdr)
			if status != http.StatusForbidden || d.Reason != c.why || d.Code != CodeDenied {
				t.Fatalf("%d %+v, want 403 %s", status, d, c.why)
			}
			if ev, ok := f.rec.ByID(d.EventID); !ok || ev.Reason != c.why || ev.Kind != audit.KindRequest {
				t.Fatalf("audit event %+v (found %v)", ev, ok)
			}
			if len(f.up.Bodies()) != n {
				t.Fatal("forwarded upstream")
			}
		})
	}
	// Two headers are refused, not one of them picked.
	t.Run("two headers", func(t *testing.T) {
		alice, _ := f.delegate(t, delegOpts{})
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, f.url, strings.NewReader(call(1, "tools/call", `{"name":"echo","arguments":{"text":"x"}}`)))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Accept", "application/json, text/event-stream")
		req.Header.Add(delegation.Header, alice)
		req.Header.Add(delegation.Header, alice)
		resp, err := f.httpClient(f.fraud).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusForbidden {
			t.Fatalf("status %d", resp.StatusCode)
		}
	})
	// A gateway that knows no CA bundle accepts no delegation.
	t.Run("no bundle", func(t *testing.T) {
		f.gw.Update(f.state(delegationPolicy))
		alice, _ := f.delegate(t, delegOpts{})
		if _, d := f.delegCall(t, ctx, f.delegClient(f.fraud, alice), "echo", nil); d.Reason != reason.DelegationBadSignature {
			t.Fatalf("%+v", d)
		}
	})
}

func TestGatewayFiltersListsForTheDelegation(t *testing.T) {
	f := newFixture(t, fixtureOpts{})
	f.gw.Update(f.delegState(delegationPolicy, nil, nil))
	ctx := testContext(t)
	list := func(tok string) []string {
		client := mcp.NewClient(&mcp.Implementation{Name: "t", Version: "1"}, nil)
		tr := &mcp.StreamableClientTransport{Endpoint: f.url, HTTPClient: f.delegClient(f.fraud, tok), MaxRetries: -1}
		cs, err := client.Connect(ctx, tr, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer cs.Close()
		res, err := cs.ListTools(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, tl := range res.Tools {
			names = append(names, tl.Name)
		}
		slices.Sort(names)
		return names
	}
	alice, _ := f.delegate(t, delegOpts{})
	scoped, _ := f.delegate(t, delegOpts{tools: []string{"payments-db/e*"}})
	bob, _ := f.delegate(t, delegOpts{user: "bob@example.com"})
	for _, c := range []struct {
		name, tok string
		want      []string
	}{
		{"alice: the agent's rights she has herself", alice, []string{"echo", "progress"}},
		{"alice, scoped", scoped, []string{"echo"}},
		{"bob", bob, []string{"progress"}},
	} {
		if got := list(c.tok); !slices.Equal(got, c.want) {
			t.Errorf("%s: %v, want %v", c.name, got, c.want)
		}
	}
}

func TestGatewayBindsSessionsToTheirDelegation(t *testing.T) {
	f := newFixture(t, fixtureOpts{})
	f.gw.Update(f.delegState(delegationPolicy, nil, nil))
	ctx := testContext(t)
	alice, _ := f.delegate(t, delegOpts{})
	alice2, _ := f.delegate(t, delegOpts{})
	sid := f.rawSession(ctx, f.delegClient(f.fraud, alice), "2025-11-25")
	plainSID := f.rawSession(ctx, f.httpClient(f.fraud), "2025-11-25")
	for _, c := range []struct {
		name string
		cl   *http.Client
		sid  string
	}{
		{"another delegation", f.delegClient(f.fraud, alice2), sid},
		{"no delegation", f.httpClient(f.fraud), sid},
		{"a delegation on a session opened without one", f.delegClient(f.fraud, alice), plainSID},
	} {
		status, d := f.delegCall(t, ctx, c.cl, "echo", map[string]string{"Mcp-Session-Id": c.sid})
		if status != http.StatusNotFound || d.Reason != reason.SessionOwnerMismatch {
			t.Errorf("%s: %d %+v, want 404 %s", c.name, status, d, reason.SessionOwnerMismatch)
		}
	}
	if _, d := f.delegCall(t, ctx, f.delegClient(f.fraud, alice), "echo", map[string]string{"Mcp-Session-Id": sid}); d.Reason != "" {
		t.Fatalf("the session's own delegation: %+v", d)
	}
}

func TestGatewayRevokingADelegationCutsItsOpenSession(t *testing.T) {
	f := newFixture(t, fixtureOpts{})
	f.gw.Update(f.delegState(delegationPolicy, nil, nil))
	ctx := testContext(t)
	alice, aliceID := f.delegate(t, delegOpts{})
	cl := f.delegClient(f.fraud, alice)
	sid := f.rawSession(ctx, cl, "2025-11-25")
	// Open the session's GET stream and wait until the gateway holds it.
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, f.url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", "text/event-stream")
	req.Header.Set("Mcp-Session-Id", sid)
	req.Header.Set("Mcp-Protocol-Version", "2025-11-25")
	resp, err := cl.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET stream: %d", resp.StatusCode)
	}
	ended := make(chan struct{})
	go func() {
		defer close(ended)
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
		}
	}()
	// Another person's delegation on the same node is not touched.
	bob, _ := f.delegate(t, delegOpts{user: "bob@example.com"})
	bobSID := f.rawSession(ctx, f.delegClient(f.fraud, bob), "2025-11-25")

	f.gw.Update(f.delegState(delegationPolicy, []string{aliceID}, nil))
	select {
	case <-ended:
	case <-ctx.Done():
		t.Fatal("the revoked delegation's stream is still open")
	}
	if _, err := f.rec.WaitFor(ctx, func(e audit.Event) bool {
		return e.Kind == audit.KindSession && e.Session == sid && e.Reason == reason.DelegationRevoked && e.OnBehalfOf != nil && e.OnBehalfOf.Delegation == aliceID
	}); err != nil {
		t.Fatal(err)
	}
	if status, d := f.delegCall(t, ctx, cl, "echo", map[string]string{"Mcp-Session-Id": sid}); status != http.StatusForbidden || d.Reason != reason.DelegationRevoked {
		t.Fatalf("a further request: %d %+v", status, d)
	}
	if _, d := f.delegCall(t, ctx, f.delegClient(f.fraud, bob), "progress", map[string]string{"Mcp-Session-Id": bobSID}); d.Reason != "" {
		t.Fatalf("bob's session: %+v", d)
	}
}

func TestGatewayEndsSessionsWhoseDelegationExpired(t *testing.T) {
	start := time.Now()
	clock := &fakeClock{t: start}
	f := newFixture(t, fixtureOpts{now: clock.Now})
	f.gw.Update(f.delegState(delegationPolicy, nil, nil))
	ctx := testContext(t)
	alice, aliceID := f.delegate(t, delegOpts{iat: start.Add(-time.Minute), exp: start.Add(time.Hour)})
	sid := f.rawSession(ctx, f.delegClient(f.fraud, alice), "2025-11-25")
	clock.Advance(2 * time.Hour)
	f.gw.reapIdle()
	if s := f.gw.sessions.get(sid); s != nil {
		t.Fatal("session of an expired delegation still open")
	}
	if _, err := f.rec.WaitFor(ctx, func(e audit.Event) bool {
		return e.Kind == audit.KindSession && e.Session == sid && e.Reason == reason.DelegationExpired && e.OnBehalfOf.Delegation == aliceID
	}); err != nil {
		t.Fatal(err)
	}
}

// oneCaller identifies every request as one tailnet caller.
type oneCaller struct{ c *admission.Caller }

func (o oneCaller) Identify(*http.Request, *admission.State) (*admission.Caller, reason.Code) {
	return o.c, ""
}

func (o oneCaller) Recheck(context.Context, *admission.Caller, *admission.State) (*admission.Caller, reason.Code) {
	return o.c, ""
}

func TestGatewayRefusesADelegationFromACallerWithoutCertificate(t *testing.T) {
	caller := &admission.Caller{Node: f0Node("fraud"), Src: "tailnet:fraud.example.ts.net", Key: "n1"}
	f := newFixture(t, fixtureOpts{config: func(c *Config) { c.TLS, c.Identifier = nil, oneCaller{caller} }})
	f.gw.Update(f.delegState(delegationPolicy, nil, nil))
	ctx := testContext(t)
	alice, _ := f.delegate(t, delegOpts{})
	f.url = strings.Replace(f.url, "https://", "http://", 1)
	plain := &http.Client{Transport: &http.Transport{}}
	t.Cleanup(plain.CloseIdleConnections)
	status, d := f.delegCall(t, ctx, plain, "echo", map[string]string{delegation.Header: alice})
	if status != http.StatusForbidden || d.Reason != reason.DelegationWrongAgent {
		t.Fatalf("%d %+v, want 403 %s", status, d, reason.DelegationWrongAgent)
	}
	if ev, ok := f.rec.ByID(d.EventID); !ok || ev.Reason != reason.DelegationWrongAgent || ev.Src != caller.Src {
		t.Fatalf("audit event %+v (found %v)", ev, ok)
	}
}

func f0Node(name string) policy.Node {
	return policy.Node{Kind: identity.KindAgent, Name: identity.Name(name)}
}
