package cli

import (
	"encoding/json"
	"io"

	"github.com/agentmesh/agentmesh/internal/termtext"
)

// printf prints a line for people, with every argument that carries text
// escaped for the terminal (termtext.Printf).
func printf(w io.Writer, format string, args ...any) { termtext.Printf(w, format, args...) }

// printLines prints a report's lines, each escaped (termtext.PrintLines).
func printLines(w io.Writer, indent string, lines []string) { termtext.PrintLines(w, indent, lines) }

// printJSON is how the CLI prints JSON: indented, and with the characters
// that encoding/json leaves raw but a terminal would act on (bidi
// overrides, C1 controls, DEL) written as \u escapes, which decode to the
// same value (see termtext.JSON).
func printJSON(w io.Writer, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	_, err = w.Write(append(termtext.JSON(b), '\n'))
	return err
}

// printJSONLine prints v as one line of JSON, escaped as printJSON does.
func printJSONLine(w io.Writer, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	_, err = w.Write(append(termtext.JSON(b), '\n'))
	return err
}
