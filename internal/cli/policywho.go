package cli

import (
	"cmp"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/agentmesh/agentmesh/internal/controlapi"
	"github.com/agentmesh/agentmesh/internal/controlclient"
	"github.com/agentmesh/agentmesh/internal/identity"
	"github.com/agentmesh/agentmesh/internal/policy"
)

// 'policy who' and 'policy can': the rights of policy.Policy.Who and Can,
// from the coordinator's policy, registry and tool reports, or from files.

const whoLong = `The policy is --policy FILE, or else the coordinator's current one. The identities
are the registered nodes: --nodes FILE (the output of 'agentmesh nodes list --json'),
or else the coordinator's registry when a state directory is given (--state or
$AGENTMESH_STATE); with neither, each right names the grant's selectors instead
(tag:ci, *). Tools are those the gateways reported (--tools FILE, the output of
'agentmesh tools list --json', or else the coordinator's reports); a server that
reported none shows the grant's patterns. Each right names its grant (index and
line); a right whose grant has a when is conditional (each call is decided with
its arguments), and an approval says who must approve each call. Tool pins are
not applied: a pinned tool whose definition changed is refused whatever this says.`

func policyWhoFlags(fs *flag.FlagSet, env Env) func(context.Context, []string) error {
	return policyRightsFlags(fs, env, true)
}

func policyCanFlags(fs *flag.FlagSet, env Env) func(context.Context, []string) error {
	return policyRightsFlags(fs, env, false)
}

type rightsArgs struct {
	state, policyFile, nodesFile, toolsFile, sel, tags, tool string
	json                                                     bool
}

func policyRightsFlags(fs *flag.FlagSet, env Env, who bool) func(context.Context, []string) error {
	var a rightsArgs
	fs.StringVar(&a.state, "state", env.Getenv("AGENTMESH_STATE"), stateUsage)
	fs.BoolVar(&a.json, "json", false, jsonUsage)
	fs.StringVar(&a.policyFile, "policy", "", "use the policy in `FILE` instead of the coordinator's current one")
	fs.StringVar(&a.nodesFile, "nodes", "", "read the registered nodes from `FILE` ('agentmesh nodes list --json')")
	fs.StringVar(&a.toolsFile, "tools", "", "read the reported tools from `FILE` ('agentmesh tools list --json')")
	fs.StringVar(&a.tags, "tags", "", "the `tags` of the "+map[bool]string{true: "--dst", false: "--src"}[who]+" node when no registry says (comma-separated)")
	if who {
		fs.StringVar(&a.sel, "dst", "", "the destination `KIND:NAME`, such as tool:ledger")
		fs.StringVar(&a.tool, "tool", "", "only the grants that cover the tool `NAME`")
	} else {
		fs.StringVar(&a.sel, "src", "", "the source `KIND:NAME`, such as agent:teller")
	}
	return func(ctx context.Context, pos []string) error {
		if err := wantArgs(pos); err != nil {
			return err
		}
		return policyRights(ctx, env, a, who)
	}
}

// rightsReport is what 'policy who --json' and 'policy can --json' print.
type rightsReport struct {
	// Policy is the policy's version, or its file.
	Policy string `json:"policy"`
	// Dst (who) or Src (can) is the node asked about, with its tags.
	Dst  string   `json:"dst,omitempty"`
	Src  string   `json:"src,omitempty"`
	Tags []string `json:"tags"`
	Tool string   `json:"tool,omitempty"`
	// Registry says whether rights name registered nodes (true) or the
	// grants' selectors (false); ToolReports whether tools were expanded
	// from the gateways' reports.
	Registry    bool           `json:"registry"`
	ToolReports bool           `json:"tool_reports"`
	Rights      []policy.Right `json:"rights"`
}

func policyRights(ctx context.Context, env Env, a rightsArgs, who bool) error {
	flagName := map[bool]string{true: "--dst", false: "--src"}[who]
	if a.sel == "" {
		return usagef("%s KIND:NAME is required", flagName)
	}
	node, err := selectorNode(a.sel, flagName)
	if err != nil {
		return err
	}
	src := rightsSource{state: a.state}
	defer src.close()
	var p *policy.Policy
	label := a.policyFile
	if a.policyFile != "" {
		if _, p, err = readPolicy(a.policyFile); err != nil {
			return err
		}
	} else {
		cl, err := src.client(ctx)
		if err != nil {
			return err
		}
		var pv controlapi.PolicyVersion
		if err := cl.Call(ctx, http.MethodGet, controlapi.PathPolicy, nil, &pv); err != nil {
			return err
		}
		if pv.Version == 0 {
			return fmt.Errorf("no policy has been applied yet: nobody may reach anything")
		}
		label = "version " + strconv.FormatInt(pv.Version, 10)
		if p, err = policy.Compile([]byte(pv.Document), strconv.FormatInt(pv.Version, 10)); err != nil {
			return fmt.Errorf("the coordinator's policy version %d does not compile here: %w", pv.Version, err)
		}
	}
	nodes, err := src.nodes(ctx, a.nodesFile)
	if err != nil {
		return err
	}
	tools, err := src.tools(ctx, a.toolsFile)
	if err != nil {
		return err
	}
	// The node's tags: the registry's, unless --tags says.
	registered := false
	for _, n := range nodes {
		if node.Name != "" && n.Kind == node.Kind && n.Name == node.Name {
			node.Tags, node.User, registered = n.Tags, n.User, true
		}
	}
	if nodes != nil && !registered && node.Name != "" {
		printf(env.Stderr, "warning: no active node %s is registered (a typo?); its tags are taken as none unless --tags says\n", a.sel)
	}
	if a.tags != "" {
		if node.Tags, err = identity.SplitTags(a.tags); err != nil {
			return usagef("--tags: %v", err)
		}
	}
	q := policy.WhoQuery{Nodes: nodes, Tools: tools, Tool: a.tool}
	rep := rightsReport{Policy: label, Tags: identity.TagStrings(node.Tags), Tool: a.tool, Registry: nodes != nil, ToolReports: len(tools) > 0}
	if who {
		rep.Dst, rep.Rights = a.sel, p.Who(node, q)
	} else {
		rep.Src, rep.Rights = a.sel, p.Can(node, q)
	}
	if rep.Rights == nil {
		rep.Rights = []policy.Right{}
	}
	if rep.Tags == nil {
		rep.Tags = []string{}
	}
	if a.json {
		return printJSON(env.Stdout, rep)
	}
	printRights(env, rep, who)
	return nil
}

func printRights(env Env, rep rightsReport, who bool) {
	ids := "identities named by the grants' selectors (no registry: give --state or --nodes)"
	if rep.Registry {
		ids = "registered nodes"
	}
	tools := "tool patterns (no tool reports)"
	if rep.ToolReports {
		tools = "tools as the gateways reported them (patterns where none did)"
	}
	subject := rep.Src
	if who {
		subject = rep.Dst
	}
	tags := ""
	if len(rep.Tags) > 0 {
		tags = " (" + strings.Join(rep.Tags, ",") + ")"
	}
	printf(env.Stdout, "policy %s; %s%s; %s; %s\n\n", rep.Policy, subject, tags, ids, tools)
	if len(rep.Rights) == 0 {
		if who {
			printf(env.Stdout, "nobody may reach %s\n", subject)
		} else {
			printf(env.Stdout, "%s may use nothing\n", subject)
		}
		return
	}
	tw := tabwriter.NewWriter(env.Stdout, 2, 4, 2, ' ', 0)
	peer := "SRC"
	if !who {
		peer = "DST"
	}
	fmt.Fprintln(tw, peer+"\tTAGS\tVIA\tGRANT\tGIVES\tCONDITION")
	for _, r := range rep.Rights {
		p := r.Src
		if !who {
			p = r.Dst
		}
		if r.User != "" && !strings.HasPrefix(p, "user:") {
			p += " (user:" + r.User + ")"
		}
		v := r.Via
		if r.Member != "" {
			v += " (" + r.Member + ")"
		}
		printRow(tw, p, orDash(strings.Join(r.Tags, ",")), v, fmt.Sprintf("%d (line %d)", r.Grant, r.Line), gives(r, rep.Tool, rep.ToolReports), condition(r))
	}
	tw.Flush()
}

// gives says in a few words what a right gives; toolFilter and
// toolReports are the report's.
func gives(r policy.Right, toolFilter string, toolReports bool) string {
	if r.Connect {
		return "connect only"
	}
	var parts []string
	add := func(name string, items []string) {
		if items != nil {
			parts = append(parts, name+": "+orText(strings.Join(items, " "), "(none of the reported tools)"))
		}
	}
	if r.Tools != nil && !r.ToolsSeen && len(r.Tools) == 1 && toolFilter != "" && toolReports {
		parts = append(parts, "tools: "+r.Tools[0]+" (not among the tools its gateway reported)")
	} else {
		add("tools", r.Tools)
	}
	add("resources", r.Resources)
	add("prompts", r.Prompts)
	add("models", r.Models)
	add("paths", r.Paths)
	return strings.Join(parts, "; ")
}

func orText(s, alt string) string {
	if s == "" {
		return alt
	}
	return s
}

// condition is a right's CONDITION column: the people it is only for
// (on_behalf_of: the right holds only for calls made with their
// delegation), its when and approval.
func condition(r policy.Right) string {
	var parts []string
	if len(r.OnBehalfOf) > 0 {
		parts = append(parts, "on behalf of "+strings.Join(r.OnBehalfOf, ", "))
	}
	if r.Conditional {
		parts = append(parts, "when "+r.When)
	}
	if r.Approval != "" {
		parts = append(parts, "approval by "+r.Approval+" within "+r.ApprovalTimeout)
	}
	return orDash(strings.Join(parts, "; "))
}

// rightsSource reads the registry and the tool reports, from files or the
// coordinator, with one client.
type rightsSource struct {
	state string
	cl    *controlclient.Client
}

func (s *rightsSource) client(ctx context.Context) (*controlclient.Client, error) {
	if s.cl == nil {
		cl, err := adminClient(ctx, s.state)
		if err != nil {
			return nil, err
		}
		s.cl = cl
	}
	return s.cl, nil
}

func (s *rightsSource) close() {
	if s.cl != nil {
		s.cl.Close()
	}
}

// nodes returns the active registered nodes: from file, or the
// coordinator when there is a state directory, or nil (no registry).
func (s *rightsSource) nodes(ctx context.Context, file string) ([]policy.Node, error) {
	var infos []controlapi.NodeInfo
	switch {
	case file != "":
		b, err := os.ReadFile(file)
		if err != nil {
			return nil, err
		}
		if err := json.Unmarshal(b, &infos); err != nil {
			return nil, fmt.Errorf("%s: want the output of 'agentmesh nodes list --json': %w", file, err)
		}
	case s.state != "":
		cl, err := s.client(ctx)
		if err != nil {
			return nil, err
		}
		if err := cl.Call(ctx, http.MethodGet, controlapi.PathNodes, nil, &infos); err != nil {
			return nil, err
		}
	default:
		return nil, nil
	}
	return activeNodes(infos), nil
}

// activeNodes are the active nodes of a registry listing, as the policy
// sees them; a row it cannot read is skipped.
func activeNodes(infos []controlapi.NodeInfo) []policy.Node {
	nodes := []policy.Node{}
	for _, n := range infos {
		kind, err := identity.ParseKind(n.Kind)
		if err != nil || n.Status != "active" {
			continue
		}
		name, err := identity.ParseName(n.Name)
		if err != nil {
			continue
		}
		tags, err := identity.ParseTags(n.Tags)
		if err != nil {
			continue
		}
		nodes = append(nodes, policy.Node{Kind: kind, Name: name, Tags: tags, User: registeredOwner(n)})
	}
	return nodes
}

// tools returns the tools each server's gateway reports now, by server
// name: from file, or the coordinator when there is a state directory, or
// nil (no reports).
func (s *rightsSource) tools(ctx context.Context, file string) (map[string][]string, error) {
	var rows []struct {
		Service string `json:"service"`
		Tool    string `json:"tool"` // 'tools list --json'
		Name    string `json:"name"` // GET /v1/tools
		Current *bool  `json:"current"`
	}
	switch {
	case file != "":
		b, err := os.ReadFile(file)
		if err != nil {
			return nil, err
		}
		if err := json.Unmarshal(b, &rows); err != nil {
			return nil, fmt.Errorf("%s: want the output of 'agentmesh tools list --json': %w", file, err)
		}
	case s.state != "":
		cl, err := s.client(ctx)
		if err != nil {
			return nil, err
		}
		if err := cl.Call(ctx, http.MethodGet, controlapi.PathTools, nil, &rows); err != nil {
			return nil, err
		}
	default:
		return nil, nil
	}
	out := map[string][]string{}
	for _, r := range rows {
		name := cmp.Or(r.Tool, r.Name)
		if r.Current != nil && !*r.Current || name == "" {
			continue
		}
		if !slices.Contains(out[r.Service], name) {
			out[r.Service] = append(out[r.Service], name)
		}
	}
	return out, nil
}
