package audit_test

import (
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// nodeSide are the packages that run on nodes (gateways, connectors, the
// node runtime and what they share with the coordinator's clients).
var nodeSide = []string{
	"github.com/agentmesh/agentmesh/internal/audit",
	"github.com/agentmesh/agentmesh/internal/audit/spool",
	"github.com/agentmesh/agentmesh/internal/connector",
	"github.com/agentmesh/agentmesh/internal/controlapi",
	"github.com/agentmesh/agentmesh/internal/controlclient",
	"github.com/agentmesh/agentmesh/internal/gateway",
	"github.com/agentmesh/agentmesh/internal/modelgw",
	"github.com/agentmesh/agentmesh/internal/netmap",
	"github.com/agentmesh/agentmesh/internal/node",
	"github.com/agentmesh/agentmesh/internal/tailnet",
}

// coordinatorOnly are the packages a node must not link: the database
// driver and the code on top of it.
var coordinatorOnly = []string{
	"modernc.org/sqlite",
	"github.com/agentmesh/agentmesh/internal/store",
	"github.com/agentmesh/agentmesh/internal/audit/auditstore",
	"github.com/agentmesh/agentmesh/internal/coordinator",
}

// TestNodeSideDoesNotLinkTheDatabase keeps the audit split honest: no
// node-side package may import, directly or through another package, the
// coordinator's database or the code on top of it. It asks the go command
// for the import graph and names the chain of imports of any violation.
func TestNodeSideDoesNotLinkTheDatabase(t *testing.T) {
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skip("the go command is not on PATH")
	}
	args := append([]string{"list", "-deps", "-f", "{{.ImportPath}} {{join .Imports \" \"}}"}, nodeSide...)
	out, err := exec.Command(goTool, args...).Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	imports := map[string][]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Fields(line)
		imports[f[0]] = f[1:]
	}
	for _, root := range nodeSide {
		if _, ok := imports[root]; !ok {
			t.Fatalf("go list did not list %s", root)
		}
		if chain := importChain(imports, root, coordinatorOnly); chain != nil {
			t.Errorf("%s links the coordinator's database: %s", root, strings.Join(chain, " -> "))
		}
	}
}

// importChain returns the shortest chain of imports from root to one of
// targets, or nil.
func importChain(imports map[string][]string, root string, targets []string) []string {
	from := map[string]string{root: ""}
	queue := []string{root}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		if slices.Contains(targets, p) {
			var chain []string
			for ; p != ""; p = from[p] {
				chain = append(chain, p)
			}
			slices.Reverse(chain)
			return chain
		}
		for _, q := range imports[p] {
			if _, seen := from[q]; !seen {
				from[q] = p
				queue = append(queue, q)
			}
		}
	}
	return nil
}

func TestImportChainFindsTheShortestPath(t *testing.T) {
	g := map[string][]string{
		"a": {"b", "c"},
		"b": {"d"},
		"c": {"x"},
		"d": {"x"},
	}
	if got := importChain(g, "a", []string{"x"}); !slices.Equal(got, []string{"a", "c", "x"}) {
		t.Fatalf("chain = %v, want a -> c -> x", got)
	}
	if got := importChain(g, "b", []string{"c"}); got != nil {
		t.Fatalf("chain = %v, want none", got)
	}
}
