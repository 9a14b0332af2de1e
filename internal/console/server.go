package console

import (
	"bytes"
	"context"
	"embed"
	"errors"
	"html/template"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/agentmesh/agentmesh/internal/audit"
	"github.com/agentmesh/agentmesh/internal/controlclient"
	"github.com/agentmesh/agentmesh/internal/identity"
)

// The console's pages and assets, embedded: it works offline and loads
// nothing from anywhere else.
//
//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// server is the console's handlers and their state.
type server struct {
	admin       Admin
	log         *slog.Logger
	now         func() time.Time
	followEvery time.Duration
	origin      string
	loginToken  string
	auth        *auth
	guard       *guard
	pages       map[string]*template.Template
}

func newServer(cfg Config, addr net.Addr) (*server, error) {
	s := &server{admin: cfg.Admin, log: cfg.Logger, now: cfg.Now, followEvery: cfg.FollowEvery, origin: originOf(addr)}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.now == nil {
		s.now = time.Now
	}
	if s.followEvery <= 0 {
		s.followEvery = 500 * time.Millisecond
	}
	tok, err := newToken()
	if err != nil {
		return nil, err
	}
	s.loginToken = tok
	s.auth = &auth{now: s.now, login: hash(tok)}
	if s.guard, err = newGuard(addr, s.auth); err != nil {
		return nil, err
	}
	if s.pages, err = parsePages(); err != nil {
		return nil, err
	}
	return s, nil
}

func (s *server) handler() http.Handler {
	mux := http.NewServeMux()
	static, _ := fs.Sub(staticFS, "static")
	mux.Handle("GET "+pathStatic, http.StripPrefix(pathStatic, http.FileServerFS(static)))
	mux.HandleFunc("GET "+pathLogin, s.handleLogin)
	mux.HandleFunc("GET /{$}", s.handleOverview)
	mux.HandleFunc("GET /nodes", s.handleNodes)
	mux.HandleFunc("GET /nodes/{name}/revoke", s.handleRevokeConfirm)
	mux.HandleFunc("POST /nodes/{name}/revoke", s.handleRevoke)
	mux.HandleFunc("POST /nodes/{name}/tags", s.handleTag)
	mux.HandleFunc("GET /services", s.handleServices)
	mux.HandleFunc("GET /policy", s.handlePolicy)
	mux.HandleFunc("POST /policy", s.handlePolicySubmit)
	mux.HandleFunc("POST /policy/check", s.handleCheck)
	mux.HandleFunc("POST /policy/rollback", s.handleRollback)
	mux.HandleFunc("GET /audit", s.handleAudit)
	mux.HandleFunc("GET /audit/follow", s.handleFollow)
	mux.HandleFunc("GET /audit/events/{seq}", s.handleEvent)
	mux.HandleFunc("POST /audit/verify", s.handleVerify)
	mux.HandleFunc("GET /denials", s.handleDenials)
	mux.HandleFunc("GET /approvals", s.handleApprovals)
	mux.HandleFunc("POST /approvals/{id}/{verb}", s.handleDecide)
	return s.guard.wrap(mux)
}

// handleLogin spends the one-time login token and sets the session
// cookie, then sends the browser on to the overview: the token leaves the
// address bar and the history at once.
func (s *server) handleLogin(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		// A HEAD (a link checker's) must not spend the token.
		w.Header().Set("Allow", "GET")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	sid, ok := s.auth.useLogin(r.URL.Query().Get("token"))
	if !ok {
		s.log.Warn("console: refused a login with a wrong or spent token", "remote", r.RemoteAddr)
		http.Error(w, "This login URL is wrong or was used already. Start 'agentmesh console' again for a new one.", http.StatusUnauthorized)
		return
	}
	http.SetCookie(w, &http.Cookie{Name: cookieName, Value: sid, Path: "/", HttpOnly: true,
		SameSite: http.SameSiteStrictMode, MaxAge: int(sessionLifetime / time.Second)})
	s.log.Info("console: a browser logged in", "remote", r.RemoteAddr)
	http.Redirect(w, r, "/", http.StatusSeeOther)
}

func withCSRF(ctx context.Context, tok string) context.Context {
	return context.WithValue(ctx, ctxKey{}, tok)
}

func csrfFrom(ctx context.Context) string {
	s, _ := ctx.Value(ctxKey{}).(string)
	return s
}

// page is what every template gets: the page's own data under Data.
type page struct {
	Title string
	Nav   string
	CSRF  string
	Flash string
	Error string
	Now   time.Time
	Data  any
}

// render writes the page name with data; status 0 is 200.
func (s *server) render(w http.ResponseWriter, r *http.Request, status int, name, title string, data any, errText string) {
	t, ok := s.pages[name]
	if !ok {
		http.Error(w, "no page "+name, http.StatusInternalServerError)
		return
	}
	p := page{Title: title, Nav: name, CSRF: csrfFrom(r.Context()), Flash: r.URL.Query().Get("done"), Error: errText, Now: s.now(), Data: data}
	var buf bytes.Buffer
	if err := t.ExecuteTemplate(&buf, "layout", p); err != nil {
		s.log.Error("console: render", "page", name, "err", err)
		http.Error(w, "the page could not be made: "+err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	if status != 0 {
		w.WriteHeader(status)
	}
	w.Write(buf.Bytes())
}

// fail shows an error the coordinator or the console met, on a page of
// its own.
func (s *server) fail(w http.ResponseWriter, r *http.Request, what string, err error) {
	s.log.Warn("console: "+what, "err", err)
	status := http.StatusBadGateway
	var ae *controlclient.APIError
	if errors.As(err, &ae) && ae.Status >= 400 && ae.Status < 500 {
		status = ae.Status
	}
	s.render(w, r, status, "error", "Error", nil, what+": "+err.Error())
}

// done redirects after a successful POST (POST-redirect-GET), with a
// message the next page shows.
func done(w http.ResponseWriter, r *http.Request, path, msg string) {
	sep := "?"
	if strings.Contains(path, "?") {
		sep = "&"
	}
	http.Redirect(w, r, path+sep+"done="+url.QueryEscape(msg), http.StatusSeeOther)
}

// parsePages parses each page template with the layout.
func parsePages() (map[string]*template.Template, error) {
	layout, err := template.New("").Funcs(funcs).ParseFS(templateFS, "templates/layout.html")
	if err != nil {
		return nil, err
	}
	names, err := fs.Glob(templateFS, "templates/*.html")
	if err != nil {
		return nil, err
	}
	pages := map[string]*template.Template{}
	for _, n := range names {
		base := strings.TrimSuffix(strings.TrimPrefix(n, "templates/"), ".html")
		if base == "layout" {
			continue
		}
		t, err := template.Must(layout.Clone()).ParseFS(templateFS, n)
		if err != nil {
			return nil, err
		}
		pages[base] = t
	}
	return pages, nil
}

// funcs are the templates' helpers.
var funcs = template.FuncMap{
	"time": func(t time.Time) string {
		if t.IsZero() {
			return "-"
		}
		return t.Local().Format("2006-01-02 15:04:05")
	},
	"ago": func(now, t time.Time) string {
		if t.IsZero() {
			return "never"
		}
		return now.Sub(t).Round(time.Second).String() + " ago"
	},
	"who":  identity.Short,
	"join": strings.Join,
	"cls":  func(s string) string { return strings.ReplaceAll(s, " ", "-") },
	"list": func(s ...string) []string { return s },
	"what": what,
}

// what is an event's object: the tool, resource, prompt, model or admin
// action it concerns.
func what(e audit.Event) string {
	switch {
	case e.Tool != "":
		return e.Method + " " + e.Tool
	case e.Resource != "":
		return e.Method + " " + e.Resource
	case e.Prompt != "":
		return e.Method + " " + e.Prompt
	case e.Model != "":
		return "model " + e.Model
	case e.Action != "":
		return e.Action + " " + e.Target
	}
	return e.Method
}
