package coordinator

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/agentmesh/agentmesh/internal/authkey"
	"github.com/agentmesh/agentmesh/internal/controlapi"
	"github.com/agentmesh/agentmesh/internal/controlclient"
	"github.com/agentmesh/agentmesh/internal/identity"
	"github.com/agentmesh/agentmesh/internal/nodestate"
	"github.com/agentmesh/agentmesh/internal/pki"
)

// fuzzRoutes are the request bodies the coordinator decodes, by whom they
// come from: join from anybody, renew and register from a node, the rest
// from an admin.
var fuzzRoutes = []struct {
	path  string
	as    string // "", "tool" or "admin"
	seeds []string
}{
	{controlapi.PathJoin, "", nil}, // seeded with a real join below
	{controlapi.PathRenew, "tool", nil},
	{controlapi.PathRegister, "tool", []string{`{"addrs":["files.internal:7800"]}`, `{"addrs":["[::1]:1","\u001b:1"]}`, `{"addrs":null}`}},
	{controlapi.PathKeys, "admin", []string{`{"kind":"tool","tags":["tag:a"],"reusable":true,"expiry":60000000000,"name":"x"}`, `{"kind":"admin","name":"coordinator"}`, `{"expiry":-1}`}},
	{controlapi.PathNodes + "/fuzz-tool/tags", "admin", []string{`{"tags":["tag:a","tag:b"]}`, `{"tags":["tag:a","tag:a"]}`, `{"tags":["bad"]}`}},
	{controlapi.PathPolicy, "admin", []string{`{"document":"{\"grants\":[{\"src\":[\"*\"],\"dst\":[\"*\"],\"tools\":[\"*\"]}]}"}`, `{"document":"{"}`, `{"document":""}`}},
	{controlapi.PathRollback, "admin", []string{`{"version":1}`, `{"version":-5}`, `{"version":9223372036854775807}`}},
	// What a hostile tool node may send about its own service: tool
	// reports and approval holds.
	{controlapi.PathTools, "tool", []string{
		`{"tools":[{"name":"echo","hash":"sha256:` + strings.Repeat("0", 64) + `","definition":{"name":"echo","inputSchema":{"type":"object"}}}]}`,
		`{"tools":[{"name":"a","definition":{"name":"b"}},{"name":"a","definition":{"name":"a"}}]}`,
		`{"tools":[{"name":"\u202e","definition":{"name":"\u202e","description":1e400}}]}`, `{"tools":null}`}},
	{controlapi.PathApprovals, "tool", []string{
		`{"caller":"spiffe://fuzz.mesh/agent/a","tool":"transfer","grant":0,"group":"group:oncall","policy_version":"1","timeout":60000000000,"event_id":"e1"}`,
		`{"caller":"","tool":"","grant":-1,"group":"","timeout":-1}`, `{"grant":9223372036854775807,"timeout":9223372036854775807}`}},
}

// FuzzControlAPIBodies sends arbitrary bodies to every handler that
// decodes one, as the caller each expects (a client without a certificate
// for join, a joined tool node, an admin), through the coordinator's real
// routes, database and CA. No body may crash it or make it fail inside
// (5xx), and a join is only granted for the name and kind it asked for,
// with a key it holds.
func FuzzControlAPIBodies(f *testing.F) {
	dir := f.TempDir()
	co, err := Start(context.Background(), Config{DataDir: filepath.Join(dir, "mesh"), Listen: "127.0.0.1:0", TrustDomain: "fuzz.mesh",
		Limits: Limits{JoinRate: 1e12, JoinBurst: 1 << 30}})
	if err != nil {
		f.Fatal(err)
	}
	defer co.Close()
	ctx := context.Background()
	adminDir, err := nodestate.Open(co.AdminDir())
	if err != nil {
		f.Fatal(err)
	}
	admin, err := controlclient.New(adminDir, controlclient.Options{})
	if err != nil {
		f.Fatal(err)
	}
	defer admin.Close()
	var key controlapi.KeyCreateResponse
	if err := admin.Call(ctx, http.MethodPost, controlapi.PathKeys, controlapi.KeyCreateRequest{Kind: "tool", Reusable: true, Expiry: 24 * time.Hour}, &key); err != nil {
		f.Fatal(err)
	}
	toolDir := filepath.Join(dir, "tool")
	if _, err := controlclient.Join(ctx, controlclient.JoinOptions{AuthKey: key.Key, Name: "fuzz-tool", State: toolDir}); err != nil {
		f.Fatal(err)
	}
	certOf := func(path string) []*tls.Certificate {
		d, err := nodestate.Open(path)
		if err != nil {
			f.Fatal(err)
		}
		tc, _, err := d.Certificate()
		if err != nil {
			f.Fatal(err)
		}
		return []*tls.Certificate{tc}
	}
	peers := map[string]*tls.Certificate{"tool": certOf(toolDir)[0], "admin": certOf(co.AdminDir())[0]}
	k, _ := authkey.Parse(key.Key)
	pk, _ := pki.NewKey()
	csr, _ := pki.CreateCSR(pk)
	csrPEM := string(pki.EncodeCSRPEM(csr))
	seed := func(v any) string { b, _ := json.Marshal(v); return string(b) }
	fuzzRoutes[0].seeds = []string{
		seed(controlapi.JoinRequest{KeyID: k.ID, Secret: k.Secret, Name: "joined", CSR: csrPEM}),
		seed(controlapi.JoinRequest{KeyID: k.ID, Secret: k.Secret, Name: "joined", Kind: "agent", CSR: csrPEM}),
		seed(controlapi.JoinRequest{KeyID: k.ID, Secret: strings.Repeat("0", 64), Name: "x\u202e", CSR: "-----BEGIN CERTIFICATE REQUEST-----\n"}),
		`{"key_id":"k00","name":"` + strings.Repeat("a", 70) + `"}`,
	}
	fuzzRoutes[1].seeds = []string{seed(controlapi.RenewRequest{CSR: csrPEM}), `{"csr":""}`, `{"csr":"-----BEGIN CERTIFICATE REQUEST-----\nMII=\n-----END CERTIFICATE REQUEST-----\n"}`}
	for i, r := range fuzzRoutes {
		for _, s := range r.seeds {
			f.Add(uint8(i), []byte(s))
		}
	}
	handler := co.routes()
	f.Fuzz(func(t *testing.T, route uint8, body []byte) {
		rt := fuzzRoutes[int(route)%len(fuzzRoutes)]
		r := httptest.NewRequest(http.MethodPost, rt.path, bytes.NewReader(body))
		r.RemoteAddr = "127.0.0.1:40000"
		r.TLS = &tls.ConnectionState{Version: tls.VersionTLS13}
		if c := peers[rt.as]; c != nil {
			r.TLS.PeerCertificates = []*x509.Certificate{c.Leaf}
		}
		w := httptest.NewRecorder()
		handler.ServeHTTP(w, r)
		if w.Code >= 500 {
			t.Fatalf("%s: status %d for %q: %s", rt.path, w.Code, body, w.Body)
		}
		if rt.path != controlapi.PathJoin || w.Code != http.StatusOK {
			return
		}
		// A granted join: the certificate names what was asked for, with
		// the key's kind, and the key was the real one.
		var req controlapi.JoinRequest
		if err := json.Unmarshal(body, &req); err != nil || req.KeyID != k.ID || req.Secret != k.Secret {
			t.Fatalf("join granted for a request that does not carry the key: %q", body)
		}
		var resp controlapi.CertResponse
		if err := json.Unmarshal(w.Body.Bytes(), &resp); err != nil {
			t.Fatal(err)
		}
		certs, err := pki.DecodeCertsPEM([]byte(resp.Certificate))
		if err != nil || len(certs) != 1 {
			t.Fatalf("join answered with %q: %v", resp.Certificate, err)
		}
		id, err := identity.FromCertificate(certs[0])
		if err != nil || string(id.Name) != req.Name || id.Kind != identity.KindTool {
			t.Fatalf("join for %q issued %v (%v)", req.Name, id, err)
		}
		// Free the name again, so later inputs can reach the same path.
		rv := httptest.NewRequest(http.MethodPost, controlapi.PathNodes+"/"+req.Name+"/revoke", nil)
		rv.RemoteAddr, rv.TLS = r.RemoteAddr, &tls.ConnectionState{Version: tls.VersionTLS13, PeerCertificates: []*x509.Certificate{peers["admin"].Leaf}}
		handler.ServeHTTP(httptest.NewRecorder(), rv)
	})
}
