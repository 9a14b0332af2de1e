package modelgw

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/otel/trace"
	"go.uber.org/goleak"

	"github.com/agentmesh/agentmesh/internal/admission"
	"github.com/agentmesh/agentmesh/internal/audit"
	"github.com/agentmesh/agentmesh/internal/budget"
	"github.com/agentmesh/agentmesh/internal/connector/modelconn"
	"github.com/agentmesh/agentmesh/internal/gateway/gatewaytest"
	"github.com/agentmesh/agentmesh/internal/identity"
	"github.com/agentmesh/agentmesh/internal/loopback"
	"github.com/agentmesh/agentmesh/internal/metrics"
	"github.com/agentmesh/agentmesh/internal/modelgw/modelgwtest"
	"github.com/agentmesh/agentmesh/internal/pki"
	"github.com/agentmesh/agentmesh/internal/policy"
	"github.com/agentmesh/agentmesh/internal/reason"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// basePolicy: agent:fraud may use the gpt-4o family except gpt-4o-mini
// (gpt-4o only up to 1000 max_tokens) and embeddings; agent:other may use
// gpt-4o-mini without streaming and POST /v1/audio/*.
const basePolicy = `{
  "grants": [
    { "src": ["agent:fraud"], "dst": ["model:llm"],
      "models": ["gpt-4o*", "!gpt-4o-mini", "text-embedding-*"],
      "when": "model != 'gpt-4o' || !has(args.max_tokens) || args.max_tokens <= 1000" },
    { "src": ["agent:other"], "dst": ["model:llm"], "models": ["gpt-4o-mini"],
      "paths": ["POST /v1/audio/*"],
      "when": "!has(args.stream) || args.stream == false" },
  ],
}`

// clock is a settable test clock. With step set, every reading moves it
// on by step, so that durations measured by the gateway are positive.
type clock struct {
	mu   sync.Mutex
	t    time.Time
	step time.Duration
}

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := c.t
	c.t = c.t.Add(c.step)
	return t
}

func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

type fixture struct {
	t        testing.TB
	mesh     *gatewaytest.Mesh
	rec      *gatewaytest.Recorder
	up       *modelgwtest.Server
	upURL    string
	gw       *Gateway
	addr     string // host:port of the model gateway
	gwID     identity.ID
	self     policy.Node
	fraud    *tls.Certificate
	other    *tls.Certificate
	outsider *tls.Certificate
	peers    map[identity.Name]admission.Peer
	clock    *clock
	stateDir string
	stop     func()
	maxResp  int64
	refusals *audit.Refusals
	bodies   budget.Bodies
	// cfgRequests is Config.MaxRequestsPerPeer for the next start.
	cfgRequests int
	log         io.Writer
	tracer      trace.TracerProvider
	metrics     *metrics.Set
}

type fixtureOpts struct {
	policy   string
	stateDir string
	gate     chan struct{}
	// tick is the clock's step (see clock).
	tick time.Duration
	// maxResponse is Config.MaxResponseBytes.
	maxResponse int64
	// aggregate sets Config.Refusals to an aggregator into the recorder.
	aggregate bool
	// bodies is Config.Bodies.
	bodies budget.Bodies
	// log, if set, receives the gateway's log (its http.Server's too) at
	// debug level.
	log io.Writer
	// tracer is Config.TracerProvider.
	tracer trace.TracerProvider
	// metrics is Config.Metrics.
	metrics *metrics.Set
}

func newFixture(t testing.TB, o fixtureOpts) *fixture {
	t.Helper()
	f := &fixture{t: t, mesh: gatewaytest.NewMesh(t), rec: gatewaytest.NewRecorder(),
		clock: &clock{t: time.Date(2026, 11, 28, 10, 0, 30, 0, time.UTC), step: o.tick}}
	f.gwID = gatewaytest.ID(t, identity.KindModel, "llm")
	f.self = policy.Node{Name: f.gwID.Name, Kind: f.gwID.Kind}
	fraudID := gatewaytest.ID(t, identity.KindAgent, "fraud")
	otherID := gatewaytest.ID(t, identity.KindAgent, "other")
	f.fraud = f.mesh.Issue(t, fraudID, "inc1")
	f.other = f.mesh.Issue(t, otherID, "inc1")
	f.outsider = f.mesh.Issue(t, gatewaytest.ID(t, identity.KindAgent, "outsider"), "inc1")
	f.peers = map[identity.Name]admission.Peer{
		fraudID.Name: {Node: policy.Node{Name: fraudID.Name, Kind: fraudID.Kind}, ID: fraudID, Incarnation: "inc1"},
		otherID.Name: {Node: policy.Node{Name: otherID.Name, Kind: otherID.Kind}, ID: otherID, Incarnation: "inc1"},
	}
	f.up = &modelgwtest.Server{Gate: o.gate}
	hs := httptest.NewServer(f.up)
	t.Cleanup(hs.Close)
	f.upURL = hs.URL
	f.stateDir, f.maxResp, f.bodies, f.log, f.tracer, f.metrics = o.stateDir, o.maxResponse, o.bodies, o.log, o.tracer, o.metrics
	if o.aggregate {
		f.refusals = f.rec.Refusals()
	}
	if o.policy == "" {
		o.policy = basePolicy
	}
	f.start(o.policy)
	return f
}

// start runs a new Gateway (on the fixture's state dir) with doc.
func (f *fixture) start(doc string) {
	f.t.Helper()
	gw, err := New(Config{
		TLS:                f.mesh.ServerTLS(f.mesh.Issue(f.t, f.gwID, "gw1")),
		Upstream:           f.upURL + "/v1",
		UpstreamHeader:     http.Header{"Authorization": {"Bearer upstream-key"}},
		Audit:              f.rec,
		StateDir:           f.stateDir,
		MaxBodyBytes:       64 << 10,
		MaxResponseBytes:   f.maxResp,
		Bodies:             f.bodies,
		MaxRequestsPerPeer: f.cfgRequests,
		Now:                f.clock.now,
		Refusals:           f.refusals,
		Logger:             f.logger(),
		TracerProvider:     f.tracer,
		Metrics:            f.metrics,
	}, f.state(doc))
	if err != nil {
		f.t.Fatal(err)
	}
	f.gw = gw
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		f.t.Fatal(err)
	}
	f.addr = ln.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- gw.Serve(ctx, ln) }()
	var once sync.Once
	f.stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil && err != context.Canceled {
				f.t.Errorf("Serve: %v", err)
			}
		})
	}
	f.t.Cleanup(f.stop)
}

// logger is the gateway's logger: f.log at debug level, or nil.
func (f *fixture) logger() *slog.Logger {
	if f.log == nil {
		return nil
	}
	return slog.New(slog.NewTextHandler(f.log, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

func (f *fixture) state(doc string) *admission.State {
	p, err := policy.Compile([]byte(doc), "v1")
	if err != nil {
		f.t.Fatalf("compile policy: %v", err)
	}
	return &admission.State{Policy: p, Self: f.self, SelfID: f.gwID, Peers: f.peers}
}

func (f *fixture) client(cert *tls.Certificate) *http.Client {
	c := f.mesh.Client(cert, f.gwID)
	f.t.Cleanup(c.CloseIdleConnections)
	return c
}

// local starts a local proxy presenting cert and returns its base URL
// (http://127.0.0.1:PORT).
func (f *fixture) local(cert *tls.Certificate) string {
	f.t.Helper()
	l, err := modelconn.New(modelconn.Config{
		Resolve:        func(context.Context) (string, error) { return "https://" + f.addr, nil },
		TLS:            pki.ClientTLS(func() *tls.Certificate { return cert }, f.mesh.Verifier, pki.ExpectServer(f.gwID)),
		TracerProvider: f.tracer,
	})
	if err != nil {
		f.t.Fatal(err)
	}
	ln, err := loopback.Listen("127.0.0.1:0")
	if err != nil {
		f.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- l.Serve(ctx, ln, loopback.Auth{Token: localToken}) }()
	f.t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			f.t.Errorf("modelconn.Endpoint.Serve: %v", err)
		}
	})
	return "http://" + ln.Addr().String()
}

// localToken is the token of every local endpoint the fixture starts.
const localToken = loopback.TokenPrefix + "modelgw-test-token"

// localClient is an HTTP client for the fixture's local endpoints (on tr,
// nil for a default transport): it sends localToken as its API key, as an
// OpenAI client sends OPENAI_API_KEY.
func localClient(t testing.TB, tr *http.Transport) *http.Client {
	if tr == nil {
		tr = &http.Transport{}
	}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: loopback.WithToken(tr, localToken)}
}

type result struct {
	status int
	header http.Header
	body   []byte
}

func (r result) errBody(t testing.TB) ErrorBody {
	t.Helper()
	var b ErrorBody
	if err := json.Unmarshal(r.body, &b); err != nil {
		t.Fatalf("error body %q: %v", r.body, err)
	}
	return b
}

// do sends method path body with c to base.
func do(t testing.TB, c *http.Client, method, url, body string) result {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Authorization", "Bearer agent-secret")
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return result{resp.StatusCode, resp.Header, b}
}

func (f *fixture) do(cert *tls.Certificate, method, path, body string) result {
	f.t.Helper()
	return do(f.t, f.client(cert), method, "https://"+f.addr+path, body)
}

func chatBody(model string, extra string) string {
	s := `{"model":"` + model + `","messages":[{"role":"user","content":"hi"}]`
	if extra != "" {
		s += "," + extra
	}
	return s + "}"
}

// lastEvent returns the last audit event recorded.
func (f *fixture) lastEvent() (ev struct {
	Model    string
	Decision audit.Decision
	Reason   reason.Code
	Status   int
}, full []byte) {
	evs := f.rec.Events()
	if len(evs) == 0 {
		f.t.Fatal("no audit event recorded")
	}
	e := evs[len(evs)-1]
	ev.Model, ev.Decision, ev.Reason, ev.Status = e.Model, e.Decision, e.Reason, e.Status
	full, _ = json.Marshal(e)
	return ev, full
}

var _ = bytes.NewReader
