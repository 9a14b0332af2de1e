//go:build unix

package e2e

import (
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestMetricsFollowTraffic runs a mesh of real processes, each with
// --metrics 127.0.0.1:0, learns where each serves its metrics from the
// --ready-fd lines, and scrapes /metrics before and after traffic: an
// allowed and a denied tools/call through a connector, a handshake
// without a certificate. The documented series move as they should on the
// gateway, the connector and the coordinator.
func TestMetricsFollowTraffic(t *testing.T) {
	requireE2E(t)
	m := &mesh{t: t, dir: t.TempDir()}
	metricsFlag := []string{"--metrics", "127.0.0.1:0"}

	co := startServer(t, "coordinator", append([]string{agentmeshBin, "coordinator", "--data", filepath.Join(m.dir, "coord"), "--listen", "127.0.0.1:0"}, metricsFlag...), m.env())
	api := waitAPI(t, co, "control")
	m.admin, m.coord, m.coordAddr = api.AdminState, co, api.Addr
	coordMetrics := waitAPI(t, co, "metrics").URL
	if !strings.HasPrefix(coordMetrics, "http://127.0.0.1:") || !strings.HasSuffix(coordMetrics, "/metrics") {
		t.Fatalf("coordinator announced metrics at %q", coordMetrics)
	}
	coBefore := scrape(t, coordMetrics)
	if coBefore.sum("go_goroutines", nil) == 0 {
		t.Error("the coordinator exports no go_goroutines: the Go runtime collector is missing")
	}

	tool := m.join("tool", "everything", "tag:demo")
	agent := m.join("agent", "assistant", "tag:assistants")
	m.applyPolicy(everythingPolicy)
	joined := map[string]string{"reason": "allowed"}
	if got := scrape(t, coordMetrics).sum("agentmesh_coordinator_joins_total", joined) - coBefore.sum("agentmesh_coordinator_joins_total", joined); got != 2 {
		t.Errorf("agentmesh_coordinator_joins_total{reason=allowed} grew by %v for two joins", got)
	}

	gw := startServer(t, "gateway everything", append(append([]string{agentmeshBin, "serve", "--state", tool, "--listen", "127.0.0.1:0"}, metricsFlag...),
		"--", "node", filepath.Join(nodeModules, "@modelcontextprotocol/server-everything/dist/index.js"), "stdio"), m.env())
	gwMTLS := waitAPI(t, gw, "mcp")
	gwMetrics := waitAPI(t, gw, "metrics").URL
	conn := startServer(t, "connect everything", append([]string{agentmeshBin, "connect", "everything", "--state", agent, "--listen", "127.0.0.1:0"}, metricsFlag...), m.env())
	local := waitAPI(t, conn, "mcp")
	connMetrics := waitAPI(t, conn, "metrics").URL
	token := localToken(t, local.TokenFile, agent)

	before := scrape(t, gwMetrics)
	for _, name := range []string{"agentmesh_gateway_sessions", "agentmesh_gateway_stdio_processes"} {
		if v := before.sum(name, nil); v != 0 {
			t.Errorf("%s is %v before any client", name, v)
		}
	}

	out := runClient(t, httpClient(local.URL, token,
		step{Op: "callTool", Name: "echo", Arguments: map[string]any{"message": "counted"}},
		step{Op: "callTool", Name: "get-env"},
	))
	if got := texts(t, out.Results[0]); !strings.Contains(got, "counted") {
		t.Fatalf("echo returned %q", got)
	}
	policyDenial(t, out.Results[1], "not_granted")

	// A local request without the endpoint's token is refused by the
	// connector, and counted there.
	resp, err := http.Post(local.URL, "application/json", strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"ping"}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("a request without the token: %s, want 401", resp.Status)
	}
	http.DefaultClient.CloseIdleConnections()

	// A handshake without a client certificate is refused and counted.
	if c, err := tls.Dial("tcp", gwMTLS.Addr, &tls.Config{InsecureSkipVerify: true}); err == nil {
		// TLS 1.3: the server's refusal arrives with the first read.
		c.SetReadDeadline(time.Now().Add(commandTimeout))
		c.Read(make([]byte, 1))
		c.Close()
	}

	// Decisions are counted before the client sees the answer; the total
	// latency, the refusal and shipping are counted a moment later.
	after := waitMetrics(t, gwMetrics, func(s samples) string {
		switch {
		case s.sum("agentmesh_gateway_latency_seconds_count", map[string]string{"hop": "total"}) <= before.sum("agentmesh_gateway_latency_seconds_count", map[string]string{"hop": "total"}):
			return "total latency not observed"
		case s.sum("agentmesh_refused_connections_total", nil) <= before.sum("agentmesh_refused_connections_total", nil):
			return "refused handshake not counted"
		case s.sum("agentmesh_audit_shipped_events_total", nil) < 2 || s.sum("agentmesh_audit_spool_events", nil) != 0:
			return "audit events not shipped"
		}
		return ""
	})
	grew := func(name string, labels map[string]string) float64 {
		return after.sum(name, labels) - before.sum(name, labels)
	}
	allowed := map[string]string{"method": "tools/call", "decision": "allow", "reason": "allowed", "peer_kind": "agent"}
	denied := map[string]string{"method": "tools/call", "decision": "deny", "reason": "not_granted", "peer_kind": "agent"}
	if d := grew("agentmesh_gateway_requests_total", allowed); d != 1 {
		t.Errorf("requests_total%v grew by %v, want 1", allowed, d)
	}
	if d := grew("agentmesh_gateway_requests_total", denied); d != 1 {
		t.Errorf("requests_total%v grew by %v, want 1", denied, d)
	}
	if d := grew("agentmesh_gateway_requests_total", map[string]string{"method": "initialize", "decision": "allow"}); d < 1 {
		t.Errorf("no initialize counted (grew by %v)", d)
	}
	for _, hop := range []string{"decision", "upstream", "total"} {
		l := map[string]string{"hop": hop}
		if d := grew("agentmesh_gateway_latency_seconds_count", l); d < 1 {
			t.Errorf("latency{hop=%s} count grew by %v", hop, d)
		}
		if after.sum("agentmesh_gateway_latency_seconds_bucket", map[string]string{"hop": hop, "le": "+Inf"}) != after.sum("agentmesh_gateway_latency_seconds_count", l) {
			t.Errorf("latency{hop=%s}: the +Inf bucket is not the count", hop)
		}
	}
	// The client ends without DELETE: its session and its stdio process
	// stay until the idle timeout.
	for _, name := range []string{"agentmesh_gateway_sessions", "agentmesh_gateway_stdio_processes"} {
		if v := after.sum(name, nil); v < 1 {
			t.Errorf("%s is %v after a client opened a session", name, v)
		}
	}
	if !after.has("agentmesh_gateway_streams") {
		t.Error("agentmesh_gateway_streams is not exported")
	}
	if d := grew("agentmesh_refused_connections_total", map[string]string{"reason": "no_certificate"}); d < 1 {
		t.Errorf("refused_connections_total{reason=no_certificate} grew by %v (series: %v)", d, after.names("agentmesh_refused"))
	}
	if v := after.sum("agentmesh_audit_ship_errors_total", nil); v != 0 {
		t.Errorf("agentmesh_audit_ship_errors_total = %v with the coordinator up", v)
	}
	if v := after.sum("agentmesh_audit_spool_oldest_event_age_seconds", nil); v != 0 {
		t.Errorf("oldest unshipped event is %v s old with an empty spool", v)
	}
	connAfter := scrape(t, connMetrics)
	if v := connAfter.sum("agentmesh_refused_connections_total", map[string]string{"reason": "local_auth"}); v != 1 {
		t.Errorf("the connector counts %v local_auth refusals, want 1", v)
	}
	now := float64(time.Now().Unix())
	for url, s := range map[string]samples{"gateway": after, "connector": connAfter} {
		if exp := s.sum("agentmesh_node_certificate_expiry_timestamp_seconds", nil); exp <= now {
			t.Errorf("%s: certificate expiry %v is not in the future", url, exp)
		}
		if s.sum("agentmesh_netmap_version", nil) < 1 || s.sum("agentmesh_policy_version", nil) < 1 {
			t.Errorf("%s: netmap version %v, policy version %v: want the applied ones", url, s.sum("agentmesh_netmap_version", nil), s.sum("agentmesh_policy_version", nil))
		}
		if s.sum("agentmesh_netmap_stale", nil) != 0 || s.sum("agentmesh_netmap_confirmed_timestamp_seconds", nil) <= 0 {
			t.Errorf("%s: a fresh view should be confirmed and not stale", url)
		}
	}

	coAfter := waitMetrics(t, coordMetrics, func(s samples) string {
		if s.sum("agentmesh_coordinator_audit_events_ingested_total", map[string]string{"result": "added"}) < 2 {
			return "the gateway's events are not ingested"
		}
		return ""
	})
	if coAfter.sum("agentmesh_coordinator_audit_chain_head_seq", nil) < 2 {
		t.Errorf("audit chain head %v after ingesting events", coAfter.sum("agentmesh_coordinator_audit_chain_head_seq", nil))
	}
	if coAfter.sum("agentmesh_coordinator_renewals_total", map[string]string{"result": "error"}) != 0 {
		t.Error("a renewal failed")
	}
}

// waitAPI waits for p's ready line for api ("mcp", "control", "metrics").
func waitAPI(t *testing.T, p *proc, api string) serving {
	t.Helper()
	var s serving
	_, err := p.waitLine(p.ready, startTimeout, func(l string) bool {
		s = serving{}
		return json.Unmarshal([]byte(l), &s) == nil && s.API == api
	})
	if err != nil {
		t.Fatalf("%s did not announce its %s endpoint: %v", p.label, api, err)
	}
	return s
}

// sample is one series of a scrape.
type sample struct {
	name   string
	labels map[string]string
	value  float64
}

type samples []sample

// sum adds the values of the series named name whose labels include want.
func (ss samples) sum(name string, want map[string]string) float64 {
	total := 0.0
	for _, s := range ss {
		if s.name != name {
			continue
		}
		ok := true
		for k, v := range want {
			ok = ok && s.labels[k] == v
		}
		if ok {
			total += s.value
		}
	}
	return total
}

func (ss samples) has(name string) bool {
	for _, s := range ss {
		if s.name == name {
			return true
		}
	}
	return false
}

// names lists the series whose name starts with prefix, for messages.
func (ss samples) names(prefix string) []string {
	var out []string
	for _, s := range ss {
		if strings.HasPrefix(s.name, prefix) {
			out = append(out, fmt.Sprintf("%s%v=%v", s.name, s.labels, s.value))
		}
	}
	return out
}

// scrape GETs url and parses the Prometheus text format.
func scrape(t *testing.T, url string) samples {
	t.Helper()
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr, Timeout: commandTimeout}).Get(url)
	if err != nil {
		t.Fatalf("scrape %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("scrape %s: %s %v\n%s", url, resp.Status, err, b)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Errorf("scrape %s: Content-Type %q, want the text format", url, ct)
	}
	ss, err := parseText(string(b))
	if err != nil {
		t.Fatalf("scrape %s: %v\n%s", url, err, b)
	}
	return ss
}

// waitMetrics scrapes url until ready returns "" and returns that scrape.
// A scrape has no change to wait on, so it is polled, with a deadline.
func waitMetrics(t *testing.T, url string, ready func(samples) string) samples {
	t.Helper()
	deadline := time.NewTimer(commandTimeout)
	defer deadline.Stop()
	poll := time.NewTicker(50 * time.Millisecond)
	defer poll.Stop()
	for {
		s := scrape(t, url)
		why := ready(s)
		if why == "" {
			return s
		}
		select {
		case <-poll.C:
		case <-deadline.C:
			t.Fatalf("%s: %s within %v", url, why, commandTimeout)
		}
	}
}

// parseText parses the samples of the Prometheus text format (comments
// skipped): NAME{L="V",...} VALUE.
func parseText(text string) (samples, error) {
	var out samples
	for _, line := range strings.Split(text, "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		s := sample{labels: map[string]string{}}
		rest := line
		if i := strings.IndexAny(rest, "{ "); i < 0 {
			return nil, fmt.Errorf("line %q: no value", line)
		} else {
			s.name, rest = rest[:i], rest[i:]
		}
		if strings.HasPrefix(rest, "{") {
			rest = rest[1:]
			for !strings.HasPrefix(rest, "}") {
				eq := strings.Index(rest, `="`)
				if eq < 0 {
					return nil, fmt.Errorf("line %q: bad labels", line)
				}
				key := strings.TrimPrefix(rest[:eq], ",")
				rest = rest[eq+2:]
				var v strings.Builder
				for {
					if rest == "" {
						return nil, fmt.Errorf("line %q: unterminated label value", line)
					}
					c := rest[0]
					rest = rest[1:]
					if c == '"' {
						break
					}
					if c == '\\' && rest != "" {
						c = rest[0]
						if c == 'n' {
							c = '\n'
						}
						rest = rest[1:]
					}
					v.WriteByte(c)
				}
				s.labels[key] = v.String()
				rest = strings.TrimPrefix(rest, ",")
			}
			rest = rest[1:]
		}
		fields := strings.Fields(rest)
		if len(fields) == 0 {
			return nil, fmt.Errorf("line %q: no value", line)
		}
		v, err := strconv.ParseFloat(fields[0], 64)
		if err != nil {
			return nil, fmt.Errorf("line %q: %v", line, err)
		}
		s.value = v
		out = append(out, s)
	}
	return out, nil
}
