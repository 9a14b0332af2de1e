// Package console serves agentmesh's web console: pages on loopback, for
// the mesh's admin, that show and change what the admin commands do (nodes,
// services and who may use which tool, policy, the audit trail). It is a
// client of the coordinator's admin API, as the CLI is: every page is made
// from admin API calls with the admin node's identity (a Client), so the
// browser holds no certificate and the console no authority of its own.
//
// Use: Listen on a loopback address, print LoginURL, Serve until the
// context ends.
//
// Threat model. The console carries the admin identity, the most powerful
// in the mesh, to whoever can use its pages, so it admits one browser, the
// one its operator opens the login URL in:
//
//   - It listens on loopback only (a Unix socket is refused too: a browser
//     cannot reach one), and refuses requests whose Host is not a loopback
//     name with its port or whose Origin is not loopback (DNS rebinding),
//     as every local endpoint does (package loopback).
//   - Every page needs a session: the login URL carries a random one-time
//     token (256 bits) that, once used, is spent, and sets an HttpOnly,
//     SameSite=Strict session cookie. Another local user who can reach the
//     port, or a page in the browser, has neither.
//   - Every state-changing request is a POST carrying the session's CSRF
//     token in a form field, compared in constant time, and, when the
//     browser sends them, an Origin equal to the console's own and a
//     Sec-Fetch-Site of same-origin: a page of another site, or of another
//     local port, cannot make the console act. A request of any method
//     from another origin (Origin, or Sec-Fetch-Site same-site or
//     cross-site) is refused too, so such a page cannot read the live
//     audit stream or include a page as a script.
//   - No secret reaches a page: no key, no certificate key, no session
//     token (the CSRF token is per session and useless without the
//     cookie). Pages are server-rendered with html/template (contextual
//     escaping of every value an event or a node name brings); the only
//     script is the console's own, from the console (Content-Security-
//     Policy script-src 'self', nothing inline, no CDN: assets are
//     embedded in the binary); framing is refused (X-Frame-Options DENY,
//     frame-ancestors 'none'); nothing is cached.
//
// What the console does not defend against: a local user who can read the
// terminal the login URL was printed to, or the browser's cookie store,
// is the admin. Browsers do not bind cookies to a port: a server another
// local user runs on 127.0.0.1 receives the session cookie if the admin's
// browser opens one of its pages (SameSite counts every port of a host as
// one site). The session then lasts at most sessionLifetime, and ends
// when the console stops.
package console

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/agentmesh/agentmesh/internal/httpserver"
	"github.com/agentmesh/agentmesh/internal/loopback"
)

// Admin is what the console needs of the coordinator's admin API: a
// *controlclient.Client with the admin identity.
type Admin interface {
	// Call makes one JSON call: in (nil: no body) is sent, a 2xx answer
	// is decoded into out (nil: ignored).
	Call(ctx context.Context, method, path string, in, out any) error
	// Stream makes a GET whose answer body the caller reads and closes.
	Stream(ctx context.Context, path string) (io.ReadCloser, error)
	// Certificate is the admin identity's current certificate.
	Certificate() *tls.Certificate
}

// Config configures a console.
type Config struct {
	// Admin is the admin API client; required.
	Admin Admin
	// Listen is a loopback TCP address ("127.0.0.1:7900"; port 0 picks a
	// free one). "" is DefaultListen.
	Listen string
	// Logger receives what the console did and failed to do; nil
	// discards.
	Logger *slog.Logger
	// Now is the clock (nil: time.Now): "the last hour" of the overview,
	// ages of nodes and certificates.
	Now func() time.Time
	// FollowEvery is how often the live audit asks the coordinator for new
	// events (0: half a second, as 'agentmesh audit --follow').
	FollowEvery time.Duration
}

// DefaultListen is where the console listens when Config.Listen is "".
const DefaultListen = "127.0.0.1:7900"

// ErrUnixSocket refuses a unix: address: a browser cannot reach it.
var ErrUnixSocket = errors.New("the console serves a browser, which cannot reach a Unix socket: give a loopback TCP address such as 127.0.0.1:7900")

// Console is a console listening and ready to serve.
type Console struct {
	ln  net.Listener
	srv *server
}

// Listen opens the console's listener on cfg.Listen, which must be a
// loopback TCP address (loopback.ErrNotLoopback otherwise), and makes its
// login token. Serve serves it; Close closes it without serving.
func Listen(cfg Config) (*Console, error) {
	if cfg.Admin == nil {
		return nil, errors.New("console: no admin API client")
	}
	addr := cfg.Listen
	if addr == "" {
		addr = DefaultListen
	}
	if strings.HasPrefix(addr, loopback.UnixPrefix) {
		return nil, fmt.Errorf("console --listen %s: %w", addr, ErrUnixSocket)
	}
	ln, err := loopback.Listen(addr)
	if err != nil {
		return nil, fmt.Errorf("console --listen: %w", err)
	}
	s, err := newServer(cfg, ln.Addr())
	if err != nil {
		ln.Close()
		return nil, err
	}
	return &Console{ln: ln, srv: s}, nil
}

// Addr is the address the console listens on.
func (c *Console) Addr() net.Addr { return c.ln.Addr() }

// URL is the console's address as a browser uses it, without a token.
func (c *Console) URL() string { return c.srv.origin }

// LoginURL is the one-time URL that logs a browser in: it holds the login
// token, so it is shown to the operator and to nobody else. It works
// once.
func (c *Console) LoginURL() string {
	return c.srv.origin + pathLogin + "?token=" + c.srv.loginToken
}

// Serve serves the console until ctx ends; it returns when every request
// it started has ended.
func (c *Console) Serve(ctx context.Context) error {
	hs := &http.Server{
		Handler:           c.srv.handler(),
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(c.srv.log.Handler(), slog.LevelDebug),
	}
	return httpserver.Run(ctx, hs, c.ln)
}

// Close closes the listener of a console that is not served.
func (c *Console) Close() error { return c.ln.Close() }

// originOf is the origin a browser sends for pages served on addr.
func originOf(addr net.Addr) string {
	tcp, ok := addr.(*net.TCPAddr)
	if !ok {
		return "http://" + addr.String()
	}
	return "http://" + net.JoinHostPort(tcp.IP.String(), strconv.Itoa(tcp.Port))
}
