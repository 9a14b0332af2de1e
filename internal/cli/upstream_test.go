package cli

import (
	"context"
	"net"
	"path/filepath"
	"testing"

	"github.com/agentmesh/agentmesh/internal/engine"
)

// TestServeRequireUpstreamRefusesAnUpstreamThatDoesNotAnswer: with
// --require-upstream, an upstream URL that does not answer, or a command
// that is not found, ends 'serve' with one line that says so, before the
// state directory is even looked at.
func TestServeRequireUpstreamRefusesAnUpstreamThatDoesNotAnswer(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := "http://" + ln.Addr().String() + "/mcp"
	ln.Close()
	state := filepath.Join(t.TempDir(), "never-joined")
	checkStartFails(t, "upstream unavailable: the upstream at "+dead+" does not answer (is it running?)",
		"serve", "--state", state, "--require-upstream", "--upstream", dead)
	checkStartFails(t, `upstream unavailable: the upstream command "agentmesh-no-such-command" cannot be started`,
		"serve", "--state", state, "--require-upstream", "--", "agentmesh-no-such-command", "--flag")
}

// TestAdminCommandsSayTheCoordinatorIsDownAndNameItsDataDirectory: with
// the coordinator stopped, an admin command says it cannot reach it and
// asks whether it runs, not a raw dial error; given the coordinator's data
// directory instead of its admin state, it says which to give.
func TestAdminCommandsSayTheCoordinatorIsDownAndNameItsDataDirectory(t *testing.T) {
	data := filepath.Join(t.TempDir(), "mesh")
	co, err := engine.StartCoordinator(context.Background(), engine.CoordinatorConfig{DataDir: data, Listen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	url := co.URL()
	co.Close()
	checkStartFails(t, "cannot reach the coordinator at "+url+": is 'agentmesh coordinator' running there", "nodes", "list", "--state", co.AdminDir())
	checkStartFails(t, data+" is a coordinator's data directory, not a node's state; admin commands take its admin state, --state "+co.AdminDir(),
		"nodes", "list", "--state", data)
}
