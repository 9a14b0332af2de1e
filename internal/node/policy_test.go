package node

import (
	"log/slog"
	"strings"
	"testing"

	"github.com/agentmesh/agentmesh/internal/netmap"
	"github.com/agentmesh/agentmesh/internal/policy"
)

func TestCompileDeniesEverythingUnlessThePolicyCompiles(t *testing.T) {
	log := slog.New(slog.DiscardHandler)
	doc := `{"grants": [{"src": ["*"], "dst": ["tool:files"], "tools": ["read"]}]}`
	for _, tc := range []struct {
		name    string
		p       netmap.Policy
		want    bool // a policy, rather than nil (deny everything)
		version string
	}{
		{"no policy applied yet", netmap.Policy{}, false, ""},
		{"a whole document", netmap.Policy{Version: 3, Document: doc}, true, "3"},
		{"a projection", netmap.Policy{Version: 4, Document: doc, Grants: []int{7}, Limits: []policy.LimitRef{}}, true, "4"},
		{"a document that does not compile here", netmap.Policy{Version: 5, Document: `{"grants": [`}, false, ""},
		{"a projection numbering grants it lacks", netmap.Policy{Version: 6, Document: doc, Grants: []int{1, 2}}, false, ""},
	} {
		got := compile(tc.p, log)
		if (got != nil) != tc.want || got != nil && got.Version() != tc.version {
			t.Errorf("%s: compile = %v, want a policy: %v (version %q)", tc.name, got, tc.want, tc.version)
		}
	}
}

func TestSamePolicyComparesWhatCompiles(t *testing.T) {
	base := netmap.Policy{Version: 2, Document: "{}", Grants: []int{0, 3}, Limits: []policy.LimitRef{{Index: 1, Key: "k"}}}
	if !samePolicy(base, base) {
		t.Fatal("a policy differs from itself")
	}
	for name, edit := range map[string]func(*netmap.Policy){
		"version":  func(p *netmap.Policy) { p.Version = 3 },
		"document": func(p *netmap.Policy) { p.Document = `{"grants": []}` },
		"grants":   func(p *netmap.Policy) { p.Grants = []int{0} },
		"limits":   func(p *netmap.Policy) { p.Limits = []policy.LimitRef{{Index: 2, Key: "k"}} },
	} {
		other := base
		edit(&other)
		if samePolicy(base, other) {
			t.Errorf("another %s compares the same", name)
		}
	}
}

// TestCompileOfAnAgentsViewDeniesWithoutLoggingAnError: a node that does not
// serve gets the policy's version without its text. That is not an error (a
// connector used to log "policy does not compile here" at every start); a
// document that does not compile still is.
func TestCompileOfAnAgentsViewDeniesWithoutLoggingAnError(t *testing.T) {
	var logged strings.Builder
	log := slog.New(slog.NewTextHandler(&logged, nil))
	if got := compile(netmap.Policy{Version: 7}, log); got != nil || logged.Len() != 0 {
		t.Errorf("compile(version without a document) = %v and logged %q, want nil and nothing", got, logged.String())
	}
	if got := compile(netmap.Policy{Version: 8, Document: `{"grants": [`}, log); got != nil || !strings.Contains(logged.String(), "does not compile") {
		t.Errorf("compile(broken document) = %v and logged %q, want nil and the error", got, logged.String())
	}
}
