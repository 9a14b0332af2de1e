package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"agentmesh/internal/controlapi"
	"agentmesh/internal/identity"
	"agentmesh/internal/policy"
)

func init() {
	register(&command{
		name:  "policy",
		usage: "validate|apply|get|history|rollback|check [ARGS] [flags]",
		short: "validate, apply, inspect, roll back and explain policy",
		long: `  policy validate FILE          check a file offline (exit 0 when valid; tests in it run)
  policy apply FILE             apply a new version (admin); a failing file changes nothing
  policy get [--version N]      print the current (or a given) policy document
  policy history                list applied versions
  policy rollback VERSION       re-apply an earlier version as a new version
  policy check [--file FILE] --src SEL [--src-tags tag:a,tag:b] --dst SEL
               (--tool NAME [--args JSON] | --resource URI | --prompt NAME | --model NAME | --connect)
      explain one decision; with --file offline, otherwise against the coordinator's
      current policy and the registry's tags. Exit status 0 whether allowed or denied.

Examples:
  agentmesh policy validate examples/policy.hujson
  agentmesh policy apply examples/policy.hujson --state ./mesh/admin
  agentmesh policy check --file examples/policy.hujson --src agent:fraud-detector \
      --dst tool:payments-db --tool query --args '{"sql":"select 1"}'`,
		run: runPolicy,
	})
}

func runPolicy(ctx context.Context, env Env, args []string) error {
	c := commands["policy"]
	fs := newFlags(c, env)
	state := stateFlag(fs, env)
	asJSON := fs.Bool("json", false, "print JSON")
	version := fs.Int64("version", 0, "policy `VERSION` for 'policy get'")
	file := fs.String("file", "", "policy `FILE` for an offline 'policy check'")
	src := fs.String("src", "", "source selector, such as agent:NAME")
	srcTags := fs.String("src-tags", "", "comma-separated tags of the source (offline default: none)")
	dst := fs.String("dst", "", "destination selector, such as tool:NAME")
	dstTags := fs.String("dst-tags", "", "comma-separated tags of the destination (offline default: none)")
	tool := fs.String("tool", "", "check a tools/call of `NAME`")
	argsJSON := fs.String("args", "", "tool call arguments as a JSON object")
	resource := fs.String("resource", "", "check a resources/read of `URI`")
	prompt := fs.String("prompt", "", "check a prompts/get of `NAME`")
	model := fs.String("model", "", "check a model request for `NAME`")
	connect := fs.Bool("connect", false, "check whether the source may connect at all")
	pos, _, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) == 0 {
		return usagef("missing subcommand: validate, apply, get, history, rollback or check")
	}
	switch pos[0] {
	case "validate":
		if len(pos) != 2 {
			return usagef("policy validate takes one FILE")
		}
		doc, err := os.ReadFile(pos[1])
		if err != nil {
			return err
		}
		p, err := policy.Compile(doc, "file")
		if err != nil {
			return fmt.Errorf("%s: %w", pos[1], err)
		}
		printf(env.Stdout, "%s: valid (%s)\n", pos[1], p.Summary())
		return nil
	case "apply":
		if len(pos) != 2 {
			return usagef("policy apply takes one FILE")
		}
		doc, err := os.ReadFile(pos[1])
		if err != nil {
			return err
		}
		if _, err := policy.Compile(doc, "file"); err != nil {
			return fmt.Errorf("%s: %w (nothing was applied)", pos[1], err)
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
	case "get", "history":
		cl, err := adminClient(ctx, *state)
		if err != nil {
			return err
		}
		defer cl.Close()
		if pos[0] == "get" {
			path := controlapi.PathPolicy
			if *version > 0 {
				path += "?version=" + strconv.FormatInt(*version, 10)
			}
			var pv controlapi.PolicyVersion
			if err := cl.Call(ctx, http.MethodGet, path, nil, &pv); err != nil {
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
		var h []controlapi.PolicyVersion
		if err := cl.Call(ctx, http.MethodGet, controlapi.PathHistory, nil, &h); err != nil {
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
	case "rollback":
		if len(pos) != 2 {
			return usagef("policy rollback takes one VERSION")
		}
		v, err := strconv.ParseInt(strings.TrimPrefix(pos[1], "v"), 10, 64)
		if err != nil || v < 1 {
			return usagef("VERSION must be a positive number")
		}
		var pv controlapi.PolicyVersion
		if err := adminCall(ctx, *state, http.MethodPost, controlapi.PathRollback, controlapi.RollbackRequest{Version: v}, &pv); err != nil {
			return err
		}
		fmt.Fprintf(env.Stdout, "rolled back: version %d is version %d's policy\n", pv.Version, v)
		return nil
	case "check":
		return policyCheck(ctx, env, checkArgs{state: *state, file: *file, src: *src, srcTags: *srcTags, dst: *dst, dstTags: *dstTags,
			tool: *tool, args: *argsJSON, resource: *resource, prompt: *prompt, model: *model, connect: *connect, json: *asJSON})
	}
	return usagef("unknown subcommand %q", pos[0])
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
		var pv controlapi.PolicyVersion
		if err := cl.Call(ctx, http.MethodGet, controlapi.PathPolicy, nil, &pv); err != nil {
			return err
		}
		if pv.Version > 0 {
			if p, err = policy.Compile([]byte(pv.Document), strconv.FormatInt(pv.Version, 10)); err != nil {
				return fmt.Errorf("the coordinator's policy version %d does not compile here: %w", pv.Version, err)
			}
		}
		var nodes []controlapi.NodeInfo
		if err := cl.Call(ctx, http.MethodGet, controlapi.PathNodes, nil, &nodes); err != nil {
			return err
		}
		for _, n := range nodes {
			if n.Status != "active" {
				continue
			}
			if n.Name == string(req.Src.Name) && n.Kind == string(req.Src.Kind) && a.srcTags == "" {
				req.Src.Tags, _ = identity.ParseTags(n.Tags)
			}
			if n.Name == string(req.Dst.Name) && n.Kind == string(req.Dst.Kind) && a.dstTags == "" {
				req.Dst.Tags, _ = identity.ParseTags(n.Tags)
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

// selectorNode turns "agent:NAME" (or tool:, model:) into a policy node.
func selectorNode(sel, flagName string) (policy.Node, error) {
	kind, name, ok := strings.Cut(sel, ":")
	if !ok {
		return policy.Node{}, usagef("%s wants KIND:NAME, such as agent:fraud-detector", flagName)
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
