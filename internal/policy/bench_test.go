package policy

import (
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/agentmesh/agentmesh/internal/identity"
)

const benchN = 10_000

// benchDoc builds a policy of n grants: grant i links tag:team-(i%500) to
// tool:svc-i, and a when (if any) checks the tool name and an argument.
func benchDoc(n int, when bool) string {
	var b strings.Builder
	b.WriteString(`{"groups": {"group:ops": ["tag:ops", "agent:root"]}, "grants": [`)
	for i := range n {
		w := ""
		if when {
			w = `, "when": "tool.name != 'query' || !args.sql.matches(r'(?i)\\bdelete\\b')"`
		}
		fmt.Fprintf(&b, `{"src": ["tag:team-%d", "group:ops"], "dst": ["tool:svc-%d"], "tools": ["query", "list_*", "!list_secrets"], "resources": ["db://svc-%d/*"]%s},`+"\n", i%500, i, i, w)
	}
	b.WriteString(`{"src": ["tag:monitoring"], "dst": ["*"]}]}`)
	return b.String()
}

// benchNodes returns n agents with two tags each and n tagged tools.
func benchNodes(n int) (agents, tools []Node) {
	for i := range n {
		agents = append(agents, Node{Kind: identity.KindAgent, Name: identity.Name(fmt.Sprintf("agent-%d", i)),
			Tags: []identity.Tag{identity.Tag(fmt.Sprintf("tag:team-%d", i%500)), "tag:staff"}})
		tools = append(tools, Node{Kind: identity.KindTool, Name: identity.Name(fmt.Sprintf("svc-%d", i)),
			Tags: []identity.Tag{"tag:prod"}})
	}
	return agents, tools
}

// processCPU returns the CPU time the process has used, user and system.
func processCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// reportCPU adds cpu-ns/op, the process's CPU time per operation since
// start (the loop's and the garbage collector's): on a machine shared with
// other work, sec/op counts the time the benchmark waited for a core,
// cpu-ns/op does not.
func reportCPU(b *testing.B, start time.Duration) {
	b.ReportMetric(float64(processCPU(b)-start)/float64(b.N), "cpu-ns/op")
}

func BenchmarkDecide(b *testing.B) {
	agents, tools := benchNodes(benchN)
	for _, tc := range []struct {
		name string
		when bool
	}{{"no-when", false}, {"when", true}} {
		p, err := Compile([]byte(benchDoc(benchN, tc.when)), "bench")
		if err != nil {
			b.Fatal(err)
		}
		args := map[string]any{"sql": "SELECT amount FROM payments WHERE id = 7"}
		b.Run(tc.name+"/allow", func(b *testing.B) {
			b.ReportAllocs()
			defer reportCPU(b, processCPU(b))
			i := 0
			for b.Loop() {
				// agent i%N reaches tool j where j%500 == i%500.
				a := agents[i%benchN]
				d := p.Decide(Request{Src: a, Dst: tools[(i%benchN/500*500+i%500)%benchN], Action: ActionTool, Method: "tools/call", Tool: "query", Args: args})
				if !d.Allow {
					b.Fatalf("denied: %s", d.Explain())
				}
				i++
			}
		})
		b.Run(tc.name+"/deny", func(b *testing.B) {
			b.ReportAllocs()
			defer reportCPU(b, processCPU(b))
			i := 0
			for b.Loop() {
				d := p.Decide(Request{Src: agents[i%benchN], Dst: tools[(i+1)%benchN], Action: ActionTool, Method: "tools/call", Tool: "query", Args: args})
				if d.Allow {
					b.Fatal("allowed")
				}
				i++
			}
		})
	}
}

func BenchmarkCompile(b *testing.B) {
	for _, when := range []bool{false, true} {
		doc := []byte(benchDoc(benchN, when))
		b.Run(fmt.Sprintf("when=%v", when), func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(doc)))
			for b.Loop() {
				if _, err := Compile(doc, "bench"); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkVisible(b *testing.B) {
	agents, tools := benchNodes(benchN)
	p, err := Compile([]byte(benchDoc(benchN, true)), "bench")
	if err != nil {
		b.Fatal(err)
	}
	names := []string{"query", "list_tables", "list_secrets", "drop_table", "describe", "list_x", "insert", "update", "delete", "vacuum"}
	b.ReportAllocs()
	for b.Loop() {
		v := p.Visible(agents[7], tools[7])
		n := 0
		for _, name := range names {
			if v.Tool(name) {
				n++
			}
		}
		if n != 3 {
			b.Fatalf("%d tools visible, want 3", n)
		}
	}
}
