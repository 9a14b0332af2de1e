package cli

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/agentmesh/agentmesh/internal/controlapi"
	"github.com/agentmesh/agentmesh/internal/identity"
	"github.com/agentmesh/agentmesh/internal/policy"
)

func init() {
	register(&command{
		name:  "policy",
		usage: "validate|apply|get|history|rollback|check|who|can|replay|suggest|shadow [ARGS] [flags]",
		short: "validate, apply, inspect, roll back and explain policy; who may reach what; replay; suggest; shadow",
		long: `Examples:
  agentmesh policy validate examples/policy.hujson
  agentmesh policy apply examples/policy.hujson --state ./mesh/admin
  agentmesh policy check --file examples/policy.hujson --src agent:fraud-detector \
      --dst tool:payments-db --tool query --args '{"sql":"select 1"}'
  agentmesh policy who --dst tool:ledger --tool transfer
  agentmesh policy can --src agent:teller --json`,
		subs: []*subcommand{
			{name: "validate", usage: "FILE [--state DIR [--strict]]", short: "check a file offline (exit 0 when valid; tests in it run)",
				long: `With --state (given on the command line; $AGENTMESH_STATE is not used, so validate
stays offline unless asked), it also warns about selectors that match no registered node
and tags no node carries; --strict makes those an error.

It also warns (lint), with line and column, about grants shadowed by earlier grants
(they never decide), "!" exclusions that exclude nothing, tools entries that match no
tool pinned for the grant's dst, and, with --state, grants whose src or dst no
registered node matches. Exit status: 0 when the file is valid and its tests pass,
warnings or not; 1 when it is not (or, with --strict, a selector matches no node,
or the coordinator cannot be asked); 2 for a usage error.`,
				flags: policyValidate},
			{name: "apply", usage: "FILE [--strict] [--json]", short: "apply a new version (admin); a failing file changes nothing",
				long: `Warns, on stderr, about selectors that match no registered node and tags no node
carries: a typo there silently locks an agent out. With --strict they are an error and
nothing is applied.`,
				flags: policyApply},
			{name: "get", usage: "[--version N] [--json]", short: "print the current (or a given) policy document", flags: policyGet},
			{name: "history", usage: "[--json]", short: "list applied versions", flags: policyHistory},
			{name: "rollback", usage: "VERSION", short: "re-apply an earlier version as a new version", flags: policyRollback},
			{name: "check", usage: "[--file FILE] --src SEL [--src-tags tag:a,tag:b] --dst SEL [--dst-tags tag:a,tag:b] (--tool NAME [--args JSON] | --resource URI | --prompt NAME | --model NAME | --connect) [--json]",
				short: "explain one decision",
				long: `With --file the decision is made offline, otherwise against the coordinator's current
policy and the registry's tags. Exit status 0 whether allowed or denied.`,
				flags: policyCheckFlags},
			{name: "who", usage: "--dst KIND:NAME [--tool NAME] [--tags tag:a,tag:b] [--policy FILE] [--nodes FILE] [--tools FILE] [--json]",
				short: "who may reach a service or tool, and through which grant", long: whoLong, flags: policyWhoFlags},
			{name: "can", usage: "--src KIND:NAME [--tags tag:a,tag:b] [--policy FILE] [--nodes FILE] [--tools FILE] [--json]",
				short: "everything an identity may use, and through which grant", long: whoLong, flags: policyCanFlags},
			{name: "replay", usage: "FILE [--since DURATION|TIME] [--src SEL] [--dst SEL] [--json]",
				short: "what-if: decide the recorded requests again under FILE and list what would change",
				long:  policyReplayLong, flags: policyReplay},
			{name: "suggest", usage: policySuggestUsage,
				short: "propose a least-privilege policy from the recorded requests, with its evidence",
				long:  policySuggestLong, flags: policySuggest},
			{name: "shadow", usage: shadowUsage, short: "run a candidate policy next to the active one and see where they differ",
				long: shadowLong, flags: policyShadow},
		},
	})
}

// readPolicy reads and compiles the policy file name, as 'policy validate'
// and 'policy apply' check it.
func readPolicy(name string) ([]byte, *policy.Policy, error) {
	doc, err := os.ReadFile(name)
	if err != nil {
		return nil, nil, err
	}
	p, err := policy.Compile(doc, "file")
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", name, err)
	}
	return doc, p, nil
}

func policyValidate(fs *flag.FlagSet, env Env) func(context.Context, []string) error {
	state := fs.String("state", "", "admin state `DIR`: also check the selectors against the registered nodes")
	strict := strictFlag(fs)
	return func(ctx context.Context, pos []string) error {
		if err := wantArgs(pos, "FILE"); err != nil {
			return err
		}
		if *strict && *state == "" {
			return usagef("--strict needs --state: validate checks selectors against the registered nodes only with it")
		}
		_, p, err := readPolicy(pos[0])
		if err != nil {
			return err
		}
		var nodes []policy.Node
		if *state != "" {
			if nodes, err = checkUnmatched(ctx, env, *state, p, *strict); err != nil {
				return err
			}
		}
		for _, w := range p.Lint(nodes) {
			printf(env.Stderr, "warning: %s:%s\n", pos[0], w.String())
		}
		printf(env.Stdout, "%s: valid (%s)\n", pos[0], p.Summary())
		return nil
	}
}

func policyApply(fs *flag.FlagSet, env Env) func(context.Context, []string) error {
	state := stateFlag(fs, env)
	strict := strictFlag(fs)
	asJSON := jsonFlag(fs)
	return func(ctx context.Context, pos []string) error {
		if err := wantArgs(pos, "FILE"); err != nil {
			return err
		}
		doc, p, err := readPolicy(pos[0])
		if err != nil {
			return fmt.Errorf("%w (nothing was applied)", err)
		}
		nodes, err := checkUnmatched(ctx, env, *state, p, *strict)
		if err != nil {
			return fmt.Errorf("%w (nothing was applied)", err)
		}
		// The same warnings validate prints: apply is where a mistake
		// starts to matter, so it must not be quieter than validate.
		for _, w := range p.Lint(nodes) {
			printf(env.Stderr, "warning: %s:%s\n", pos[0], w.String())
		}
		var pv controlapi.PolicyVersion
		if err := adminCall(ctx, *state, http.MethodPost, controlapi.PathPolicy, controlapi.PolicyApplyRequest{Document: string(doc)}, &pv); err != nil {
			return err
		}
		if *asJSON {
			return printJSON(env.Stdout, pv)
		}
		fmt.Fprintf(env.Stdout, "applied policy version %d\n", pv.Version)
		return nil
	}
}

func strictFlag(fs *flag.FlagSet) *bool {
	return fs.Bool("strict", false, "a selector that matches no registered node, or a tag no node carries, is an error")
}

// checkUnmatched warns on stderr about each selector of p that matches no
// active node in the coordinator's registry (policy.Policy.Unmatched);
// with strict, any is an error. It returns those nodes.
func checkUnmatched(ctx context.Context, env Env, state string, p *policy.Policy, strict bool) ([]policy.Node, error) {
	var infos []controlapi.NodeInfo
	if err := adminCall(ctx, state, http.MethodGet, controlapi.PathNodes, nil, &infos); err != nil {
		return nil, err
	}
	nodes := activeNodes(infos)
	unmatched := p.Unmatched(nodes)
	for _, u := range unmatched {
		printf(env.Stderr, "warning: %s\n", u.String())
	}
	if strict && len(unmatched) > 0 {
		return nil, fmt.Errorf("--strict: %d selector(s) match no registered node", len(unmatched))
	}
	return nodes, nil
}

func policyGet(fs *flag.FlagSet, env Env) func(context.Context, []string) error {
	state := stateFlag(fs, env)
	asJSON := jsonFlag(fs)
	version := fs.Int64("version", 0, "print policy `VERSION` (default: the current one)")
	return func(ctx context.Context, pos []string) error {
		if err := wantArgs(pos); err != nil {
			return err
		}
		path := controlapi.PathPolicy
		if *version > 0 {
			path += "?version=" + strconv.FormatInt(*version, 10)
		}
		var pv controlapi.PolicyVersion
		if err := adminCall(ctx, *state, http.MethodGet, path, nil, &pv); err != nil {
			return err
		}
		if *asJSON {
			return printJSON(env.Stdout, pv)
		}
		if pv.Version == 0 {
			fmt.Fprintln(env.Stderr, "no policy has been applied yet: everything is denied")
			return nil
		}
		printf(env.Stderr, "# policy version %d, applied %s by %s\n", pv.Version, pv.AppliedAt.Local().Format(time.RFC3339), pv.AppliedBy)
		fmt.Fprint(env.Stdout, pv.Document)
		return nil
	}
}

func policyHistory(fs *flag.FlagSet, env Env) func(context.Context, []string) error {
	state := stateFlag(fs, env)
	asJSON := jsonFlag(fs)
	return func(ctx context.Context, pos []string) error {
		if err := wantArgs(pos); err != nil {
			return err
		}
		var h []controlapi.PolicyVersion
		if err := adminCall(ctx, *state, http.MethodGet, controlapi.PathHistory, nil, &h); err != nil {
			return err
		}
		if *asJSON {
			return printJSON(env.Stdout, h)
		}
		tw := tabwriter.NewWriter(env.Stdout, 2, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "VERSION\tAPPLIED\tBY\tNOTE")
		for _, p := range h {
			printf(tw, "%d\t%s\t%s\t%s\n", p.Version, p.AppliedAt.Local().Format(time.RFC3339), p.AppliedBy, p.Note)
		}
		return tw.Flush()
	}
}

func policyRollback(fs *flag.FlagSet, env Env) func(context.Context, []string) error {
	state := stateFlag(fs, env)
	return func(ctx context.Context, pos []string) error {
		if err := wantArgs(pos, "VERSION"); err != nil {
			return err
		}
		v, err := strconv.ParseInt(strings.TrimPrefix(pos[0], "v"), 10, 64)
		if err != nil || v < 1 {
			return usagef("VERSION must be a positive number")
		}
		var pv controlapi.PolicyVersion
		if err := adminCall(ctx, *state, http.MethodPost, controlapi.PathRollback, controlapi.RollbackRequest{Version: v}, &pv); err != nil {
			return err
		}
		fmt.Fprintf(env.Stdout, "rolled back: version %d is version %d's policy\n", pv.Version, v)
		return nil
	}
}

func policyCheckFlags(fs *flag.FlagSet, env Env) func(context.Context, []string) error {
	var a checkArgs
	fs.StringVar(&a.state, "state", env.Getenv("AGENTMESH_STATE"), stateUsage)
	fs.BoolVar(&a.json, "json", false, jsonUsage)
	fs.StringVar(&a.file, "file", "", "decide offline with the policy in `FILE`")
	fs.StringVar(&a.src, "src", "", "source selector, such as agent:NAME")
	fs.StringVar(&a.srcTags, "src-tags", "", "comma-separated tags of the source (offline default: none)")
	fs.StringVar(&a.dst, "dst", "", "destination selector, such as tool:NAME")
	fs.StringVar(&a.dstTags, "dst-tags", "", "comma-separated tags of the destination (offline default: none)")
	fs.StringVar(&a.tool, "tool", "", "check a tools/call of `NAME`")
	fs.StringVar(&a.args, "args", "", "tool call arguments as a JSON object")
	fs.StringVar(&a.resource, "resource", "", "check a resources/read of `URI`")
	fs.StringVar(&a.prompt, "prompt", "", "check a prompts/get of `NAME`")
	fs.StringVar(&a.model, "model", "", "check a model request for `NAME`")
	fs.BoolVar(&a.connect, "connect", false, "check whether the source may connect at all")
	return func(ctx context.Context, pos []string) error {
		if err := wantArgs(pos); err != nil {
			return err
		}
		return policyCheck(ctx, env, a)
	}
}

type checkArgs struct {
	state, file, src, srcTags, dst, dstTags string
	tool, args, resource, prompt, model     string
	connect, json                           bool
}

// checkResult is what 'policy check --json' prints.
type checkResult struct {
	Allow   bool   `json:"allow"`
	Reason  string `json:"reason"`
	Grant   int    `json:"grant"`
	Version string `json:"version"`
	When    string `json:"when,omitempty"`
}

func policyCheck(ctx context.Context, env Env, a checkArgs) error {
	srcNode, err := selectorNode(a.src, "--src")
	if err != nil {
		return err
	}
	dstNode, err := selectorNode(a.dst, "--dst")
	if err != nil {
		return err
	}
	req := policy.Request{Src: srcNode, Dst: dstNode}
	n := 0
	for _, set := range []bool{a.tool != "", a.resource != "", a.prompt != "", a.model != "", a.connect} {
		if set {
			n++
		}
	}
	if n != 1 {
		return usagef("give exactly one of --tool, --resource, --prompt, --model, --connect")
	}
	switch {
	case a.tool != "":
		req.Action, req.Method, req.Tool = policy.ActionTool, "tools/call", a.tool
		if a.args != "" {
			dec := json.NewDecoder(strings.NewReader(a.args))
			dec.UseNumber()
			if err := dec.Decode(&req.Args); err != nil || req.Args == nil {
				return usagef("--args must be a JSON object")
			}
		}
	case a.resource != "":
		req.Action, req.Method, req.Resource = policy.ActionResource, "resources/read", a.resource
	case a.prompt != "":
		req.Action, req.Method, req.Prompt = policy.ActionPrompt, "prompts/get", a.prompt
	case a.model != "":
		req.Action, req.Method, req.Model = policy.ActionModel, "model", a.model
	default:
		req.Action, req.Method = policy.ActionConnect, "connect"
	}
	var p *policy.Policy
	if a.file != "" {
		doc, err := os.ReadFile(a.file)
		if err != nil {
			return err
		}
		if p, err = policy.Compile(doc, "file"); err != nil {
			return fmt.Errorf("%s: %w", a.file, err)
		}
	} else {
		cl, err := adminClient(ctx, a.state)
		if err != nil {
			return err
		}
		defer cl.Close()
		if p, _, _, err = activePolicy(ctx, cl); err != nil {
			return err
		}
		var nodes []controlapi.NodeInfo
		if err := cl.Call(ctx, http.MethodGet, controlapi.PathNodes, nil, &nodes); err != nil {
			return err
		}
		for _, n := range nodes {
			if n.Status != "active" {
				continue
			}
			if n.Name == string(req.Src.Name) && n.Kind == string(req.Src.Kind) {
				if a.srcTags == "" {
					req.Src.Tags, _ = identity.ParseTags(n.Tags)
				}
				req.Src.User = registeredOwner(n)
			}
			if n.Name == string(req.Dst.Name) && n.Kind == string(req.Dst.Kind) {
				if a.dstTags == "" {
					req.Dst.Tags, _ = identity.ParseTags(n.Tags)
				}
				req.Dst.User = registeredOwner(n)
			}
		}
	}
	if a.srcTags != "" {
		if req.Src.Tags, err = identity.SplitTags(a.srcTags); err != nil {
			return usagef("--src-tags: %v", err)
		}
	}
	if a.dstTags != "" {
		if req.Dst.Tags, err = identity.SplitTags(a.dstTags); err != nil {
			return usagef("--dst-tags: %v", err)
		}
	}
	d := p.Decide(req)
	res := checkResult{Allow: d.Allow, Reason: string(d.Reason), Grant: d.Grant, Version: d.Version, When: d.When.String()}
	if a.json {
		return printJSON(env.Stdout, res)
	}
	verdict := "DENY"
	if d.Allow {
		verdict = "ALLOW"
	}
	printf(env.Stdout, "%s  %s\n", verdict, d.Explain())
	return nil
}

// selectorNode turns "agent:NAME" (or tool:, model:) into a policy node,
// and "user:LOGIN" into a person's tailnet device: an agent known only by
// its owner's login, as tailnet WhoIs identifies it.
func selectorNode(sel, flagName string) (policy.Node, error) {
	kind, name, ok := strings.Cut(sel, ":")
	if !ok {
		return policy.Node{}, usagef("%s wants KIND:NAME, such as agent:fraud-detector, or user:LOGIN", flagName)
	}
	if kind == identity.KindUser {
		if name == "" || len(name) > 256 || strings.ContainsFunc(name, func(r rune) bool { return r <= ' ' || r >= 0x7f }) {
			return policy.Node{}, usagef("%s: user:LOGIN wants a login of printable ASCII characters, such as user:alice@example.com", flagName)
		}
		if lower := identity.LowerLogin(name); lower != name {
			return policy.Node{}, usagef("%s: logins are compared in lower case: user:%s", flagName, lower)
		}
		return policy.Node{Kind: identity.KindAgent, User: name, Tags: []identity.Tag{}}, nil
	}
	k, err := identity.ParseKind(kind)
	if err != nil {
		return policy.Node{}, usagef("%s: %v", flagName, err)
	}
	n, err := identity.ParseName(name)
	if err != nil {
		return policy.Node{}, usagef("%s: %v", flagName, err)
	}
	return policy.Node{Name: n, Kind: k, Tags: []identity.Tag{}}, nil
}

// registeredOwner is the owner of a registry listing's node as the policy
// sees it (policy.Node.User): a person who joined it with --sso, in the
// canonical spelling the registry keeps; "" for none, or for an owner
// that is not in that spelling (no selector could match it).
func registeredOwner(n controlapi.NodeInfo) string {
	u, err := identity.ParseUser(n.Owner)
	if err != nil || string(u) != n.Owner {
		return ""
	}
	return string(u)
}
