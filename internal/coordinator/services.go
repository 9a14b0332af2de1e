package coordinator

import (
	"cmp"
	"context"
	"fmt"
	"net/http"
	"slices"
	"time"

	"github.com/agentmesh/agentmesh/internal/audit"
	"github.com/agentmesh/agentmesh/internal/controlapi"
	"github.com/agentmesh/agentmesh/internal/identity"
	"github.com/agentmesh/agentmesh/internal/netmap"
	"github.com/agentmesh/agentmesh/internal/reason"
)

// The service catalog (GET /v1/services, 'agentmesh services'): every
// tool and model service, from the registry; its tools, from the gateways'
// reports (tools.go) with their pin status; and what one identity may use,
// from the current policy. An admin sees the whole catalog and may ask for
// any active node's view (?as=agent:NAME). Any other node sees only its own
// view, and only what its netmap and its lists already show it: the
// services it may connect to and the tools it may call there; it learns
// nothing about services, tools or pins beyond its grants.

func (c *Coordinator) handleServices(w http.ResponseWriter, r *http.Request, who caller) {
	ctx := r.Context()
	q := r.URL.Query()
	admin := who.id.Kind == identity.KindAdmin
	var only struct {
		kind identity.Kind
		name identity.Name
	}
	if s := q.Get("service"); s != "" {
		k, n, err := identity.ParseSelector(s)
		if err != nil || !k.Serves() {
			writeError(w, http.StatusBadRequest, reason.BadRequest, fmt.Sprintf("service %q: want tool:NAME or model:NAME", s))
			return
		}
		only.kind, only.name = k, n
	}
	rows, err := c.reg.nodes(ctx, time.Time{})
	if err != nil {
		c.internalError(w, r, "services: nodes", err)
		return
	}
	var as *netmap.Node
	switch s := q.Get("as"); {
	case !admin:
		if s != "" && s != who.id.Selector() {
			// As the admin API refuses a non-admin: audited.
			ev := c.event(audit.KindConnection, who.actor(), "coordinator")
			ev.SrcAddr, ev.Method = r.RemoteAddr, r.Method+" "+r.URL.Path
			ev.Decision, ev.Reason, ev.Outcome = audit.Deny, reason.NotAdmin, audit.OutcomeRefused
			c.refuse(ctx, ev)
			writeError(w, http.StatusForbidden, reason.NotAdmin, "only an admin may see another node's view of the services")
			return
		}
		me := who.node.Node
		as = &me
	case s != "":
		k, n, err := identity.ParseSelector(s)
		if err != nil {
			writeError(w, http.StatusBadRequest, reason.BadRequest, "as: "+err.Error())
			return
		}
		for i := range rows {
			if rows[i].Kind == k && rows[i].Name == n && rows[i].Status == netmap.StatusActive {
				as = &rows[i].Node
			}
		}
		if as == nil {
			writeError(w, http.StatusNotFound, reason.NotFound, fmt.Sprintf("no active node %s: see agentmesh nodes list", s))
			return
		}
	}
	seen, err := c.reg.currentTools(ctx, string(only.name))
	if err != nil {
		c.internalError(w, r, "services: tools", err)
		return
	}
	c.mu.Lock()
	pol, version := c.pol, c.current.Policy.Version
	c.mu.Unlock()

	out := controlapi.Catalog{PolicyVersion: version, Services: []controlapi.CatalogService{}}
	if as != nil {
		out.As = string(as.Kind) + ":" + string(as.Name)
	}
	now := c.now()
	for _, n := range rows {
		if !n.Kind.Serves() || n.Status != netmap.StatusActive || (only.kind != "" && (n.Kind != only.kind || n.Name != only.name)) {
			continue
		}
		dst := n.PolicyNode()
		id, _ := identity.New(c.td, n.Kind, n.Name)
		svc := controlapi.CatalogService{Service: id.Selector(), ID: id.String(), Tags: identity.TagStrings(n.Tags),
			Addrs: n.Addrs, Status: "not serving", LastSeen: n.LastSeen, Tools: []controlapi.CatalogTool{}}
		if svc.Addrs == nil {
			svc.Addrs = []string{}
		}
		if c.serving(n.Node, now) {
			svc.Status = "serving"
		}
		if as != nil {
			src := as.PolicyNode()
			svc.Access = &controlapi.ServiceAccess{Connect: pol.Links(src, dst), ToolPatterns: pol.Visible(src, dst).ToolPatterns()}
			if svc.Access.ToolPatterns == nil {
				svc.Access.ToolPatterns = []string{}
			}
			if !admin && !svc.Access.Connect {
				continue
			}
		}
		if n.Kind == identity.KindTool {
			svc.PinMode = pol.ToolPins(n.Name).Mode
		}
		for _, t := range seen {
			if n.Kind != identity.KindTool || t.service != string(n.Name) {
				continue
			}
			pin := pol.CheckPin(n.Name, t.name, t.hash) // as 'agentmesh tools list' shows it
			ct := controlapi.CatalogTool{Name: t.name, Hash: t.hash, Pinned: pin.Pinned, PinStatus: string(pin.Status)}
			if as != nil {
				a := pol.MayCallTool(as.PolicyNode(), dst, t.name)
				ct.Access = &controlapi.ToolAccess{Allowed: a.Allow, Reason: string(a.Reason), Conditional: a.Conditional, Approval: a.Approval}
				if a.Allow && !pin.Status.Allows() {
					// The gateway hides and refuses it, whatever the grants.
					*ct.Access = controlapi.ToolAccess{Reason: string(reason.ToolChanged)}
				}
				if !admin && !ct.Access.Allowed {
					continue
				}
			}
			svc.Tools = append(svc.Tools, ct)
		}
		slices.SortFunc(svc.Tools, func(a, b controlapi.CatalogTool) int { return cmp.Compare(a.Name, b.Name) })
		out.Services = append(out.Services, svc)
	}
	slices.SortFunc(out.Services, func(a, b controlapi.CatalogService) int { return cmp.Compare(a.Service, b.Service) })
	writeJSON(w, http.StatusOK, out)
}

// reportedTool is a tool a gateway reports now, without its definition.
type reportedTool struct{ service, name, hash string }

// currentTools lists the tools the gateways report now, of one service
// or ("") all: names and hashes only, so that a node asking for its view
// does not make the coordinator read every definition on record.
func (r *registry) currentTools(ctx context.Context, service string) ([]reportedTool, error) {
	rows, err := r.db.QueryContext(ctx, `SELECT service, tool, hash FROM tool_definitions
		WHERE current = 1 AND ($1 = '' OR service = $1)`, service)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []reportedTool
	for rows.Next() {
		var t reportedTool
		if err := rows.Scan(&t.service, &t.name, &t.hash); err != nil {
			return nil, err
		}
		out = append(out, t)
	}
	return out, rows.Err()
}
