package policy

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/agentmesh/agentmesh/internal/identity"
)

// TestLintWarningsAreSound checks, on random policies, that what lint calls
// dead is dead: removing a shadowed grant, or an exclusion that excludes
// nothing, changes no decision over every combination of the nodes, tools,
// resources and arguments the policies can tell apart.
func TestLintWarningsAreSound(t *testing.T) {
	rng := rand.New(rand.NewPCG(21, 28))
	srcs := []string{"agent:a", "agent:b", "tag:x", "*", "group:ab"}
	dsts := []string{"tool:t", "tool:u", "*"}
	tools := []string{"*", "read_*", "read_file", "write_*", "*_file", "list_?", "!read_secret", "!write_*", "!*_file", "!list_x"}
	resources := []string{"file:///data/*", "file:///data/a", "!file:///data/secret", "!file:///etc/*", "!FILE:///DATA/A"}
	pick := func(from []string, n int) []string {
		var out []string
		for range n {
			s := from[rng.IntN(len(from))]
			if !slices.Contains(out, s) {
				out = append(out, s)
			}
		}
		return out
	}
	warned := map[string]int{}
	for iter := range 400 {
		type grant map[string]any
		var grants []grant
		for range 2 + rng.IntN(5) {
			g := grant{"src": pick(srcs, 1+rng.IntN(2)), "dst": pick(dsts, 1+rng.IntN(2))}
			switch rng.IntN(4) {
			case 0: // connection only
			case 1:
				g["resources"] = pick(resources, 1+rng.IntN(3))
			default:
				g["tools"] = pick(tools, 1+rng.IntN(3))
			}
			if rng.IntN(4) == 0 {
				g["when"] = "has(args.x) && args.x == 1"
			}
			if _, ok := g["tools"]; ok && rng.IntN(4) == 0 {
				g["approval"] = "group:oncall"
			}
			grants = append(grants, g)
		}
		docOf := func(gs []grant) string {
			b, _ := json.Marshal(map[string]any{
				"groups": map[string]any{"group:ab": []string{"agent:a", "agent:b"}, "group:oncall": []string{"admin:alice"}},
				"grants": gs,
			})
			return string(b)
		}
		doc := docOf(grants)
		p, err := Compile([]byte(doc), "1")
		if err != nil {
			continue // an only-exclusions list, say
		}
		for _, w := range p.Lint(nil) {
			var j, item int
			var field string
			var alt []grant
			switch w.Code {
			case LintShadowed:
				fmt.Sscanf(w.Path, "grants[%d]", &j)
				alt = append(slices.Clone(grants[:j]), grants[j+1:]...)
			case LintEmptyExclusion:
				if _, err := fmt.Sscanf(strings.NewReplacer(".", " ", "[", " ", "]", " ").Replace(w.Path), "grants %d %s %d", &j, &field, &item); err != nil {
					t.Fatalf("path %q: %v", w.Path, err)
				}
				alt = slices.Clone(grants)
				g := grant{}
				for k, v := range grants[j] {
					g[k] = v
				}
				l := g[field].([]string)
				g[field] = append(slices.Clone(l[:item]), l[item+1:]...)
				alt[j] = g
			default:
				t.Fatalf("unexpected warning %v", w)
			}
			warned[w.Code]++
			q, err := Compile([]byte(docOf(alt)), "1")
			if err != nil {
				t.Fatalf("iteration %d: without %s: %v", iter, w.Path, err)
			}
			sameDecisions(t, p, q, func(g int) int {
				if w.Code == LintShadowed && g >= j {
					return g + 1
				}
				return g
			}, fmt.Sprintf("iteration %d: %s, %s\n%s", iter, w.Path, w.Msg, doc))
		}
	}
	t.Logf("warnings checked: %v", warned)
	if warned[LintShadowed] < 20 || warned[LintEmptyExclusion] < 20 {
		t.Errorf("too few warnings to judge: %v", warned)
	}
}

// sameDecisions compares p and q (q's grant numbers mapped back to p's by
// back) on every request the random policies can tell apart.
func sameDecisions(t *testing.T, p, q *Policy, back func(int) int, what string) {
	t.Helper()
	nodes := []Node{
		{Kind: identity.KindAgent, Name: "a"},
		{Kind: identity.KindAgent, Name: "b", Tags: []identity.Tag{"tag:x"}},
		{Kind: identity.KindAgent, Name: "c", Tags: []identity.Tag{"tag:x"}},
		{Kind: identity.KindAgent, Name: "d"},
	}
	dsts := []Node{{Kind: identity.KindTool, Name: "t"}, {Kind: identity.KindTool, Name: "u"}, {Kind: identity.KindTool, Name: "v"}}
	var reqs []Request
	for _, tool := range []string{"read_file", "read_secret", "read_x", "write_file", "write_x", "list_a", "list_x", "x_file", "other"} {
		reqs = append(reqs, Request{Action: ActionTool, Method: "tools/call", Tool: tool})
	}
	for _, uri := range []string{"file:///data/a", "file:///data/secret", "file:///data/A", "file:///data/b", "file:///etc/passwd", "file:///data/secret/"} {
		reqs = append(reqs, Request{Action: ActionResource, Method: "resources/read", Resource: uri})
	}
	reqs = append(reqs, Request{Action: ActionConnect, Method: "connect"})
	for _, src := range nodes {
		for _, dst := range dsts {
			for _, r := range reqs {
				for _, args := range []map[string]any{nil, {"x": json.Number("1")}} {
					r.Src, r.Dst, r.Args = src, dst, args
					a, b := p.Decide(r), q.Decide(r)
					if b.Grant >= 0 {
						b.Grant = back(b.Grant)
					}
					if a.Allow != b.Allow || a.Reason != b.Reason || a.Grant != b.Grant || a.Approval != b.Approval {
						t.Fatalf("%s\nchanges %s %s %v %s%s: %s -> %s", what, src.Name, dst.Name, r.Action, r.Tool, r.Resource, a.Explain(), b.Explain())
					}
				}
			}
		}
	}
}

// TestWhoAgreesWithDecide checks, on random policies, that Who and Can
// list exactly the tools Decide allows: every tool a right without a when
// shows is allowed, and every allowed tool is in some right.
func TestWhoAgreesWithDecide(t *testing.T) {
	rng := rand.New(rand.NewPCG(28, 21))
	srcs := []string{"agent:a", "agent:b", "tag:x", "*", "group:ab"}
	dsts := []string{"tool:t", "tool:u", "*", "tag:y"}
	tools := []string{"*", "read_*", "read_file", "write_*", "*_file", "list_?", "!read_secret", "!write_*", "!*_file"}
	seen := []string{"read_file", "read_secret", "write_file", "write_x", "list_a", "other"}
	nodes := []Node{
		{Kind: identity.KindAgent, Name: "a"},
		{Kind: identity.KindAgent, Name: "b", Tags: []identity.Tag{"tag:x"}},
		{Kind: identity.KindAgent, Name: "c", Tags: []identity.Tag{"tag:x"}},
		{Kind: identity.KindTool, Name: "t"},
		{Kind: identity.KindTool, Name: "u", Tags: []identity.Tag{"tag:y"}},
	}
	reports := map[string][]string{"t": seen, "u": seen}
	checked := 0
	for range 200 {
		var grants []map[string]any
		for range 1 + rng.IntN(4) {
			g := map[string]any{"src": []string{srcs[rng.IntN(len(srcs))]}, "dst": []string{dsts[rng.IntN(len(dsts))]}}
			if rng.IntN(3) > 0 {
				g["tools"] = []string{tools[rng.IntN(6)], tools[rng.IntN(len(tools))]}
			}
			if rng.IntN(4) == 0 {
				g["when"] = "has(args.x)"
			}
			grants = append(grants, g)
		}
		b, _ := json.Marshal(map[string]any{"groups": map[string]any{"group:ab": []string{"agent:a", "agent:b"}}, "grants": grants})
		p, err := Compile(b, "1")
		if err != nil {
			continue
		}
		for _, dst := range nodes[3:] {
			rights := p.Who(dst, WhoQuery{Nodes: nodes, Tools: reports})
			for _, src := range nodes[:3] {
				var can []Right
				for _, r := range p.Can(src, WhoQuery{Nodes: nodes, Tools: reports}) {
					if r.Dst == nodeSelector(&dst) {
						can = append(can, r)
					}
				}
				var mine []Right
				for _, r := range rights {
					if r.Src == nodeSelector(&src) {
						mine = append(mine, r)
					}
				}
				if !slices.EqualFunc(mine, can, func(a, b Right) bool { return a.Grant == b.Grant && slices.Equal(a.Tools, b.Tools) }) {
					t.Fatalf("%s\nWho and Can disagree on %s -> %s: %v / %v", b, src.Name, dst.Name, rightLines(mine), rightLines(can))
				}
				for _, tool := range seen {
					d := p.Decide(Request{Src: src, Dst: dst, Action: ActionTool, Method: "tools/call", Tool: tool, Args: map[string]any{"x": true}})
					listed, plain := false, false
					for _, r := range mine {
						if slices.Contains(r.Tools, tool) {
							listed = true
							plain = plain || !r.Conditional
						}
					}
					checked++
					if d.Allow != listed {
						t.Fatalf("%s\n%s -> %s %s: Decide %s, listed %v: %v", b, src.Name, dst.Name, tool, d.Explain(), listed, rightLines(mine))
					}
					if plain && !p.Decide(Request{Src: src, Dst: dst, Action: ActionTool, Method: "tools/call", Tool: tool}).Allow {
						t.Fatalf("%s\n%s -> %s %s: an unconditional right, but denied without arguments", b, src.Name, dst.Name, tool)
					}
				}
			}
		}
	}
	if checked < 1000 {
		t.Errorf("only %d checks", checked)
	}
}
