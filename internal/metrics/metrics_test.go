package metrics

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"maps"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"

	"github.com/agentmesh/agentmesh/internal/audit"
	"github.com/agentmesh/agentmesh/internal/reason"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// readmeMetrics parses the README's "Metrics" table: name → "type|labels".
func readmeMetrics(t *testing.T) map[string]string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	in := false
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "## ") {
			in = line == "## Metrics"
			continue
		}
		if !in || !strings.HasPrefix(line, "| `agentmesh_") {
			continue
		}
		cells := strings.Split(line, "|")
		if len(cells) < 5 {
			t.Fatalf("README metrics row %q: want name, type, labels, meaning", line)
		}
		name := strings.Trim(strings.TrimSpace(cells[1]), "`")
		var labels []string
		for _, m := range regexp.MustCompile("`([a-z_]+)`").FindAllStringSubmatch(cells[3], -1) {
			labels = append(labels, m[1])
		}
		if _, dup := out[name]; dup {
			t.Errorf("README documents %s twice", name)
		}
		out[name] = strings.TrimSpace(cells[2]) + "|" + strings.Join(labels, ",")
	}
	if len(out) == 0 {
		t.Fatal(`README has no metrics table under "## Metrics"`)
	}
	return out
}

// TestREADMEDocumentsExactlyTheRegisteredMetrics holds the README's table
// and Defs to the same set, with the same types and labels, both ways.
func TestREADMEDocumentsExactlyTheRegisteredMetrics(t *testing.T) {
	doc := readmeMetrics(t)
	for _, d := range Defs() {
		want := string(d.Type) + "|" + strings.Join(d.Labels, ",")
		got, ok := doc[d.Name]
		switch {
		case !ok:
			t.Errorf("metric %s is not in the README's table", d.Name)
		case got != want:
			t.Errorf("README documents %s as %q (type|labels), the code defines %q", d.Name, got, want)
		}
		delete(doc, d.Name)
	}
	for name := range doc {
		t.Errorf("the README documents %s, which package metrics does not define", name)
	}
}

// exercise records something in every metric of s.
func exercise(s *Set) {
	s.Event(&audit.Event{Kind: audit.KindRequest, Method: "tools/call", Decision: audit.Allow, Reason: reason.Allowed,
		Src: "spiffe://agentmesh.local/agent/a", Model: "m", Usage: &audit.Usage{TotalTokens: 7},
		Shadow: &audit.ShadowDecision{Decision: audit.Deny, PolicyVersion: "shadow-1"}})
	s.Refused(&audit.Event{Reason: reason.UnknownCA})
	s.Decision(time.Microsecond)
	s.Upstream(time.Millisecond)
	s.Total(time.Millisecond)
	s.FirstByte(time.Millisecond)
	s.AddSessions(1)
	s.AddStreams(1)
	s.AddProcesses(1)
	s.Certificate(time.Unix(1e9, 0))
	s.View(3, 2, time.Unix(1e9, 0), false, time.Unix(1e9, 0))
	s.WatchSpool(func() uint64 { return 5 })
	s.Shipping(time.Now().Add(-time.Minute))
	s.Shipped(2)
	s.ShipFailed()
	s.Join(reason.Allowed)
	s.Renewal(true)
	s.RevokedNode()
	s.RevokedKey()
	s.Ingested(1, 1, 0, 9)
}

// TestEveryDefIsRegisteredAndNothingElse: a Set registers each metric of
// Defs under its name, help, type and labels, and exports no agentmesh_
// metric that Defs lacks.
func TestEveryDefIsRegisteredAndNothingElse(t *testing.T) {
	s := New()
	for _, d := range Defs() {
		// Registering the same descriptor again must collide.
		var c prometheus.Collector
		switch {
		case d.Type == Histogram && len(d.Labels) == 0:
			c = prometheus.NewHistogram(prometheus.HistogramOpts{Name: d.Name, Help: d.Help})
		case d.Type == Histogram:
			c = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: d.Name, Help: d.Help}, d.Labels)
		case d.Type == Counter && len(d.Labels) == 0:
			c = prometheus.NewCounter(prometheus.CounterOpts{Name: d.Name, Help: d.Help})
		case d.Type == Counter:
			c = prometheus.NewCounterVec(prometheus.CounterOpts{Name: d.Name, Help: d.Help}, d.Labels)
		default:
			c = prometheus.NewGauge(prometheus.GaugeOpts{Name: d.Name, Help: d.Help})
		}
		var are prometheus.AlreadyRegisteredError
		if err := s.Registry().Register(c); !errors.As(err, &are) {
			t.Errorf("%s: registering it again: %v, want AlreadyRegisteredError", d.Name, err)
		}
	}
	exercise(s)
	mfs, err := s.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	types := map[string]Type{}
	for _, d := range Defs() {
		types[d.Name] = d.Type
	}
	seen := map[string]bool{}
	var runtime bool
	for _, mf := range mfs {
		name := mf.GetName()
		runtime = runtime || strings.HasPrefix(name, "go_")
		if !strings.HasPrefix(name, "agentmesh_") {
			continue
		}
		seen[name] = true
		if want, ok := types[name]; !ok {
			t.Errorf("%s is exported but not in Defs", name)
		} else if got := strings.ToLower(mf.GetType().String()); got != string(want) {
			t.Errorf("%s is exported as a %s, Defs says %s", name, got, want)
		}
	}
	for name := range types {
		if !seen[name] {
			t.Errorf("%s was recorded but not exported", name)
		}
	}
	if !runtime {
		t.Error("no go_* metrics: the Go runtime collector is missing")
	}
}

// TestNilSetRecordsNothing: code without metrics calls a nil *Set.
func TestNilSetRecordsNothing(t *testing.T) {
	exercise(nil)
}

func TestLabelsAreBounded(t *testing.T) {
	s := New()
	for i := range 300 {
		s.Event(&audit.Event{Kind: audit.KindRequest, Method: "x/" + strings.Repeat("y", i), Decision: audit.Deny,
			Reason: reason.UnknownMethod, Src: "spiffe://td/agent/n" + strings.Repeat("z", i), Model: "model-" + strings.Repeat("q", i),
			Usage: &audit.Usage{TotalTokens: 1}})
	}
	if n := testutil.CollectAndCount(s.requests); n != 1 {
		t.Errorf("300 invented methods made %d request series, want 1 (other)", n)
	}
	if got := testutil.ToFloat64(s.requests.WithLabelValues("other", "deny", "unknown_method", "agent")); got != 300 {
		t.Errorf("requests{method=other} = %v, want 300", got)
	}
	if n := testutil.CollectAndCount(s.tokens); n != maxLabelValues+1 {
		t.Errorf("300 models and sources made %d token series, want %d (the cap, then other)", n, maxLabelValues+1)
	}
	for _, tc := range []struct{ src, want string }{
		{"spiffe://agentmesh.local/agent/a", "agent"},
		{"spiffe://agentmesh.local/tool/files", "tool"},
		{"spiffe://agentmesh.local/model/llm", "model"},
		{"spiffe://agentmesh.local/admin/root", "admin"},
		{"spiffe://agentmesh.local/what/x", "other"},
		{"tailnet:host", "tailnet"},
		{"", "none"},
	} {
		if got := peerKind(tc.src); got != tc.want {
			t.Errorf("peerKind(%q) = %q, want %q", tc.src, got, tc.want)
		}
	}
}

func TestListenRefusesNonLoopbackUnlessAllowed(t *testing.T) {
	for _, addr := range []string{"0.0.0.0:0", ":0", "10.1.2.3:0"} {
		if ln, err := Listen(addr, false); !errors.Is(err, ErrRemote) {
			if ln != nil {
				ln.Close()
			}
			t.Errorf("Listen(%q) = %v, want ErrRemote", addr, err)
		}
	}
	if _, err := Listen("unix:/tmp/x.sock", false); err == nil {
		t.Error("Listen(unix:...) succeeded; metrics are served over TCP only")
	}
	ln, err := Listen("0.0.0.0:0", true)
	if err != nil {
		t.Fatalf("Listen(0.0.0.0:0, allowRemote): %v", err)
	}
	ln.Close()
}

// TestServeAnswersOnLoopbackOnlyForLoopbackHosts scrapes a served Set and
// checks the DNS-rebinding guard.
func TestServeAnswersOnLoopbackOnlyForLoopbackHosts(t *testing.T) {
	s := New()
	s.Join(reason.Allowed)
	ln, err := Listen("127.0.0.1:0", false)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, ln) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	}()
	get := func(host string) (int, string) {
		req, _ := http.NewRequest(http.MethodGet, URL(ln), nil)
		if host != "" {
			req.Host = host
		}
		tr := &http.Transport{}
		defer tr.CloseIdleConnections()
		resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	code, body := get("")
	if code != http.StatusOK || !strings.Contains(body, `agentmesh_coordinator_joins_total{reason="allowed"} 1`) || !strings.Contains(body, "go_goroutines") {
		t.Fatalf("GET /metrics: %d\n%s", code, body)
	}
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	if code, _ := get("localhost:" + port); code != http.StatusOK {
		t.Errorf("Host localhost:%s: status %d, want 200", port, code)
	}
	if code, _ := get("evil.example:" + port); code != http.StatusForbidden {
		t.Errorf("Host evil.example: status %d, want 403", code)
	}
}

// metricName finds agentmesh metric names in a PromQL expression.
var metricName = regexp.MustCompile(`agentmesh_[a-z0-9_]+`)

// TestExamplesUseOnlyDefinedMetrics: every agentmesh_ metric the Grafana
// dashboard and the alerting rules name exists (a histogram with its
// _bucket, _sum or _count series), and both use at least a few.
func TestExamplesUseOnlyDefinedMetrics(t *testing.T) {
	defined := map[string]Type{}
	for _, d := range Defs() {
		defined[d.Name] = d.Type
	}
	for _, f := range []string{"grafana/agentmesh.json", "prometheus/alerts.yml"} {
		b, err := os.ReadFile(filepath.Join("..", "..", "examples", f))
		if err != nil {
			t.Fatal(err)
		}
		if strings.HasSuffix(f, ".json") {
			var dash struct {
				Title  string `json:"title"`
				Panels []struct {
					Title   string `json:"title"`
					Targets []struct {
						Expr string `json:"expr"`
					} `json:"targets"`
				} `json:"panels"`
			}
			if err := json.Unmarshal(b, &dash); err != nil || dash.Title == "" || len(dash.Panels) == 0 {
				t.Fatalf("%s: not a dashboard with panels: %v", f, err)
			}
		}
		used := map[string]bool{}
		for _, name := range metricName.FindAllString(string(b), -1) {
			used[name] = true
			if _, ok := defined[name]; ok {
				continue
			}
			ok := false
			for _, suf := range []string{"_bucket", "_sum", "_count"} {
				if b, cut := strings.CutSuffix(name, suf); cut && defined[b] == Histogram {
					ok = true
				}
			}
			if !ok {
				t.Errorf("%s uses %s, which agentmesh does not export", f, name)
			}
		}
		if len(used) < 5 {
			t.Errorf("%s uses only %v", f, slices.Sorted(maps.Keys(used)))
		}
	}
}

// BenchmarkEvent is the cost a gateway pays per decision with metrics on.
func BenchmarkEvent(b *testing.B) {
	s := New()
	e := &audit.Event{Kind: audit.KindRequest, Method: "tools/call", Decision: audit.Allow, Reason: reason.Allowed, Src: "spiffe://agentmesh.local/agent/a"}
	b.ReportAllocs()
	for b.Loop() {
		s.Event(e)
		s.Decision(time.Microsecond)
	}
}
