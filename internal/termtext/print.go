package termtext

import (
	"fmt"
	"io"
	"reflect"
	"strings"
)

// Printf is how agentmesh prints a line for people: format is the
// program's own text, and every argument that carries text (a string or a
// type whose underlying type is string, an error, a Stringer, a list of
// strings, joined with ",") is passed through Escape first, so that
// nothing a peer chose (a tool name, a reason, an address, a message
// relayed from the coordinator) reaches the terminal raw. Errors keep
// their newlines (EscapeLines), since several problems are reported one
// per line; no other argument may add a line or a column.
func Printf(w io.Writer, format string, args ...any) {
	safe := make([]any, len(args))
	for i, a := range args {
		switch v := a.(type) {
		case string:
			safe[i] = Escape(v)
		case []string:
			safe[i] = Escape(strings.Join(v, ","))
		case error:
			safe[i] = EscapeLines(v.Error())
		case fmt.Stringer:
			safe[i] = Escape(v.String())
		default:
			// A named string type (a reason code, an audit decision) is
			// text like any other.
			if rv := reflect.ValueOf(a); rv.Kind() == reflect.String {
				safe[i] = Escape(rv.String())
			} else {
				safe[i] = a
			}
		}
	}
	fmt.Fprintf(w, format, safe...)
}

// PrintLines prints lines made for people (a report), each escaped as
// Printf escapes an argument, so a line break inside one of them is
// escaped too, and indented by indent after the first.
func PrintLines(w io.Writer, indent string, lines []string) {
	for i, line := range lines {
		if i > 0 {
			io.WriteString(w, indent)
		}
		Printf(w, "%s\n", line)
	}
}
