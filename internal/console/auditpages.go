package console

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/tailscale/hujson"

	"github.com/agentmesh/agentmesh/internal/audit"
	"github.com/agentmesh/agentmesh/internal/controlapi"
	"github.com/agentmesh/agentmesh/internal/identity"
	"github.com/agentmesh/agentmesh/internal/policy"
	"github.com/agentmesh/agentmesh/internal/reason"
)

func itoa(n int) string { return strconv.Itoa(n) }

// events queries the coordinator's audit trail with q (the admin API's
// parameters).
func (s *server) events(ctx context.Context, q url.Values) ([]audit.Event, error) {
	body, err := s.admin.Stream(ctx, controlapi.PathAudit+"?"+q.Encode())
	if err != nil {
		return nil, err
	}
	defer body.Close()
	var out []audit.Event
	sc := bufio.NewScanner(body)
	sc.Buffer(make([]byte, 0, 64<<10), 4<<20)
	for sc.Scan() {
		var e audit.Event
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			return nil, fmt.Errorf("bad event from the coordinator: %w", err)
		}
		out = append(out, e)
	}
	return out, sc.Err()
}

// auditFilter is the live audit's filter: the audit query's own
// parameters, checked as 'agentmesh audit' checks them.
type auditFilter struct {
	Kind, Decision, Src string
}

func readFilter(q url.Values) (auditFilter, error) {
	f := auditFilter{Kind: q.Get("kind"), Decision: q.Get("decision"), Src: strings.TrimSpace(q.Get("src"))}
	if f.Kind != "" {
		if _, err := audit.ParseKind(f.Kind); err != nil {
			return f, err
		}
	}
	if f.Decision != "" && f.Decision != string(audit.Allow) && f.Decision != string(audit.Deny) {
		return f, fmt.Errorf("decision must be allow or deny")
	}
	if err := audit.CheckSelector(f.Src); err != nil {
		return f, fmt.Errorf("source: %w", err)
	}
	return f, nil
}

func (f auditFilter) values() url.Values {
	q := url.Values{}
	for k, v := range map[string]string{"kind": f.Kind, "decision": f.Decision, "src": f.Src} {
		if v != "" {
			q.Set(k, v)
		}
	}
	return q
}

// Query is the filter as the follow endpoint's query string.
func (f auditFilter) Query() string { return f.values().Encode() }

type auditPage struct {
	Filter auditFilter
	Events []eventRow
	After  int64
	Kinds  []string
}

// eventRow is an event as the live audit's table shows it; the follow
// endpoint sends the same as JSON.
type eventRow struct {
	Seq      int64  `json:"seq"`
	Time     string `json:"time"`
	Kind     string `json:"kind"`
	Src      string `json:"src"`
	Dst      string `json:"dst"`
	What     string `json:"what"`
	Decision string `json:"decision"`
	Reason   string `json:"reason"`
	Count    int64  `json:"count"`
}

func row(e audit.Event) eventRow {
	return eventRow{Seq: e.Seq, Time: e.Time.Local().Format("15:04:05.000"), Kind: string(e.Kind), Src: identity.Short(e.Src),
		Dst: identity.Short(e.Dst), What: what(e), Decision: string(e.Decision), Reason: string(e.Reason), Count: e.Attempts()}
}

// auditPageSize is how many events the live audit shows at first.
const auditPageSize = 100

func (s *server) handleAudit(w http.ResponseWriter, r *http.Request) {
	f, err := readFilter(r.URL.Query())
	if err != nil {
		s.render(w, r, http.StatusBadRequest, "error", "Error", nil, err.Error())
		return
	}
	q := f.values()
	q.Set("limit", itoa(auditPageSize))
	events, err := s.events(r.Context(), q)
	if err != nil {
		s.fail(w, r, "reading the audit trail", err)
		return
	}
	p := auditPage{Filter: f, Kinds: kinds}
	for _, e := range events { // newest first
		p.Events = append(p.Events, row(e))
		p.After = max(p.After, e.Seq)
	}
	s.render(w, r, 0, "audit", "Live audit", p, "")
}

var kinds = []string{string(audit.KindConnection), string(audit.KindRequest), string(audit.KindAdmin), string(audit.KindSession), string(audit.KindIntegrity)}

// followBatch bounds the events one poll of the follow endpoint reads.
const followBatch = 500

// handleFollow streams the events after ?after=SEQ (or the EventSource's
// Last-Event-ID) that match the filter, as server-sent events, polling
// the coordinator as 'agentmesh audit --follow' does, until the browser
// goes away or the console stops.
func (s *server) handleFollow(w http.ResponseWriter, r *http.Request) {
	f, err := readFilter(r.URL.Query())
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	after, _ := strconv.ParseInt(r.URL.Query().Get("after"), 10, 64)
	if id, err := strconv.ParseInt(r.Header.Get("Last-Event-ID"), 10, 64); err == nil {
		after = id
	}
	flusher, ok := w.(http.Flusher)
	if !ok {
		http.Error(w, "streaming unsupported", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/event-stream")
	w.WriteHeader(http.StatusOK)
	fmt.Fprint(w, "retry: 2000\n\n")
	flusher.Flush()
	ctx := r.Context()
	q := f.values()
	q.Set("order", "asc")
	q.Set("limit", itoa(followBatch))
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		q.Set("after", strconv.FormatInt(max(after, 0), 10))
		events, err := s.events(ctx, q)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			s.log.Warn("console: following the audit trail", "err", err)
			fmt.Fprintf(w, "event: trouble\ndata: %s\n\n", jsonString("the coordinator did not answer; retrying"))
		}
		for _, e := range events {
			b, _ := json.Marshal(row(e))
			fmt.Fprintf(w, "id: %d\nevent: audit\ndata: %s\n\n", e.Seq, b)
			after = max(after, e.Seq)
		}
		flusher.Flush()
		next := s.followEvery
		if len(events) == followBatch {
			next = 0 // more are waiting
		}
		t.Reset(next)
	}
}

func jsonString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

type eventPage struct {
	Event   audit.Event
	Raw     string
	Why     string
	Rule    string // the rule's source text, from the policy version
	RuleRef string // "grants[3]"
	Policy  string // the version the decision was made under
}

// handleEvent shows one event and why it was decided so: the reason, and
// the grant (or limit) that decided, as written in the policy version the
// decision was made under.
func (s *server) handleEvent(w http.ResponseWriter, r *http.Request) {
	seq, err := strconv.ParseInt(r.PathValue("seq"), 10, 64)
	if err != nil || seq < 1 {
		s.render(w, r, http.StatusBadRequest, "error", "Error", nil, "no such event")
		return
	}
	events, err := s.events(r.Context(), url.Values{"after": {strconv.FormatInt(seq-1, 10)}, "order": {"asc"}, "limit": {"1"}})
	if err != nil {
		s.fail(w, r, "reading the audit trail", err)
		return
	}
	if len(events) == 0 || events[0].Seq != seq {
		s.render(w, r, http.StatusNotFound, "error", "Error", nil, fmt.Sprintf("no event %d", seq))
		return
	}
	e := events[0]
	raw, _ := json.MarshalIndent(e, "", "  ")
	p := eventPage{Event: e, Raw: string(raw), Policy: e.PolicyVersion, Why: explain(e)}
	p.RuleRef = ruleRef(e.Rule)
	if p.RuleRef != "" && e.PolicyVersion != "" {
		var pv controlapi.PolicyVersion
		if err := s.admin.Call(r.Context(), http.MethodGet, controlapi.PathPolicy+"?version="+url.QueryEscape(e.PolicyVersion), nil, &pv); err == nil {
			p.Rule = ruleText(pv.Document, p.RuleRef)
		}
	}
	s.render(w, r, 0, "event", fmt.Sprintf("Event %d", seq), p, "")
}

// explain says in words why the event was decided so.
func explain(e audit.Event) string {
	if e.Reason == "" {
		return "no decision is recorded with this event"
	}
	if !policyReasons[e.Reason] {
		return string(e.Reason) + ": decided before or outside the policy (see the reason codes in the README)"
	}
	g := -1
	if n, err := strconv.Atoi(e.Rule); err == nil {
		g = n
	}
	d := policy.Decision{Allow: e.Decision == audit.Allow, Reason: e.Reason, Grant: g, Version: e.PolicyVersion}
	return d.Explain()
}

// policyReasons are the codes a policy decision gives (policy.Decision);
// Explain describes them.
var policyReasons = map[reason.Code]bool{
	reason.Allowed: true, reason.NoPolicy: true, reason.NoGrant: true, reason.NotGranted: true,
	reason.WhenFalse: true, reason.WhenError: true, reason.BadRequest: true, reason.UnsafeURI: true,
	reason.NonCanonicalURI: true, reason.CaseVariantKey: true,
}

// ruleRef turns an event's Rule ("3", "limits[1]") into a reference into
// the policy document ("grants[3]", "limits[1]"), or "" for none.
func ruleRef(rule string) string {
	if n, err := strconv.Atoi(rule); err == nil && n >= 0 {
		return "grants[" + rule + "]"
	}
	if inner, ok := strings.CutPrefix(rule, "limits["); ok {
		if n, err := strconv.Atoi(strings.TrimSuffix(inner, "]")); err == nil && n >= 0 && strings.HasSuffix(inner, "]") {
			return rule
		}
	}
	return ""
}

// ruleText is the source of ref ("grants[3]") in doc, comments before it
// included, or "" when the document has no such entry.
func ruleText(doc, ref string) string {
	list, idx, _ := strings.Cut(strings.TrimSuffix(ref, "]"), "[")
	v, err := hujson.Parse([]byte(doc))
	if err != nil {
		return ""
	}
	el := v.Find("/" + list + "/" + idx)
	if el == nil {
		return ""
	}
	return strings.TrimSpace(string(el.BeforeExtra)) + "\n" + doc[el.StartOffset:el.EndOffset]
}

type verifyPage struct {
	Report audit.Report
	Lines  []string
}

// handleVerify runs the coordinator's audit verification (it signs a
// checkpoint first, so it is a POST).
func (s *server) handleVerify(w http.ResponseWriter, r *http.Request) {
	var rep audit.Report
	if err := s.admin.Call(r.Context(), http.MethodGet, controlapi.PathVerify, nil, &rep); err != nil {
		s.fail(w, r, "verifying the audit trail", err)
		return
	}
	s.render(w, r, 0, "verify", "Audit verification", verifyPage{Report: rep, Lines: rep.Lines()}, "")
}
