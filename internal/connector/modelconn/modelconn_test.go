package modelconn_test

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"

	"go.uber.org/goleak"

	"github.com/agentmesh/agentmesh/internal/connector"
	"github.com/agentmesh/agentmesh/internal/connector/modelconn"
	"github.com/agentmesh/agentmesh/internal/gateway/gatewaytest"
	"github.com/agentmesh/agentmesh/internal/identity"
	"github.com/agentmesh/agentmesh/internal/loopback"
	"github.com/agentmesh/agentmesh/internal/modelwire"
	"github.com/agentmesh/agentmesh/internal/pki"
	"github.com/agentmesh/agentmesh/internal/reason"
	"github.com/agentmesh/agentmesh/internal/transport"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// token is the token of every endpoint the tests start.
const token = loopback.TokenPrefix + "modelconn-test-token"

// standIn is a model gateway stand-in: an mTLS server presenting the
// gateway's certificate that keeps the headers of what reaches it and
// answers 200 with the caller's identity.
type standIn struct {
	mu   sync.Mutex
	seen []http.Header
	addr string
}

func (s *standIn) headers() []http.Header {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]http.Header(nil), s.seen...)
}

func startStandIn(t *testing.T, mesh *gatewaytest.Mesh, id identity.ID) *standIn {
	t.Helper()
	s := &standIn{}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.addr = ln.Addr().String()
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		s.seen = append(s.seen, r.Header.Clone())
		s.mu.Unlock()
		p, err := pki.PeerOf(*r.TLS)
		if err != nil {
			http.Error(w, err.Error(), http.StatusForbidden)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"caller":"`+p.ID.String()+`"}`)
	})}
	cert := mesh.Issue(t, id, "gw1")
	tlsLn := tls.NewListener(ln, pki.ServerTLS(func() *tls.Certificate { return cert }, mesh.Verifier, nil))
	done := make(chan struct{})
	go func() { defer close(done); srv.Serve(tlsLn) }()
	t.Cleanup(func() { srv.Close(); <-done })
	return s
}

// env is a mesh with a model gateway stand-in and an agent's certificate.
type env struct {
	mesh  *gatewaytest.Mesh
	gwID  identity.ID
	gw    *standIn
	agent *tls.Certificate
}

func newEnv(t *testing.T) *env {
	e := &env{mesh: gatewaytest.NewMesh(t), gwID: gatewaytest.ID(t, identity.KindModel, "llm")}
	e.gw = startStandIn(t, e.mesh, e.gwID)
	e.agent = e.mesh.Issue(t, gatewaytest.ID(t, identity.KindAgent, "fraud"), "inc1")
	return e
}

// tls is the agent's configuration expecting want as the gateway.
func (e *env) tls(want identity.ID) *tls.Config {
	return transport.ClientTLS(func() *tls.Certificate { return e.agent }, e.mesh.Verifier,
		func() (identity.ID, error) { return want, nil })
}

// start serves an endpoint for cfg on loopback and returns its base URL.
func start(t *testing.T, cfg modelconn.Config) string {
	t.Helper()
	ep, err := modelconn.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := loopback.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ep.Serve(ctx, ln, loopback.Auth{Token: token}) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
		ep.Close()
	})
	return "http://" + ln.Addr().String()
}

func (e *env) start(t *testing.T) string {
	return start(t, modelconn.Config{
		Resolve: func(context.Context) (string, error) { return "https://" + e.gw.addr, nil },
		TLS:     e.tls(e.gwID),
	})
}

type result struct {
	status int
	header http.Header
	body   []byte
}

func (r result) errBody(t *testing.T) modelwire.ErrorBody {
	t.Helper()
	var b modelwire.ErrorBody
	if err := json.Unmarshal(r.body, &b); err != nil {
		t.Fatalf("error body %q: %v", r.body, err)
	}
	return b
}

// do sends a request with apiKey as its bearer token ("" for none) and
// the extra headers.
func do(t *testing.T, method, url, apiKey string, hdr map[string]string) result {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(`{"model":"gpt-4o"}`))
	if err != nil {
		t.Fatal(err)
	}
	if apiKey != "" {
		req.Header.Set("Authorization", "Bearer "+apiKey)
	}
	for k, v := range hdr {
		if k == "Host" {
			req.Host = v
			continue
		}
		req.Header.Set(k, v)
	}
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return result{resp.StatusCode, resp.Header, b}
}

func TestLocalRefusesForeignHostAndOrigin(t *testing.T) {
	e := newEnv(t)
	base := e.start(t)
	for _, tt := range []struct {
		name   string
		hdr    map[string]string
		status int
	}{
		{"loopback", nil, 200},
		{"rebinding host", map[string]string{"Host": "evil.example:" + strings.Split(base, ":")[2]}, 403},
		{"foreign origin", map[string]string{"Origin": "https://evil.example"}, 403},
		{"local origin", map[string]string{"Origin": "http://localhost:3000"}, 200},
	} {
		t.Run(tt.name, func(t *testing.T) {
			res := do(t, "GET", base+"/v1/models", token, tt.hdr)
			if res.status != tt.status {
				t.Fatalf("status %d %s, want %d", res.status, res.body, tt.status)
			}
			if res.status == 403 {
				if eb := res.errBody(t); eb.Reason != reason.NotLocal || eb.Error.Type != "permission_denied" {
					t.Fatalf("refusal %s", res.body)
				}
			}
		})
	}
	if n := len(e.gw.headers()); n != 2 {
		t.Fatalf("the gateway saw %d requests, want the 2 admitted ones", n)
	}
}

// TestLocalRequiresItsTokenAsTheAPIKey: a local process without the
// endpoint's token (its API key) is refused in the OpenAI error shape with
// local_auth, and nothing reaches the gateway.
func TestLocalRequiresItsTokenAsTheAPIKey(t *testing.T) {
	e := newEnv(t)
	base := e.start(t)
	for _, key := range []string{"", "sk-not-the-token", token + "x"} {
		res := do(t, "POST", base+"/v1/chat/completions", key, nil)
		eb := res.errBody(t)
		if res.status != http.StatusUnauthorized || eb.Reason != reason.LocalAuth || eb.Error.Code != reason.LocalAuth ||
			eb.Error.Type != "authentication_error" || res.header.Get("WWW-Authenticate") == "" {
			t.Fatalf("API key %q: %d %s", key, res.status, res.body)
		}
	}
	if n := len(e.gw.headers()); n != 0 {
		t.Fatalf("the gateway saw %d requests: a refused request left the machine", n)
	}
	if res := do(t, "POST", base+"/v1/chat/completions", token, nil); res.status != http.StatusOK ||
		!strings.Contains(string(res.body), "spiffe://test.mesh/agent/fraud") {
		t.Fatalf("with the token: %d %s", res.status, res.body)
	}
}

// TestLocalKeepsTheAgentsCredentialsOnTheMachine: the token and every
// other credential an SDK sends stay here; the mesh identity is the only
// one the gateway sees.
func TestLocalKeepsTheAgentsCredentialsOnTheMachine(t *testing.T) {
	e := newEnv(t)
	base := e.start(t)
	res := do(t, "POST", base+"/v1/chat/completions", token, map[string]string{
		"Cookie": "session=1", "Api-Key": "sk-a", "X-Api-Key": "sk-b", "Proxy-Authorization": "Basic eA==",
		"Origin": "http://localhost:3000", "Openai-Beta": "assistants=v2"})
	if res.status != http.StatusOK {
		t.Fatalf("%d %s", res.status, res.body)
	}
	seen := e.gw.headers()
	if len(seen) != 1 {
		t.Fatalf("the gateway saw %d requests", len(seen))
	}
	for _, k := range []string{"Authorization", "Cookie", "Api-Key", "X-Api-Key", "Proxy-Authorization", "Origin"} {
		if v := seen[0].Get(k); v != "" {
			t.Errorf("%s reached the gateway: %q", k, v)
		}
	}
	if seen[0].Get("Openai-Beta") == "" {
		t.Error("an ordinary header was dropped too")
	}
}

// TestLocalReachesOnlyTheExpectedGateway: another node of the mesh that
// answers at the gateway's address is not relayed to; the client gets the
// unreachable answer.
func TestLocalReachesOnlyTheExpectedGateway(t *testing.T) {
	e := newEnv(t)
	base := start(t, modelconn.Config{
		Resolve: func(context.Context) (string, error) { return "https://" + e.gw.addr, nil },
		TLS:     e.tls(gatewaytest.ID(t, identity.KindModel, "other-llm")),
	})
	res := do(t, "GET", base+"/v1/models", token, nil)
	if eb := res.errBody(t); res.status != http.StatusBadGateway || eb.Reason != reason.GatewayUnreachable || eb.Error.Type != "api_error" {
		t.Fatalf("wrong gateway: %d %s", res.status, res.body)
	}
	// An unresolvable service, and a resolution with the wrong scheme, are
	// answered the same way; a resolution that says why passes its reason
	// and text on.
	for _, resolve := range []func(context.Context) (string, error){
		func(context.Context) (string, error) { return "", errors.New("no netmap yet") },
		func(context.Context) (string, error) { return "http://" + e.gw.addr, nil },
	} {
		base := start(t, modelconn.Config{Resolve: resolve, TLS: e.tls(e.gwID)})
		if res := do(t, "GET", base+"/v1/models", token, nil); res.status != http.StatusBadGateway || res.errBody(t).Reason != reason.GatewayUnreachable {
			t.Fatalf("unresolved: %d %s", res.status, res.body)
		}
	}
	typo := &connector.ResolveError{Code: reason.UnknownService, Err: errors.New(`no service named "lm"`)}
	base = start(t, modelconn.Config{Resolve: func(context.Context) (string, error) { return "", typo }, TLS: e.tls(e.gwID)})
	if res := do(t, "GET", base+"/v1/models", token, nil); res.status != http.StatusBadGateway || res.errBody(t).Reason != reason.UnknownService || res.errBody(t).Error.Message != typo.Error() {
		t.Fatalf("a resolution that says why: %d %s", res.status, res.body)
	}
}

// TestNewRefusesConfigsThatDoNotCheckTheGateway: the local side used to
// accept a TLS configuration that skipped server verification without a
// verifier (the connector refused it); both now share transport.New.
func TestNewRefusesConfigsThatDoNotCheckTheGateway(t *testing.T) {
	e := newEnv(t)
	resolve := func(context.Context) (string, error) { return "https://" + e.gw.addr, nil }
	insecure := e.tls(e.gwID).Clone()
	insecure.VerifyConnection, insecure.VerifyPeerCertificate = nil, nil
	for name, cfg := range map[string]modelconn.Config{
		"no resolver":                       {TLS: e.tls(e.gwID)},
		"neither TLS nor a dialer":          {Resolve: resolve},
		"verification skipped, no verifier": {Resolve: resolve, TLS: insecure},
		"a dialer and TLS":                  {Resolve: resolve, TLS: e.tls(e.gwID), Dial: (&net.Dialer{}).DialContext},
	} {
		if _, err := modelconn.New(cfg); !errors.Is(err, modelconn.ErrConfig) {
			t.Errorf("%s: New = %v, want ErrConfig", name, err)
		}
	}
}

func TestServeRefusesATCPListenerWithoutAToken(t *testing.T) {
	e := newEnv(t)
	ep, err := modelconn.New(modelconn.Config{
		Resolve: func(context.Context) (string, error) { return "https://" + e.gw.addr, nil },
		TLS:     e.tls(e.gwID),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer ep.Close()
	ln, err := loopback.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if err := ep.Serve(context.Background(), ln, loopback.Auth{}); !errors.Is(err, modelconn.ErrNoToken) {
		t.Fatalf("Serve = %v, want ErrNoToken", err)
	}
}
