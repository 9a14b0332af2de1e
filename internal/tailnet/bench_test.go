package tailnet_test

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/agentmesh/agentmesh/internal/admission"
	"github.com/agentmesh/agentmesh/internal/connector"
	"github.com/agentmesh/agentmesh/internal/gateway"
	"github.com/agentmesh/agentmesh/internal/gateway/gatewaytest"
	"github.com/agentmesh/agentmesh/internal/identity"
	"github.com/agentmesh/agentmesh/internal/loopback"
	"github.com/agentmesh/agentmesh/internal/pki"
	"github.com/agentmesh/agentmesh/internal/policy"
	"github.com/agentmesh/agentmesh/internal/tailnet"
	"github.com/agentmesh/agentmesh/internal/tailnet/tailnettest"
)

// BenchmarkToolCallPaths measures one tools/call from an MCP SDK client to
// an SDK server three ways, interleaved call by call in the same run:
// directly; through a connector and a gateway over mTLS (the default
// path); and through a connector and a gateway over a userspace WireGuard
// tailnet (tsnet, Tailscale mode). Both agentmesh paths enforce the same
// policy and audit into an in-memory recorder. It reports each path's p50
// and p99 and what each adds at p50 over direct.
//
//	go test -run '^$' -bench ToolCallPaths -benchtime 2000x ./internal/tailnet/
func BenchmarkToolCallPaths(b *testing.B) {
	if !tailnettest.InLoopbackNamespace(b) {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	up := gatewaytest.NewUpstream(b)
	rec := gatewaytest.NewRecorder()
	pol, err := policy.Compile([]byte(`{"grants": [{"src": ["tag:agents", "agent:agent"], "dst": ["tool:tools"], "tools": ["echo"]}]}`), "1")
	if err != nil {
		b.Fatal(err)
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	serve := func(g *gateway.Gateway, ln net.Listener) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := g.Serve(ctx, ln); err != nil {
				b.Error(err)
			}
		}()
	}
	local := func(cfg connector.Config) string {
		cn, err := connector.New(cfg)
		if err != nil {
			b.Fatal(err)
		}
		ln, err := connector.Listen("127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer cn.Close()
			// The benchmark's own client is the only one on this loopback.
			if err := cn.ServeListener(ctx, ln, loopback.Auth{NoToken: true}); err != nil && !errors.Is(err, context.Canceled) {
				b.Error(err)
			}
		}()
		return "http://" + ln.Addr().String() + "/mcp"
	}

	// The mTLS path, as 'agentmesh serve' and 'agentmesh connect' run it.
	mesh := gatewaytest.NewMesh(b)
	gwID := gatewaytest.ID(b, identity.KindTool, "tools")
	agentID := gatewaytest.ID(b, identity.KindAgent, "agent")
	gwCert, agentCert := mesh.Issue(b, gwID, "1"), mesh.Issue(b, agentID, "1")
	self := policy.Node{Name: "tools", Kind: identity.KindTool, Tags: []identity.Tag{}}
	st := &admission.State{Policy: pol, Self: self, SelfID: gwID, Peers: map[identity.Name]admission.Peer{
		"agent": {Node: policy.Node{Name: "agent", Kind: identity.KindAgent, Tags: []identity.Tag{}}, ID: agentID, Incarnation: "1"},
	}}
	mtlsGW, err := gateway.New(gateway.Config{
		TLS:      pki.NewServerTLS(pki.ServerOptions{Certificate: func() *tls.Certificate { return gwCert }, Verifier: mesh.Verifier}),
		Upstream: gateway.HTTPUpstream{URL: up.URL}, Audit: rec,
	}, st)
	if err != nil {
		b.Fatal(err)
	}
	tcp, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	serve(mtlsGW, tcp)
	gwURL := "https://" + tcp.Addr().String()
	mtlsURL := local(connector.Config{
		TLS:     pki.ClientTLS(func() *tls.Certificate { return agentCert }, mesh.Verifier, pki.ExpectServer(gwID)),
		Resolve: func(context.Context) (string, error) { return gwURL, nil },
	})

	// The tailnet path.
	jctx, jcancel := context.WithTimeout(ctx, 30*time.Second)
	defer jcancel()
	tn := tailnettest.New(b)
	gwNode := tn.Join(b, jctx, "tools", "tag:tools")
	agent := tn.Join(b, jctx, "agent", "tag:agents")
	tsGW, err := gateway.New(gateway.Config{
		Upstream: gateway.HTTPUpstream{URL: up.URL}, Audit: rec,
		Identifier: tailnet.NewIdentifier(gwNode, tailnet.IdentifierConfig{}),
	}, st)
	if err != nil {
		b.Fatal(err)
	}
	tsln, err := gwNode.Listen(":80")
	if err != nil {
		b.Fatal(err)
	}
	serve(tsGW, tsln)
	tsURL := local(connector.Config{
		Dial:    agent.Dial,
		Resolve: func(context.Context) (string, error) { return "http://tools." + tailnettest.MagicDNS + ":80", nil },
	})

	open := func(url string) *mcp.ClientSession {
		cs, err := mcp.NewClient(&mcp.Implementation{Name: "bench", Version: "1"}, nil).Connect(jctx,
			&mcp.StreamableClientTransport{Endpoint: url, HTTPClient: &http.Client{}}, nil)
		if err != nil {
			b.Fatalf("connect %s: %v", url, err)
		}
		b.Cleanup(func() { cs.Close() })
		return cs
	}
	paths := []struct {
		name string
		cs   *mcp.ClientSession
		took []time.Duration
	}{{name: "direct", cs: open(up.URL)}, {name: "mtls", cs: open(mtlsURL)}, {name: "tailnet", cs: open(tsURL)}}
	args := map[string]any{"text": "bench"}
	call := func(cs *mcp.ClientSession) time.Duration {
		start := time.Now()
		res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "echo", Arguments: args})
		if err != nil || res.IsError {
			b.Fatalf("echo: %v", err)
		}
		return time.Since(start)
	}
	for range 50 { // warm every path (the tailnet's first packets go through DERP)
		for _, p := range paths {
			call(p.cs)
		}
	}
	b.ResetTimer()
	for i := range b.N {
		for k := range paths {
			p := &paths[(i+k)%len(paths)] // rotate the order
			p.took = append(p.took, call(p.cs))
		}
	}
	b.StopTimer()
	direct := quantile(paths[0].took, 0.5)
	for _, p := range paths {
		p50, p99 := quantile(p.took, 0.5), quantile(p.took, 0.99)
		b.ReportMetric(float64(p50.Microseconds()), p.name+"-p50-µs")
		b.ReportMetric(float64(p99.Microseconds()), p.name+"-p99-µs")
		if p.name != "direct" {
			b.ReportMetric(float64((p50 - direct).Microseconds()), p.name+"-added-p50-µs")
		}
	}
	b.ReportMetric(0, "ns/op") // a round of three calls is not one operation
}

func quantile(ds []time.Duration, q float64) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[min(len(s)-1, int(q*float64(len(s))))]
}
