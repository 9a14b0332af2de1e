package console

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/agentmesh/agentmesh/internal/controlapi"
)

// fakeAdmin answers the admin API calls the console makes from memory
// and records the state-changing ones.
type fakeAdmin struct {
	mu    sync.Mutex
	calls []string // "POST /v1/nodes/x/revoke"
}

func (f *fakeAdmin) Call(_ context.Context, method, path string, in, out any) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if method != http.MethodGet {
		f.calls = append(f.calls, method+" "+path)
	}
	var v any
	switch {
	case path == controlapi.PathNodes:
		v = []controlapi.NodeInfo{{Name: "teller", Kind: "agent", ID: "spiffe://t/agent/teller", Status: "active", Tags: []string{}}}
	case strings.HasPrefix(path, controlapi.PathHistory):
		v = []controlapi.PolicyVersion{}
	case strings.HasPrefix(path, controlapi.PathPolicy):
		v = controlapi.PolicyVersion{}
	case path == controlapi.PathApprovals:
		v = []controlapi.Approval{{ID: "ap1", Status: controlapi.ApprovalPending, Gateway: "spiffe://t/tool/ledger",
			ApprovalRequest: controlapi.ApprovalRequest{Caller: "spiffe://t/agent/teller", Tool: "transfer", Group: "group:oncall"}}}
	case strings.HasPrefix(path, controlapi.PathApprovals+"/"):
		v = controlapi.Approval{ID: "ap1", ApprovalRequest: controlapi.ApprovalRequest{Caller: "spiffe://t/agent/teller", Tool: "transfer"}}
	default:
		return nil
	}
	if out == nil {
		return nil
	}
	b, _ := json.Marshal(v)
	return json.Unmarshal(b, out)
}

func (f *fakeAdmin) Stream(context.Context, string) (io.ReadCloser, error) {
	return io.NopCloser(strings.NewReader("")), nil
}

func (f *fakeAdmin) Certificate() *tls.Certificate { return nil }

func (f *fakeAdmin) posted() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.calls...)
}

// testConsole is a console's handler as served on 127.0.0.1:7900, with a
// fake admin API.
func testConsole(t *testing.T) (*server, http.Handler, *fakeAdmin) {
	t.Helper()
	fa := &fakeAdmin{}
	s, err := newServer(Config{Admin: fa}, &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 7900})
	if err != nil {
		t.Fatal(err)
	}
	return s, s.handler(), fa
}

const host = "127.0.0.1:7900"

func do(h http.Handler, r *http.Request) *httptest.ResponseRecorder {
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}

func get(path string, cookies ...*http.Cookie) *http.Request {
	r := httptest.NewRequest(http.MethodGet, "http://"+host+path, nil)
	for _, c := range cookies {
		r.AddCookie(c)
	}
	return r
}

func post(path string, form url.Values, cookies ...*http.Cookie) *http.Request {
	r := httptest.NewRequest(http.MethodPost, "http://"+host+path, strings.NewReader(form.Encode()))
	r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	r.Header.Set("Origin", "http://"+host)
	r.Header.Set("Sec-Fetch-Site", "same-origin")
	for _, c := range cookies {
		r.AddCookie(c)
	}
	return r
}

// login opens the login URL and returns the session cookie.
func login(t *testing.T, s *server, h http.Handler) *http.Cookie {
	t.Helper()
	w := do(h, get(pathLogin+"?token="+s.loginToken))
	if w.Code != http.StatusSeeOther || w.Header().Get("Location") != "/" {
		t.Fatalf("login: %d %q, want a redirect to /", w.Code, w.Header().Get("Location"))
	}
	for _, c := range w.Result().Cookies() {
		if c.Name == cookieName {
			if !c.HttpOnly || c.SameSite != http.SameSiteStrictMode || c.Path != "/" {
				t.Errorf("session cookie %+v: want HttpOnly, SameSite=Strict, Path=/", c)
			}
			return c
		}
	}
	t.Fatal("login set no session cookie")
	return nil
}

var csrfRE = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

// csrfOf reads the CSRF token from the nodes page, as a form carries it.
func csrfOf(t *testing.T, h http.Handler, c *http.Cookie) string {
	t.Helper()
	w := do(h, get("/nodes", c))
	m := csrfRE.FindStringSubmatch(w.Body.String())
	if w.Code != http.StatusOK || m == nil {
		t.Fatalf("nodes page: %d, no CSRF field:\n%s", w.Code, w.Body)
	}
	return m[1]
}

func TestConsoleRefusesPagesWithoutASession(t *testing.T) {
	_, h, _ := testConsole(t)
	for _, p := range []string{"/", "/nodes", "/services", "/policy", "/audit", "/audit/follow", "/audit/events/1", "/denials", "/approvals", "/nodes/teller/revoke"} {
		if w := do(h, get(p)); w.Code != http.StatusUnauthorized {
			t.Errorf("GET %s without a session: %d, want 401", p, w.Code)
		}
		if w := do(h, get(p, &http.Cookie{Name: cookieName, Value: "guessed"})); w.Code != http.StatusUnauthorized {
			t.Errorf("GET %s with a wrong session cookie: %d, want 401", p, w.Code)
		}
	}
}

func TestConsoleLoginTokenWorksOnceAndOnlyWhenRight(t *testing.T) {
	s, h, _ := testConsole(t)
	if w := do(h, get(pathLogin+"?token=wrong")); w.Code != http.StatusUnauthorized {
		t.Errorf("login with a wrong token: %d, want 401", w.Code)
	}
	head := get(pathLogin + "?token=" + s.loginToken)
	head.Method = http.MethodHead
	if w := do(h, head); w.Code != http.StatusMethodNotAllowed {
		t.Errorf("HEAD of the login URL: %d, want 405 (and the token kept)", w.Code)
	}
	c := login(t, s, h)
	if w := do(h, get("/", c)); w.Code != http.StatusOK {
		t.Errorf("overview with the session: %d, want 200: %s", w.Code, w.Body)
	}
	if w := do(h, get(pathLogin+"?token="+s.loginToken)); w.Code != http.StatusUnauthorized {
		t.Errorf("second use of the login URL: %d, want 401", w.Code)
	}
}

func TestConsoleSessionExpires(t *testing.T) {
	s, h, _ := testConsole(t)
	now := time.Now()
	s.auth.now = func() time.Time { return now }
	c := login(t, s, h)
	now = now.Add(sessionLifetime)
	if w := do(h, get("/", c)); w.Code != http.StatusUnauthorized {
		t.Errorf("overview with an expired session: %d, want 401", w.Code)
	}
}

func TestConsoleRefusesForeignHostAndOrigin(t *testing.T) {
	s, h, _ := testConsole(t)
	c := login(t, s, h)
	for _, hostHeader := range []string{"evil.example:7900", "127.0.0.1:7901", "attacker.localhost.evil:7900"} {
		r := get("/", c)
		r.Host = hostHeader
		if w := do(h, r); w.Code != http.StatusForbidden {
			t.Errorf("Host %s: %d, want 403", hostHeader, w.Code)
		}
	}
	r := get("/", c)
	r.Header.Set("Origin", "https://evil.example")
	if w := do(h, r); w.Code != http.StatusForbidden {
		t.Errorf("foreign Origin: %d, want 403", w.Code)
	}
	// Another local port is the same site to a browser, which sends it
	// the cookie: it may not read a page or the audit stream.
	for _, hdr := range []map[string]string{
		{"Origin": "http://127.0.0.1:8888"},
		{"Sec-Fetch-Site": "same-site"},
		{"Sec-Fetch-Site": "cross-site"},
	} {
		r := get("/audit/follow", c)
		for k, v := range hdr {
			r.Header.Set(k, v)
		}
		if w := do(h, r); w.Code != http.StatusForbidden {
			t.Errorf("GET /audit/follow with %v: %d, want 403", hdr, w.Code)
		}
	}
	// The operator's own navigation: typed (none) or from a console page.
	for _, site := range []string{"none", "same-origin"} {
		r := get("/nodes", c)
		r.Header.Set("Sec-Fetch-Site", site)
		if w := do(h, r); w.Code != http.StatusOK {
			t.Errorf("GET /nodes with Sec-Fetch-Site %s: %d, want 200", site, w.Code)
		}
	}
	// The login URL is guarded too: a rebinding page cannot log in.
	r = get(pathLogin + "?token=" + s.loginToken)
	r.Host = "evil.example:7900"
	if w := do(h, r); w.Code != http.StatusForbidden {
		t.Errorf("login through a foreign Host: %d, want 403", w.Code)
	}
}

func TestConsoleRefusesStateChangesWithoutTheCSRFToken(t *testing.T) {
	s, h, fa := testConsole(t)
	c := login(t, s, h)
	tok := csrfOf(t, h, c)
	form := func(csrf string) url.Values {
		return url.Values{"csrf": {csrf}, "confirm": {"teller"}}
	}
	if w := do(h, post("/nodes/teller/revoke", form(""), c)); w.Code != http.StatusForbidden {
		t.Errorf("revoke without a CSRF token: %d, want 403", w.Code)
	}
	if w := do(h, post("/nodes/teller/revoke", form(tok+"x"), c)); w.Code != http.StatusForbidden {
		t.Errorf("revoke with a wrong CSRF token: %d, want 403", w.Code)
	}
	// The right token from another origin, or another local port.
	for _, origin := range []string{"https://evil.example", "http://127.0.0.1:8888"} {
		r := post("/nodes/teller/revoke", form(tok), c)
		r.Header.Set("Origin", origin)
		if w := do(h, r); w.Code != http.StatusForbidden {
			t.Errorf("revoke from Origin %s: %d, want 403", origin, w.Code)
		}
	}
	r := post("/nodes/teller/revoke", form(tok), c)
	r.Header.Set("Sec-Fetch-Site", "cross-site")
	if w := do(h, r); w.Code != http.StatusForbidden {
		t.Errorf("revoke with Sec-Fetch-Site cross-site: %d, want 403", w.Code)
	}
	// Without the session, the token alone does nothing.
	if w := do(h, post("/nodes/teller/revoke", form(tok))); w.Code != http.StatusUnauthorized {
		t.Errorf("revoke without a session: %d, want 401", w.Code)
	}
	if got := fa.posted(); len(got) != 0 {
		t.Fatalf("refused requests reached the admin API: %q", got)
	}
	w := do(h, post("/nodes/teller/revoke", form(tok), c))
	if w.Code != http.StatusSeeOther {
		t.Fatalf("revoke with session and token: %d, want 303: %s", w.Code, w.Body)
	}
	if got := fa.posted(); len(got) != 1 || got[0] != "POST /v1/nodes/teller/revoke" {
		t.Errorf("admin API calls = %q, want the one revoke", got)
	}
}

func TestConsoleRevokeNeedsTheNameTypedToConfirm(t *testing.T) {
	s, h, fa := testConsole(t)
	c := login(t, s, h)
	tok := csrfOf(t, h, c)
	if w := do(h, post("/nodes/teller/revoke", url.Values{"csrf": {tok}, "confirm": {"other"}}, c)); w.Code != http.StatusBadRequest {
		t.Errorf("revoke with the wrong confirmation: %d, want 400", w.Code)
	}
	if got := fa.posted(); len(got) != 0 {
		t.Errorf("admin API calls = %q, want none", got)
	}
}

func TestConsolePagesCarrySecurityHeadersAndNoSecrets(t *testing.T) {
	s, h, _ := testConsole(t)
	c := login(t, s, h)
	for _, p := range []string{"/", "/nodes", "/services", "/policy", "/audit", "/denials", "/approvals", "/static/console.js"} {
		w := do(h, get(p, c))
		if w.Code != http.StatusOK {
			t.Errorf("GET %s: %d: %s", p, w.Code, w.Body)
			continue
		}
		csp := w.Header().Get("Content-Security-Policy")
		if !strings.Contains(csp, "script-src 'self'") || !strings.Contains(csp, "frame-ancestors 'none'") || strings.Contains(csp, "unsafe") {
			t.Errorf("GET %s: Content-Security-Policy %q", p, csp)
		}
		// no-referrer would make a browser send "Origin: null" with
		// the console's own forms, which the loopback guard refuses.
		if rp := w.Header().Get("Referrer-Policy"); rp != "same-origin" {
			t.Errorf("GET %s: Referrer-Policy %q, want same-origin", p, rp)
		}
		if w.Header().Get("X-Frame-Options") != "DENY" {
			t.Errorf("GET %s: X-Frame-Options %q, want DENY", p, w.Header().Get("X-Frame-Options"))
		}
		body := w.Body.Bytes()
		if bytes.Contains(body, []byte(c.Value)) || bytes.Contains(body, []byte(s.loginToken)) {
			t.Errorf("GET %s: the page holds the session or login token", p)
		}
		if bytes.Contains(body, []byte("<script>")) || bytes.Contains(body, []byte("https://")) {
			t.Errorf("GET %s: the page has an inline script or loads from elsewhere", p)
		}
	}
}

func TestListenRefusesNonLoopbackAndUnixAddresses(t *testing.T) {
	for _, addr := range []string{"0.0.0.0:0", ":0", "192.0.2.1:0", "unix:/tmp/console.sock"} {
		c, err := Listen(Config{Admin: &fakeAdmin{}, Listen: addr})
		if err == nil {
			c.Close()
			t.Errorf("Listen(%q) succeeded, want a refusal", addr)
		}
	}
	c, err := Listen(Config{Admin: &fakeAdmin{}, Listen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if !strings.HasPrefix(c.LoginURL(), c.URL()+pathLogin+"?token=") {
		t.Errorf("LoginURL %q is not on %q", c.LoginURL(), c.URL())
	}
}

func TestConsoleLiveCheckAnswersWithoutApplying(t *testing.T) {
	s, h, fa := testConsole(t)
	c := login(t, s, h)
	tok := csrfOf(t, h, c)
	if w := do(h, post("/policy/check", url.Values{"document": {"{}"}}, c)); w.Code != http.StatusForbidden {
		t.Errorf("live check without the CSRF token: %d, want 403", w.Code)
	}
	w := do(h, post("/policy/check", url.Values{"csrf": {tok}, "document": {`{"grants": [{"src": ["agent:a"]}]}`}}, c))
	var res checkResult
	if err := json.Unmarshal(w.Body.Bytes(), &res); err != nil || w.Code != http.StatusOK {
		t.Fatalf("live check: %d %v: %s", w.Code, err, w.Body)
	}
	if res.Valid || len(res.Problems) == 0 {
		t.Errorf("live check of a grant without dst: %+v, want a problem", res)
	}
	w = do(h, post("/policy/check", url.Values{"csrf": {tok}, "document": {`{"grants": [{"src": ["agent:teller"], "dst": ["tool:x"], "tools": ["t"]}]}`}}, c))
	if err := json.Unmarshal(w.Body.Bytes(), &res); err != nil || !res.Valid || len(res.Warnings) != 1 {
		t.Errorf("live check of a valid draft: %+v (%v), want valid with one warning (tool:x matches no node)", res, err)
	}
	if got := fa.posted(); len(got) != 0 {
		t.Errorf("the live check called the admin API: %q", got)
	}
}
