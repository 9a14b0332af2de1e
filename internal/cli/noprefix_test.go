package cli

import (
	"strings"
	"testing"
)

// TestNoPrefixNeedsAll: --no-prefix is an option of the aggregated
// endpoint; with a SERVICE it is a usage error.
func TestNoPrefixNeedsAll(t *testing.T) {
	code, _, errOut := run(t, nil, "connect", "ledger", "--no-prefix", "--state", t.TempDir())
	if code != 2 || !strings.Contains(errOut, "--no-prefix is an option of --all") {
		t.Errorf("exit status %d, stderr %q; want 2 and a word on --all", code, errOut)
	}
}
