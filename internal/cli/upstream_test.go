package cli

import (
	"net"
	"path/filepath"
	"testing"
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
