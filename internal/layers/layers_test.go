package layers

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// A layer is a set of packages that may import the packages of the layers
// in its may list (and of the standard library and go.mod's modules).
type layer struct {
	name string
	pkgs []string
	may  []string
}

// module is the path of this module, from go.mod.
const module = "github.com/agentmesh/agentmesh"

// The layers of ARCHITECTURE.md, bottom up. Paths are relative to
// the module's internal/ unless they start with "/", which is the module's
// root.
var layers = []layer{
	{name: "foundation", may: []string{"foundation"}, pkgs: []string{
		"alert", "audit", "authkey", "backoff", "budget", "connlimit", "controlapi", "delegation", "dirlock", "durable", "httpserver",
		"identity", "loopback", "mcpwire", "metrics", "modelwire", "netmap", "pki", "policy", "policy/replay", "reason", "sealed", "sse",
		"sso", "store", "termtext", "textdiff", "toolpin", "tracing", "transport", "/examples", "/examples/ledger",
	}},
	{name: "components", may: []string{"foundation", "components"}, pkgs: []string{
		"admission", "aggregate", "audit/auditstore", "audit/spool", "connector", "connector/modelconn",
		"controlclient", "coordinator", "gateway", "modelgw", "node", "nodestate", "tailnet",
	}},
	{name: "engine", may: []string{"foundation", "components"}, pkgs: []string{"engine"}},
	// Programs built on the engine. The benchmark also drives components
	// on their own, to measure them apart.
	{name: "programs", may: []string{"foundation", "components", "engine"}, pkgs: []string{"demo", "bench"}},
	// The public library: the engine made public for Go programs (agents
	// and MCP servers). Nothing in the module imports it but its own
	// examples; it hands out no internal type.
	{name: "library", may: []string{"foundation", "components", "engine"}, pkgs: []string{"/mesh"}},
	{name: "library examples", may: []string{"library"}, pkgs: []string{"/examples/library/agent", "/examples/library/server"}},
	// The CLI parses flags and prints: it reaches the data plane only
	// through the engine and the programs, and otherwise imports the
	// admin API's client and the shapes it prints.
	// The web console is a client of the admin API, as the CLI is, that
	// serves pages on loopback: it reaches the coordinator only through
	// controlclient, and links no data plane and no engine.
	{name: "console", may: []string{"foundation", "client"}, pkgs: []string{"console"}},
	{name: "cli", may: []string{"engine", "programs", "console", "client"}, pkgs: []string{"cli"}},
	{name: "commands", may: []string{"cli"}, pkgs: []string{"/cmd/agentmesh"}},
	// Helpers of tests and of development; no production package may
	// import them.
	{name: "test helpers", may: []string{"foundation", "components", "engine", "test helpers"}, pkgs: []string{
		"audit/audittest", "connector/connectortest", "coordinator/coordinatortest", "gateway/gatewaytest",
		"modelgw/modelgwtest", "pki/pkitest", "sso/ssotest", "store/pgtest", "tailnet/tailnettest", "tools/depslist", "tools/gotest", "layers", "/e2e",
	}},
}

// client is what the CLI may import below the engine: the admin API's
// client and wire shapes, the node's state directory, and what it prints.
var client = []string{"audit", "controlapi", "controlclient", "identity", "nodestate", "policy", "policy/replay", "reason", "termtext", "toolpin"}

func full(p string) string {
	if strings.HasPrefix(p, "/") {
		return module + p
	}
	return module + "/internal/" + p
}

// TestEveryPackageImportsOnlyWhatItsLayerMay: the import rule of
// ARCHITECTURE.md, for every package of the module (imports of test files
// aside); a new package must be given a layer here and there.
func TestEveryPackageImportsOnlyWhatItsLayerMay(t *testing.T) {
	layerOf := map[string]string{}
	members := map[string][]string{"client": nil}
	for _, l := range layers {
		for _, p := range l.pkgs {
			layerOf[full(p)] = l.name
			members[l.name] = append(members[l.name], full(p))
		}
	}
	for _, p := range client {
		members["client"] = append(members["client"], full(p))
	}
	allowed := map[string]map[string]bool{}
	for _, l := range layers {
		allowed[l.name] = map[string]bool{}
		for _, m := range l.may {
			for _, p := range members[m] {
				allowed[l.name][p] = true
			}
		}
	}
	for pkg, imports := range goList(t) {
		l, ok := layerOf[pkg]
		if !ok {
			t.Errorf("%s has no layer: add it to ARCHITECTURE.md and to internal/layers", pkg)
			continue
		}
		for _, imp := range imports {
			if strings.HasPrefix(imp, module+"/") && !allowed[l][imp] {
				t.Errorf("%s (%s) imports %s (%s), which its layer may not", pkg, l, imp, layerOf[imp])
			}
		}
	}
}

// TestArchitectureNamesEveryPackage: ARCHITECTURE.md's picture lists every
// package the rule knows, so the document and the test do not drift.
func TestArchitectureNamesEveryPackage(t *testing.T) {
	doc, err := os.ReadFile(filepath.Join(moduleRoot(t), "ARCHITECTURE.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range layers {
		for _, p := range l.pkgs {
			name := strings.TrimPrefix(p, "/")
			if !bytes.Contains(doc, []byte(name)) {
				t.Errorf("ARCHITECTURE.md does not name %s (layer %s)", name, l.name)
			}
		}
	}
}

// goList returns each package of the module with its non-test imports.
func goList(t *testing.T) map[string][]string {
	t.Helper()
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("the go command is not installed")
	}
	root := moduleRoot(t)
	trackSources(t, root)
	cmd := exec.Command("go", "list", "-f", "{{.ImportPath}} {{join .Imports \" \"}}", "./...")
	cmd.Dir = root
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	pkgs := map[string][]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Fields(line)
		pkgs[f[0]] = f[1:]
	}
	if len(pkgs) < 20 {
		t.Fatalf("go list found %d packages; is this the module root?", len(pkgs))
	}
	return pkgs
}

func moduleRoot(t *testing.T) string {
	t.Helper()
	dir, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "go.mod")); err != nil {
		t.Fatalf("no go.mod in %s", dir)
	}
	return dir
}

// trackSources opens every Go file of the module. go test caches a result
// keyed by the files the test opened, and the go list this test runs reads
// the sources itself; opening them here makes an edited import run the
// test again instead of replaying a cached pass.
func trackSources(t *testing.T, root string) {
	t.Helper()
	err := filepath.WalkDir(root, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == "node_modules" || d.Name() == "testdata" || strings.HasPrefix(d.Name(), ".")) && path != root {
			return filepath.SkipDir
		}
		if !d.IsDir() && strings.HasSuffix(path, ".go") {
			f, err := os.Open(path)
			if err != nil {
				return err
			}
			f.Close()
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
