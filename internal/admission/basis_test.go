package admission

import (
	"fmt"
	"slices"
	"testing"

	"github.com/agentmesh/agentmesh/internal/audit"
	"github.com/agentmesh/agentmesh/internal/identity"
	"github.com/agentmesh/agentmesh/internal/policy"
)

func TestBasisRecordsTagsMethodAndOnlyTheArgumentsWhensRead(t *testing.T) {
	pol, err := policy.Compile([]byte(`{"grants": [{"src": ["*"], "dst": ["tool:t"], "tools": ["*"], "when": "args.n < 3 && args.password != ''"}]}`), "1")
	if err != nil {
		t.Fatal(err)
	}
	r := policy.Request{
		Src:    policy.Node{Kind: identity.KindAgent, Name: "a", Tags: []identity.Tag{"tag:z", "tag:b"}},
		Dst:    policy.Node{Kind: identity.KindTool, Name: "t"},
		Action: policy.ActionTool, Method: "tools/call", Tool: "x",
		Args: map[string]any{"n": 1, "password": "hunter2", "other": "o"},
	}
	b := Basis(&r, "tasks/get", pol)
	if !slices.Equal(b.SrcTags, []string{"tag:b", "tag:z"}) || b.DstTags == nil || len(b.DstTags) != 0 ||
		b.Method != "tools/call" || !slices.Equal(b.ArgPaths, []string{"n"}) || b.Args != `{"n":1}` || b.Unjudged != "" {
		t.Fatalf("basis %+v", b)
	}
	// A node with more tags than a basis may hold still gets a valid event.
	for i := range 100 {
		r.Src.Tags = append(r.Src.Tags, identity.Tag(fmt.Sprintf("tag:t%d", i)))
	}
	b = Basis(&r, "tools/call", pol)
	ev := audit.Event{Kind: audit.KindRequest, Basis: b}
	ev.Stamp(ev.Time.AddDate(2026, 0, 0))
	if b.Unjudged != audit.BasisOverLimit || ev.Validate() != nil {
		t.Fatalf("basis over its bounds %+v: %v", b, ev.Validate())
	}
}
