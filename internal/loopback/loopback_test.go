package loopback

import (
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/agentmesh/agentmesh/internal/reason"
)

func TestHostAndOriginChecks(t *testing.T) {
	hosts := []struct {
		host string
		ok   bool
	}{
		{"127.0.0.1:7801", true},
		{"localhost:7801", true},
		{"LOCALHOST:7801", true},
		{"[::1]:7801", true},
		{"127.0.0.1:7802", false},
		{"127.0.0.1", false},
		{"evil.example:7801", false},
		{"localhost.evil.example:7801", false},
		{"0.0.0.0:7801", false},
		{"[fe80::1%25lo]:7801", false},
		{"", false},
	}
	for _, tt := range hosts {
		if got := HostAllowed(tt.host, "7801"); got != tt.ok {
			t.Errorf("HostAllowed(%q) = %v, want %v", tt.host, got, tt.ok)
		}
	}
	if !HostAllowed("localhost", "80") {
		t.Error("a Host without port is refused on port 80")
	}
	origins := []struct {
		origin string
		ok     bool
	}{
		{"http://localhost:3000", true},
		{"https://127.0.0.1", true},
		{"http://[::1]:8080", true},
		{"null", false},
		{"http://evil.example", false},
		{"file://localhost", false},
		{"http://user@localhost", false},
		{"http://127.0.0.1.evil.example", false},
	}
	for _, tt := range origins {
		if got := OriginAllowed(tt.origin); got != tt.ok {
			t.Errorf("OriginAllowed(%q) = %v, want %v", tt.origin, got, tt.ok)
		}
	}
}

func tcpAddr(port int) *net.TCPAddr { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port} }

func TestGuardRequiresTheTokenOnEveryRequest(t *testing.T) {
	tok, err := NewToken()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(tok, TokenPrefix) || len(tok) < len(TokenPrefix)+40 {
		t.Fatalf("token %q: want %s and 256 bits", tok, TokenPrefix)
	}
	if other, _ := NewToken(); other == tok {
		t.Fatal("two tokens are equal")
	}
	g, err := NewGuard(tcpAddr(7801), Auth{Token: tok})
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name   string
		auth   []string
		host   string
		origin string
		want   reason.Code
	}{
		{"token", []string{"Bearer " + tok}, "", "", ""},
		{"lower-case scheme", []string{"bearer " + tok}, "", "", ""},
		{"no header", nil, "", "", reason.LocalAuth},
		{"empty token", []string{"Bearer "}, "", "", reason.LocalAuth},
		{"wrong token", []string{"Bearer " + tok[:len(tok)-1] + "x"}, "", "", reason.LocalAuth},
		{"prefix of the token", []string{"Bearer " + tok[:len(tok)-1]}, "", "", reason.LocalAuth},
		{"token with a suffix", []string{"Bearer " + tok + "x"}, "", "", reason.LocalAuth},
		{"basic scheme", []string{"Basic " + tok}, "", "", reason.LocalAuth},
		{"bare token", []string{tok}, "", "", reason.LocalAuth},
		{"two headers", []string{"Bearer " + tok, "Bearer " + tok}, "", "", reason.LocalAuth},
		{"rebinding host with the token", []string{"Bearer " + tok}, "evil.example:7801", "", reason.NotLocal},
		{"foreign origin with the token", []string{"Bearer " + tok}, "", "https://evil.example", reason.NotLocal},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodPost, "http://127.0.0.1:7801/mcp", nil)
			if tt.host != "" {
				r.Host = tt.host
			}
			if tt.origin != "" {
				r.Header.Set("Origin", tt.origin)
			}
			for _, v := range tt.auth {
				r.Header.Add("Authorization", v)
			}
			if got := g.Check(r); got != tt.want {
				t.Fatalf("Check = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestNewGuardRefusesATCPEndpointWithoutTokenUnlessAskedTo(t *testing.T) {
	if _, err := NewGuard(tcpAddr(7801), Auth{}); !errors.Is(err, ErrNoToken) {
		t.Fatalf("zero Auth on TCP: %v, want ErrNoToken", err)
	}
	g, err := NewGuard(tcpAddr(7801), Auth{NoToken: true})
	if err != nil {
		t.Fatal(err)
	}
	if got := g.Check(httptest.NewRequest(http.MethodGet, "http://127.0.0.1:7801/mcp", nil)); got != "" {
		t.Fatalf("opted out: Check = %q", got)
	}
	if _, err := NewGuard(&net.TCPAddr{IP: net.IPv4(10, 0, 0, 1), Port: 1}, Auth{NoToken: true}); !errors.Is(err, ErrNotLoopback) {
		t.Fatalf("non-loopback: %v", err)
	}
	if _, err := NewGuard(tcpAddr(1), Auth{Token: "x", NoToken: true}); err == nil {
		t.Fatal("a token and NoToken together were accepted")
	}
	// A Unix socket needs no token and takes any Host.
	g, err = NewGuard(&net.UnixAddr{Name: "/x.sock", Net: "unix"}, Auth{})
	if err != nil {
		t.Fatal(err)
	}
	r := httptest.NewRequest(http.MethodGet, "http://localhost/mcp", nil)
	r.Host = "whatever"
	if got := g.Check(r); got != "" || !g.Unix() {
		t.Fatalf("unix socket: Check = %q", got)
	}
}

func TestListenUnixMakesAPrivateSocket(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("unix socket endpoints are Unix only")
	}
	base := t.TempDir()
	path := filepath.Join(base, "run", "agent.sock")
	ln, err := Listen(UnixPrefix + path)
	if err != nil {
		t.Fatal(err)
	}
	for p, want := range map[string]os.FileMode{filepath.Dir(path): 0o700, path: 0o600} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != want {
			t.Errorf("%s is mode %04o, want %04o", p, fi.Mode().Perm(), want)
		}
	}
	// In use: refused, and the socket is left alone.
	if _, err := Listen(UnixPrefix + path); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("second listener on a live socket: %v", err)
	}
	ln.Close()
	// A stale socket (its listener gone without unlinking) is replaced.
	stale, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	stale.(*net.UnixListener).SetUnlinkOnClose(false)
	stale.Close()
	ln, err = Listen(UnixPrefix + path)
	if err != nil {
		t.Fatalf("over a stale socket: %v", err)
	}
	ln.Close()

	// A directory others may enter, a regular file: refused, untouched.
	open := filepath.Join(base, "open")
	if err := os.Mkdir(open, 0o755); err != nil {
		t.Fatal(err)
	}
	os.Chmod(open, 0o755)
	if _, err := Listen(UnixPrefix + filepath.Join(open, "a.sock")); err == nil || !strings.Contains(err.Error(), "chmod 700") {
		t.Fatalf("socket in a 0755 directory: %v", err)
	}
	file := filepath.Join(base, "run", "file")
	if err := os.WriteFile(file, []byte("keep"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Listen(UnixPrefix + file); err == nil {
		t.Fatal("listened over a regular file")
	}
	if b, _ := os.ReadFile(file); string(b) != "keep" {
		t.Fatal("a regular file at the socket path was replaced")
	}
}

// FuzzGuardCheck feeds arbitrary Authorization, Host and Origin headers to a
// guard with a token: a request is served only with the loopback Host, no
// foreign Origin and exactly the token.
func FuzzGuardCheck(f *testing.F) {
	const tok = TokenPrefix + "c2VjcmV0LXRva2VuLWZvci10aGUtZnV6emVyLTAxMjM0NQ"
	f.Add("Bearer "+tok, "127.0.0.1:7801", "")
	f.Add("bearer  "+tok, "localhost:7801", "http://localhost:3000")
	f.Add("Bearer "+tok+"\x00", "[::1]:7801", "null")
	f.Add("Bearer\t"+tok, "127.0.0.1:7801", "")
	f.Add("", "evil.example:7801", "https://evil.example")
	g, err := NewGuard(tcpAddr(7801), Auth{Token: tok})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, auth, host, origin string) {
		r := &http.Request{Host: host, Header: http.Header{}}
		if auth != "" {
			r.Header.Set("Authorization", auth)
		}
		if origin != "" {
			r.Header.Set("Origin", origin)
		}
		got := g.Check(r)
		scheme, rest, _ := strings.Cut(auth, " ")
		tokenOK := strings.EqualFold(scheme, "Bearer") && strings.TrimLeft(rest, " ") == tok
		local := HostAllowed(host, "7801") && (origin == "" || OriginAllowed(origin))
		switch {
		case got == "" && (!tokenOK || !local):
			t.Fatalf("served auth %q host %q origin %q", auth, host, origin)
		case got != "" && tokenOK && local:
			t.Fatalf("refused (%s) auth %q host %q origin %q", got, auth, host, origin)
		}
	})
}

func TestWithTokenSendsTheTokenTheGuardWants(t *testing.T) {
	tok, _ := NewToken()
	g, err := NewGuard(tcpAddr(7801), Auth{Token: tok})
	if err != nil {
		t.Fatal(err)
	}
	var got reason.Code
	rt := WithToken(roundTripFunc(func(r *http.Request) (*http.Response, error) {
		got = g.Check(r)
		return &http.Response{StatusCode: 200, Body: http.NoBody}, nil
	}), tok)
	req := httptest.NewRequest(http.MethodGet, "http://127.0.0.1:7801/mcp", nil)
	req.Header.Set("Authorization", "Bearer stale")
	if _, err := rt.RoundTrip(req); err != nil || got != "" {
		t.Fatalf("Check = %q, %v", got, err)
	}
	if req.Header.Get("Authorization") != "Bearer stale" {
		t.Fatal("WithToken changed the caller's request")
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }
