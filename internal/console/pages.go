package console

import (
	"cmp"
	"context"
	"crypto/x509"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/agentmesh/agentmesh/internal/audit"
	"github.com/agentmesh/agentmesh/internal/controlapi"
	"github.com/agentmesh/agentmesh/internal/identity"
	"github.com/agentmesh/agentmesh/internal/policy"
)

// staleAfter is how long a node may go unseen before the overview flags
// it: a node renews its certificate at two thirds of its lifetime (1 h by
// default) and watches its netmap all the time, so an hour without a word
// means it is down or cut off.
const staleAfter = time.Hour

func (s *server) nodes(ctx context.Context) ([]controlapi.NodeInfo, error) {
	var nodes []controlapi.NodeInfo
	err := s.admin.Call(ctx, http.MethodGet, controlapi.PathNodes, nil, &nodes)
	slices.SortFunc(nodes, func(a, b controlapi.NodeInfo) int {
		return cmp.Or(cmp.Compare(a.Kind, b.Kind), cmp.Compare(a.Name, b.Name))
	})
	return nodes, err
}

// nodeView is a node as the pages show it.
type nodeView struct {
	controlapi.NodeInfo
	State string // revoked, serving, not serving, active
	Stale bool   // active and not seen for staleAfter
}

func viewNodes(nodes []controlapi.NodeInfo, now time.Time) []nodeView {
	out := make([]nodeView, 0, len(nodes))
	for _, n := range nodes {
		v := nodeView{NodeInfo: n, State: n.Status}
		if n.Status == "active" {
			if n.Serving {
				v.State = "serving"
			} else if k, err := identity.ParseKind(n.Kind); err == nil && k.Serves() {
				v.State = "not serving"
			}
			v.Stale = !n.LastSeen.IsZero() && now.Sub(n.LastSeen) > staleAfter
		}
		out = append(out, v)
	}
	return out
}

// count is one row of a grouped count.
type count struct {
	Key  string
	Key2 string
	N    int64
	Last time.Time
	Seq  int64  // the newest event's, to open it
	What string // the newest event's object (what)
}

type overview struct {
	Nodes        []nodeView
	Active       map[string]int
	Revoked      int
	Services     []nodeView
	Stale        []nodeView
	Lapsing      []nodeView // active nodes whose certificate lapses soon or has lapsed
	Denials      int64
	DenialGroups []count
	DenialsCut   bool
	Events       int64
	LastEvent    map[string]time.Time // by node selector, in the last hour
	Cert         certHealth
	Policy       controlapi.PolicyVersion
}

type certHealth struct {
	Identity string
	NotAfter time.Time
	Left     time.Duration
}

// windowLimit bounds the events the overview and the denial view read.
const windowLimit = 5000

func (s *server) handleOverview(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	now := s.now()
	nodes, err := s.nodes(ctx)
	if err != nil {
		s.fail(w, r, "listing nodes", err)
		return
	}
	o := overview{Active: map[string]int{}, LastEvent: map[string]time.Time{}}
	o.Nodes = viewNodes(nodes, now)
	for _, n := range o.Nodes {
		if n.Status != "active" {
			o.Revoked++
			continue
		}
		o.Active[n.Kind]++
		if n.State == "serving" || n.State == "not serving" {
			o.Services = append(o.Services, n)
		}
		if n.Stale {
			o.Stale = append(o.Stale, n)
		}
	}
	q := url.Values{"since": {now.Add(-time.Hour).UTC().Format(time.RFC3339Nano)}, "limit": {itoa(windowLimit)}}
	events, err := s.events(ctx, q)
	if err != nil {
		s.fail(w, r, "reading the audit trail", err)
		return
	}
	var denials []audit.Event
	for _, e := range events {
		o.Events += e.Attempts()
		if d := identity.Short(e.Dst); e.Time.After(o.LastEvent[d]) {
			o.LastEvent[d] = e.Time
		}
		if e.Decision == audit.Deny {
			o.Denials += e.Attempts()
			denials = append(denials, e)
		}
	}
	o.DenialsCut = len(events) == windowLimit
	o.DenialGroups = group(denials)
	if len(o.DenialGroups) > 5 {
		o.DenialGroups = o.DenialGroups[:5]
	}
	if c := s.admin.Certificate(); c != nil && len(c.Certificate) > 0 {
		if leaf, err := x509.ParseCertificate(c.Certificate[0]); err == nil {
			o.Cert = certHealth{NotAfter: leaf.NotAfter, Left: leaf.NotAfter.Sub(now).Round(time.Second)}
			if id, err := identity.FromCertificate(leaf); err == nil {
				o.Cert.Identity = id.String()
			}
			o.Lapsing = lapsing(o.Nodes, leaf.NotAfter.Sub(leaf.NotBefore), now)
		}
	}
	if err := s.admin.Call(ctx, http.MethodGet, controlapi.PathPolicy, nil, &o.Policy); err != nil {
		s.fail(w, r, "reading the policy", err)
		return
	}
	s.render(w, r, 0, "overview", "Overview", o, "")
}

// lapsing returns the active nodes whose certificate, as the coordinator
// last issued it, lapses within a quarter of lifetime (the coordinator's
// certificate lifetime, which the console's own certificate shows) or has
// lapsed: a node renews at two thirds of its certificate's lifetime, so a
// healthy one always has a third left.
func lapsing(nodes []nodeView, lifetime time.Duration, now time.Time) []nodeView {
	var out []nodeView
	for _, n := range nodes {
		if n.Status == "active" && !n.CertExpires.IsZero() && n.CertExpires.Sub(now) < lifetime/4 {
			out = append(out, n)
		}
	}
	return out
}

// group counts denials by source and reason, most first.
func group(events []audit.Event) []count {
	byKey := map[[2]string]*count{}
	var out []*count
	for _, e := range events {
		k := [2]string{identity.Short(e.Src), string(e.Reason)}
		c := byKey[k]
		if c == nil {
			c = &count{Key: k[0], Key2: k[1]}
			byKey[k] = c
			out = append(out, c)
		}
		c.N += e.Attempts()
		if e.Time.After(c.Last) {
			c.Last, c.Seq, c.What = e.Time, e.Seq, what(e)
		}
	}
	slices.SortStableFunc(out, func(a, b *count) int {
		return cmp.Or(cmp.Compare(b.N, a.N), cmp.Compare(a.Key, b.Key), cmp.Compare(a.Key2, b.Key2))
	})
	res := make([]count, len(out))
	for i, c := range out {
		res[i] = *c
	}
	return res
}

type nodesPage struct {
	Nodes                []nodeView
	Q, Kind, Status, All string
	Total                int
}

func (s *server) handleNodes(w http.ResponseWriter, r *http.Request) {
	nodes, err := s.nodes(r.Context())
	if err != nil {
		s.fail(w, r, "listing nodes", err)
		return
	}
	q := r.URL.Query()
	p := nodesPage{Q: strings.TrimSpace(q.Get("q")), Kind: q.Get("kind"), Status: q.Get("status"), Total: len(nodes)}
	for _, n := range viewNodes(nodes, s.now()) {
		if p.Kind != "" && n.Kind != p.Kind {
			continue
		}
		if p.Status != "" && n.State != p.Status && n.Status != p.Status {
			continue
		}
		if p.Q != "" && !strings.Contains(n.Name+" "+strings.Join(n.Tags, " ")+" "+n.ID, p.Q) {
			continue
		}
		p.Nodes = append(p.Nodes, n)
	}
	s.render(w, r, 0, "nodes", "Nodes", p, "")
}

func (s *server) nodeName(w http.ResponseWriter, r *http.Request) (string, bool) {
	name := r.PathValue("name")
	if _, err := identity.ParseName(name); err != nil {
		s.render(w, r, http.StatusBadRequest, "error", "Error", nil, err.Error())
		return "", false
	}
	return name, true
}

func (s *server) handleRevokeConfirm(w http.ResponseWriter, r *http.Request) {
	name, ok := s.nodeName(w, r)
	if !ok {
		return
	}
	nodes, err := s.nodes(r.Context())
	if err != nil {
		s.fail(w, r, "listing nodes", err)
		return
	}
	i := slices.IndexFunc(nodes, func(n controlapi.NodeInfo) bool { return n.Name == name && n.Status == "active" })
	if i < 0 {
		s.render(w, r, http.StatusNotFound, "error", "Error", nil, "no active node named "+name)
		return
	}
	s.render(w, r, 0, "revoke", "Revoke "+name, viewNodes(nodes[i:i+1], s.now())[0], "")
}

func (s *server) handleRevoke(w http.ResponseWriter, r *http.Request) {
	name, ok := s.nodeName(w, r)
	if !ok {
		return
	}
	if r.PostForm.Get("confirm") != name {
		s.render(w, r, http.StatusBadRequest, "error", "Error", nil, "to revoke "+name+", type its name in the confirmation box")
		return
	}
	if err := s.admin.Call(r.Context(), http.MethodPost, controlapi.PathNodes+"/"+name+"/revoke", nil, nil); err != nil {
		s.fail(w, r, "revoking "+name, err)
		return
	}
	s.log.Info("console: revoked a node", "node", name)
	done(w, r, "/nodes?status=revoked", "revoked "+name+": it can no longer renew, and gateways cut it off")
}

func (s *server) handleTag(w http.ResponseWriter, r *http.Request) {
	name, ok := s.nodeName(w, r)
	if !ok {
		return
	}
	tags, err := identity.SplitTags(strings.ReplaceAll(r.PostForm.Get("tags"), " ", ""))
	if err != nil {
		s.render(w, r, http.StatusBadRequest, "error", "Error", nil, err.Error())
		return
	}
	ts := identity.TagStrings(tags)
	if err := s.admin.Call(r.Context(), http.MethodPost, controlapi.PathNodes+"/"+name+"/tags", controlapi.TagRequest{Tags: ts}, nil); err != nil {
		s.fail(w, r, "tagging "+name, err)
		return
	}
	done(w, r, "/nodes", name+" now has tags ["+strings.Join(ts, ", ")+"]")
}

// access is one agent's access to one service.
type access struct {
	Agent    string
	Connect  bool
	Patterns []string
	Tools    []toolAccess
}

type toolAccess struct {
	Name  string
	Allow bool
}

type service struct {
	Node  nodeView
	Tools []string // tool names known for the service
	Rows  []access
}

type servicesPage struct {
	Version  string
	Services []service
	Agents   int
}

// handleServices computes, from the active policy and the registry, who
// may use which tool of each service: for each tool or model node and
// each active agent, whether it may connect, the tool patterns of the
// grants that link them, and for each tool name known (named by a grant,
// or seen in the last hour's audit trail) whether a tools/call of it is
// allowed. A when condition is decided per call, with the call's
// arguments: a tool shown allowed may still be denied by one.
func (s *server) handleServices(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	nodes, err := s.nodes(ctx)
	if err != nil {
		s.fail(w, r, "listing nodes", err)
		return
	}
	var pv controlapi.PolicyVersion
	if err := s.admin.Call(ctx, http.MethodGet, controlapi.PathPolicy, nil, &pv); err != nil {
		s.fail(w, r, "reading the policy", err)
		return
	}
	var pol *policy.Policy // nil denies everything, as no policy does
	if pv.Version > 0 {
		if pol, err = policy.Compile([]byte(pv.Document), itoa(int(pv.Version))); err != nil {
			s.fail(w, r, "compiling the active policy", err)
			return
		}
	}
	seen := map[string]map[string]bool{} // dst selector -> tool names called
	q := url.Values{"since": {s.now().Add(-time.Hour).UTC().Format(time.RFC3339Nano)}, "method": {"tools/call"}, "limit": {itoa(windowLimit)}}
	events, err := s.events(ctx, q)
	if err != nil {
		s.fail(w, r, "reading the audit trail", err)
		return
	}
	for _, e := range events {
		if e.Tool == "" {
			continue
		}
		d := identity.Short(e.Dst)
		if seen[d] == nil {
			seen[d] = map[string]bool{}
		}
		seen[d][e.Tool] = true
	}
	p := servicesPage{Version: itoa(int(pv.Version))}
	var agents []policy.Node
	var svcs []nodeView
	for _, n := range viewNodes(nodes, s.now()) {
		pn, ok := policyNode(n.NodeInfo)
		if !ok || n.Status != "active" {
			continue
		}
		switch {
		case pn.Kind == identity.KindAgent:
			agents = append(agents, pn)
		case pn.Kind.Serves():
			svcs = append(svcs, n)
		}
	}
	p.Agents = len(agents)
	for _, sv := range svcs {
		dst, _ := policyNode(sv.NodeInfo)
		out := service{Node: sv}
		names := map[string]bool{}
		for t := range seen[string(dst.Kind)+":"+string(dst.Name)] {
			names[t] = true
		}
		vis := make([]policy.Visibility, len(agents))
		for i, a := range agents {
			vis[i] = pol.Visible(a, dst)
			for _, t := range vis[i].LiteralTools() {
				names[t] = true
			}
		}
		for t := range names {
			out.Tools = append(out.Tools, t)
		}
		slices.Sort(out.Tools)
		for i, a := range agents {
			row := access{Agent: string(a.Kind) + ":" + string(a.Name), Connect: pol.Links(a, dst), Patterns: vis[i].ToolPatterns()}
			for _, t := range out.Tools {
				// A when that needs arguments fails to evaluate without
				// them: the tool is granted, the call decided when made.
				row.Tools = append(row.Tools, toolAccess{Name: t, Allow: pol.MayCallTool(a, dst, t).Allow})
			}
			out.Rows = append(out.Rows, row)
		}
		p.Services = append(p.Services, out)
	}
	s.render(w, r, 0, "services", "Services", p, "")
}

// policyNode is a registry row as the policy sees it.
func policyNode(n controlapi.NodeInfo) (policy.Node, bool) {
	kind, err := identity.ParseKind(n.Kind)
	if err != nil {
		return policy.Node{}, false
	}
	name, err := identity.ParseName(n.Name)
	if err != nil {
		return policy.Node{}, false
	}
	tags, err := identity.ParseTags(n.Tags)
	if err != nil {
		return policy.Node{}, false
	}
	return policy.Node{Kind: kind, Name: name, Tags: tags}, true
}

type denialsPage struct {
	Since  string
	Total  int64
	Cut    bool
	Groups []count
}

// handleDenials groups the denials of a window (?since=1h) by source and
// reason.
func (s *server) handleDenials(w http.ResponseWriter, r *http.Request) {
	since := r.URL.Query().Get("since")
	if since == "" {
		since = "1h"
	}
	d, err := time.ParseDuration(since)
	if err != nil || d <= 0 || d > 90*24*time.Hour {
		s.render(w, r, http.StatusBadRequest, "error", "Error", nil, "since: want a duration such as 1h or 24h")
		return
	}
	q := url.Values{"decision": {"deny"}, "since": {s.now().Add(-d).UTC().Format(time.RFC3339Nano)}, "limit": {itoa(windowLimit)}}
	events, err := s.events(r.Context(), q)
	if err != nil {
		s.fail(w, r, "reading the audit trail", err)
		return
	}
	p := denialsPage{Since: since, Cut: len(events) == windowLimit, Groups: group(events)}
	for _, e := range events {
		p.Total += e.Attempts()
	}
	s.render(w, r, 0, "denials", "Denials", p, "")
}
