package console

import (
	"net/http"
	"net/url"
	"strings"

	"github.com/agentmesh/agentmesh/internal/controlapi"
)

// approvalsPage lists the calls gateways hold for a person's approval
// (README "Approval holds"): the pending ones first, then, with all, the
// ones decided, timed out or withdrawn.
type approvalsPage struct {
	All       bool
	Approvals []controlapi.Approval
}

func (s *server) handleApprovals(w http.ResponseWriter, r *http.Request) {
	p := approvalsPage{All: r.URL.Query().Get("all") == "1"}
	path := controlapi.PathApprovals
	if p.All {
		path += "?all=1"
	}
	if err := s.admin.Call(r.Context(), http.MethodGet, path, nil, &p.Approvals); err != nil {
		s.fail(w, r, "listing approvals", err)
		return
	}
	s.render(w, r, 0, "approvals", "Approvals", p, "")
}

// handleDecide approves or denies one held call as the console's admin
// identity; the coordinator checks that identity is in the grant's
// approval group and audits the decision, as for 'agentmesh approvals'.
func (s *server) handleDecide(w http.ResponseWriter, r *http.Request) {
	id, verb := r.PathValue("id"), r.PathValue("verb")
	if verb != "approve" && verb != "deny" {
		http.NotFound(w, r)
		return
	}
	if id == "" || len(id) > 128 || strings.ContainsAny(id, "/?#") {
		s.render(w, r, http.StatusBadRequest, "error", "Error", nil, "no such approval")
		return
	}
	var req controlapi.ApprovalDecision
	if verb == "deny" {
		req.Reason = strings.TrimSpace(r.PostForm.Get("reason"))
		if len(req.Reason) > controlapi.MaxApprovalNote {
			s.render(w, r, http.StatusBadRequest, "error", "Error", nil, "the reason is too long")
			return
		}
	}
	var a controlapi.Approval
	if err := s.admin.Call(r.Context(), http.MethodPost, controlapi.PathApprovals+"/"+url.PathEscape(id)+"/"+verb, req, &a); err != nil {
		s.fail(w, r, verb+" "+id, err)
		return
	}
	s.log.Info("console: decided a held call", "approval", id, "decision", verb)
	past := "approved"
	if verb == "deny" {
		past = "denied"
	}
	done(w, r, "/approvals", past+" "+a.Tool+" for "+a.Caller+" ("+id+")")
}
