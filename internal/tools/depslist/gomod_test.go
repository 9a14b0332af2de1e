package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestEveryDirectModuleSaysWhyItIsHere keeps STYLE's rule that
// dependencies are chosen, not collected: every require in go.mod that is
// not marked indirect carries a comment saying what it is for.
func TestEveryDirectModuleSaysWhyItIsHere(t *testing.T) {
	gomod, err := os.ReadFile(filepath.Join(testModuleRoot(t), "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	direct, missing := unexplainedRequires(string(gomod))
	if direct == 0 {
		t.Fatal("found no direct require in go.mod; is the parser broken?")
	}
	for _, m := range missing {
		t.Errorf("go.mod requires %s without a reason: add a one-line `// what we use it for, why not the standard library` after it", m)
	}
}

// unexplainedRequires counts the direct requires in a go.mod and returns
// the module paths of those without a comment.
func unexplainedRequires(gomod string) (direct int, missing []string) {
	inBlock := false
	for _, line := range strings.Split(gomod, "\n") {
		line = strings.TrimSpace(line)
		var req string
		switch {
		case line == "require (":
			inBlock = true
			continue
		case inBlock && line == ")":
			inBlock = false
			continue
		case inBlock:
			req = line
		case strings.HasPrefix(line, "require "):
			req = strings.TrimPrefix(line, "require ")
		default:
			continue
		}
		spec, comment, _ := strings.Cut(req, "//")
		fields := strings.Fields(spec)
		comment = strings.TrimSpace(comment)
		if len(fields) == 0 || comment == "indirect" || strings.HasPrefix(comment, "indirect;") {
			continue
		}
		direct++
		if comment == "" {
			missing = append(missing, fields[0])
		}
	}
	return direct, missing
}

func TestUnexplainedRequiresNamesDirectModulesWithoutAComment(t *testing.T) {
	gomod := `module m

require example.com/single v1.0.0

require (
	example.com/why v1.0.0 // what it is for
	example.com/bare v1.0.0
	example.com/dep v1.0.0 // indirect
	example.com/dep2 v1.0.0 // indirect; a note
)

require example.com/explained v1.0.0 // reason
`
	direct, missing := unexplainedRequires(gomod)
	if direct != 4 || strings.Join(missing, " ") != "example.com/single example.com/bare" {
		t.Fatalf("unexplainedRequires = %d, %v; want 4, [example.com/single example.com/bare]", direct, missing)
	}
}
