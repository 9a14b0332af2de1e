// Package cli implements the agentmesh command line. Each subcommand lives
// in its own file and writes only to the io.Writers it is given, so tests
// run commands in process and read what a person would see.
package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
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
}

// usageError marks errors that are the caller's fault: exit status 2.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, a ...any) error { return &usageError{fmt.Sprintf(format, a...)} }

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
		args = []string{args[1], "--help"}
	}
	if args[0] == "version" || args[0] == "--version" {
		fmt.Fprintln(env.Stdout, "agentmesh", Version)
		return 0
	}
	cmd, ok := commands[args[0]]
	if !ok {
		printf(env.Stderr, "agentmesh: unknown command \"%s\"; run 'agentmesh help' for the list\n", args[0])
		return 2
	}
	err := cmd.run(ctx, env, args[1:])
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.Is(err, errSilent):
		return 1
	}
	var ue *usageError
	if errors.As(err, &ue) {
		printf(env.Stderr, "agentmesh %s: %s\nusage: agentmesh %s %s\n", cmd.name, ue.msg, cmd.name, cmd.usage)
		return 2
	}
	printf(env.Stderr, "agentmesh %s: %v\n", cmd.name, err)
	return 1
}

// Version is the build's version, set with -ldflags at release time.
var Version = "dev"

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
	fs.Usage = func() {
		w := env.Stdout
		fmt.Fprintf(w, "agentmesh %s: %s\n\nUsage: agentmesh %s %s\n", c.name, c.short, c.name, c.usage)
		if c.long != "" {
			fmt.Fprintf(w, "\n%s\n", strings.TrimSpace(c.long))
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
	}
	return fs
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
	return fs.String("state", env.Getenv("AGENTMESH_STATE"), "node state `DIR` (default $AGENTMESH_STATE)")
}

func needState(dir string) error {
	if dir == "" {
		return usagef("no state directory: pass --state DIR or set AGENTMESH_STATE")
	}
	return nil
}
