package policy

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
)

// Projection is the part of a policy that one destination node, a gateway,
// needs to enforce it: the grants and limits whose dst selects the node,
// with dst narrowed to the node itself, and the groups their src lists
// name (and the groups those name). It carries no tests and no comments,
// and nothing about any other destination: a gateway learns which sources
// may reach it and what they may do there, not the rest of the mesh's
// rules.
//
// CompileProjection compiles it to a Policy that decides every request to
// that node (Decide, Visible, Limits, Links) exactly as the whole document
// does, with the whole document's grant indices and limit indices and
// keys, so that decisions, audit events and rate-limit counters read the
// same on the gateway as on the coordinator. Requests to other nodes are
// not its business and find no grant.
type Projection struct {
	// Document is a policy document (plain JSON, which is HuJSON).
	Document []byte `json:"document"`
	// Grants holds, for each grant of Document in order, its index in the
	// whole document. Ascending.
	Grants []int `json:"grants"`
	// Limits holds, for each limit of Document in order, its index and key
	// in the whole document.
	Limits []LimitRef `json:"limits"`
}

// LimitRef is a limit's identity in the whole document: Limit.Index and
// Limit.Key.
type LimitRef struct {
	Index int    `json:"index"`
	Key   string `json:"key"`
}

// Project returns the projection of p for the destination dst (its kind,
// name and tags as the registry has them): a tool or model node, the kinds
// that serve and enforce.
func (p *Policy) Project(dst Node) (Projection, error) {
	out := Projection{Grants: []int{}, Limits: []LimitRef{}}
	if p == nil {
		return out, fmt.Errorf("project: %w: no policy", ErrInvalid)
	}
	dk, ok := validNode(&dst)
	if !ok || dst.Name == "" || !dst.Kind.Serves() {
		return out, fmt.Errorf("project: %w: the destination must be a named tool or model node", ErrInvalid)
	}
	// Read only below: the decoded document is shared by every
	// projection of p.
	raw, errs := p.decoded()
	if len(errs) > 0 || len(raw.grants) != len(p.grants) || len(raw.limits) != len(p.limits) {
		return out, fmt.Errorf("project: %w: the document no longer decodes as it compiled", ErrInvalid)
	}
	self := []string{string(dst.Kind) + ":" + string(dst.Name)}

	// Every grant that links some source to dst, through any of dst's keys.
	selected := map[int32]bool{}
	for i := 0; ; i++ {
		key, ok := keyAt(&dst, dk, i)
		if !ok {
			break
		}
		for _, gs := range p.index[key] {
			for _, gi := range gs {
				selected[gi] = true
			}
		}
	}
	doc := projectedDoc{Groups: map[string][]string{}, Grants: []projectedGrant{}, Limits: []projectedLimit{}}
	needGroups := func(l strList) []string {
		s := strs(l)
		for _, sel := range s {
			if strings.HasPrefix(sel, "group:") {
				addGroup(raw, sel, doc.Groups)
			}
		}
		return s
	}
	for i := range raw.grants {
		if !selected[int32(i)] {
			continue
		}
		rg := &raw.grants[i]
		g := projectedGrant{Src: needGroups(rg.src), Dst: self}
		lists := [numItemKinds]*[]string{&g.Tools, &g.Resources, &g.Prompts, &g.Models, &g.Paths}
		for k, l := range rg.lists {
			if l != nil {
				*lists[k] = strs(*l)
			}
		}
		if rg.when != nil {
			g.When = &rg.when.s
		}
		if rg.approval != nil {
			g.Approval = &rg.approval.s
			addGroup(raw, rg.approval.s, doc.Groups)
		}
		if rg.approvalTimeout != nil {
			g.ApprovalTimeout = &rg.approvalTimeout.s
		}
		if rg.obo != nil {
			g.OnBehalfOf = needGroups(*rg.obo)
		}
		doc.Grants = append(doc.Grants, g)
		out.Grants = append(out.Grants, i)
	}
	for i := range p.limits {
		l := &p.limits[i]
		if !matchNode(l.dst, &dst, dk) {
			continue
		}
		rl := &raw.limits[i]
		pl := projectedLimit{Src: needGroups(rl.src), Dst: self}
		if rl.models != nil {
			pl.Models = strs(*rl.models)
		}
		if rl.hasRPM {
			pl.RPM = &rl.rpm
		}
		if rl.hasT {
			pl.TokensPerDay = &rl.tokens
		}
		doc.Limits = append(doc.Limits, pl)
		out.Limits = append(out.Limits, LimitRef{Index: l.index, Key: l.key})
	}
	if len(doc.Grants) > 0 {
		doc.Annotations = projectAnnotations(raw, self[0])
	}
	doc.ToolPins = p.projectPins(dst)
	doc.AuditArgs = projectAuditArgs(raw.auditArgs)
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(doc); err != nil {
		return out, fmt.Errorf("project: %w", err)
	}
	out.Document = b.Bytes()
	return out, nil
}

// CompileProjection compiles a projection made by Project. The result
// reports the whole document's grant indices, and limit indices and keys.
// A projection whose numbering does not fit its document is an error: the
// node would otherwise enforce rules it cannot account for.
func CompileProjection(pr Projection, version string) (*Policy, error) {
	p, err := Compile(pr.Document, version)
	if err != nil {
		return nil, err
	}
	if len(pr.Grants) != len(p.grants) || len(pr.Limits) != len(p.limits) {
		return nil, fmt.Errorf("compile projection: %w: %d grant and %d limit numbers for %d grants and %d limits",
			ErrInvalid, len(pr.Grants), len(pr.Limits), len(p.grants), len(p.limits))
	}
	for i, n := range pr.Grants {
		if n < 0 || i > 0 && n <= pr.Grants[i-1] {
			return nil, fmt.Errorf("compile projection: %w: grant numbers must ascend from 0", ErrInvalid)
		}
	}
	for i, ref := range pr.Limits {
		if ref.Index < 0 || ref.Key == "" {
			return nil, fmt.Errorf("compile projection: %w: limit %d has no index or key", ErrInvalid, i)
		}
		p.limits[i].index, p.limits[i].key = ref.Index, ref.Key
	}
	p.grantNumbers = slices.Clone(pr.Grants)
	return p, nil
}

// projectedDoc is a projection's document; its fields are the policy
// language's, so it compiles like any other document.
type projectedDoc struct {
	Groups map[string][]string `json:"groups"`
	Grants []projectedGrant    `json:"grants"`
	Limits []projectedLimit    `json:"limits"`
	// Annotations holds the destination's own trusted tool classes.
	Annotations map[string]map[string][]string `json:"annotations,omitempty"`
	// ToolPins is the destination's own tool_pins entry (pins.go).
	ToolPins map[string]projectedPins `json:"tool_pins,omitempty"`
	// AuditArgs is the audit_args section, as written (auditargs.go).
	AuditArgs *projectedAuditArgs `json:"audit_args,omitempty"`
}

type projectedGrant struct {
	Src       []string `json:"src"`
	Dst       []string `json:"dst"`
	Tools     []string `json:"tools,omitempty"`
	Resources []string `json:"resources,omitempty"`
	Prompts   []string `json:"prompts,omitempty"`
	Models    []string `json:"models,omitempty"`
	Paths     []string `json:"paths,omitempty"`
	When      *string  `json:"when,omitempty"`
	Approval  *string  `json:"approval,omitempty"`
	// ApprovalTimeout is as written.
	ApprovalTimeout *string `json:"approval_timeout,omitempty"`
	// OnBehalfOf is as written (delegation.go); nil when absent.
	OnBehalfOf []string `json:"on_behalf_of,omitempty"`
}

type projectedLimit struct {
	Src          []string `json:"src"`
	Dst          []string `json:"dst"`
	Models       []string `json:"models,omitempty"`
	RPM          *int64   `json:"rpm,omitempty"`
	TokensPerDay *int64   `json:"tokens_per_day,omitempty"`
}

// addGroup copies the group named name, and every group it names, from raw
// into groups.
func addGroup(raw *rawDoc, name string, groups map[string][]string) {
	if _, done := groups[name]; done {
		return
	}
	for i := range raw.groups {
		if raw.groups[i].name.s != name {
			continue
		}
		members := strs(raw.groups[i].members)
		groups[name] = members
		for _, m := range members {
			if strings.HasPrefix(m, "group:") {
				addGroup(raw, m, groups)
			}
		}
		return
	}
}

func strs(l strList) []string {
	out := make([]string, len(l.items))
	for i, s := range l.items {
		out[i] = s.s
	}
	return out
}

// projectAnnotations returns the "annotations" entry of the server named
// self ("tool:NAME"), or nil when the document has none.
func projectAnnotations(raw *rawDoc, self string) map[string]map[string][]string {
	for _, a := range raw.annotations {
		if a.server.s != self {
			continue
		}
		classes := map[string][]string{}
		if a.readonly != nil {
			classes[ClassReadOnly] = strs(*a.readonly)
		}
		if a.destructive != nil {
			classes[ClassDestructive] = strs(*a.destructive)
		}
		return map[string]map[string][]string{self: classes}
	}
	return nil
}
