package loopback

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"

	"github.com/agentmesh/agentmesh/internal/reason"
)

// ErrNoToken is returned by NewGuard for a TCP endpoint whose Auth has
// neither a token nor the explicit NoToken opt-out.
var ErrNoToken = errors.New("a TCP local endpoint needs a bearer token, or an explicit opt-out")

// TokenPrefix starts every token NewToken makes, so that a leaked one is
// recognisable (by a secret scanner, in a log).
const TokenPrefix = "amlt_"

// Auth says how a local endpoint knows that a request comes from its owner,
// beyond being local. On TCP the zero Auth is refused (ErrNoToken): the safe
// choice is the one made by default.
type Auth struct {
	// Token, when set, must come with every request as
	// "Authorization: Bearer TOKEN" (what an OpenAI client sends as its
	// API key). Make it with NewToken.
	Token string
	// NoToken serves a TCP endpoint without a token: every local user
	// and process that can reach the port can then act as the node. A
	// Unix socket needs no token (its file mode admits the owner only).
	NoToken bool
}

// NewToken returns a fresh bearer token: 256 bits from crypto/rand.
func NewToken() (string, error) {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("new local endpoint token: %w", err)
	}
	return TokenPrefix + base64.RawURLEncoding.EncodeToString(b[:]), nil
}

// Guard decides which requests a local endpoint serves: on TCP, only those
// whose Host is a loopback name with the listener's port and whose Origin,
// if any, is a loopback origin; with a token, only those carrying it.
type Guard struct {
	port  string // of a TCP listener; "" for a Unix socket
	token []byte // nil: none required
}

// NewGuard returns the guard of an endpoint listening on addr (a loopback
// TCP address or a Unix socket from Listen) with auth. Any other address
// is ErrNotLoopback; a TCP address without a token or NoToken is
// ErrNoToken.
func NewGuard(addr net.Addr, auth Auth) (*Guard, error) {
	g := &Guard{}
	if auth.Token != "" {
		if auth.NoToken {
			return nil, errors.New("local endpoint: a token and NoToken are exclusive")
		}
		g.token = []byte(auth.Token)
	}
	switch a := addr.(type) {
	case *net.TCPAddr:
		if !a.IP.IsLoopback() {
			return nil, fmt.Errorf("%w: %v", ErrNotLoopback, a)
		}
		if g.token == nil && !auth.NoToken {
			return nil, fmt.Errorf("local endpoint %v: %w", a, ErrNoToken)
		}
		g.port = strconv.Itoa(a.Port)
	case *net.UnixAddr:
		if a.Net != "unix" {
			return nil, fmt.Errorf("%w: %v is not a stream socket", ErrNotLoopback, a)
		}
	default:
		return nil, fmt.Errorf("%w: %v", ErrNotLoopback, addr)
	}
	return g, nil
}

// Check returns "" for a request the endpoint serves, else the reason code
// of its refusal (reason.NotLocal: a foreign Host or Origin, DNS rebinding;
// reason.LocalAuth: the bearer token is missing or wrong). The token is compared
// in constant time.
func (g *Guard) Check(r *http.Request) reason.Code {
	// A browser cannot reach a Unix socket, so no rebinding page can send
	// a foreign Host there; clients send whatever Host they like.
	if g.port != "" && !HostAllowed(r.Host, g.port) {
		return reason.NotLocal
	}
	if origin := r.Header.Get("Origin"); origin != "" && !OriginAllowed(origin) {
		return reason.NotLocal
	}
	if g.token != nil && !g.bearerOK(r.Header.Values("Authorization")) {
		return reason.LocalAuth
	}
	return ""
}

// bearerOK reports whether vals is exactly one "Bearer TOKEN" header with
// the guard's token.
func (g *Guard) bearerOK(vals []string) bool {
	if len(vals) != 1 {
		return false
	}
	scheme, tok, ok := strings.Cut(vals[0], " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return false
	}
	return subtle.ConstantTimeCompare([]byte(strings.TrimLeft(tok, " ")), g.token) == 1
}

// Unix reports whether the endpoint is a Unix socket.
func (g *Guard) Unix() bool { return g.port == "" }

// Challenge is the WWW-Authenticate value of a reason.LocalAuth refusal
// (HTTP 401).
const Challenge = `Bearer realm="agentmesh local endpoint"`

// WithToken returns a transport that sends token as the bearer token of
// every request over rt (nil: http.DefaultTransport), as a Go client of a
// local endpoint must: for example as the transport of the MCP Go SDK's
// StreamableClientTransport.HTTPClient.
func WithToken(rt http.RoundTripper, token string) http.RoundTripper {
	if rt == nil {
		rt = http.DefaultTransport
	}
	return bearer{rt: rt, token: token}
}

type bearer struct {
	rt    http.RoundTripper
	token string
}

func (b bearer) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+b.token)
	return b.rt.RoundTrip(r)
}
