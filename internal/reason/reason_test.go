package reason_test

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// definedCodes parses this package's source and returns every constant of
// type Code: name by value. Parsing, rather than a hand-kept list, means a
// code added to reason.go cannot be missed.
func definedCodes(t *testing.T) map[string]string {
	t.Helper()
	fset := token.NewFileSet()
	pkgs, err := parser.ParseDir(fset, ".", func(fi fs.FileInfo) bool { return !strings.HasSuffix(fi.Name(), "_test.go") }, parser.ParseComments)
	if err != nil {
		t.Fatal(err)
	}
	codes := map[string]string{}
	for _, pkg := range pkgs {
		for _, f := range pkg.Files {
			for _, d := range f.Decls {
				gd, ok := d.(*ast.GenDecl)
				if !ok || gd.Tok != token.CONST {
					continue
				}
				for _, s := range gd.Specs {
					vs := s.(*ast.ValueSpec)
					if id, ok := vs.Type.(*ast.Ident); !ok || id.Name != "Code" {
						t.Errorf("%s: a constant of this package that is not a Code", fset.Position(vs.Pos()))
						continue
					}
					if vs.Doc == nil || strings.TrimSpace(vs.Doc.Text()) == "" {
						t.Errorf("%s has no doc comment saying what it means", vs.Names[0].Name)
					}
					for i, n := range vs.Names {
						lit, ok := vs.Values[i].(*ast.BasicLit)
						if !ok || lit.Kind != token.STRING {
							t.Errorf("%s is not a string literal", n.Name)
							continue
						}
						v, _ := strconv.Unquote(lit.Value)
						codes[n.Name] = v
					}
				}
			}
		}
	}
	if len(codes) == 0 {
		t.Fatal("no codes found")
	}
	return codes
}

// readmeSection returns the lines of the README section titled title.
func readmeSection(t *testing.T, title string) []string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	in := false
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "## ") {
			in = line == "## "+title
			continue
		}
		if in {
			out = append(out, line)
		}
	}
	if out == nil {
		t.Fatalf("README has no section %q", title)
	}
	return out
}

var backticked = regexp.MustCompile("`([^`]+)`")

// TestEveryCodeIsDocumentedInTheREADMEAndNothingElse holds the README's
// reason code table and this package to the same set: a code users may
// meet is documented, and a documented code exists.
func TestEveryCodeIsDocumentedInTheREADMEAndNothingElse(t *testing.T) {
	defined := map[string]bool{}
	names := map[string]string{}
	for name, v := range definedCodes(t) {
		if other, dup := names[v]; dup {
			t.Errorf("%q is defined twice: %s and %s", v, other, name)
		}
		names[v] = name
		defined[v] = true
	}
	documented := map[string]bool{}
	for _, line := range readmeSection(t, "Reason codes") {
		if !strings.HasPrefix(line, "| `") {
			continue
		}
		cell := strings.SplitN(line, "|", 3)[1]
		for _, m := range backticked.FindAllStringSubmatch(cell, -1) {
			if documented[m[1]] {
				t.Errorf("README documents %q twice", m[1])
			}
			documented[m[1]] = true
		}
	}
	for v := range defined {
		if !documented[v] {
			t.Errorf("code %q (reason.%s) is not in the README's reason code table", v, names[v])
		}
	}
	for v := range documented {
		if !defined[v] {
			t.Errorf("the README documents %q, which package reason does not define", v)
		}
	}
}

// TestREADMEReasonColumnsNameDefinedCodes: every code in a README table
// column headed "reasons" (outside its parenthesised explanations)
// exists, so a renamed code cannot linger there.
func TestREADMEReasonColumnsNameDefinedCodes(t *testing.T) {
	defined := map[string]bool{}
	for _, v := range definedCodes(t) {
		defined[v] = true
	}
	b, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	col, checked := -1, 0
	for _, line := range strings.Split(string(b), "\n") {
		if !strings.HasPrefix(line, "|") {
			col = -1
			continue
		}
		cells := strings.Split(line, "|")
		if col < 0 {
			col = slices.IndexFunc(cells, func(c string) bool { return strings.TrimSpace(c) == "reasons" })
			continue
		}
		if col >= len(cells) || strings.HasPrefix(strings.TrimSpace(cells[col]), "-") {
			continue
		}
		for _, m := range backticked.FindAllStringSubmatch(outsideParens(cells[col]), -1) {
			checked++
			if !defined[m[1]] {
				t.Errorf("README names %q as a reason, which package reason does not define", m[1])
			}
		}
	}
	if checked == 0 {
		t.Fatal("found no README table with a reasons column")
	}
}

// outsideParens is s without its parenthesised asides, where a reasons
// cell explains a code with words that are not codes (a field `model`).
func outsideParens(s string) string {
	var b strings.Builder
	depth := 0
	for _, r := range s {
		switch {
		case r == '(':
			depth++
		case r == ')' && depth > 0:
			depth--
		case depth == 0:
			b.WriteRune(r)
		}
	}
	return b.String()
}

// TestNoOtherPackageDefinesAReasonCode: a reason constant outside this
// package is a second definition of a code. Names that keep an exported
// API stable may refer to this package's constants, never spell a code.
func TestNoOtherPackageDefinesAReasonCode(t *testing.T) {
	root := filepath.Join("..", "..")
	fset := token.NewFileSet()
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if n := d.Name(); n == "node_modules" || n == "testdata" || strings.HasPrefix(n, ".") && path != root {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(fset, path, nil, 0)
		if err != nil {
			return err
		}
		for _, d := range f.Decls {
			gd, ok := d.(*ast.GenDecl)
			if !ok || gd.Tok != token.CONST {
				continue
			}
			for _, s := range gd.Specs {
				vs := s.(*ast.ValueSpec)
				for i, n := range vs.Names {
					if i >= len(vs.Values) || !strings.HasPrefix(strings.ToLower(n.Name), "reason") {
						continue
					}
					if lit, ok := vs.Values[i].(*ast.BasicLit); ok && lit.Kind == token.STRING {
						t.Errorf("%s: %s spells a reason code; use package reason", fset.Position(n.Pos()), n.Name)
					}
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
