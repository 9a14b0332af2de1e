package cli

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/agentmesh/agentmesh/internal/termtext"
)

// printTable writes a list command's table to w: the header's columns
// (separated by tabs) over a line per row, aligned. Every cell is escaped
// for the terminal (termtext.Escape: names, tags, tools and people come
// from the coordinator, and from whoever registered them) and is "-" when
// empty.
func printTable(w io.Writer, header string, rows [][]string) error {
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, header)
	for _, row := range rows {
		cells := make([]string, len(row))
		for i, c := range row {
			cells[i] = orDash(termtext.Escape(c))
		}
		fmt.Fprintln(tw, strings.Join(cells, "\t"))
	}
	return tw.Flush()
}

// orDash is s, or "-" when it is empty.
func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
