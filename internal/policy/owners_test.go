package policy

import (
	"errors"
	"strings"
	"testing"

	"github.com/agentmesh/agentmesh/internal/identity"
)

func TestNodeOwners(t *testing.T) {
	p, err := Compile([]byte(`{
  "node_owners": {
    "agent": ["user:*"],
    "tool": ["sso:platform"],
    "tag:payments": ["user:alice@example.com", "sso:payments-team"],
  },
}`), "1")
	if err != nil {
		t.Fatal(err)
	}
	tags := []identity.Tag{"tag:payments"}
	for _, c := range []struct {
		user   string
		groups []string
		kind   identity.Kind
		tags   []identity.Tag
		want   bool
	}{
		{"bob@example.com", nil, identity.KindAgent, nil, true},
		{"bob@example.com", nil, identity.KindAgent, tags, false},
		{"alice@example.com", nil, identity.KindAgent, tags, true},
		{"carol@example.com", []string{"payments-team"}, identity.KindAgent, tags, true},
		{"alice@example.com", nil, identity.KindTool, nil, false},
		{"dave@example.com", []string{"platform"}, identity.KindTool, nil, true},
		{"alice@example.com", []string{"platform"}, identity.KindModel, nil, false},
		{"alice@example.com", []string{"platform"}, identity.KindAdmin, nil, false},
		{"alice@example.com", nil, identity.KindAgent, []identity.Tag{"tag:other"}, false},
	} {
		ok, why := p.MayOwn(c.user, c.groups, c.kind, c.tags)
		if ok != c.want || !ok && why == "" {
			t.Errorf("MayOwn(%s, %v, %s, %v) = %v %q, want %v", c.user, c.groups, c.kind, c.tags, ok, why, c.want)
		}
	}
	none, _ := Compile([]byte(`{}`), "2")
	if ok, why := none.MayOwn("alice@example.com", nil, identity.KindAgent, nil); ok || !strings.Contains(why, "node_owners") {
		t.Errorf("a policy without node_owners admitted someone: %v %q", ok, why)
	}
}

func TestNodeOwnersErrorsHaveLines(t *testing.T) {
	_, err := Compile([]byte(`{
  "node_owners": {
    "agent": ["user:Alice@Example.com"],
    "admin": ["user:*"],
    "tag:x": ["group:ops"],
    "nonsense": ["user:*"],
  },
}`), "1")
	var pe *Error
	if err == nil || !errors.As(err, &pe) {
		t.Fatalf("want policy errors, got %v", err)
	}
	msg := err.Error()
	for _, want := range []string{" 3:15: ", " 4:5: ", " 5:15: ", " 6:5: ", "user:EMAIL", "admin node", "nonsense"} {
		if !strings.Contains(msg, want) {
			t.Errorf("errors lack %q:\n%s", want, msg)
		}
	}
}
