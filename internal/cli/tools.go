package cli

import (
	"cmp"
	"context"
	"flag"
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strconv"
	"text/tabwriter"

	"github.com/agentmesh/agentmesh/internal/controlapi"
	"github.com/agentmesh/agentmesh/internal/identity"
	"github.com/agentmesh/agentmesh/internal/policy"
	"github.com/agentmesh/agentmesh/internal/toolpin"
)

func init() {
	register(&command{
		name:  "tools",
		usage: "list|diff|pin|approve [TOOL] [flags]",
		short: "review the tool definitions gateways see against the policy's pins",
		long: `The definitions come from the coordinator (what each tool node's gateway reported),
or with --from FILE from a captured tools/list result (offline; --service names its server).
The pins come from --policy FILE, or else the coordinator's current policy.

Examples:
  agentmesh tools list --state ./mesh/admin
  agentmesh tools diff --service files read_file
  agentmesh tools pin --service files --policy policy.hujson
  agentmesh tools approve --service files --policy policy.hujson read_file
  agentmesh policy apply policy.hujson`,
		subs: []*subcommand{
			{name: "list", usage: "[--service S] [--from FILE] [--policy FILE] [--json]", short: "the definitions each gateway sees, pinned or not, with drift", flags: toolsList},
			{name: "diff", usage: "[--service S] [--from FILE [--base FILE]] [--policy FILE] [TOOL]", short: "readable diff of each changed definition against its pin", flags: toolsDiff},
			{name: "pin", usage: "[--service S] [--from FILE] --policy FILE [--mode enforce|warn|off]", short: "write pins for every definition seen now into the policy file, for review", flags: toolsPin},
			{name: "approve", usage: "--service S [--from FILE] --policy FILE TOOL", short: "pin one tool's current definition in the policy file (then apply it)", flags: toolsApprove},
		},
	})
}

// toolsSource is where a tools subcommand reads definitions and pins.
type toolsSource struct {
	state, service, from, policyFile *string
}

func toolsFlags(fs *flag.FlagSet, env Env) toolsSource {
	return toolsSource{
		state:      stateFlag(fs, env),
		service:    fs.String("service", "", "only the tool server `NAME` (tool:NAME or NAME)"),
		from:       fs.String("from", "", "read the definitions from `FILE`, a captured tools/list result, instead of the coordinator"),
		policyFile: fs.String("policy", "", "read the pins from the policy `FILE` instead of the coordinator's current policy"),
	}
}

// serviceName is --service without its "tool:" prefix.
func (s toolsSource) serviceName() (string, error) {
	name := *s.service
	if len(name) > 5 && name[:5] == "tool:" {
		name = name[5:]
	}
	if name == "" {
		return "", nil
	}
	if _, err := identity.ParseName(name); err != nil {
		return "", usagef("--service %q: %v", *s.service, err)
	}
	return name, nil
}

// seen returns the definitions on record: all of them (current or not)
// from the coordinator, or those of the --from file.
func (s toolsSource) seen(ctx context.Context) ([]controlapi.ToolSeen, error) {
	service, err := s.serviceName()
	if err != nil {
		return nil, err
	}
	if *s.from != "" {
		if service == "" {
			return nil, usagef("--from needs --service: a captured list does not say which server sent it")
		}
		return readToolList(*s.from, service)
	}
	path := controlapi.PathTools
	if service != "" {
		path += "?service=" + url.QueryEscape(service)
	}
	var out []controlapi.ToolSeen
	if err := adminCall(ctx, *s.state, http.MethodGet, path, nil, &out); err != nil {
		return nil, err
	}
	return out, nil
}

func readToolList(name, service string) ([]controlapi.ToolSeen, error) {
	b, err := os.ReadFile(name)
	if err != nil {
		return nil, err
	}
	defs, err := toolpin.ParseList(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	out := make([]controlapi.ToolSeen, len(defs))
	for i, d := range defs {
		out[i] = controlapi.ToolSeen{Service: service, Name: d.Name, Hash: d.Hash, Definition: d.Canonical, Current: true}
	}
	return out, nil
}

// pins returns the policy whose pins apply: --policy, or the
// coordinator's current one, or (offline, --from without --policy) none.
func (s toolsSource) pins(ctx context.Context) (*policy.Policy, error) {
	if *s.policyFile != "" {
		_, p, err := readPolicy(*s.policyFile)
		return p, err
	}
	if *s.from != "" {
		return nil, nil
	}
	var pv controlapi.PolicyVersion
	if err := adminCall(ctx, *s.state, http.MethodGet, controlapi.PathPolicy, nil, &pv); err != nil {
		return nil, err
	}
	if pv.Version == 0 {
		return nil, nil
	}
	return policy.Compile([]byte(pv.Document), strconv.FormatInt(pv.Version, 10))
}

// toolRow is one line of 'tools list'.
type toolRow struct {
	Service string `json:"service"`
	Tool    string `json:"tool"`
	Hash    string `json:"hash"`
	Pinned  string `json:"pinned,omitempty"`
	Mode    string `json:"mode"`
	Status  string `json:"status"`
}

// current keeps the definitions gateways report now, sorted.
func current(seen []controlapi.ToolSeen) []controlapi.ToolSeen {
	out := slices.DeleteFunc(slices.Clone(seen), func(t controlapi.ToolSeen) bool { return !t.Current })
	slices.SortFunc(out, func(a, b controlapi.ToolSeen) int {
		return cmp.Or(cmp.Compare(a.Service, b.Service), cmp.Compare(a.Name, b.Name))
	})
	return out
}

func rowOf(p *policy.Policy, t controlapi.ToolSeen) toolRow {
	pin := p.CheckPin(identity.Name(t.Service), t.Name, t.Hash)
	return toolRow{Service: t.Service, Tool: t.Name, Hash: t.Hash, Pinned: pin.Pinned, Mode: pin.Mode, Status: string(pin.Status)}
}

func toolsList(fs *flag.FlagSet, env Env) func(context.Context, []string) error {
	src := toolsFlags(fs, env)
	asJSON := jsonFlag(fs)
	return func(ctx context.Context, pos []string) error {
		if err := wantArgs(pos); err != nil {
			return err
		}
		seen, err := src.seen(ctx)
		if err != nil {
			return err
		}
		p, err := src.pins(ctx)
		if err != nil {
			return err
		}
		rows := []toolRow{}
		for _, t := range current(seen) {
			rows = append(rows, rowOf(p, t))
		}
		if *asJSON {
			return printJSON(env.Stdout, rows)
		}
		if len(rows) == 0 {
			fmt.Fprintln(env.Stderr, "no tool definitions seen yet: a gateway reports them when a client first lists its tools")
			return nil
		}
		tw := tabwriter.NewWriter(env.Stdout, 2, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "SERVICE\tTOOL\tSTATUS\tHASH\tPINNED")
		for _, r := range rows {
			printf(tw, "%s\t%s\t%s\t%s\t%s\n", r.Service, r.Tool, r.Status, shortHash(r.Hash), orDash(shortHash(r.Pinned)))
		}
		return tw.Flush()
	}
}

func shortHash(h string) string {
	if len(h) > 19 {
		return h[:19]
	}
	return h
}

func toolsDiff(fs *flag.FlagSet, env Env) func(context.Context, []string) error {
	src := toolsFlags(fs, env)
	base := fs.String("base", "", "with --from: the reviewed definitions, a captured tools/list `FILE`, to diff against")
	return func(ctx context.Context, pos []string) error {
		var tool string
		if len(pos) == 1 {
			tool, pos = pos[0], nil
		}
		if err := wantArgs(pos); err != nil {
			return err
		}
		seen, err := src.seen(ctx)
		if err != nil {
			return err
		}
		if *base != "" {
			service, _ := src.serviceName()
			old, err := readToolList(*base, service)
			if err != nil {
				return err
			}
			for i := range old {
				old[i].Current = false
			}
			seen = append(seen, old...)
		}
		p, err := src.pins(ctx)
		if err != nil {
			return err
		}
		shown := 0
		for _, t := range current(seen) {
			if tool != "" && t.Name != tool {
				continue
			}
			r := rowOf(p, t)
			if tool == "" && r.Pinned == t.Hash {
				continue
			}
			shown++
			old := toolpin.Definition{Name: t.Name, Hash: r.Pinned}
			for _, o := range seen {
				if o.Service == t.Service && o.Name == t.Name && o.Hash == r.Pinned && r.Pinned != "" {
					old.Canonical = o.Definition
				}
			}
			printf(env.Stdout, "tool:%s %s: %s\n", t.Service, t.Name, r.Status)
			printf(env.Stdout, "  pinned %s\n  now    %s\n", orDash(r.Pinned), t.Hash)
			switch {
			case r.Pinned == t.Hash:
				fmt.Fprintln(env.Stdout, "  (matches its pin)")
			case r.Pinned != "" && old.Canonical == nil:
				fmt.Fprintln(env.Stdout, "  (the pinned definition was never reported; showing the current one whole)")
			}
			if r.Pinned != t.Hash {
				fmt.Fprint(env.Stdout, toolpin.Diff(old, toolpin.Definition{Name: t.Name, Hash: t.Hash, Canonical: t.Definition}))
			}
		}
		if shown == 0 {
			if tool != "" {
				return fmt.Errorf("no gateway reports a tool named %q", tool)
			}
			fmt.Fprintln(env.Stderr, "every definition seen matches its pin")
		}
		return nil
	}
}

func toolsPin(fs *flag.FlagSet, env Env) func(context.Context, []string) error {
	src := toolsFlags(fs, env)
	mode := fs.String("mode", "", "also set the servers' pin `MODE` (enforce, warn or off) for tools with no pin")
	return func(ctx context.Context, pos []string) error {
		if err := wantArgs(pos); err != nil {
			return err
		}
		switch *mode {
		case "", policy.PinEnforce, policy.PinWarn, policy.PinOff:
		default:
			return usagef("--mode %q: want enforce, warn or off", *mode)
		}
		byService := map[string]map[string]string{}
		seen, err := src.seen(ctx)
		if err != nil {
			return err
		}
		for _, t := range current(seen) {
			if byService[t.Service] == nil {
				byService[t.Service] = map[string]string{}
			}
			byService[t.Service][t.Name] = t.Hash
		}
		if len(byService) == 0 {
			return fmt.Errorf("no tool definitions seen: list the server's tools through its gateway first, or pin from a captured list with --from")
		}
		return writePins(env, *src.policyFile, *mode, byService)
	}
}

func toolsApprove(fs *flag.FlagSet, env Env) func(context.Context, []string) error {
	src := toolsFlags(fs, env)
	return func(ctx context.Context, pos []string) error {
		if err := wantArgs(pos, "TOOL"); err != nil {
			return err
		}
		service, err := src.serviceName()
		if err != nil {
			return err
		}
		if service == "" {
			return usagef("approve needs --service: the tool server whose change is approved")
		}
		seen, err := src.seen(ctx)
		if err != nil {
			return err
		}
		for _, t := range current(seen) {
			if t.Name == pos[0] {
				return writePins(env, *src.policyFile, "", map[string]map[string]string{service: {t.Name: t.Hash}})
			}
		}
		return fmt.Errorf("no gateway of tool:%s reports a tool named %q", service, pos[0])
	}
}

// writePins writes pins (by service, then tool) into the policy file.
func writePins(env Env, file, mode string, pins map[string]map[string]string) error {
	if file == "" {
		return usagef("--policy FILE is required: the pins are written into the policy file, for review")
	}
	doc, err := os.ReadFile(file)
	if err != nil {
		return err
	}
	n := 0
	for _, service := range slices.Sorted(maps.Keys(pins)) {
		if doc, err = policy.SetToolPins(doc, identity.Name(service), mode, pins[service]); err != nil {
			return fmt.Errorf("%s: %w", file, err)
		}
		n += len(pins[service])
	}
	if err := writeFileKeepMode(file, doc); err != nil {
		return err
	}
	printf(env.Stderr, "wrote %d pin(s) into %s: review the change, then apply it with 'agentmesh policy apply %s'\n", n, file, file)
	return nil
}

// writeFileKeepMode replaces name's content, keeping its permissions.
func writeFileKeepMode(name string, b []byte) error {
	fi, err := os.Stat(name)
	if err != nil {
		return err
	}
	tmp := name + ".tmp"
	if err := os.WriteFile(tmp, b, fi.Mode().Perm()); err != nil {
		return err
	}
	return os.Rename(tmp, name)
}
