package console

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/agentmesh/agentmesh/internal/loopback"
)

// Paths the guard treats apart.
const (
	pathLogin  = "/login"
	pathStatic = "/static/"
)

// cookieName is the session cookie. The __Host- prefix would need Secure,
// which a browser refuses on http://127.0.0.1; Path=/ and no Domain keep
// it to this host all the same.
const cookieName = "agentmesh_console"

// csrfField is the form field that carries the session's CSRF token.
const csrfField = "csrf"

// sessionLifetime is how long a login lasts; the operator starts the
// console again for a new one.
const sessionLifetime = 12 * time.Hour

// auth holds the console's one login token and the session it opened.
type auth struct {
	now func() time.Time

	mu sync.Mutex
	// login is the one-time login token's hash; nil once used.
	login []byte
	// session is the hash of the session cookie's value, csrf the
	// session's CSRF token; both empty before a login.
	session []byte
	csrf    string
	expires time.Time
}

// newToken returns 256 random bits, URL-safe.
func newToken() (string, error) {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("console: token: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(b[:]), nil
}

func hash(s string) []byte {
	h := sha256.Sum256([]byte(s))
	return h[:]
}

// useLogin spends the login token tok, if it is the one, and returns the
// new session's cookie value.
func (a *auth) useLogin(tok string) (string, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.login == nil || subtle.ConstantTimeCompare(hash(tok), a.login) != 1 {
		return "", false
	}
	sid, err := newToken()
	if err != nil {
		return "", false
	}
	csrf, err := newToken()
	if err != nil {
		return "", false
	}
	a.login = nil
	a.session, a.csrf, a.expires = hash(sid), csrf, a.now().Add(sessionLifetime)
	return sid, true
}

// sessionOf returns the CSRF token of the session whose cookie r carries,
// or false when it carries none that is valid.
func (a *auth) sessionOf(r *http.Request) (string, bool) {
	c, err := r.Cookie(cookieName)
	if err != nil || c.Value == "" {
		return "", false
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.session == nil || !a.now().Before(a.expires) {
		return "", false
	}
	if subtle.ConstantTimeCompare(hash(c.Value), a.session) != 1 {
		return "", false
	}
	return a.csrf, true
}

// guard wraps every handler of the console: loopback Host and Origin, the
// session, and for a POST the CSRF token and same-origin. Security headers
// go on every answer, refusals included.
type guard struct {
	local *loopback.Guard
	auth  *auth
}

func newGuard(addr net.Addr, a *auth) (*guard, error) {
	// The console authenticates browsers with its session cookie, not
	// with a bearer token, which a browser cannot send on a navigation.
	g, err := loopback.NewGuard(addr, loopback.Auth{NoToken: true})
	if err != nil {
		return nil, err
	}
	return &guard{local: g, auth: a}, nil
}

// securityHeaders are set on every answer.
var securityHeaders = map[string]string{
	"Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; " +
		"connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
	"X-Frame-Options":              "DENY",
	"X-Content-Type-Options":       "nosniff",
	"Referrer-Policy":              "same-origin",
	"Cache-Control":                "no-store",
	"Cross-Origin-Opener-Policy":   "same-origin",
	"Cross-Origin-Resource-Policy": "same-origin",
}

// ctxKey carries the session's CSRF token to the handlers.
type ctxKey struct{}

func (g *guard) wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for k, v := range securityHeaders {
			w.Header().Set(k, v)
		}
		if code := g.local.Check(r); code != "" {
			http.Error(w, "refused: this console answers only requests for a loopback address from a loopback page ("+string(code)+")", http.StatusForbidden)
			return
		}
		if r.Method != http.MethodGet && r.Method != http.MethodHead && r.Method != http.MethodPost {
			w.Header().Set("Allow", "GET, HEAD, POST")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		if r.URL.Path == pathLogin || (len(r.URL.Path) > len(pathStatic) && r.URL.Path[:len(pathStatic)] == pathStatic) {
			if r.Method == http.MethodPost {
				http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
				return
			}
			next.ServeHTTP(w, r)
			return
		}
		csrf, ok := g.auth.sessionOf(r)
		if !ok {
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			w.WriteHeader(http.StatusUnauthorized)
			fmt.Fprintln(w, "Not logged in. Open the login URL that 'agentmesh console' printed when it started;")
			fmt.Fprintln(w, "it works once: start the console again for a new one.")
			return
		}
		// Pages are for the console's own pages and the operator's
		// address bar: a page of another local port (same site for a
		// browser, and sent the cookie) may neither post to the console
		// nor read it through a script or stream.
		if why := sameOrigin(r); why != "" {
			http.Error(w, "refused: "+why, http.StatusForbidden)
			return
		}
		if r.Method == http.MethodPost {
			// A form of at most MaxForm bytes; ParseForm reads no more.
			r.Body = http.MaxBytesReader(w, r.Body, maxForm)
			if err := r.ParseForm(); err != nil {
				http.Error(w, "bad form: "+err.Error(), http.StatusBadRequest)
				return
			}
			if subtle.ConstantTimeCompare([]byte(r.PostForm.Get(csrfField)), []byte(csrf)) != 1 {
				http.Error(w, "refused: the form's CSRF token is missing or wrong; reload the page and try again", http.StatusForbidden)
				return
			}
		}
		next.ServeHTTP(w, r.WithContext(withCSRF(r.Context(), csrf)))
	})
}

// maxForm bounds a form: a policy document and a few fields.
const maxForm = 1<<20 + 64<<10

// sameOrigin returns why a request is not from one of the console's own
// pages (or, for a GET, the operator's address bar or bookmark), or ""
// when it may be. Browsers send Origin on every POST and Sec-Fetch-Site on
// every request; a client that sends neither is not a browser a page
// could drive, and still needs the cookie (and for a POST the token).
func sameOrigin(r *http.Request) string {
	if o := r.Header.Get("Origin"); o != "" && o != "http://"+r.Host {
		return "cross-origin request (Origin " + o + ")"
	}
	s := r.Header.Get("Sec-Fetch-Site")
	if s == "" || s == "same-origin" || (s == "none" && r.Method != http.MethodPost) {
		return ""
	}
	return "request from another site or port (Sec-Fetch-Site " + s + ")"
}
