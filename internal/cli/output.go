package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"

	"agentmesh/internal/audit"
	"agentmesh/internal/reason"
	"agentmesh/internal/termtext"
)

// printf is how the CLI prints a line for people: format is the CLI's own
// text, and every argument that carries text (a string, an error, a
// Stringer, a list of strings, joined with ",") is passed through
// termtext.Escape first, so that nothing a peer chose (a tool name, a
// reason, an address, a message relayed from the coordinator) reaches the
// terminal raw. Errors keep their newlines, since several problems found
// here are reported one per line (an error relayed from the coordinator
// is a controlclient.APIError, which escapes its newlines itself); no
// other argument may add a line or a column.
func printf(w io.Writer, format string, args ...any) {
	safe := make([]any, len(args))
	for i, a := range args {
		switch v := a.(type) {
		case string:
			safe[i] = termtext.Escape(v)
		case reason.Code:
			safe[i] = termtext.Escape(string(v))
		case audit.Decision:
			safe[i] = termtext.Escape(string(v))
		case audit.Outcome:
			safe[i] = termtext.Escape(string(v))

		case []string:
			safe[i] = termtext.Escape(strings.Join(v, ","))
		case error:
			safe[i] = termtext.EscapeLines(v.Error())
		case fmt.Stringer:
			safe[i] = termtext.Escape(v.String())
		default:
			safe[i] = a
		}
	}
	fmt.Fprintf(w, format, safe...)
}

// printLines prints lines made for people (a report), each escaped as
// printf escapes an argument, so a line break inside one of them is
// escaped too, and indented by indent after the first.
func printLines(w io.Writer, indent string, lines []string) {
	for i, line := range lines {
		if i > 0 {
			io.WriteString(w, indent)
		}
		printf(w, "%s\n", line)
	}
}

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
