package cli

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime/debug"
	"strings"
	"testing"
	"time"

	"github.com/agentmesh/agentmesh/internal/engine"
)

// run runs one command in process and returns its exit status and output.
func run(t *testing.T, env map[string]string, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := Run(context.Background(), args, Env{Stdout: &out, Stderr: &errb, Getenv: func(k string) string { return env[k] }})
	return code, out.String(), errb.String()
}

func TestREADMECLIReferenceMatchesHelp(t *testing.T) {
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	readme := string(b)
	for _, c := range sortedCommands() {
		line := "agentmesh " + c.name + " " + c.usage
		if !strings.Contains(readme, line) {
			t.Errorf("README's CLI reference lacks the usage line %q", line)
		}
		if !strings.Contains(readme, c.short) {
			t.Errorf("README's CLI reference lacks %s's summary %q", c.name, c.short)
		}
		code, out, _ := run(t, nil, c.name, "--help")
		if code != 0 || !strings.Contains(out, "Usage: "+line) {
			t.Errorf("agentmesh %s --help: status %d, output lacks the usage line:\n%s", c.name, code, out)
		}
		for _, s := range c.subs {
			if s.name == "" {
				continue
			}
			line := "agentmesh " + s.path(c) + " " + s.usage
			if !strings.Contains(readme, line) {
				t.Errorf("README's CLI reference lacks the usage line %q", line)
			}
		}
	}
}

// flagNames lists the flags defined on fs, in name order.
func flagNames(fs *flag.FlagSet) []string {
	var names []string
	fs.VisitAll(func(f *flag.Flag) { names = append(names, f.Name) })
	return names
}

var noEnv = Env{Getenv: func(string) string { return "" }}

// TestSubcommandRefusesFlagOfSibling runs every subcommand of every command
// with each flag that only a sibling defines: a shared flag set would accept
// it and ignore it ('policy validate --tool x' once did).
func TestSubcommandRefusesFlagOfSibling(t *testing.T) {
	for _, c := range sortedCommands() {
		refused := 0
		for _, s := range c.subs {
			own := map[string]bool{}
			for _, f := range flagNames(s.flagSet(c, noEnv)) {
				own[f] = true
			}
			for _, sib := range c.subs {
				for _, f := range flagNames(sib.flagSet(c, noEnv)) {
					if own[f] {
						continue
					}
					own[f] = true // once per flag
					refused++
					args := append(strings.Fields(s.path(c)), "--"+f)
					code, out, errOut := run(t, nil, args...)
					want := fmt.Sprintf("agentmesh %s: flag provided but not defined: -%s\nusage: agentmesh %s %s\n", s.path(c), f, s.path(c), s.usage)
					if code != 2 || errOut != want || out != "" {
						t.Errorf("agentmesh %s: status %d, stderr %q, stdout %q; want 2, %q and nothing on stdout",
							strings.Join(args, " "), code, errOut, out, want)
					}
				}
			}
		}
		if len(c.subs) > 1 && refused == 0 {
			t.Errorf("every subcommand of %s defines every flag: each should hold only its own", c.name)
		}
	}
}

func TestSubcommandRefusesFlagOfSiblingAfterItsArguments(t *testing.T) {
	for _, args := range [][]string{
		{"policy", "validate", "../../examples/policy.hujson", "--tool", "x"},
		{"nodes", "revoke", "some-node", "--tags", "tag:a"},
		{"keys", "revoke", "k1", "--kind", "tool"},
		{"audit", "verify", "--json", "--since", "1h"},
	} {
		code, _, errOut := run(t, nil, args...)
		if code != 2 || !strings.HasPrefix(errOut, "agentmesh "+args[0]+" "+args[1]+": flag provided but not defined") {
			t.Errorf("%v: status %d, stderr %q; want 2 and the subcommand named", args, code, errOut)
		}
	}
}

// helpFlags returns the flags a --help output lists.
func helpFlags(out string) []string {
	var names []string
	for _, m := range regexp.MustCompile(`(?m)^  --([a-z-]+) `).FindAllStringSubmatch(out, -1) {
		names = append(names, m[1])
	}
	return names
}

func TestSubcommandHelpListsOnlyItsOwnFlags(t *testing.T) {
	for _, c := range sortedCommands() {
		for _, s := range c.subs {
			args := append(strings.Fields(s.path(c)), "--help")
			code, out, errOut := run(t, nil, args...)
			if code != 0 || errOut != "" || strings.Count(out, "Usage: ") != 1 || !strings.Contains(out, "Usage: agentmesh "+s.path(c)+" ") {
				t.Errorf("agentmesh %s: status %d, stderr %q; want 0 and the usage line once:\n%s", strings.Join(args, " "), code, errOut, out)
			}
			if got, want := helpFlags(out), flagNames(s.flagSet(c, noEnv)); strings.Join(got, " ") != strings.Join(want, " ") {
				t.Errorf("agentmesh %s lists flags %v, want exactly %v:\n%s", strings.Join(args, " "), got, want, out)
			}
		}
	}
}

func TestCommandHelpListsItsSubcommands(t *testing.T) {
	for _, c := range sortedCommands() {
		if c.subs == nil {
			continue
		}
		code, out, _ := run(t, nil, c.name, "--help")
		if code != 0 {
			t.Errorf("agentmesh %s --help: status %d", c.name, code)
		}
		var want []string // the flags of the command without a subcommand
		for _, s := range c.subs {
			if s.name == "" {
				want = flagNames(s.flagSet(c, noEnv))
				continue
			}
			if !strings.Contains(out, "  agentmesh "+s.path(c)+" "+s.usage+"\n      "+s.short+"\n") {
				t.Errorf("agentmesh %s --help does not list %q with its summary:\n%s", c.name, s.path(c), out)
			}
		}
		if got := helpFlags(out); strings.Join(got, " ") != strings.Join(want, " ") {
			t.Errorf("agentmesh %s --help lists flags %v, want %v:\n%s", c.name, got, want, out)
		}
	}
}

func TestHelpIsPrintedOnceAndNotForAnError(t *testing.T) {
	for _, c := range sortedCommands() {
		if _, out, _ := run(t, nil, c.name, "--help"); strings.Count(out, "Usage: ") != 1 {
			t.Errorf("agentmesh %s --help prints its usage %d times", c.name, strings.Count(out, "Usage: "))
		}
		if code, out, errOut := run(t, nil, c.name, "--no-such-flag"); code != 2 || out != "" || !strings.Contains(errOut, "-no-such-flag") {
			t.Errorf("agentmesh %s --no-such-flag: status %d, stdout %q, stderr %q; want 2, nothing on stdout, the flag named", c.name, code, out, errOut)
		}
	}
	if _, out, _ := run(t, nil, "help", "policy", "check"); !strings.Contains(out, "Usage: agentmesh policy check ") {
		t.Errorf("agentmesh help policy check does not show check's help:\n%s", out)
	}
}

func TestUsageErrorsExitTwo(t *testing.T) {
	for _, args := range [][]string{
		{"nosuch"},
		{"keys"},
		{"keys", "frobnicate", "--state", "x"},
		{"keys", "--state", "x", "list"}, // the subcommand comes first
		{"keys", "list", "extra", "--state", "x"},
		{"audit", "--json", "verify"},
		{"policy", "validate", "../../examples/policy.hujson", "extra"},
		{"join", "--name", "x"},
		{"coordinator"},
		{"policy", "check", "--src", "agent:a", "--dst", "tool:b"},
		{"serve", "--state", "x"},
		{"connect", "--state", "x"},
		{"audit", "--decision", "maybe", "--state", "x"},
	} {
		if code, _, _ := run(t, nil, args...); code != 2 {
			t.Errorf("%v: exit status %d, want 2", args, code)
		}
	}
}

func TestPolicyValidateAndCheckOffline(t *testing.T) {
	code, out, errOut := run(t, nil, "policy", "validate", "../../examples/policy.hujson")
	if code != 0 {
		t.Fatalf("validate examples/policy.hujson: %d %s %s", code, out, errOut)
	}
	code, out, _ = run(t, nil, "policy", "check", "--file", "../../examples/policy.hujson",
		"--src", "agent:auditor", "--dst", "tool:ledger", "--tool", "transfer", "--json")
	var res checkResult
	if code != 0 || json.Unmarshal([]byte(out), &res) != nil || res.Allow || res.Reason == "" {
		t.Fatalf("check auditor transfer: %d %q", code, out)
	}
	code, out, _ = run(t, nil, "policy", "check", "--file", "../../examples/policy.hujson",
		"--src", "agent:teller", "--dst", "tool:ledger", "--tool", "balance", "--json")
	if code != 0 || json.Unmarshal([]byte(out), &res) != nil || !res.Allow {
		t.Fatalf("check teller balance: %d %q", code, out)
	}
	bad := filepath.Join(t.TempDir(), "bad.hujson")
	os.WriteFile(bad, []byte("{\n  \"grants\": [ { \"src\": [\"agent:a\"], \"dst\": [] } ]\n}\n"), 0o600)
	code, _, errOut = run(t, nil, "policy", "validate", bad)
	if code == 0 || !regexp.MustCompile(`\d+:\d+`).MatchString(errOut) {
		t.Fatalf("invalid policy: exit %d, error %q should name line:column", code, errOut)
	}
}

// TestBinaryQuickstart follows the README's quickstart with the built
// binary: coordinator, keys, join, nodes list/tag/revoke, status.
func TestBinaryQuickstart(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "agentmesh")
	if out, err := exec.Command("go", "build", "-o", bin, "../../cmd/agentmesh").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	data := filepath.Join(dir, "mesh")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	co := exec.CommandContext(ctx, bin, "coordinator", "--data", data, "--listen", "127.0.0.1:0")
	co.Cancel = func() error { return co.Process.Signal(os.Interrupt) }
	stdout, _ := co.StdoutPipe()
	co.Stderr = os.Stderr
	if err := co.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- co.Wait() }()
	defer func() {
		cancel()
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			co.Process.Kill()
			t.Error("coordinator did not stop on SIGINT")
		}
	}()
	sc := bufio.NewScanner(stdout)
	var admin string
	for sc.Scan() {
		if a, ok := strings.CutPrefix(sc.Text(), "admin identity:  "); ok {
			admin, _, _ = strings.Cut(a, " ")
			break
		}
	}
	if admin == "" {
		t.Fatal("coordinator did not print its admin identity")
	}
	go io.Copy(io.Discard, stdout)
	am := func(args ...string) (string, string, error) {
		t.Helper()
		cmd := exec.Command(bin, args...)
		cmd.Env = append(os.Environ(), "AGENTMESH_STATE="+admin)
		var o, e bytes.Buffer
		cmd.Stdout, cmd.Stderr = &o, &e
		err := cmd.Run()
		return o.String(), e.String(), err
	}
	// --version names the revision the toolchain recorded in the binary
	// (none with GOFLAGS=-buildvcs=false, or outside a git checkout).
	meta, err := exec.Command("go", "version", "-m", bin).Output()
	if err != nil {
		t.Fatal(err)
	}
	want := "revision unknown"
	if m := regexp.MustCompile(`\bvcs\.revision=([0-9a-f]+)`).FindSubmatch(meta); m != nil {
		want = "revision " + string(m[1])
	}
	if out, _, err := am("--version"); err != nil || !strings.HasPrefix(out, "agentmesh ") || !strings.Contains(out, want) {
		t.Errorf("agentmesh --version printed %q (%v), want %q as go version -m shows:\n%s", out, err, want, meta)
	}
	key, errOut, err := am("keys", "create", "--kind", "tool", "--tags", "tag:payments")
	if err != nil || strings.Count(strings.TrimSpace(key), "\n") != 0 || !strings.HasPrefix(key, "amk1_") {
		t.Fatalf("keys create: %q %q %v", key, errOut, err)
	}
	node := filepath.Join(dir, "payments")
	if out, errOut, err := am("join", "--authkey", strings.TrimSpace(key), "--name", "payments-db", "--state", node); err != nil {
		t.Fatalf("join: %s %s %v", out, errOut, err)
	}
	if _, errOut, err := am("join", "--authkey", strings.TrimSpace(key), "--name", "other", "--state", filepath.Join(dir, "other")); err == nil || !strings.Contains(errOut, "single-use") {
		t.Fatalf("second join with a single-use key: %q %v", errOut, err)
	}
	out, _, err := am("status", "--state", node, "--json")
	var st engine.NodeStatus
	if err != nil || json.Unmarshal([]byte(out), &st) != nil || st.ID != "spiffe://agentmesh.local/tool/payments-db" || !st.CoordinatorReached || st.CertNotAfter.IsZero() {
		t.Fatalf("status: %q %v", out, err)
	}
	if _, _, err := am("nodes", "tag", "payments-db", "--tags", "tag:payments,tag:prod"); err != nil {
		t.Fatal(err)
	}
	out, _, err = am("nodes", "list", "--json")
	var nodes []struct {
		Name, Kind, ID, Status string
		Tags                   []string
	}
	if err != nil || json.Unmarshal([]byte(out), &nodes) != nil {
		t.Fatalf("nodes list: %q %v", out, err)
	}
	found := false
	for _, n := range nodes {
		if n.Name == "payments-db" && n.Status == "active" && strings.Join(n.Tags, ",") == "tag:payments,tag:prod" {
			found = true
		}
	}
	if !found {
		t.Fatalf("nodes list lacks tagged payments-db: %s", out)
	}
	if _, _, err := am("nodes", "revoke", "payments-db"); err != nil {
		t.Fatal(err)
	}
	// Revoked nodes are listed only with --all.
	out, _, _ = am("nodes", "list", "--json")
	if strings.Contains(out, "payments-db") {
		t.Fatalf("revoked node listed without --all: %s", out)
	}
	out, _, _ = am("nodes", "list", "--all", "--json")
	if !strings.Contains(out, `"revoked"`) {
		t.Fatalf("revoked node not listed as revoked with --all: %s", out)
	}
}

func TestKeysCreateRefusesAnExpiryOfZero(t *testing.T) {
	for _, e := range []string{"0", "0s", "-1h"} {
		code, _, errOut := run(t, map[string]string{"AGENTMESH_STATE": t.TempDir()}, "keys", "create", "--expiry", e)
		if code != 2 || !strings.Contains(errOut, "--expiry") {
			t.Errorf("keys create --expiry %s: status %d, %q; want a usage error naming --expiry", e, code, errOut)
		}
	}
}

func TestVersionNamesModuleVersionAndRevision(t *testing.T) {
	info := &debug.BuildInfo{GoVersion: "go1.26.0", Main: debug.Module{Path: "github.com/agentmesh/agentmesh", Version: "(devel)"},
		Settings: []debug.BuildSetting{{Key: "vcs.revision", Value: "0123abcd"}, {Key: "vcs.time", Value: "2026-12-01T10:00:00Z"}, {Key: "vcs.modified", Value: "false"}}}
	if got, want := versionText(info, true), "agentmesh (devel), revision 0123abcd (2026-12-01T10:00:00Z), go1.26.0"; got != want {
		t.Errorf("versionText = %q, want %q", got, want)
	}
	info.Settings[2].Value = "true"
	if got := versionText(info, true); !strings.Contains(got, "revision 0123abcd with uncommitted changes") {
		t.Errorf("versionText of a modified tree = %q", got)
	}
	info.Main.Version, info.Settings = "v1.2.3", nil
	if got := versionText(info, true); !strings.HasPrefix(got, "agentmesh v1.2.3, revision unknown") {
		t.Errorf("versionText without VCS information = %q", got)
	}
}
