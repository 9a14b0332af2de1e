package policy

import (
	"errors"
	"strings"
	"testing"

	"github.com/agentmesh/agentmesh/internal/identity"
	"github.com/agentmesh/agentmesh/internal/reason"
)

// Logins are compared in lower case: a user: selector spelled otherwise
// does not compile, and the error says how to write it.
func TestUserSelectorMustBeLowerCase(t *testing.T) {
	for _, doc := range []string{
		`{"grants": [{"src": ["user:Alice@Example.com"], "dst": ["*"]}]}`,
		`{"groups": {"group:p": ["user:ALICE@example.com"]}, "grants": [{"src": ["group:p"], "dst": ["*"]}]}`,
		`{"grants": [{"src": ["*"], "dst": ["*"]}], "limits": [{"src": ["user:Alice@example.com"], "dst": ["model:llm"], "rpm": 1}]}`,
	} {
		_, err := Compile([]byte(doc), "1")
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "logins are compared in lower case; write user:alice@example.com") {
			t.Errorf("Compile(%s) = %v, want the lower-case error", doc, err)
		}
	}
	// Non-ASCII is not a login a selector can name (validLogin), so no
	// Unicode case mapping decides anything.
	if _, err := Compile([]byte(`{"grants": [{"src": ["user:alice@\u212Aexample.com"], "dst": ["*"]}]}`), "1"); !errors.Is(err, ErrInvalid) {
		t.Errorf("a non-ASCII login compiled: %v", err)
	}
}

// A hostile spelling of a login neither gains an allow nor escapes a
// limit: a node whose user is not in lower case is denied everything,
// even by "*", and a login that folds to another only under Unicode rules
// is another person.
func TestUserSpellingsCannotBypass(t *testing.T) {
	p := mustCompile(t, `{
	  "grants": [
	    {"src": ["user:alice@example.com"], "dst": ["model:llm"], "models": ["*"]},
	    {"src": ["*"], "dst": ["model:llm"], "models": ["cheap-*"]},
	  ],
	  "limits": [{"src": ["user:alice@example.com"], "dst": ["model:llm"], "rpm": 1}],
	}`)
	owned := func(login string) Node { n := agent("laptop"); n.User = login; return n }
	if d := p.Decide(modelReq(owned("alice@example.com"), "gpt-4o", nil)); !d.Allow {
		t.Fatalf("alice denied: %+v", d)
	}
	if l := p.Limits(owned("alice@example.com"), model("llm"), "cheap-1"); len(l) != 1 {
		t.Fatalf("alice's limit: %d limits, want 1", len(l))
	}
	for _, login := range []string{"Alice@example.com", "ALICE@EXAMPLE.COM"} {
		for _, m := range []string{"gpt-4o", "cheap-1"} {
			if d := p.Decide(modelReq(owned(login), m, nil)); d.Allow || d.Reason != reason.BadRequest {
				t.Errorf("%s, model %s: %+v, want an invalid request denied", login, m, d)
			}
		}
	}
	// The Kelvin sign lower-cases to 'k' under Unicode rules; it stays
	// itself, so it is not alice@kexample.com's login.
	q := mustCompile(t, `{"grants": [{"src": ["user:alice@kexample.com"], "dst": ["model:llm"], "models": ["*"]}]}`)
	kelvin := owned(identity.LowerLogin("alice@\u212Aexample.com"))
	if d := q.Decide(modelReq(kelvin, "gpt-4o", nil)); d.Allow {
		t.Errorf("a Kelvin-sign login was allowed as alice@kexample.com: %+v", d)
	}
}

// A document's tests can speak of people: src_user is the owner of a
// mesh node joined with --sso, src "user:LOGIN" a person's tailnet
// device; both are decided alike, by the same grants.
func TestPolicyTestsNamePeople(t *testing.T) {
	const grants = `"grants": [
	    {"src": ["user:alice@example.com"], "dst": ["tool:ledger"], "tools": ["write"]},
	  ]`
	mustCompile(t, `{`+grants+`, "tests": [
	  {"src": "agent:laptop", "src_user": "alice@example.com", "dst": "tool:ledger", "allow": ["tools/call write"]},
	  {"src": "user:alice@example.com", "dst": "tool:ledger", "allow": ["tools/call write"]},
	  {"src": "agent:laptop", "src_user": "bob@example.com", "dst": "tool:ledger", "deny": ["tools/call write"]},
	  {"src": "agent:laptop", "dst": "tool:ledger", "deny": ["tools/call write"]},
	]}`)
	for test, want := range map[string]error{
		`{"src": "agent:laptop", "dst": "tool:ledger", "allow": ["tools/call write"]}`:                                         ErrTestFailed,
		`{"src": "agent:laptop", "src_user": "Alice@example.com", "dst": "tool:ledger", "allow": ["tools/call write"]}`:        ErrInvalid,
		`{"src": "user:Alice@example.com", "dst": "tool:ledger", "allow": ["tools/call write"]}`:                               ErrInvalid,
		`{"src": "user:alice@example.com", "src_user": "bob@example.com", "dst": "tool:ledger", "deny": ["tools/call write"]}`: ErrInvalid,
	} {
		if _, err := Compile([]byte(`{`+grants+`, "tests": [`+test+`]}`), "1"); !errors.Is(err, want) {
			t.Errorf("test %s: Compile = %v, want %v", test, err, want)
		}
	}
}
