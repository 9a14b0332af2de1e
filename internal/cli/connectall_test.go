package cli

import (
	"strings"
	"testing"
)

// TestConnectAllTakesNoService: --all aggregates every tool service, so
// naming one as well is a usage error, as is giving neither.
func TestConnectAllTakesNoService(t *testing.T) {
	for _, args := range [][]string{
		{"connect", "--all", "ledger", "--state", t.TempDir()},
		{"connect", "--state", t.TempDir()},
	} {
		code, _, errOut := run(t, nil, args...)
		if code != 2 || !strings.Contains(errOut, "--all") {
			t.Errorf("%v: exit status %d, stderr %q; want 2 and a word on --all", args, code, errOut)
		}
	}
}
