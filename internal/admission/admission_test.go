package admission

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/agentmesh/agentmesh/internal/audit"
	"github.com/agentmesh/agentmesh/internal/identity"
	"github.com/agentmesh/agentmesh/internal/netmap"
	"github.com/agentmesh/agentmesh/internal/policy"
	"github.com/agentmesh/agentmesh/internal/reason"
)

const td = identity.TrustDomain("mesh.test")

func mustID(t *testing.T, kind identity.Kind, name string) identity.ID {
	t.Helper()
	id, err := identity.New(td, kind, identity.Name(name))
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func mustPolicy(t *testing.T, doc string) *policy.Policy {
	t.Helper()
	p, err := policy.Compile([]byte(doc), "3")
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// linked grants agent:fraud (not agent:other) the tool node "db".
const linked = `{"grants": [{"src": ["agent:fraud"], "dst": ["tool:db"], "tools": ["*"]}]}`

// testState is the state of the gateway tool:db with the peers fraud
// (incarnation i1), other (i2) and gone (revoked), under policy doc.
func testState(t *testing.T, doc string) *State {
	t.Helper()
	self := mustID(t, identity.KindTool, "db")
	st := &State{Self: policy.Node{Name: "db", Kind: identity.KindTool}, SelfID: self, Peers: map[identity.Name]Peer{}}
	if doc != "" {
		st.Policy = mustPolicy(t, doc)
	}
	for _, p := range []struct {
		name, inc string
		revoked   bool
	}{{"fraud", "i1", false}, {"other", "i2", false}, {"gone", "i3", true}} {
		id := mustID(t, identity.KindAgent, p.name)
		st.Peers[id.Name] = Peer{Node: policy.Node{Name: id.Name, Kind: id.Kind}, ID: id, Incarnation: p.inc, Revoked: p.revoked}
	}
	return st
}

// certRequest is a request whose TLS state carries a verified certificate
// naming id, issued for incarnation inc (the chain is the TLS stack's
// business, which Identify relies on).
func certRequest(id identity.ID, inc string) *http.Request {
	leaf := &x509.Certificate{URIs: []*url.URL{id.URL()}, Subject: pkix.Name{SerialNumber: inc}}
	r, _ := http.NewRequest(http.MethodPost, "https://db/mcp", nil)
	r.TLS = &tls.ConnectionState{PeerCertificates: []*x509.Certificate{leaf}}
	return r
}

func TestCheckRefusesEveryPeerTheViewDoesNotVouchFor(t *testing.T) {
	fraud := mustID(t, identity.KindAgent, "fraud")
	tests := []struct {
		name  string
		state func(*State)
		id    identity.ID
		inc   string
		want  reason.Code
	}{
		{"admitted", nil, fraud, "i1", ""},
		{"stale view", func(s *State) { s.Stale = true }, fraud, "i1", reason.StaleNetmap},
		{"not in the netmap", nil, mustID(t, identity.KindAgent, "stranger"), "i9", reason.UnknownPeer},
		{"same name, other kind", nil, mustID(t, identity.KindTool, "fraud"), "i1", reason.UnknownPeer},
		{"same name, other trust domain", nil, identity.ID{TrustDomain: "evil.test", Kind: identity.KindAgent, Name: "fraud"}, "i1", reason.UnknownPeer},
		{"revoked", nil, mustID(t, identity.KindAgent, "gone"), "i3", reason.Revoked},
		{"earlier incarnation", nil, fraud, "i0", reason.StaleIncarnation},
		{"no incarnation", nil, fraud, "", reason.StaleIncarnation},
		{"no policy", func(s *State) { s.Policy = nil }, fraud, "i1", reason.NoPolicy},
		{"no grant links it here", nil, mustID(t, identity.KindAgent, "other"), "i2", reason.NoGrant},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := testState(t, linked)
			if tt.state != nil {
				tt.state(st)
			}
			if got := st.Check(tt.id, tt.inc); got != tt.want {
				t.Fatalf("Check = %q, want %q", got, tt.want)
			}
		})
	}
	var nilState *State
	if got := nilState.Check(fraud, "i1"); got != reason.NoPolicy {
		t.Fatalf("a nil state admits: %q", got)
	}
}

func TestIdentifyTakesTheIdentityOnlyFromTheCertificate(t *testing.T) {
	st := testState(t, linked)
	fraud := mustID(t, identity.KindAgent, "fraud")

	a, why := Identify(st, certRequest(fraud, "i1"), nil)
	if why != "" || a.Src != fraud.String() || a.ID != fraud || a.Incarnation != "i1" || a.State != st || a.Node.Name != "fraud" || a.Caller != nil {
		t.Fatalf("admitted peer = %+v, %q", a, why)
	}

	// A header claiming an identity changes nothing.
	plain, _ := http.NewRequest(http.MethodPost, "http://db/mcp", nil)
	plain.Header.Set("X-Spiffe-Id", fraud.String())
	if a, why := Identify(st, plain, nil); why != reason.NoCertificate || a.Src != "" {
		t.Fatalf("request without TLS = %+v, %q, want no_certificate", a, why)
	}
	noCert := certRequest(fraud, "i1")
	noCert.TLS.PeerCertificates = nil
	if _, why := Identify(st, noCert, nil); why != reason.NoCertificate {
		t.Fatalf("TLS without a certificate: %q", why)
	}
	bad := certRequest(fraud, "i1")
	bad.TLS.PeerCertificates[0].URIs = append(bad.TLS.PeerCertificates[0].URIs, mustID(t, identity.KindAgent, "other").URL())
	if a, why := Identify(st, bad, nil); why != reason.BadIdentity || a.Src != "" {
		t.Fatalf("two identities = %+v, %q, want bad_identity", a, why)
	}
	// A refusal still names the client for the audit event.
	stranger := mustID(t, identity.KindAgent, "stranger")
	if a, why := Identify(st, certRequest(stranger, "i9"), nil); why != reason.UnknownPeer || a.Src != stranger.String() || a.State != nil {
		t.Fatalf("stranger = %+v, %q", a, why)
	}
	if a, why := Identify(nil, certRequest(fraud, "i1"), nil); why != reason.NoPolicy || a.Src != fraud.String() {
		t.Fatalf("nil state = %+v, %q", a, why)
	}
}

// fakeIdentifier answers Identify and Recheck with fixed results.
type fakeIdentifier struct {
	c   *Caller
	why reason.Code
}

func (f fakeIdentifier) Identify(*http.Request, *State) (*Caller, reason.Code) { return f.c, f.why }
func (f fakeIdentifier) Recheck(context.Context, *Caller, *State) (*Caller, reason.Code) {
	return f.c, f.why
}

func TestIdentifyThroughAnIdentifierRefusesOnAnyDoubt(t *testing.T) {
	fraudNode := policy.Node{Name: "fraud", Kind: identity.KindAgent}
	own := mustPolicy(t, `{"grants": [{"src": ["*"], "dst": ["*"], "tools": ["echo"]}]}`)
	plain, _ := http.NewRequest(http.MethodPost, "http://db/mcp", nil)
	tests := []struct {
		name    string
		ident   fakeIdentifier
		state   func(*State)
		want    reason.Code
		wantSrc string
	}{
		{"admitted", fakeIdentifier{c: &Caller{Node: fraudNode, Src: "tailnet:fraud", Key: "k1"}}, nil, "", "tailnet:fraud"},
		{"nobody and no reason", fakeIdentifier{}, nil, reason.UnknownPeer, ""},
		{"the identifier's refusal", fakeIdentifier{why: reason.WhoIsFailed}, nil, reason.WhoIsFailed, ""},
		{"identified but refused", fakeIdentifier{c: &Caller{Node: fraudNode, Src: "tailnet:fraud", Key: "k1"}, why: reason.NoCapability}, nil, reason.NoCapability, "tailnet:fraud"},
		{"no key", fakeIdentifier{c: &Caller{Node: fraudNode, Src: "tailnet:fraud"}}, nil, reason.UnknownPeer, "tailnet:fraud"},
		{"not linked", fakeIdentifier{c: &Caller{Node: policy.Node{Name: "other", Kind: identity.KindAgent}, Src: "tailnet:other", Key: "k2"}}, nil, reason.NoGrant, "tailnet:other"},
		{"stale view", fakeIdentifier{c: &Caller{Node: fraudNode, Src: "tailnet:fraud", Key: "k1"}}, func(s *State) { s.Stale = true }, reason.StaleNetmap, "tailnet:fraud"},
		{"no policy", fakeIdentifier{c: &Caller{Node: fraudNode, Src: "tailnet:fraud", Key: "k1"}}, func(s *State) { s.Policy = nil }, reason.NoPolicy, "tailnet:fraud"},
		{"its own policy without the state's", fakeIdentifier{c: &Caller{Node: fraudNode, Src: "tailnet:fraud", Key: "k1", Policy: own}}, func(s *State) { s.Policy = nil }, "", "tailnet:fraud"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := testState(t, linked)
			if tt.state != nil {
				tt.state(st)
			}
			a, why := Identify(st, plain, tt.ident)
			if why != tt.want || a.Src != tt.wantSrc {
				t.Fatalf("Identify = %+v, %q; want %q from %q", a, why, tt.want, tt.wantSrc)
			}
			if why != "" {
				if a.State != nil || a.Caller != nil {
					t.Fatalf("a refused caller comes with what to decide under: %+v", a)
				}
				return
			}
			if a.Caller != tt.ident.c || !a.ID.IsZero() || a.Node.Name != "fraud" {
				t.Fatalf("admitted caller = %+v", a)
			}
			if want := tt.ident.c.Policy; want != nil && (a.State.Policy != want || st.Policy != nil) {
				t.Fatalf("the caller's own policy does not decide, or leaked into the shared state: %+v", a.State)
			}
		})
	}
	// With an Identifier, a request that came over TLS is still
	// identified by its certificate.
	fraud := mustID(t, identity.KindAgent, "fraud")
	if a, why := Identify(testState(t, linked), certRequest(fraud, "i1"), fakeIdentifier{why: reason.WhoIsFailed}); why != "" || a.ID != fraud {
		t.Fatalf("TLS request with an Identifier = %+v, %q", a, why)
	}
}

func TestRecheckRefusesACallerWhoseAddressAnotherNodeNowHolds(t *testing.T) {
	st := testState(t, linked)
	fraudNode := policy.Node{Name: "fraud", Kind: identity.KindAgent}
	c := &Caller{Node: fraudNode, Src: "tailnet:fraud", Key: "k1"}
	if nc, why := Recheck(context.Background(), fakeIdentifier{c: &Caller{Node: fraudNode, Src: "tailnet:fraud", Key: "k1"}}, c, st); why != "" || nc == nil {
		t.Fatalf("the same caller again: %+v, %q", nc, why)
	}
	for name, f := range map[string]fakeIdentifier{
		"another key":   {c: &Caller{Node: fraudNode, Src: "tailnet:fraud", Key: "k2"}},
		"nobody":        {},
		"lost its link": {c: &Caller{Node: policy.Node{Name: "other", Kind: identity.KindAgent}, Src: "tailnet:other", Key: "k1"}},
		"refused":       {why: reason.WhoIsFailed},
	} {
		if nc, why := Recheck(context.Background(), f, c, st); nc != nil || why == "" {
			t.Errorf("%s: still admitted: %+v", name, nc)
		}
	}
}

func TestNewStateMakesPeersOnlyOfActiveNodesWithAnIncarnation(t *testing.T) {
	self := mustID(t, identity.KindTool, "db")
	node := func(kind identity.Kind, name string, status netmap.Status, inc string, tags ...identity.Tag) netmap.Node {
		id := mustID(t, kind, name)
		return netmap.Node{ID: id, Name: id.Name, Kind: kind, Tags: append([]identity.Tag{}, tags...), Status: status, Incarnation: inc}
	}
	files := node(identity.KindTool, "files", netmap.StatusActive, "")
	files.Addrs = []string{"files:1"}
	nm := &netmap.Netmap{Nodes: []netmap.Node{
		node(identity.KindTool, "db", netmap.StatusActive, "s1", "tag:pay"),
		node(identity.KindAgent, "fraud", netmap.StatusActive, "i1", "tag:fraud"),
		node(identity.KindAgent, "gone", netmap.StatusRevoked, "i3"),
		// A service this node may reach: no incarnation, not a peer.
		files,
	}}
	pol := mustPolicy(t, linked)
	st := NewState(self, nm, pol, true)
	if st.Policy != pol || !st.Stale || st.SelfID != self {
		t.Fatalf("state = %+v", st)
	}
	if len(st.Self.Tags) != 1 || st.Self.Tags[0] != "tag:pay" {
		t.Fatalf("self = %+v, want its tags from the netmap", st.Self)
	}
	if len(st.Peers) != 2 || st.Peers["fraud"].Incarnation != "i1" || st.Peers["fraud"].Node.Tags[0] != "tag:fraud" {
		t.Fatalf("peers = %+v, want db and fraud", st.Peers)
	}
	if len(st.Revoked) != 1 || st.Revoked["i3"] != mustID(t, identity.KindAgent, "gone") {
		t.Fatalf("revoked = %+v, want gone's registration i3", st.Revoked)
	}
	if empty := NewState(self, nil, nil, false); len(empty.Peers) != 0 || empty.Self.Name != "db" || empty.Check(self, "s1") == "" {
		t.Fatalf("state without a netmap = %+v", empty)
	}
}

func TestCheckRefusesARevokedRegistrationAsRevokedNotUnknown(t *testing.T) {
	self := mustID(t, identity.KindTool, "db")
	fraud, gone, stranger := mustID(t, identity.KindAgent, "fraud"), mustID(t, identity.KindAgent, "gone"), mustID(t, identity.KindAgent, "stranger")
	node := func(id identity.ID, status netmap.Status, inc string) netmap.Node {
		return netmap.Node{ID: id, Name: id.Name, Kind: id.Kind, Tags: []identity.Tag{}, Status: status, Incarnation: inc}
	}
	// fraud was revoked (i0) and joined again (i1); gone was revoked and
	// has no active registration.
	nm := &netmap.Netmap{Nodes: []netmap.Node{
		node(fraud, netmap.StatusRevoked, "i0"),
		node(fraud, netmap.StatusActive, "i1"),
		node(gone, netmap.StatusRevoked, "i3"),
	}}
	st := NewState(self, nm, mustPolicy(t, linked), false)
	tests := []struct {
		name string
		id   identity.ID
		inc  string
		want reason.Code
	}{
		{"the active registration", fraud, "i1", ""},
		{"a revoked registration of a name that joined again", fraud, "i0", reason.Revoked},
		{"a revoked node", gone, "i3", reason.Revoked},
		{"an earlier registration never revoked", fraud, "i7", reason.StaleIncarnation},
		{"a node never known", stranger, "i9", reason.UnknownPeer},
		{"another identity presenting a revoked incarnation", stranger, "i3", reason.UnknownPeer},
		{"no incarnation", gone, "", reason.UnknownPeer},
	}
	for _, tt := range tests {
		if got := st.Check(tt.id, tt.inc); got != tt.want {
			t.Errorf("%s: Check = %q, want %q", tt.name, got, tt.want)
		}
	}
	if a, why := Identify(st, certRequest(gone, "i3"), nil); why != reason.Revoked || a.Src != gone.String() {
		t.Fatalf("Identify of a revoked node = %+v, %q, want revoked", a, why)
	}
}

func TestDstAndPolicyVersionNameTheGateway(t *testing.T) {
	var nilState *State
	if nilState.Dst() != "" || nilState.PolicyVersion() != "" || (&State{}).Dst() != "" {
		t.Fatal("a nil or zero state names a destination or version")
	}
	st := testState(t, linked)
	if st.Dst() != "spiffe://mesh.test/tool/db" || st.PolicyVersion() != "3" {
		t.Fatalf("Dst %q, version %q", st.Dst(), st.PolicyVersion())
	}
	st.SelfID = identity.ID{}
	if st.Dst() != "tool:db" {
		t.Fatalf("Dst without SelfID = %q, want the selector", st.Dst())
	}
}

// recorder keeps what it is given, or fails.
type recorder struct {
	events []audit.Event
	err    error
}

func (r *recorder) Record(ctx context.Context, e *audit.Event) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if r.err != nil {
		return r.err
	}
	r.events = append(r.events, *e)
	return nil
}

func TestRecordRefusalStampsWithTheGatewaysClockAndAccountsForEachAttempt(t *testing.T) {
	at := time.Date(2030, 1, 2, 3, 4, 5, 0, time.FixedZone("x", 3600))
	rec := &recorder{}
	// A cancelled request still gets its refusal recorded.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	e := &audit.Event{Kind: audit.KindConnection, Dst: "tool:db", Decision: audit.Deny, Reason: reason.UnknownPeer, Outcome: audit.OutcomeRefused}
	id, err := RecordRefusal(ctx, nil, rec, e, at)
	if err != nil || len(rec.events) != 1 {
		t.Fatalf("RecordRefusal: %v, %d events", err, len(rec.events))
	}
	got := rec.events[0]
	if id == "" || got.ID != id || got.V != audit.SchemaVersion || !got.Time.Equal(at) || got.Time.Location() != time.UTC {
		t.Fatalf("recorded %+v under id %q, want stamped at %v in UTC", got, id, at)
	}

	rec.err = errors.New("disk full")
	if _, err := RecordRefusal(context.Background(), nil, rec, &audit.Event{Kind: audit.KindConnection}, at); err == nil {
		t.Fatal("a failed record is not reported")
	}

	rec.err = nil
	agg := audit.NewRefusals(audit.RefusalOptions{Record: func(ctx context.Context, e *audit.Event) error { return rec.Record(ctx, e) },
		Now: func() time.Time { return at }})
	first, _ := RecordRefusal(context.Background(), agg, rec, &audit.Event{Kind: audit.KindConnection, Dst: "tool:db", SrcAddr: "192.0.2.1:1", Reason: reason.UnknownPeer}, at)
	second, _ := RecordRefusal(context.Background(), agg, rec, &audit.Event{Kind: audit.KindConnection, Dst: "tool:db", SrcAddr: "192.0.2.1:2", Reason: reason.UnknownPeer}, at)
	if err := agg.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if first == second || len(rec.events) != 3 || rec.events[2].ID != second || rec.events[2].Count != 1 {
		t.Fatalf("ids %q %q, events %+v: want the second attempt counted in an aggregate", first, second, rec.events)
	}
}
