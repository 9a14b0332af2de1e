// Command depslist writes, for each binary under cmd/, the list of packages
// it links: deps/NAME.txt for the default build and deps/NAME-TAG.txt for
// each build tag variant (deps/agentmesh-notailnet.txt leaves the tailnet
// mode out). The lists are checked in so that a change which makes a binary
// link a new package, from a new module or an old one, shows in review as a
// line in the diff, and a test fails while a list is out of date.
//
// Run it from anywhere inside the module:
//
//	go run ./internal/tools/depslist
//
// A list is a property of the code, go.mod and the build tags only, so that
// every contributor generates the same bytes. It is made for one fixed
// platform, linux/amd64 with CGO_ENABLED=0, because some modules link other
// packages elsewhere. It leaves the standard library out: its packages
// change with the Go release a contributor has installed, not with our
// code, and our own standard library imports show in the importing file's
// diff; what review cannot see without the list is what a third-party
// import drags in.
//
// The package's tests also keep STYLE's rule that every direct module in
// go.mod says, in a comment, why it is there.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strings"
)

// Command is how to regenerate the lists; messages and headers name it.
const Command = "go run ./internal/tools/depslist"

// Dir is the directory, relative to the module root, that holds the lists.
const Dir = "deps"

// The platform the lists are made for. Only the packages of modules that
// differ by platform (tailscale.com, golang.org/x/sys, the SIMD assembly
// of some encoders) depend on it.
const (
	goos   = "linux"
	goarch = "amd64"
)

// A variant is one way the binaries are built: the default build, or one
// with build tags. Its suffix names its list files.
type variant struct {
	suffix string
	tags   []string
}

// variants are the builds listed for every binary. notailnet leaves the
// tailnet mode (tsnet, most of tailscale.com) out of the binary.
var variants = []variant{
	{suffix: ""},
	{suffix: "-notailnet", tags: []string{"notailnet"}},
}

// A module is the part of go list's Module that the lists show.
type module struct {
	Path    string
	Version string
	Main    bool
	Replace *module
}

// A pkg is one package as go list describes it. Deps is every package it
// links, directly or not; go list fills it for every package, but only a
// main package's is read.
type pkg struct {
	ImportPath string
	Name       string
	Standard   bool
	Module     *module
	Deps       []string
}

func main() {
	if err := run(context.Background(), os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "depslist:", err)
		os.Exit(1)
	}
}

// run writes every list and removes lists of binaries or variants that no
// longer exist.
func run(ctx context.Context, out io.Writer) error {
	root, err := moduleRoot(ctx)
	if err != nil {
		return err
	}
	lists, err := generate(ctx, root)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Join(root, Dir), 0o755); err != nil {
		return err
	}
	for _, name := range slices.Sorted(maps.Keys(lists)) {
		if err := os.WriteFile(filepath.Join(root, name), lists[name], 0o644); err != nil {
			return err
		}
		fmt.Fprintf(out, "wrote %s\n", name)
	}
	stale, err := staleLists(root, lists)
	if err != nil {
		return err
	}
	for _, name := range stale {
		if err := os.Remove(filepath.Join(root, name)); err != nil {
			return err
		}
		fmt.Fprintf(out, "removed %s\n", name)
	}
	return nil
}

// generate returns the content of every list, keyed by its path relative
// to root (deps/agentmesh.txt).
func generate(ctx context.Context, root string) (map[string][]byte, error) {
	lists := map[string][]byte{}
	for _, v := range variants {
		pkgs, err := goList(ctx, root, v.tags)
		if err != nil {
			return nil, err
		}
		byPath := make(map[string]*pkg, len(pkgs))
		var mains []*pkg
		for _, p := range pkgs {
			byPath[p.ImportPath] = p
			// Nothing can import a main package, so the main packages in
			// go list's -deps output are exactly the binaries under cmd/.
			if p.Name == "main" {
				mains = append(mains, p)
			}
		}
		if len(mains) == 0 {
			return nil, errors.New("go list found no main package under ./cmd")
		}
		for _, m := range mains {
			name := path.Join(Dir, path.Base(m.ImportPath)+v.suffix+".txt")
			if _, dup := lists[name]; dup {
				return nil, fmt.Errorf("two binaries would write %s", name)
			}
			b, err := render(m, byPath, v.tags)
			if err != nil {
				return nil, err
			}
			lists[name] = b
		}
	}
	return lists, nil
}

// staleLists returns the .txt files in root's Dir that generate did not
// produce: lists of a binary or variant that is gone.
func staleLists(root string, lists map[string][]byte) ([]string, error) {
	entries, err := os.ReadDir(filepath.Join(root, Dir))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var stale []string
	for _, e := range entries {
		name := path.Join(Dir, e.Name())
		if _, ok := lists[name]; !ok && !e.IsDir() && strings.HasSuffix(name, ".txt") {
			stale = append(stale, name)
		}
	}
	return stale, nil
}

// goEnv pins what, besides the code, go.mod and the tags, would change the
// package set, so that every contributor's go list agrees. -mod=readonly
// keeps the generator from ever editing go.mod.
func goEnv() []string {
	return append(os.Environ(),
		"GOOS="+goos, "GOARCH="+goarch, "CGO_ENABLED=0", "GOFLAGS=-mod=readonly")
}

// moduleRoot is the directory of the go.mod that the go command uses here.
func moduleRoot(ctx context.Context) (string, error) {
	out, err := goCommand(ctx, "", "env", "GOMOD")
	if err != nil {
		return "", err
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", errors.New("not inside a Go module: run it from the agentmesh repository")
	}
	return filepath.Dir(gomod), nil
}

// goList lists the binaries under root/cmd and every package they link,
// built with tags.
func goList(ctx context.Context, root string, tags []string) ([]*pkg, error) {
	args := []string{"list", "-deps", "-json=ImportPath,Name,Standard,Module,Deps"}
	if len(tags) > 0 {
		args = append(args, "-tags="+strings.Join(tags, ","))
	}
	args = append(args, "./cmd/...")
	out, err := goCommand(ctx, root, args...)
	if err != nil {
		return nil, err
	}
	var pkgs []*pkg
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		p := new(pkg)
		err := dec.Decode(p)
		if err == io.EOF {
			return pkgs, nil
		}
		if err != nil {
			return nil, fmt.Errorf("decoding go list output: %w", err)
		}
		pkgs = append(pkgs, p)
	}
}

// goCommand runs the go command in dir with goEnv and returns its output;
// an error carries what the go command wrote to stderr.
func goCommand(ctx context.Context, dir string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = dir
	cmd.Env = goEnv()
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("go %s: %w\n%s", strings.Join(args, " "), err, bytes.TrimSpace(stderr.Bytes()))
	}
	return out, nil
}

// render writes the list of the binary bin: a header, then one block per module
// (the main module first, then by module path), each the module's path and
// version with its package count, then its packages, sorted, one per line
// and indented. A package's full import path is on its line so that a diff
// line names it without context.
func render(bin *pkg, byPath map[string]*pkg, tags []string) ([]byte, error) {
	type group struct {
		title string
		pkgs  []string
	}
	groups := map[string]*group{}
	linked := append([]string{bin.ImportPath}, bin.Deps...)
	total := 0
	for _, ip := range linked {
		p, ok := byPath[ip]
		if !ok {
			return nil, fmt.Errorf("go list named %s as a dependency of %s but did not describe it", ip, bin.ImportPath)
		}
		if p.Standard {
			continue
		}
		if p.Module == nil {
			return nil, fmt.Errorf("package %s is in no module", ip)
		}
		g, ok := groups[p.Module.Path]
		if !ok {
			g = &group{title: moduleTitle(p.Module)}
			groups[p.Module.Path] = g
		}
		g.pkgs = append(g.pkgs, ip)
		total++
	}
	paths := slices.Sorted(maps.Keys(groups))
	slices.SortStableFunc(paths, func(a, b string) int {
		// The main module first: our own packages lead the list.
		am, bm := a == bin.Module.Path, b == bin.Module.Path
		switch {
		case am && !bm:
			return -1
		case bm && !am:
			return 1
		}
		return 0
	})

	var b bytes.Buffer
	tagText := "none"
	if len(tags) > 0 {
		tagText = strings.Join(tags, ",")
	}
	fmt.Fprintf(&b, "# Packages linked into the %s binary (%s),\n", path.Base(bin.ImportPath), bin.ImportPath)
	fmt.Fprintf(&b, "# built for %s/%s with CGO_ENABLED=0, build tags: %s.\n", goos, goarch, tagText)
	fmt.Fprintf(&b, "# The standard library is left out. Generated by `%s`: do not edit.\n", Command)
	fmt.Fprintf(&b, "# %d packages from %d modules.\n", total, len(groups))
	for _, mp := range paths {
		g := groups[mp]
		slices.Sort(g.pkgs)
		fmt.Fprintf(&b, "\n%s (%d)\n", g.title, len(g.pkgs))
		for _, ip := range g.pkgs {
			fmt.Fprintf(&b, "\t%s\n", ip)
		}
	}
	return b.Bytes(), nil
}

// moduleTitle is a module's path and version, and its replacement if it
// has one. The main module has no version.
func moduleTitle(m *module) string {
	s := m.Path
	if m.Version != "" {
		s += " " + m.Version
	}
	if r := m.Replace; r != nil {
		s += " => " + r.Path
		if r.Version != "" {
			s += " " + r.Version
		}
	}
	return s
}

// check compares the lists in root with want, the generator's output, and
// returns one message per list that differs, is missing or is stale, each
// saying how to fix it.
func check(root string, want map[string][]byte) ([]string, error) {
	var problems []string
	for _, name := range slices.Sorted(maps.Keys(want)) {
		got, err := os.ReadFile(filepath.Join(root, name))
		if errors.Is(err, os.ErrNotExist) {
			problems = append(problems, fmt.Sprintf("%s is missing: run %s", name, Command))
			continue
		}
		if err != nil {
			return nil, err
		}
		if !bytes.Equal(got, want[name]) {
			problems = append(problems, fmt.Sprintf("%s is out of date: run %s\n%s", name, Command, lineDiff(got, want[name])))
		}
	}
	stale, err := staleLists(root, want)
	if err != nil {
		return nil, err
	}
	for _, name := range stale {
		problems = append(problems, fmt.Sprintf("%s lists a binary or build that no longer exists: run %s to remove it", name, Command))
	}
	return problems, nil
}

// lineDiff names the lines only in the checked-in list (-) and only in the
// generated one (+), at most maxLines of them: the packages a change adds
// or drops, and the module lines whose counts or versions moved.
func lineDiff(old, new []byte) string {
	const maxLines = 20
	in := func(b []byte) map[string]bool {
		m := map[string]bool{}
		for _, l := range strings.Split(string(b), "\n") {
			m[strings.TrimSpace(l)] = true
		}
		return m
	}
	was, is := in(old), in(new)
	var out []string
	for _, l := range slices.Sorted(maps.Keys(was)) {
		if !is[l] {
			out = append(out, "  - "+l)
		}
	}
	for _, l := range slices.Sorted(maps.Keys(is)) {
		if !was[l] {
			out = append(out, "  + "+l)
		}
	}
	if len(out) > maxLines {
		out = append(out[:maxLines], "  ...")
	}
	return strings.Join(out, "\n")
}
