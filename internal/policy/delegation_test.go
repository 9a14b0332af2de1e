package policy

import (
	"errors"
	"strings"
	"testing"

	"github.com/agentmesh/agentmesh/internal/identity"
	"github.com/agentmesh/agentmesh/internal/reason"
)

const oboDoc = `{
  "groups": {
    "group:sales": ["user:bob@example.com", "agent:helper"],
  },
  "grants": [
    // 0: the assistant reads the CRM for Alice
    {"src": ["agent:assistant"], "dst": ["tool:crm"], "tools": ["read_*"], "on_behalf_of": ["user:alice@example.com"]},
    // 1: for the sales group, only deals
    {"src": ["agent:assistant"], "dst": ["tool:crm"], "tools": ["deals"], "on_behalf_of": ["group:sales"]},
    // 2: any delegated request may ping, but only one person deep
    {"src": ["agent:assistant"], "dst": ["tool:crm"], "tools": ["ping"], "on_behalf_of": ["*"], "when": "delegation.depth == 1"},
    // 3: no on_behalf_of: as always, delegated or not
    {"src": ["agent:assistant"], "dst": ["tool:crm"], "tools": ["status"]},
    // 4: a when on the person
    {"src": ["agent:assistant"], "dst": ["tool:crm"], "tools": ["export"], "when": "on_behalf_of.endsWith('@example.com') && size(delegation.chain) == 2 && delegation.user == on_behalf_of"},
    // 5: the people themselves
    {"src": ["user:alice@example.com"], "dst": ["tool:crm"], "tools": ["*"]},
  ],
  "tests": [
    {"src": "agent:assistant", "dst": "tool:crm", "on_behalf_of": "user:alice@example.com", "allow": ["tools/call read_x", "tools/call ping", "tools/call export"], "deny": ["tools/call deals"]},
    {"src": "agent:assistant", "dst": "tool:crm", "on_behalf_of": "user:bob@example.com", "allow": ["tools/call deals"], "deny": ["tools/call read_x"]},
    {"src": "agent:assistant", "dst": "tool:crm", "allow": ["tools/call status", "connect"], "deny": ["tools/call read_x", "tools/call ping", "tools/call export"]},
  ],
}`

func deleg(user string, depth int) *Delegation {
	chain := []string{"user:" + user}
	for i := 0; i < depth; i++ {
		chain = append(chain, "spiffe://mesh.test/agent/a"+strings.Repeat("x", i))
	}
	return &Delegation{User: user, Chain: chain, Depth: depth}
}

func TestOnBehalfOfMatchesOnlyTheNamedPeople(t *testing.T) {
	p := mustCompile(t, oboDoc)
	a, crm := agent("assistant"), tool("crm")
	alice, bob, carol := deleg("alice@example.com", 1), deleg("bob@example.com", 1), deleg("carol@other.org", 1)
	for _, c := range []struct {
		tool  string
		d     *Delegation
		allow bool
		why   reason.Code
		grant int
	}{
		{"read_x", alice, true, reason.Allowed, 0},
		{"read_x", bob, false, reason.NotGranted, -1},
		{"read_x", nil, false, reason.NotGranted, -1},
		{"deals", bob, true, reason.Allowed, 1},
		{"deals", alice, false, reason.NotGranted, -1},
		{"ping", carol, true, reason.Allowed, 2},
		{"ping", deleg("carol@other.org", 2), false, reason.WhenFalse, 2},
		{"ping", nil, false, reason.NotGranted, -1},
		{"status", nil, true, reason.Allowed, 3},
		{"status", carol, true, reason.Allowed, 3},
		{"export", alice, true, reason.Allowed, 4},
		{"export", carol, false, reason.WhenFalse, 4},
		{"export", nil, false, reason.WhenFalse, 4},
	} {
		r := callTool(a, crm, c.tool, nil)
		r.Delegation = c.d
		d := p.Decide(r)
		who := "none"
		if c.d != nil {
			who = c.d.User
		}
		if d.Allow != c.allow || d.Reason != c.why || d.Grant != c.grant {
			t.Errorf("%s for %s: got %v %s grant %d, want %v %s grant %d", c.tool, who, d.Allow, d.Reason, d.Grant, c.allow, c.why, c.grant)
		}
	}
	// A connection carries no delegation: grants with on_behalf_of link.
	if !p.Links(a, crm) {
		t.Error("on_behalf_of grants must still link the agent for a connection")
	}
	// The person's own rights are a plain user: source.
	if d := p.Decide(callTool(Node{Kind: identity.KindAgent, User: "alice@example.com"}, crm, "deals", nil)); !d.Allow {
		t.Errorf("alice herself: %v", d.Explain())
	}
}

func TestVisibleForFiltersByPersonAndRestrict(t *testing.T) {
	p := mustCompile(t, oboDoc)
	a, crm := agent("assistant"), tool("crm")
	v := p.VisibleFor(a, crm, deleg("alice@example.com", 1))
	for name, want := range map[string]bool{"read_x": true, "ping": true, "deals": false, "status": true} {
		if got := v.Tool(name); got != want {
			t.Errorf("alice's view of %s: %v, want %v", name, got, want)
		}
	}
	if p.Visible(a, crm).Tool("read_x") {
		t.Error("without a delegation read_x must not be visible")
	}
	scope, err := NewToolScope([]string{"read_*", "status", "!read_secret"})
	if err != nil {
		t.Fatal(err)
	}
	person := p.Visible(Node{Kind: identity.KindAgent, User: "alice@example.com"}, crm)
	r := v.Restrict([]Visibility{person}, scope, true)
	for name, want := range map[string]bool{"read_x": true, "read_secret": false, "ping": false, "status": true} {
		if got := r.Tool(name); got != want {
			t.Errorf("restricted view of %s: %v, want %v", name, got, want)
		}
	}
	if r.Prompt("anything") || r.Resource("file:///x") {
		t.Error("a tool scope shows no prompt or resource")
	}
	// Restrict by a view that sees nothing hides everything.
	if v.Restrict([]Visibility{{}}, nil, false).Tool("read_x") {
		t.Error("restricted by an empty view, read_x must be hidden")
	}
}

func TestOnBehalfOfCompileErrors(t *testing.T) {
	for _, c := range []struct{ name, grant, want string }{
		{"upper case", `"on_behalf_of": ["user:Alice@example.com"]`, "lower case"},
		{"not an e-mail", `"on_behalf_of": ["user:alice"]`, "lower case"},
		{"agent selector", `"on_behalf_of": ["agent:x"]`, "on_behalf_of takes"},
		{"tag selector", `"on_behalf_of": ["tag:x"]`, "on_behalf_of takes"},
		{"undefined group", `"on_behalf_of": ["group:nope"]`, "undefined group"},
		{"group of agents", `"on_behalf_of": ["group:bots"]`, "no user:EMAIL member"},
		{"group with a tailnet login", `"on_behalf_of": ["group:tail"]`, "not a person's e-mail"},
		{"empty", `"on_behalf_of": []`, "at least one"},
		{"not a list", `"on_behalf_of": "user:alice@example.com"`, "want an array"},
		{"when on a typo", `"when": "on_behalf_off == ''"`, "undeclared reference"},
		{"when with wrong type", `"when": "on_behalf_of == 1"`, "no matching overload"},
	} {
		doc := `{"groups": {"group:bots": ["agent:a"], "group:tail": ["user:bob@github"]},
		  "grants": [{"src": ["*"], "dst": ["tool:t"], "tools": ["*"], ` + c.grant + `}]}`
		_, err := Compile([]byte(doc), "1")
		if err == nil || !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: got %v, want an ErrInvalid naming %q", c.name, err, c.want)
		}
	}
	// A duplicated key is refused like any other.
	_, err := Compile([]byte(`{"grants": [{"src": ["*"], "dst": ["tool:t"], "on_behalf_of": ["*"], "on_behalf_of": ["*"]}]}`), "1")
	if err == nil || !strings.Contains(err.Error(), "duplicate key") {
		t.Errorf("duplicate on_behalf_of: %v", err)
	}
	// A test's on_behalf_of must be a canonical person.
	_, err = Compile([]byte(`{"grants": [], "tests": [{"src": "agent:a", "dst": "tool:t", "on_behalf_of": "user:Bob@example.com", "deny": ["connect"]}]}`), "1")
	if err == nil || !strings.Contains(err.Error(), "on_behalf_of") {
		t.Errorf("test with a bad on_behalf_of: %v", err)
	}
}

func TestOnBehalfOfWhenVariablesWithoutDelegation(t *testing.T) {
	p := mustCompile(t, `{"grants": [{"src": ["*"], "dst": ["tool:t"], "tools": ["*"],
	  "when": "on_behalf_of == '' && delegation.user == '' && delegation.depth == 0 && size(delegation.chain) == 0"}]}`)
	if d := p.Decide(callTool(agent("a"), tool("t"), "x", nil)); !d.Allow {
		t.Errorf("without a delegation: %s", d.Explain())
	}
	r := callTool(agent("a"), tool("t"), "x", nil)
	r.Delegation = deleg("alice@example.com", 1)
	if d := p.Decide(r); d.Allow || d.Reason != reason.WhenFalse {
		t.Errorf("with a delegation: %s", d.Explain())
	}
}

func TestProjectionKeepsOnBehalfOf(t *testing.T) {
	p := mustCompile(t, oboDoc)
	pr, err := p.Project(tool("crm"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(pr.Document), `"on_behalf_of":["group:sales"]`) || !strings.Contains(string(pr.Document), `"group:sales":`) {
		t.Fatalf("projection lost on_behalf_of or its group: %s", pr.Document)
	}
	pp, err := CompileProjection(pr, p.Version())
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range []*Delegation{nil, deleg("alice@example.com", 1), deleg("bob@example.com", 1), deleg("bob@example.com", 2)} {
		for _, name := range []string{"read_x", "deals", "ping", "status", "export"} {
			r := callTool(agent("assistant"), tool("crm"), name, nil)
			r.Delegation = d
			if a, b := p.Decide(r), pp.Decide(r); a != b {
				t.Errorf("%s: whole %+v, projection %+v", name, a, b)
			}
		}
	}
}

func TestWhoNamesOnBehalfOf(t *testing.T) {
	p := mustCompile(t, oboDoc)
	rights := p.Can(agent("assistant"), WhoQuery{})
	found := false
	for _, r := range rights {
		if r.Grant == 1 {
			found = true
			if len(r.OnBehalfOf) != 1 || r.OnBehalfOf[0] != "group:sales" {
				t.Errorf("grant 1: on_behalf_of %v", r.OnBehalfOf)
			}
		}
		if r.Grant == 3 && r.OnBehalfOf != nil {
			t.Errorf("grant 3 has no on_behalf_of, got %v", r.OnBehalfOf)
		}
	}
	if !found {
		t.Errorf("grant 1 missing from %+v", rights)
	}
}

func TestLintDoesNotCallNarrowerOnBehalfOfShadowed(t *testing.T) {
	// Grant 1 applies to more requests than grant 0 (every request, not
	// only Alice's): 1 is not shadowed by 0, and 0 is shadowed by
	// nothing before it.
	p := mustCompile(t, `{"grants": [
	  {"src": ["agent:a"], "dst": ["tool:t"], "tools": ["*"], "on_behalf_of": ["user:alice@example.com"]},
	  {"src": ["agent:a"], "dst": ["tool:t"], "tools": ["*"]},
	]}`)
	if p.coversGrant(0, 1) {
		t.Error("a grant for Alice only must not cover one for everyone")
	}
	if !p.coversGrant(1, 0) {
		t.Error("a grant for everyone covers one for Alice")
	}
}

func TestLintWarnsOfPeopleWithoutRights(t *testing.T) {
	p := mustCompile(t, `{"groups": {"group:sales": ["user:bob@example.com", "group:more"], "group:more": ["user:carol@example.com"], "group:ops": ["user:dan@example.com"]},
	"grants": [
	  {"src": ["agent:a"], "dst": ["tool:t"], "tools": ["*"], "on_behalf_of": ["user:alice@example.com", "group:sales", "group:ops", "*"]},
	  {"src": ["user:carol@example.com"], "dst": ["tool:t"], "tools": ["x"]},
	]}`)
	var got []string
	for _, w := range p.Lint(nil) {
		if w.Code == LintNoGrantorRights {
			got = append(got, w.Path)
		}
	}
	// Alice and group:ops have no rights; group:sales has Carol's (through
	// a nested group); "*" names nobody in particular.
	if want := []string{"grants[0].on_behalf_of[0]", "grants[0].on_behalf_of[2]"}; strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("warned %v, want %v", got, want)
	}
	// A grant from "*" gives everyone something: nothing is warned.
	p = mustCompile(t, `{"grants": [
	  {"src": ["agent:a"], "dst": ["tool:t"], "tools": ["*"], "on_behalf_of": ["user:alice@example.com"]},
	  {"src": ["*"], "dst": ["tool:t"], "tools": ["x"]},
	]}`)
	for _, w := range p.Lint(nil) {
		if w.Code == LintNoGrantorRights {
			t.Fatalf("warned %v", w)
		}
	}
}
