// Package cli implements the agentmesh command line. Each subcommand lives
// in its own file and writes only to the io.Writers it is given, so tests
// run commands in process and read what a person would see.
package cli

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"sort"
	"strings"

	"github.com/agentmesh/agentmesh/internal/engine"
)

// Env is what a command may touch of the outside world.
type Env struct {
	Stdin  io.Reader
	Stdout io.Writer
	Stderr io.Writer
	Getenv func(string) string
}

// command is one subcommand.
type command struct {
	name    string
	usage   string // the argument synopsis after the name
	short   string // one line of help
	long    string // more help, examples
	run     func(ctx context.Context, env Env, args []string) error
	aliases []string

	// subs, when set, are the command's verbs (policy validate, keys
	// create), each with a flag set of its own; run is then not used: the
	// first argument picks the verb (see runSubcommand).
	subs []*subcommand
}

// subcommand is one verb of a command that has several. Each verb defines
// only its own flags, so a flag of a sibling ('policy validate --tool x') is
// a usage error rather than parsed and silently ignored.
type subcommand struct {
	name  string // "" for the verb run when no verb is named (audit's query)
	usage string // the synopsis after "agentmesh COMMAND NAME"
	short string // one line of help
	long  string // more help, if any

	// flags defines the verb's flags on fs and returns the function that
	// runs the verb, once fs is parsed, with the positional arguments.
	flags func(fs *flag.FlagSet, env Env) func(ctx context.Context, pos []string) error
}

// usageError marks errors that are the caller's fault: exit status 2.
// cmd and usage, when set, name the subcommand whose usage line is printed
// (set by runSubcommand); otherwise the command's is.
type usageError struct{ msg, cmd, usage string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, a ...any) error { return &usageError{msg: fmt.Sprintf(format, a...)} }

// errSilent ends a command with a non-zero status after it has printed
// everything it has to say.
var errSilent = errors.New("")

// commands is the table of subcommands, filled by each file's init.
var commands = map[string]*command{}

func register(c *command) {
	commands[c.name] = c
}

// Run runs the command line args (without the program name) and returns the
// process exit status.
func Run(ctx context.Context, args []string, env Env) int {
	if env.Getenv == nil {
		env.Getenv = os.Getenv
	}
	if env.Stdin == nil {
		env.Stdin = strings.NewReader("")
	}
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" && len(args) == 1 {
		printHelp(env.Stdout)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	if args[0] == "help" {
		// "help policy validate" is "policy validate --help".
		args = append(args[1:min(len(args), 3)], "--help")
	}
	if args[0] == "version" || args[0] == "--version" {
		info, ok := debug.ReadBuildInfo()
		fmt.Fprintln(env.Stdout, versionText(info, ok))
		return 0
	}
	cmd, ok := commands[args[0]]
	if !ok {
		printf(env.Stderr, "agentmesh: unknown command \"%s\"; run 'agentmesh help' for the list\n", args[0])
		return 2
	}
	if path := env.Getenv(cpuProfileEnv); path != "" {
		stop, err := startCPUProfile(path)
		if err != nil {
			printf(env.Stderr, "agentmesh: %s: %v\n", cpuProfileEnv, err)
			return 1
		}
		defer stop()
	}
	var err error
	if cmd.subs != nil {
		err = runSubcommand(ctx, env, cmd, args[1:])
	} else {
		err = cmd.run(ctx, env, args[1:])
	}
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.Is(err, errSilent):
		return 1
	}
	var ue *usageError
	if errors.As(err, &ue) || errors.Is(err, engine.ErrConfig) {
		// The engine's configuration errors are the same mistakes as bad
		// flags: they get the usage line and exit status 2.
		name, usage := cmd.name, cmd.usage
		msg := strings.TrimPrefix(err.Error(), engine.ErrConfig.Error()+": ")
		if ue != nil {
			msg = ue.msg
			if ue.cmd != "" {
				name, usage = ue.cmd, ue.usage
			}
		}
		printf(env.Stderr, "agentmesh %s: %s\nusage: agentmesh %s %s\n", name, msg, name, usage)
		return 2
	}
	printf(env.Stderr, "agentmesh %s: %v\n", cmd.name, err)
	return 1
}

// Version, when set with -ldflags -X at release time, overrides the module
// version the Go toolchain records ("(devel)" for a build in a checkout).
var Version = ""

// versionText is what --version prints: the module version, the VCS
// revision the binary was built from (with "modified" when the work tree
// had uncommitted changes) and the Go version, so that a bug report names
// exactly what ran. Without build information (a test binary), it says so.
func versionText(info *debug.BuildInfo, ok bool) string {
	if !ok {
		return "agentmesh " + cmp.Or(Version, "(unknown version: built without module information)")
	}
	out := "agentmesh " + cmp.Or(Version, info.Main.Version, "(devel)")
	var rev, modified, at string
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			modified = s.Value
		case "vcs.time":
			at = s.Value
		}
	}
	switch {
	case rev == "":
		out += ", revision unknown (built outside a git checkout, or with -buildvcs=false)"
	case modified == "true":
		out += ", revision " + rev + " with uncommitted changes"
	default:
		out += ", revision " + rev
	}
	if at != "" {
		out += " (" + at + ")"
	}
	return out + ", " + info.GoVersion
}

// sortedCommands returns the subcommands in name order.
func sortedCommands() []*command {
	out := make([]*command, 0, len(commands))
	for _, c := range commands {
		out = append(out, c)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].name < out[j].name })
	return out
}

func printHelp(w io.Writer) {
	fmt.Fprint(w, "agentmesh: a zero-trust network layer for AI agents and their MCP tools and models.\n\nUsage: agentmesh COMMAND [flags]\n\nCommands:\n")
	for _, c := range sortedCommands() {
		fmt.Fprintf(w, "  %-12s %s\n", c.name, c.short)
	}
	fmt.Fprint(w, "\nRun 'agentmesh COMMAND --help' for a command's flags and examples.\n")
}

// newFlags returns a FlagSet whose --help prints the command's usage, flags
// and examples to stdout.
func newFlags(c *command, env Env) *flag.FlagSet {
	fs := flag.NewFlagSet(c.name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() { printUsage(env.Stdout, c.name, c.short, c.usage, c.long, nil, fs) }
	return fs
}

// printUsage prints a command's (or a subcommand's) --help: the summary,
// the usage line, the long help, the subcommands, if any, and the flags
// defined on fs.
func printUsage(w io.Writer, name, short, usage, long string, subs []*subcommand, fs *flag.FlagSet) {
	fmt.Fprintf(w, "agentmesh %s: %s\n\nUsage: agentmesh %s %s\n", name, short, name, usage)
	if len(subs) > 0 {
		fmt.Fprint(w, "\nSubcommands:\n")
		for _, s := range subs {
			if s.name != "" {
				fmt.Fprintf(w, "  agentmesh %s %s %s\n      %s\n", name, s.name, s.usage, s.short)
			}
		}
	}
	if long != "" {
		fmt.Fprintf(w, "\n%s\n", strings.TrimSpace(long))
	}
	var flags strings.Builder
	fs.VisitAll(func(f *flag.Flag) {
		name, usage := flag.UnquoteUsage(f)
		fmt.Fprintf(&flags, "  --%s %s\n      %s", f.Name, name, usage)
		if f.DefValue != "" && f.DefValue != "false" && f.DefValue != "0" && f.DefValue != "0s" {
			fmt.Fprintf(&flags, " (default %s)", f.DefValue)
		}
		flags.WriteString("\n")
	})
	if flags.Len() > 0 {
		fmt.Fprintf(w, "\nFlags:\n%s", flags.String())
	}
	if len(subs) > 0 {
		fmt.Fprintf(w, "\nRun 'agentmesh %s SUBCOMMAND --help' for a subcommand's flags.\n", name)
	}
}

// runSubcommand runs the verb of c that args name first, with the verb's
// own flag set. The verb comes first ("keys create --state DIR", not "keys
// --state DIR create"): what follows it is the verb's alone. Without a verb
// (no argument, or a flag first) c's unnamed verb runs, if it has one.
func runSubcommand(ctx context.Context, env Env, c *command, args []string) error {
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		if s := c.sub(args[0]); s != nil && s.name != "" {
			return s.run(ctx, env, c, args[1:])
		}
		return usagef("unknown subcommand %q: want %s", args[0], c.subNames())
	}
	if len(args) > 0 && (args[0] == "-h" || args[0] == "-help" || args[0] == "--help") {
		fs := flag.NewFlagSet(c.name, flag.ContinueOnError) // no flags of its own
		if s := c.sub(""); s != nil {
			fs = s.flagSet(c, env) // the flags for using c without a verb
		}
		printUsage(env.Stdout, c.name, c.short, c.usage, c.long, c.subs, fs)
		return flag.ErrHelp
	}
	if s := c.sub(""); s != nil {
		return s.run(ctx, env, c, args)
	}
	if len(args) > 0 {
		return usagef("%s: the subcommand comes first; want %s", args[0], c.subNames())
	}
	return usagef("missing subcommand: %s", c.subNames())
}

// sub returns c's verb called name, or nil.
func (c *command) sub(name string) *subcommand {
	for _, s := range c.subs {
		if s.name == name {
			return s
		}
	}
	return nil
}

// subNames lists c's named verbs for an error message: "a, b or c", and
// ", or none" when c has an unnamed one.
func (c *command) subNames() string {
	var names []string
	for _, s := range c.subs {
		if s.name != "" {
			names = append(names, s.name)
		}
	}
	list := strings.Join(names, ", ")
	if i := strings.LastIndex(list, ", "); i >= 0 {
		list = list[:i] + " or " + list[i+2:]
	}
	if c.sub("") != nil {
		list += ", or none to " + c.sub("").short
	}
	return list
}

// path is the verb's full name after "agentmesh": "policy validate", or
// the command's name for the unnamed verb.
func (s *subcommand) path(c *command) string {
	return strings.TrimSpace(c.name + " " + s.name)
}

// flagSet returns a FlagSet holding the verb's flags and nothing else,
// whose --help prints the verb's usage (the command's, for the unnamed verb).
func (s *subcommand) flagSet(c *command, env Env) *flag.FlagSet {
	fs, _ := s.define(c, env)
	return fs
}

func (s *subcommand) define(c *command, env Env) (*flag.FlagSet, func(context.Context, []string) error) {
	fs := flag.NewFlagSet(s.path(c), flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {
		if s.name == "" {
			printUsage(env.Stdout, c.name, c.short, c.usage, c.long, c.subs, fs)
			return
		}
		printUsage(env.Stdout, s.path(c), s.short, s.usage, s.long, nil, fs)
	}
	return fs, s.flags(fs, env)
}

// run parses args with the verb's flag set and runs it. A usage error
// names the verb and carries its usage line.
func (s *subcommand) run(ctx context.Context, env Env, c *command, args []string) error {
	fs, run := s.define(c, env)
	pos, _, err := parse(fs, args)
	if err == nil {
		err = run(ctx, pos)
	}
	var ue *usageError
	if errors.As(err, &ue) && ue.cmd == "" {
		return &usageError{msg: ue.msg, cmd: s.path(c), usage: s.usage}
	}
	return err
}

// wantArgs checks that the positional arguments are exactly those named.
func wantArgs(pos []string, names ...string) error {
	switch {
	case len(pos) == len(names):
		return nil
	case len(pos) > len(names):
		return usagef("unexpected argument %q", pos[len(names)])
	case len(names) == 1:
		return usagef("missing %s", names[0])
	}
	return usagef("want %s", strings.Join(names, " "))
}

// parse parses flags and positional arguments in any order (so that
// "keys revoke ID --state DIR" works), stopping at "--". It returns the
// positional arguments and, separately, everything after "--".
func parse(fs *flag.FlagSet, args []string) (pos, rest []string, err error) {
	for i, a := range args {
		if a == "--" {
			rest = args[i+1:]
			args = args[:i]
			break
		}
	}
	// The flag package calls Usage on every error, and before returning
	// ErrHelp: the help is printed here, once, and only when asked for.
	help := fs.Usage
	fs.Usage = func() {}
	defer func() { fs.Usage = help }()
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				help()
				return nil, nil, flag.ErrHelp
			}
			return nil, nil, usagef("%v", err)
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, rest, nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

// stateFlag adds --state with the AGENTMESH_STATE default.
func stateFlag(fs *flag.FlagSet, env Env) *string {
	return fs.String("state", env.Getenv("AGENTMESH_STATE"), stateUsage)
}

const stateUsage = "node state `DIR` (default $AGENTMESH_STATE)"

// jsonFlag adds --json, for commands that print a table or text otherwise.
func jsonFlag(fs *flag.FlagSet) *bool { return fs.Bool("json", false, jsonUsage) }

const jsonUsage = "print JSON"

func needState(dir string) error {
	if dir == "" {
		return usagef("no state directory: pass --state DIR or set AGENTMESH_STATE")
	}
	return nil
}
