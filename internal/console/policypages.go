package console

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/agentmesh/agentmesh/internal/controlapi"
	"github.com/agentmesh/agentmesh/internal/policy"
	"github.com/agentmesh/agentmesh/internal/textdiff"
)

type policyPage struct {
	Active  controlapi.PolicyVersion
	Shown   controlapi.PolicyVersion // ?version=N, or the active one
	History []controlapi.PolicyVersion
	// Draft is the editor's text: the submitted document, or the shown one.
	Draft string
	// Checked is set after a check or a failed apply: Problems are the
	// compiler's and the tests' errors (none: valid), Warnings the
	// selectors that match no node, Diff the change against the active
	// version.
	Checked  bool
	Problems []string
	Warnings []string
	Summary  string
	Diff     []diffLine
}

type diffLine struct {
	Op   string `json:"op"` // "add", "del", or "" for a note
	Text string `json:"text"`
}

func (s *server) policyState(r *http.Request, version int64) (policyPage, error) {
	var p policyPage
	ctx := r.Context()
	if err := s.admin.Call(ctx, http.MethodGet, controlapi.PathPolicy, nil, &p.Active); err != nil {
		return p, err
	}
	p.Shown = p.Active
	if version > 0 && version != p.Active.Version {
		if err := s.admin.Call(ctx, http.MethodGet, controlapi.PathPolicy+"?version="+strconv.FormatInt(version, 10), nil, &p.Shown); err != nil {
			return p, err
		}
	}
	if err := s.admin.Call(ctx, http.MethodGet, controlapi.PathHistory, nil, &p.History); err != nil {
		return p, err
	}
	slices.SortFunc(p.History, func(a, b controlapi.PolicyVersion) int { return int(b.Version - a.Version) })
	p.Draft = p.Shown.Document
	if p.Shown.Version != p.Active.Version {
		p.Diff = diff(p.Active.Document, p.Shown.Document)
	}
	return p, nil
}

func (s *server) handlePolicy(w http.ResponseWriter, r *http.Request) {
	var version int64
	if v := r.URL.Query().Get("version"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 1 {
			s.render(w, r, http.StatusBadRequest, "error", "Error", nil, "version must be a positive number")
			return
		}
		version = n
	}
	p, err := s.policyState(r, version)
	if err != nil {
		s.fail(w, r, "reading the policy", err)
		return
	}
	s.render(w, r, 0, "policy", "Policy", p, "")
}

// handlePolicySubmit checks the submitted document as 'agentmesh policy
// apply' does before it sends it (compile, and the document's own tests),
// shows the diff against the active version and the selectors that match
// no registered node, and, for "apply" when the document is valid,
// applies it. An invalid document changes nothing.
func (s *server) handlePolicySubmit(w http.ResponseWriter, r *http.Request) {
	doc := strings.ReplaceAll(r.PostForm.Get("document"), "\r\n", "\n")
	apply := r.PostForm.Get("action") == "apply"
	p, err := s.policyState(r, 0)
	if err != nil {
		s.fail(w, r, "reading the policy", err)
		return
	}
	p.Draft, p.Checked = doc, true
	c := s.check(r.Context(), doc, p.Active.Document)
	p.Problems, p.Warnings, p.Summary, p.Diff = c.Problems, c.Warnings, c.Summary, c.Diff
	if !apply || len(p.Problems) > 0 {
		status := 0
		msg := ""
		if len(p.Problems) > 0 {
			status = http.StatusUnprocessableEntity
			if apply {
				msg = "the document is not valid: nothing was applied"
			}
		}
		s.render(w, r, status, "policy", "Policy", p, msg)
		return
	}
	var pv controlapi.PolicyVersion
	if err := s.admin.Call(r.Context(), http.MethodPost, controlapi.PathPolicy, controlapi.PolicyApplyRequest{Document: doc}, &pv); err != nil {
		s.render(w, r, http.StatusBadGateway, "policy", "Policy", p, "the coordinator did not apply it: "+err.Error())
		return
	}
	s.log.Info("console: applied a policy", "version", pv.Version)
	done(w, r, "/policy", fmt.Sprintf("applied policy version %d", pv.Version))
}

// checkResult is what checking a draft found; the live check sends it as
// JSON.
type checkResult struct {
	Valid    bool       `json:"valid"`
	Summary  string     `json:"summary,omitempty"`
	Problems []string   `json:"problems,omitempty"`
	Warnings []string   `json:"warnings,omitempty"`
	Diff     []diffLine `json:"diff,omitempty"`
}

// check compiles doc as 'agentmesh policy apply' does before it sends it
// (the document's own tests run), lists the selectors that match no
// active node, and diffs it against active.
func (s *server) check(ctx context.Context, doc, active string) checkResult {
	c := checkResult{Diff: diff(active, doc)}
	compiled, err := policy.Compile([]byte(doc), "draft")
	if err != nil {
		c.Problems = problems(err)
		return c
	}
	c.Valid, c.Summary = true, compiled.Summary()
	if nodes, err := s.nodes(ctx); err == nil {
		var pn []policy.Node
		for _, n := range nodes {
			if x, ok := policyNode(n); ok && n.Status == "active" {
				pn = append(pn, x)
			}
		}
		for _, u := range compiled.Unmatched(pn) {
			c.Warnings = append(c.Warnings, u.String())
		}
	}
	return c
}

// handleCheck is the editor's live check: the page's script posts the
// draft as the operator types, and shows the answer. Nothing is applied.
func (s *server) handleCheck(w http.ResponseWriter, r *http.Request) {
	doc := strings.ReplaceAll(r.PostForm.Get("document"), "\r\n", "\n")
	var active controlapi.PolicyVersion
	if err := s.admin.Call(r.Context(), http.MethodGet, controlapi.PathPolicy, nil, &active); err != nil {
		s.log.Warn("console: reading the policy", "err", err)
		http.Error(w, "the coordinator did not answer", http.StatusBadGateway)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(s.check(r.Context(), doc, active.Document))
}

func (s *server) handleRollback(w http.ResponseWriter, r *http.Request) {
	v, err := strconv.ParseInt(r.PostForm.Get("version"), 10, 64)
	if err != nil || v < 1 {
		s.render(w, r, http.StatusBadRequest, "error", "Error", nil, "version must be a positive number")
		return
	}
	var pv controlapi.PolicyVersion
	if err := s.admin.Call(r.Context(), http.MethodPost, controlapi.PathRollback, controlapi.RollbackRequest{Version: v}, &pv); err != nil {
		s.fail(w, r, "rolling back", err)
		return
	}
	done(w, r, "/policy", fmt.Sprintf("rolled back: version %d is version %d's policy", pv.Version, v))
}

// problems splits a compile error into its problems (one a line, as the
// compiler joins them).
func problems(err error) []string {
	var out []string
	var joined interface{ Unwrap() []error }
	for e := err; e != nil; {
		if errors.As(e, &joined) {
			for _, x := range joined.Unwrap() {
				out = append(out, x.Error())
			}
			return out
		}
		e = errors.Unwrap(e)
	}
	return []string{err.Error()}
}

// diff is textdiff's line diff as the page shows it.
func diff(from, to string) []diffLine {
	var out []diffLine
	for _, l := range strings.Split(strings.TrimSuffix(textdiff.Lines(from, to), "\n"), "\n") {
		switch {
		case strings.HasPrefix(l, "+"):
			out = append(out, diffLine{Op: "add", Text: l})
		case strings.HasPrefix(l, "-"):
			out = append(out, diffLine{Op: "del", Text: l})
		default:
			out = append(out, diffLine{Text: l})
		}
	}
	return out
}
