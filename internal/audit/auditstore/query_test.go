package auditstore

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/agentmesh/agentmesh/internal/audit"
)

func TestQueryFilters(t *testing.T) {
	s, _, _ := testStore(t, Options{})
	ctx := context.Background()
	events := testEvents(0, 60)
	events[3].Kind, events[3].Action, events[3].Method, events[3].Tool = audit.KindAdmin, "policy.apply", "", ""
	events[4].Src = "spiffe://other.test/agent/agent-4" // same selector, other trust domain
	events[5].Src = "alice@example.com"                 // a tailnet identity
	if _, err := s.Append(ctx, events); err != nil {
		t.Fatal(err)
	}
	// want lists expected event indexes, newest first unless Ascending.
	match := func(pred func(i int, e audit.Event) bool) []int {
		var out []int
		for i := len(events) - 1; i >= 0; i-- {
			if pred(i, events[i]) {
				out = append(out, i)
			}
		}
		return out
	}
	tests := []struct {
		name string
		f    Filter
		want []int
	}{
		{"everything newest first", Filter{}, match(func(int, audit.Event) bool { return true })},
		{"selector matches any trust domain", Filter{Src: "agent:agent-4"},
			match(func(i int, e audit.Event) bool { return i%7 == 4 })},
		{"full SPIFFE ID matches exactly", Filter{Src: "spiffe://other.test/agent/agent-4"}, []int{4}},
		{"other identity matches exactly", Filter{Src: "alice@example.com"}, []int{5}},
		{"dst selector and decision", Filter{Dst: "tool:tool-1", Decision: audit.Deny},
			match(func(i int, e audit.Event) bool { return i%3 == 1 && i%2 == 1 })},
		{"kind", Filter{Kind: audit.KindAdmin}, []int{3}},
		{"method and tool", Filter{Method: "tools/call", Tool: "tool_2"},
			match(func(i int, e audit.Event) bool { return i%5 == 2 && i != 3 })},
		{"time window", Filter{Since: testBase.Add(10 * time.Millisecond), Until: testBase.Add(13 * time.Millisecond)}, []int{12, 11, 10}},
		{"limit", Filter{Limit: 2}, []int{59, 58}},
		{"after seq ascending (follow)", Filter{AfterSeq: 57, Ascending: true}, []int{57, 58, 59}},
		{"nothing matches", Filter{Src: "agent:nobody"}, nil},
		{"star matches all", Filter{Dst: "*", Limit: 1}, []int{59}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []int
			err := s.Query(ctx, tt.f, func(e audit.Event) error {
				got = append(got, int(e.Seq-1))
				if e.ID != events[e.Seq-1].ID {
					t.Fatalf("seq %d carries id %s, want %s", e.Seq, e.ID, events[e.Seq-1].ID)
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, tt.want) {
				t.Fatalf("got %v\nwant %v", got, tt.want)
			}
		})
	}
}

func TestQueryRejectsBadFiltersAndStopsOnCallbackError(t *testing.T) {
	s, _, _ := testStore(t, Options{})
	ctx := context.Background()
	if _, err := s.Append(ctx, testEvents(0, 10)); err != nil {
		t.Fatal(err)
	}
	for _, f := range []Filter{{Src: "tag:fraud"}, {Dst: "group:x"}, {Decision: "maybe"}, {Src: "agent:"}, {Limit: -1}} {
		if err := s.Query(ctx, f, func(audit.Event) error { return nil }); !errors.Is(err, ErrBadFilter) {
			t.Errorf("Query(%+v) = %v, want ErrBadFilter", f, err)
		}
	}
	stop := errors.New("stop")
	n := 0
	err := s.Query(ctx, Filter{}, func(audit.Event) error {
		n++
		return stop
	})
	if !errors.Is(err, stop) || n != 1 {
		t.Fatalf("Query = %v after %d callbacks, want stop after 1", err, n)
	}
}

func TestSelectorOf(t *testing.T) {
	for in, want := range map[string]string{
		"spiffe://mesh.test/agent/fraud": "agent:fraud",
		"spiffe://mesh.test/tool/db":     "tool:db",
		"spiffe://mesh.test/agent/a/b":   "",
		"spiffe://mesh.test/robot/x":     "",
		"spiffe:///agent/x":              "",
		"agent:fraud":                    "",
		"":                               "",
	} {
		if got := selectorOf(in); got != want {
			t.Errorf("selectorOf(%q) = %q, want %q", in, got, want)
		}
	}
}
