package termtext_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/agentmesh/agentmesh/internal/termtext"
)

type code string

type stringer struct{}

func (stringer) String() string { return "s\x1b[2J" }

// TestPrintfEscapesEveryArgumentThatCarriesText: strings, named string
// types, lists, Stringers and errors are escaped (errors keep their line
// breaks); numbers are printed as they are.
func TestPrintfEscapesEveryArgumentThatCarriesText(t *testing.T) {
	var b strings.Builder
	termtext.Printf(&b, "%s|%s|%s|%s|%v|%d\n", "a\x1b]0;x\a", code("c\u202e"), []string{"l\n1", "l2"}, stringer{},
		errors.New("e1\ne2\x1b"), 42)
	want := `a\x1b]0;x\x07|c\u202e|l\x0a1,l2|s\x1b[2J|e1` + "\n" + `e2\x1b|42` + "\n"
	if b.String() != want {
		t.Fatalf("got  %q\nwant %q", b.String(), want)
	}
}
