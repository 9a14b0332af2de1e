package netmap_test

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/agentmesh/agentmesh/internal/identity"
	"github.com/agentmesh/agentmesh/internal/netmap"
)

// wireNetmap is a netmap as the coordinator has always written it: every
// node field a string or a list of strings.
const wireNetmap = `{"version":9,"trust_domain":"t.mesh","ca_bundle":"","cert_ttl":3600000000000,"nodes":[` +
	`{"id":"spiffe://t.mesh/tool/files","name":"files","kind":"tool","tags":["tag:a","tag:b"],"addrs":["files.internal:7800"],"status":"active","incarnation":"i1","last_seen":"2026-03-01T12:00:00Z"},` +
	`{"id":"spiffe://t.mesh/agent/fraud","name":"fraud","kind":"agent","tags":[],"status":"revoked","incarnation":"i2"}` +
	`],"policy":{"version":0,"document":""}}`

func TestDecodeTypesEveryNodeFieldOnce(t *testing.T) {
	nm, err := netmap.Decode([]byte(wireNetmap))
	if err != nil {
		t.Fatal(err)
	}
	files := identity.ID{TrustDomain: "t.mesh", Kind: identity.KindTool, Name: "files"}
	want := []netmap.Node{
		{ID: files, Name: "files", Kind: identity.KindTool, Tags: []identity.Tag{"tag:a", "tag:b"}, Addrs: []string{"files.internal:7800"},
			Status: netmap.StatusActive, Incarnation: "i1", LastSeen: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)},
		{ID: identity.ID{TrustDomain: "t.mesh", Kind: identity.KindAgent, Name: "fraud"}, Name: "fraud", Kind: identity.KindAgent,
			Tags: []identity.Tag{}, Status: netmap.StatusRevoked, Incarnation: "i2"},
	}
	if nm.TrustDomain != "t.mesh" || !reflect.DeepEqual(nm.Nodes, want) {
		t.Fatalf("decoded %+v\nwant %+v", nm.Nodes, want)
	}
	if n, ok := nm.Node("files"); !ok || n.ID != files || !n.Kind.Serves() {
		t.Fatalf("Node(files) = %+v, %v", n, ok)
	}
	if pn := nm.Nodes[0].PolicyNode(); pn.Kind != identity.KindTool || pn.Name != "files" || len(pn.Tags) != 2 {
		t.Fatalf("PolicyNode = %+v", pn)
	}
}

func TestNodeKeepsItsWireFormat(t *testing.T) {
	nm, err := netmap.Decode([]byte(wireNetmap))
	if err != nil {
		t.Fatal(err)
	}
	got, err := json.Marshal(nm.Nodes)
	if err != nil {
		t.Fatal(err)
	}
	// The nodes as they were on the wire, byte for byte.
	start := strings.Index(wireNetmap, `"nodes":`) + len(`"nodes":`)
	end := strings.Index(wireNetmap, `,"policy"`)
	if want := wireNetmap[start:end]; string(got) != want {
		t.Fatalf("encoded\n%s\nwant\n%s", got, want)
	}
	// A node built in code without tags still says "tags":[].
	b, _ := json.Marshal(netmap.Node{ID: identity.ID{TrustDomain: "t", Kind: identity.KindAgent, Name: "a"}, Name: "a", Kind: identity.KindAgent, Status: netmap.StatusActive})
	if !strings.Contains(string(b), `"tags":[]`) {
		t.Fatalf("untagged node encodes as %s", b)
	}
}

func TestDecodeFailsOnANodeItCannotParseAndSaysWhich(t *testing.T) {
	for name, tc := range map[string]struct{ node, says string }{
		"bad id":       {`{"id":"spiffe://t.mesh/agent/Fraud","name":"fraud","kind":"agent","tags":[],"status":"active"}`, `"fraud"`},
		"no id":        {`{"name":"fraud","kind":"agent","tags":[],"status":"active"}`, "invalid SPIFFE ID"},
		"bad kind":     {`{"id":"spiffe://t.mesh/agent/fraud","name":"fraud","kind":"robot","tags":[],"status":"active"}`, "invalid node kind"},
		"bad name":     {`{"id":"spiffe://t.mesh/agent/fraud","name":"Fraud","kind":"agent","tags":[],"status":"active"}`, "invalid node name"},
		"id of other":  {`{"id":"spiffe://t.mesh/agent/other","name":"fraud","kind":"agent","tags":[],"status":"active"}`, "is not the id of agent fraud"},
		"bad tag":      {`{"id":"spiffe://t.mesh/agent/fraud","name":"fraud","kind":"agent","tags":["pay"],"status":"active"}`, "invalid tag"},
		"twice tagged": {`{"id":"spiffe://t.mesh/agent/fraud","name":"fraud","kind":"agent","tags":["tag:a","tag:a"],"status":"active"}`, "listed twice"},
		"bad status":   {`{"id":"spiffe://t.mesh/agent/fraud","name":"fraud","kind":"agent","tags":[],"status":"paused"}`, `status "paused"`},
		"extra field":  {`{"id":"spiffe://t.mesh/agent/fraud","name":"fraud","kind":"agent","tags":[],"status":"active","admin":true}`, "unknown field"},
	} {
		b := `{"trust_domain":"t.mesh","nodes":[` + tc.node + `]}`
		nm, err := netmap.Decode([]byte(b))
		if err == nil || nm != nil {
			t.Errorf("%s: decoded %+v", name, nm)
			continue
		}
		if !strings.Contains(err.Error(), tc.says) || !strings.HasPrefix(err.Error(), "netmap: ") {
			t.Errorf("%s: error %q does not say %q", name, err, tc.says)
		}
	}
}

func TestValidateRefusesNodesBuiltInconsistentlyInCode(t *testing.T) {
	id := identity.ID{TrustDomain: "t.mesh", Kind: identity.KindAgent, Name: "a"}
	good := netmap.Node{ID: id, Name: "a", Kind: identity.KindAgent, Tags: []identity.Tag{"tag:x"}, Status: netmap.StatusActive}
	if err := (&netmap.Netmap{TrustDomain: "t.mesh", Nodes: []netmap.Node{good}}).Validate(); err != nil {
		t.Fatalf("a consistent node: %v", err)
	}
	for name, edit := range map[string]func(*netmap.Node){
		"id in another domain": func(n *netmap.Node) { n.ID.TrustDomain = "evil" },
		"zero id":              func(n *netmap.Node) { n.ID = identity.ID{} },
		"kind other than id's": func(n *netmap.Node) { n.Kind = identity.KindTool },
		"unparsable tag":       func(n *netmap.Node) { n.Tags = []identity.Tag{"x"} },
		"tag with a space":     func(n *netmap.Node) { n.Tags = []identity.Tag{" tag:x"} },
		"no status":            func(n *netmap.Node) { n.Status = "" },
	} {
		n := good
		n.Tags = append([]identity.Tag(nil), good.Tags...)
		edit(&n)
		if err := (&netmap.Netmap{TrustDomain: "t.mesh", Nodes: []netmap.Node{n}}).Validate(); err == nil {
			t.Errorf("%s: Validate accepted %+v", name, n)
		}
	}
}

func TestParseStatusAcceptsOnlyTheTwoStatuses(t *testing.T) {
	for s, ok := range map[string]bool{"active": true, "revoked": true, "": false, "Active": false, "paused": false} {
		st, err := netmap.ParseStatus(s)
		if (err == nil) != ok || ok && string(st) != s {
			t.Errorf("ParseStatus(%q) = %q, %v", s, st, err)
		}
	}
}

func TestNodePrefersTheActiveRegistrationOfAName(t *testing.T) {
	id, err := identity.New("t.mesh", identity.KindAgent, "bot")
	if err != nil {
		t.Fatal(err)
	}
	old := netmap.Node{ID: id, Name: id.Name, Kind: id.Kind, Tags: []identity.Tag{}, Status: netmap.StatusRevoked, Incarnation: "i0"}
	cur := old
	cur.Status, cur.Incarnation = netmap.StatusActive, "i1"
	nm := &netmap.Netmap{Nodes: []netmap.Node{old, cur}}
	if n, ok := nm.Node("bot"); !ok || n.Incarnation != "i1" {
		t.Fatalf("Node = %+v, %v, want the active registration", n, ok)
	}
	nm.Nodes = nm.Nodes[:1]
	if n, ok := nm.Node("bot"); !ok || n.Status != netmap.StatusRevoked {
		t.Fatalf("Node = %+v, %v, want the revoked registration when there is no other", n, ok)
	}
	if _, ok := nm.Node("nobody"); ok {
		t.Fatal("found a node the netmap does not list")
	}
}
