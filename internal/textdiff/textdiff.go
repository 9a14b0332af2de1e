// Package textdiff compares two texts line by line, for people: the
// coordinator records a policy change's diff in the audit trail, and the
// web console shows what applying an edited policy would change. Its work
// is bounded: past a size it summarises instead of comparing.
package textdiff

import (
	"fmt"
	"strings"
)

// maxDiffCells bounds the work of Lines: past it, a summary is recorded
// instead of a line-by-line diff.
const maxDiffCells = 4_000_000

// Lines returns a line diff from a to b, one changed line a line: "-N: "
// and the line removed (N its number in a), "+N: " and the line added (N
// its number in b); unchanged lines are left out. Equal texts give
// "(no change)", texts too large to compare a one-line summary.
func Lines(a, b string) string {
	if a == b {
		return "(no change)"
	}
	al, bl := splitLines(a), splitLines(b)
	if len(al)*len(bl) > maxDiffCells {
		return fmt.Sprintf("(document too large to diff: %d lines -> %d lines)", len(al), len(bl))
	}
	// Longest common subsequence table, filled from the end.
	n, m := len(al), len(bl)
	lcs := make([][]int32, n+1)
	for i := range lcs {
		lcs[i] = make([]int32, m+1)
	}
	for i := n - 1; i >= 0; i-- {
		for j := m - 1; j >= 0; j-- {
			if al[i] == bl[j] {
				lcs[i][j] = lcs[i+1][j+1] + 1
			} else {
				lcs[i][j] = max(lcs[i+1][j], lcs[i][j+1])
			}
		}
	}
	var sb strings.Builder
	i, j := 0, 0
	for i < n || j < m {
		switch {
		case i < n && j < m && al[i] == bl[j]:
			i++
			j++
		case j < m && (i == n || lcs[i][j+1] >= lcs[i+1][j]):
			fmt.Fprintf(&sb, "+%d: %s\n", j+1, bl[j])
			j++
		default:
			fmt.Fprintf(&sb, "-%d: %s\n", i+1, al[i])
			i++
		}
	}
	return sb.String()
}

func splitLines(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(strings.TrimSuffix(s, "\n"), "\n")
}
