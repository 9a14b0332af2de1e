package policy

import (
	"encoding/json"
	"errors"
	"net/netip"
	"net/url"
	"os"
	"strings"
	"testing"

	"golang.org/x/text/unicode/norm"

	"github.com/agentmesh/agentmesh/internal/identity"
	"github.com/agentmesh/agentmesh/internal/reason"
)

func FuzzCompile(f *testing.F) {
	f.Add([]byte(decideDoc))
	f.Add([]byte(modelDoc))
	f.Add([]byte(`{}`))
	f.Add([]byte(`{"groups": {"group:a": ["group:b"], "group:b": ["group:a"]}}`))
	f.Add([]byte(`{"grants": [{"src": ["*"], "dst": ["*"], "tools": ["a*b?c", "!x"], "when": "args.x == 1"}]}`))
	f.Add([]byte("// c\n{\"tests\": [{\"src\": \"agent:a\", \"dst\": \"tool:b\", \"args\": {\"k\": [1, 2.5, null, true]}, \"deny\": [\"connect\"]}],}"))
	f.Add([]byte(`{"grants": [{"src": ["*"], "dst": ["*"], "when": "'\\b'.matches('\\b')"}]}`))
	f.Add([]byte(pinnedDoc))
	f.Add([]byte(oboDoc))
	f.Add([]byte(`{"grants": [{"src": ["*"], "dst": ["*"], "tools": ["*"], "on_behalf_of": ["*"], "when": "delegation.depth < 2 && on_behalf_of != ''"}]}`))
	if doc, err := os.ReadFile("../../examples/policy.hujson"); err == nil {
		f.Add(doc)
	}
	f.Fuzz(func(t *testing.T, doc []byte) {
		p, err := Compile(doc, "f")
		if err != nil {
			if p != nil {
				t.Fatal("Compile returned a policy and an error")
			}
			if !errors.Is(err, ErrSyntax) && !errors.Is(err, ErrInvalid) && !errors.Is(err, ErrTestFailed) {
				t.Fatalf("error wraps no sentinel: %v", err)
			}
			return
		}
		// A compiled policy answers without panicking and keeps its text.
		if string(p.Document()) != string(doc) {
			t.Fatal("Document differs from the input")
		}
		d := p.Decide(Request{Src: agent("a", "tag:x"), Dst: tool("b"), Action: ActionTool, Tool: "t", Args: map[string]any{"x": json.Number("1")}})
		if d.Allow && d.Grant < 0 {
			t.Fatalf("allowed without a grant: %+v", d)
		}
		v := p.Visible(agent("a"), tool("b"))
		_ = v.Tool("t") || v.ResourceTemplate("x://{y}")
		// The same with a delegation.
		del := &Delegation{User: "a@b.example", Chain: []string{"user:a@b.example", "spiffe://f/agent/a"}, Depth: 1}
		d = p.Decide(Request{Src: agent("a", "tag:x"), Dst: tool("b"), Action: ActionTool, Tool: "t", Delegation: del})
		if d.Allow && d.Grant < 0 {
			t.Fatalf("allowed with a delegation without a grant: %+v", d)
		}
		v = p.VisibleFor(agent("a"), tool("b"), del)
		_ = v.Tool("t") || v.Prompt("p")
	})
}

func FuzzDecide(f *testing.F) {
	p, err := Compile([]byte(decideDoc), "f")
	if err != nil {
		f.Fatal(err)
	}
	f.Add("fraud-detector", "tag:fraud", "payments-db", uint8(ActionTool), "query", `{"sql": "select 1"}`)
	f.Add("fraud-detector", "", "payments-db", uint8(ActionResource), "db://public/../x", `{}`)
	f.Add("teller", "tag:senior", "ledger", uint8(ActionTool), "transfer", `{"amount": 5e3}`)
	f.Add("bot", "tag:support", "llm-internal", uint8(ActionModel), "llama-3", `null`)
	f.Add("x", "", "y", uint8(0), "", ``)
	f.Add("fraud-detector", "tag:fraud", "payments-db", uint8(ActionTool), "query", `{"SQL": "delete from t"}`)
	f.Add("teller", "tag:senior", "ledger", uint8(ActionTool), "transfer", `{"Amount": 5e3, "amount": 1}`)
	f.Add("fraud-detector", "", "payments-db", uint8(ActionResource), "DB://public/x", `{}`)
	f.Fuzz(func(t *testing.T, src, tag, dst string, action uint8, item, args string) {
		r := Request{
			Src:    Node{Kind: identity.KindAgent, Name: identity.Name(src)},
			Dst:    Node{Kind: identity.KindTool, Name: identity.Name(dst), Tags: []identity.Tag{"tag:ledger"}},
			Action: Action(action % 7),
			Method: "tools/call",
			Tool:   item, Resource: item, Prompt: item, Model: item,
		}
		if tag != "" {
			r.Src.Tags = []identity.Tag{identity.Tag(tag)}
		}
		var a map[string]any
		if json.Unmarshal([]byte(args), &a) == nil {
			r.Args = a
		}
		d := p.Decide(r)
		if d.Allow != (d.Reason == reason.Allowed) {
			t.Fatalf("Allow %v with reason %s", d.Allow, d.Reason)
		}
		if d.Allow && (d.Grant < 0 || d.Grant >= len(p.grants)) {
			t.Fatalf("allowed by grant %d", d.Grant)
		}
		if r.Action == ActionResource && d.Allow && (unsafeURI(item) || !isCanonicalURI(item)) {
			t.Fatalf("unsafe or non-canonical URI %q allowed", item)
		}
		if d.Allow && d.When == WhenHeld {
			if k, bad := p.grants[d.Grant].when.keys.Find(r.Args); bad {
				t.Fatalf("allowed args holding %q, which differs only in case from a key the deciding when reads", k)
			}
		}
		if d.Allow && !p.Links(r.Src, r.Dst) {
			t.Fatal("allowed without a link")
		}
	})
}

// uriSeeds are spellings the canonical form must tell apart or bring
// together: dot and empty segments, percent-encoding of every class, case,
// authorities, IP literals, NFC, templates.
var uriSeeds = []string{
	"file:///public/secret", "FILE:///public/./secret", "file:///public//secret", "file:////public/secret",
	"file:/public/secret", "file:public/secret", "file://localhost/public/secret", "file:///public/secr%65t",
	"file:///public/%2e%2e/secret", "file:///public/%252e%252e/secret", "file:///public/a%2Fb", "file:///a%5C..%5Cb",
	"file:///public/secret.", "file:///public/secret%20", "file:///caf%c3%a9", "file:///cafe%CC%81", "file:///a%FF",
	"file:///public/secret/?x#y", "file:///a b", `file:///a\b`, "file:///C:/x", "file:///C|/x",
	"http://Example.COM:80/x", "https://example.com", "http://user@example.com/", "http://127.1/", "http://0x7f.0.0.1/",
	"http://[::FFFF:7F00:1]/", "http://[::1%25eth0]/", "http:/example.com/x", "https://example.com./x?q=%41#%7e",
	"db://payments/public/charges", "demo://resource/dynamic/text/1", "urn:isbn:0451450523", "x:a/../b", "a:",
}

// FuzzCanonicalURI checks the canonical form of resource URIs:
//   - canonicalURI never panics, and is idempotent: a canonical form is its
//     own canonical form;
//   - the policy accepts a resource URI (under a grant of every resource)
//     exactly when it is safe and is its own canonical form;
//   - what net/url reads from an accepted URI is what its canonical string
//     says: it parses, resolving it as a reference (which removes dot
//     segments) changes nothing, and its decoded path has no "." or ".."
//     segment, no '\' and no NUL, so no server that decodes and resolves
//     the path reaches a different file than a glob sees;
//   - a URI and its canonical form name the same thing to net/url: the
//     same scheme, host (case and default port aside) and decoded path
//     (empty segments and Unicode normalisation aside).
func FuzzCanonicalURI(f *testing.F) {
	for _, s := range uriSeeds {
		f.Add(s)
	}
	p, err := Compile([]byte(`{"grants": [{"src": ["*"], "dst": ["*"], "resources": ["*"]}]}`), "f")
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, u string) {
		c, err := canonicalURI(u)
		d := p.Decide(Request{Src: agent("a"), Dst: tool("b"), Action: ActionResource, Method: "resources/read", Resource: u})
		if want := err == nil && c == u && !unsafeURI(u); d.Allow != want {
			t.Fatalf("%q: %s, but canonical %q (%v), unsafe %v", u, d.Explain(), c, err, unsafeURI(u))
		}
		if err != nil {
			return
		}
		if c2, err := canonicalURI(c); err != nil || c2 != c {
			t.Fatalf("canonical form of %q is %q, whose canonical form is %q (%v)", u, c, c2, err)
		}
		if unsafeURI(c) {
			return // refused whatever its spelling
		}
		cu, err := url.Parse(c)
		if err != nil {
			t.Fatalf("net/url cannot parse canonical %q: %v", c, err)
		}
		if r := cu.ResolveReference(&url.URL{}); cu.Opaque == "" && (r.Path != cu.Path || r.Host != cu.Host || r.RawQuery != cu.RawQuery) {
			t.Fatalf("canonical %q resolves to %q", c, r)
		}
		for seg := range strings.SplitSeq(cu.Path, "/") {
			if seg == "." || seg == ".." || strings.ContainsAny(seg, "\\\x00") {
				t.Fatalf("canonical %q has the decoded path segment %q", c, seg)
			}
		}
		uu, err := url.Parse(u)
		if err != nil || uu.Opaque != "" || cu.Opaque != "" || uu.User != nil || unsafeURI(u) {
			// net/url reads it otherwise, or servers disagree on it
			// ("/a//.." is "/a/" to RFC 3986 and "/" to path.resolve):
			// the policy refuses it whatever its canonical form says.
			return
		}
		if !strings.EqualFold(uu.Scheme, cu.Scheme) {
			t.Fatalf("%q and its canonical form %q: scheme %q vs %q", u, c, uu.Scheme, cu.Scheme)
		}
		if hu, hc := sameHost(uu), sameHost(cu); hu != hc && !(cu.Scheme == "file" && hu == "localhost" && hc == "") {
			t.Fatalf("%q and its canonical form %q: host %q vs %q", u, c, hu, hc)
		}
		if pu, pc := samePath(uu), samePath(cu); pu != pc {
			t.Fatalf("%q and its canonical form %q: path %q vs %q", u, c, pu, pc)
		}
	})
}

// sameHost is the host and port of u as a server compares them: lower
// case, without a trailing dot or the scheme's default port, IP addresses
// in one form.
func sameHost(u *url.URL) string {
	h := strings.TrimSuffix(strings.ToLower(u.Hostname()), ".")
	if a, err := netip.ParseAddr(h); err == nil {
		h = a.String()
	}
	if port := strings.TrimLeft(u.Port(), "0"); port != "" && port != defaultPorts[strings.ToLower(u.Scheme)] {
		h += ":" + port
	}
	return h
}

// samePath is the decoded path of u resolved as a file server would:
// dot segments removed, empty segments dropped, in NFC.
func samePath(u *url.URL) string {
	r := new(url.URL).ResolveReference(&url.URL{Path: u.Path})
	var segs []string
	for seg := range strings.SplitSeq(r.Path, "/") {
		if seg != "" {
			segs = append(segs, seg)
		}
	}
	p := strings.Join(segs, "/")
	if strings.HasSuffix(r.Path, "/") && p != "" {
		p += "/"
	}
	return norm.NFC.String(p)
}
