package console

import (
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
)

// TestApprovalsPageDecidesAsTheAdmin: the approvals page lists a pending
// hold with approve and deny forms; a POST with the session's CSRF token
// reaches the coordinator's approve or deny, and one without it does not.
func TestApprovalsPageDecidesAsTheAdmin(t *testing.T) {
	s, h, fa := testConsole(t)
	c := login(t, s, h)
	w := do(h, get("/approvals", c))
	if w.Code != http.StatusOK || !strings.Contains(w.Body.String(), "transfer") ||
		!strings.Contains(w.Body.String(), `action="/approvals/ap1/approve"`) || !strings.Contains(w.Body.String(), `action="/approvals/ap1/deny"`) {
		t.Fatalf("approvals page: %d\n%s", w.Code, w.Body)
	}
	tok := csrfOf(t, h, c)
	if w := do(h, post("/approvals/ap1/approve", url.Values{}, c)); w.Code != http.StatusForbidden {
		t.Fatalf("approve without the CSRF token: %d, want 403", w.Code)
	}
	if w := do(h, post("/approvals/ap1/approve", url.Values{csrfField: {tok}}, c)); w.Code != http.StatusSeeOther {
		t.Fatalf("approve: %d %s, want a redirect", w.Code, w.Body)
	}
	if w := do(h, post("/approvals/ap1/deny", url.Values{csrfField: {tok}, "reason": {"not now"}}, c)); w.Code != http.StatusSeeOther {
		t.Fatalf("deny: %d %s, want a redirect", w.Code, w.Body)
	}
	if w := do(h, post("/approvals/ap1/delete", url.Values{csrfField: {tok}}, c)); w.Code != http.StatusNotFound {
		t.Fatalf("an unknown verb: %d, want 404", w.Code)
	}
	want := []string{"POST /v1/approvals/ap1/approve", "POST /v1/approvals/ap1/deny"}
	if got := fa.posted(); !slices.Equal(got, want) {
		t.Fatalf("calls to the coordinator: %q, want %q", got, want)
	}
}
