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

// TestConnectAllChecksTheSeparator: --separator goes with --all only, and
// one outside the rule (empty among them) is a usage error naming it,
// refused before anything starts.
func TestConnectAllChecksTheSeparator(t *testing.T) {
	for _, args := range [][]string{
		{"connect", "ledger", "--separator", ".", "--state", t.TempDir()},
		{"connect", "--all", "--separator", "", "--state", t.TempDir()},
		{"connect", "--all", "--separator", "::", "--state", t.TempDir()},
		{"connect", "--all", "--separator", "_________", "--state", t.TempDir()},
	} {
		code, _, errOut := run(t, nil, args...)
		if code != 2 || !strings.Contains(errOut, "--separator") {
			t.Errorf("%v: exit status %d, stderr %q; want 2 and a word on --separator", args, code, errOut)
		}
	}
}
