package netmap_test

import (
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/agentmesh/agentmesh/internal/identity"
	"github.com/agentmesh/agentmesh/internal/netmap"
	"github.com/agentmesh/agentmesh/internal/policy"
)

func TestFreshAdmitsForOneCertificateLifetimeAfterTheLastConfirmation(t *testing.T) {
	confirmed := time.Unix(1_000_000, 0)
	nm := &netmap.Netmap{CertTTL: time.Hour}
	for _, tc := range []struct {
		name      string
		nm        *netmap.Netmap
		confirmed time.Time
		now       time.Time
		fresh     bool
	}{
		{"just confirmed", nm, confirmed, confirmed, true},
		{"within the lifetime", nm, confirmed, confirmed.Add(59 * time.Minute), true},
		{"at the lifetime", nm, confirmed, confirmed.Add(time.Hour), true},
		{"past the lifetime", nm, confirmed, confirmed.Add(time.Hour + time.Nanosecond), false},
		{"never confirmed", nm, time.Time{}, confirmed, false},
		{"no netmap", nil, confirmed, confirmed, false},
		{"no lifetime", &netmap.Netmap{}, confirmed, confirmed, false},
		{"clock a little behind", nm, confirmed, confirmed.Add(-30 * time.Second), true},
		{"clock went back", nm, confirmed, confirmed.Add(-2 * time.Minute), false},
	} {
		if got := tc.nm.Fresh(tc.confirmed, tc.now); got != tc.fresh {
			t.Errorf("%s: Fresh = %v, want %v", tc.name, got, tc.fresh)
		}
	}
}

// FuzzDecode: the node decodes what the coordinator (or its own cache)
// hands it. Decoding is strict and never panics; what decodes survives a
// round trip, and its policy, projected or whole, compiles or is refused
// without panicking.
func FuzzDecode(f *testing.F) {
	full, _ := json.Marshal(netmap.Netmap{Version: 3, TrustDomain: "t.mesh", CertTTL: time.Hour, IssuedAt: time.Unix(1_000_000, 0).UTC(),
		Nodes:  []netmap.Node{{ID: identity.ID{TrustDomain: "t.mesh", Kind: identity.KindTool, Name: "files"}, Name: "files", Kind: identity.KindTool, Tags: []identity.Tag{"tag:a"}, Status: netmap.StatusActive, Incarnation: "i1", Addrs: []string{"files:1"}}},
		Policy: netmap.Policy{Version: 2, Document: `{"grants":[{"src":["*"],"dst":["tool:files"],"tools":["*"]}]}`, Grants: []int{4}, Limits: []policy.LimitRef{}}})
	f.Add(full)
	f.Add([]byte(`{"version":1,"nodes":[],"policy":{"version":0,"document":""}}`))
	f.Add([]byte(`{"version":1,"policy":{"version":1,"document":"{}","grants":[0,0],"limits":[{"index":-1,"key":""}]}}`))
	f.Add([]byte(`{"version":1,"coordinators":["https://a.example:7443","https://b.example:7443"]}`))
	f.Add([]byte(`{"version":1,"coordinators":["https://b:1","https://a:1","http://c:1","https://d:1/x"]}`))
	f.Add([]byte(`{"version":1,"unknown":true}`))
	f.Add([]byte(`{"version":1} {}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		nm, err := netmap.Decode(b)
		if err != nil {
			return
		}
		again, err := json.Marshal(nm)
		if err != nil {
			t.Fatal(err)
		}
		back, err := netmap.Decode(again)
		if err != nil {
			t.Fatalf("a decoded netmap does not decode again: %v\n%s", err, again)
		}
		if !reflect.DeepEqual(normalize(nm), normalize(back)) {
			t.Fatalf("round trip changed the netmap:\n%+v\n%+v", nm, back)
		}
		if err := netmap.CheckCoordinators(nm.Coordinators); err != nil {
			t.Fatalf("decoded a coordinator list that does not check: %v", err)
		}
		nm.Fresh(nm.IssuedAt, time.Now())
		p := nm.Policy
		if p.Projected() {
			policy.CompileProjection(policy.Projection{Document: []byte(p.Document), Grants: p.Grants, Limits: p.Limits}, "1")
		} else if p.Version != 0 {
			policy.Compile([]byte(p.Document), "1")
		}
	})
}

// normalize makes empty and nil slices, and times in other zones, compare
// equal, as JSON does not tell them apart.
func normalize(nm *netmap.Netmap) *netmap.Netmap {
	c := *nm
	c.IssuedAt = c.IssuedAt.UTC()
	if len(c.Nodes) == 0 {
		c.Nodes = nil
	}
	for i := range c.Nodes {
		n := c.Nodes[i]
		if len(n.Tags) == 0 {
			n.Tags = nil
		}
		if len(n.Addrs) == 0 {
			n.Addrs = nil
		}
		n.LastSeen = n.LastSeen.UTC()
		c.Nodes[i] = n
	}
	if len(c.Coordinators) == 0 {
		c.Coordinators = nil
	}
	if len(c.Policy.Grants) == 0 {
		c.Policy.Grants = nil
	}
	if len(c.Policy.Limits) == 0 {
		c.Policy.Limits = nil
	}
	return &c
}

func TestDecodeRefusesNodeEntriesThatDoNotHoldTogether(t *testing.T) {
	ok := `{"trust_domain":"t.mesh","nodes":[{"id":"spiffe://t.mesh/agent/a","name":"a","kind":"agent","tags":["tag:x"],"status":"active","incarnation":"i"}]}`
	if _, err := netmap.Decode([]byte(ok)); err != nil {
		t.Fatalf("a consistent netmap: %v", err)
	}
	for name, b := range map[string]string{
		// What the fuzzer found: keys spelled in other cases still bind
		// (encoding/json), here leaving the name empty while the ID names
		// a node, so a gateway would admit a peer its lookups cannot find.
		"id without name": `{"trust_domain":"t.mesh","nodes":[{"id":"spiffe://t.mesh/agent/a","stAtus":"active","inCArnAtion":"0"}]}`,
		"id of another":   `{"trust_domain":"t.mesh","nodes":[{"id":"spiffe://t.mesh/agent/b","name":"a","kind":"agent","tags":[],"status":"active"}]}`,
		"other domain":    `{"trust_domain":"t.mesh","nodes":[{"id":"spiffe://evil/agent/a","name":"a","kind":"agent","tags":[],"status":"active"}]}`,
		"kind mismatch":   `{"trust_domain":"t.mesh","nodes":[{"id":"spiffe://t.mesh/agent/a","name":"a","kind":"tool","tags":[],"status":"active"}]}`,
		"bad tag":         `{"trust_domain":"t.mesh","nodes":[{"id":"spiffe://t.mesh/agent/a","name":"a","kind":"agent","tags":["x"],"status":"active"}]}`,
		"unknown status":  `{"trust_domain":"t.mesh","nodes":[{"id":"spiffe://t.mesh/agent/a","name":"a","kind":"agent","tags":[],"status":"maybe"}]}`,
		"no trust domain": `{"nodes":[{"id":"spiffe://t.mesh/agent/a","name":"a","kind":"agent","tags":[],"status":"active"}]}`,
		"unknown field":   `{"trust_domain":"t.mesh","nodes":[],"extra":1}`,
		"trailing data":   `{"trust_domain":"t.mesh"} {}`,
	} {
		if _, err := netmap.Decode([]byte(b)); err == nil {
			t.Errorf("%s: decoded", name)
		}
	}
}

func TestDecodeBoundsTheCoordinatorList(t *testing.T) {
	list := func(n int) []string {
		var urls []string
		for i := range n {
			urls = append(urls, fmt.Sprintf("https://c%03d.example:7443", i))
		}
		return urls
	}
	decode := func(urls []string) error {
		b, err := json.Marshal(map[string]any{"version": 1, "coordinators": urls})
		if err != nil {
			t.Fatal(err)
		}
		_, err = netmap.Decode(b)
		return err
	}
	if err := decode(list(netmap.MaxCoordinators)); err != nil {
		t.Fatalf("%d coordinators: %v", netmap.MaxCoordinators, err)
	}
	long := "https://" + strings.Repeat("a", netmap.MaxCoordinatorURLLen-len("https://")-len(":1")) + ":1"
	if err := decode([]string{long}); err != nil {
		t.Fatalf("a URL of %d bytes: %v", len(long), err)
	}
	for name, urls := range map[string][]string{
		"one too many":   list(netmap.MaxCoordinators + 1),
		"one byte long":  {"https://a" + long[len("https://"):]},
		"http":           {"http://a.example:7443"},
		"no host":        {"https://"},
		"path":           {"https://a.example:7443/api"},
		"trailing slash": {"https://a.example:7443/"},
		"query":          {"https://a.example:7443?x=1"},
		"fragment":       {"https://a.example:7443#x"},
		"user":           {"https://u:p@a.example:7443"},
		"upper case":     {"https://A.example:7443"},
		"scheme case":    {"HTTPS://a.example:7443"},
		"bad port":       {"https://a.example:port"},
		"unsorted":       {"https://b.example:7443", "https://a.example:7443"},
		"duplicate":      {"https://a.example:7443", "https://a.example:7443"},
		"empty":          {""},
	} {
		if err := decode(urls); err == nil {
			t.Errorf("%s: decoded %.80q", name, urls)
		}
	}
}

func TestSortCoordinatorsMakesTheCanonicalList(t *testing.T) {
	in := []string{"https://b:1", "https://a:1", "https://b:1"}
	got := netmap.SortCoordinators(in)
	if want := []string{"https://a:1", "https://b:1"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("SortCoordinators(%q) = %q, want %q", in, got, want)
	}
	if in[0] != "https://b:1" {
		t.Fatal("SortCoordinators changed its argument")
	}
	if err := netmap.CheckCoordinators(got); err != nil {
		t.Fatal(err)
	}
}
