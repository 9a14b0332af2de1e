package cli

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/tls"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode"

	"github.com/agentmesh/agentmesh/internal/audit"
	"github.com/agentmesh/agentmesh/internal/controlapi"
	"github.com/agentmesh/agentmesh/internal/identity"
	"github.com/agentmesh/agentmesh/internal/netmap"
	"github.com/agentmesh/agentmesh/internal/nodestate"
	"github.com/agentmesh/agentmesh/internal/pki"
	"github.com/agentmesh/agentmesh/internal/pki/pkitest"
)

// hostile is a string a peer could have put into the trail, a node record
// or an error: terminal escapes that set the title, clear the screen and
// answer back, a forged line, C1 controls, bidi overrides and isolates,
// zero-width and other invisible characters.
const hostile = "x\x1b]0;owned\x07\x1b[2J\x1b[6n\r\nfake\tcolumn\x7f\u009b1m\u202egnp.exe\u2067\u2069\u200b\u2028\U000e0041\u3164"

// marker is part of how hostile looks escaped: proof that the string was
// printed, not dropped.
const marker = `\u202egnp.exe`

// unsafeRune returns the first character in s that a terminal could act on
// or would not draw; newlines are the output's own.
func unsafeRune(s string) (rune, bool) {
	for _, r := range s {
		if r == '\n' {
			continue
		}
		if r < 0x20 || r == 0x7f || r >= 0x80 && r < 0xa0 || r == 0xfffd ||
			unicode.In(r, unicode.Cc, unicode.Cf, unicode.Zl, unicode.Zp, unicode.Other_Default_Ignorable_Code_Point) {
			return r, true
		}
	}
	return 0, false
}

// fakeCoordinator answers every admin call a CLI command makes with records
// full of hostile strings, and refuses node revocations with a hostile
// message; it returns an admin state directory that trusts it.
func fakeCoordinator(t *testing.T) string {
	t.Helper()
	now := time.Now()
	ca := pkitest.NewCA(t, pkitest.TrustDomain, now)
	server := pkitest.Issue(t, ca, pkitest.ID(t, pkitest.TrustDomain, identity.KindAdmin, "coordinator"), now, time.Hour)
	admin := pkitest.Issue(t, ca, pkitest.ID(t, pkitest.TrustDomain, identity.KindAdmin, "admin"), now, time.Hour)
	ev := audit.Event{V: audit.SchemaVersion, Seq: 1, ID: strings.Repeat("a", 32), Time: now, Kind: audit.KindRequest,
		Src: "spiffe://test.mesh/agent/" + hostile, Dst: hostile, Method: hostile, Tool: hostile, Decision: hostile, Reason: hostile, Detail: hostile}
	h := http.NewServeMux()
	reply := func(path string, v any) {
		h.HandleFunc(path, func(w http.ResponseWriter, r *http.Request) { json.NewEncoder(w).Encode(v) })
	}
	reply("GET "+controlapi.PathNodes, []controlapi.NodeInfo{{Name: hostile, Kind: hostile, ID: hostile, Tags: []string{hostile}, Status: hostile, Addrs: []string{hostile}}})
	reply("GET "+controlapi.PathKeys, []controlapi.KeyInfo{{ID: hostile, Kind: hostile, Tags: []string{hostile}, CreatedBy: hostile, ExpiresAt: now}})
	reply("POST "+controlapi.PathKeys, controlapi.KeyCreateResponse{Key: hostile, Info: controlapi.KeyInfo{ID: hostile, Kind: hostile, Tags: []string{hostile}}})
	reply("GET "+controlapi.PathHistory, []controlapi.PolicyVersion{{Version: 1, AppliedBy: hostile, Note: hostile}})
	reply("GET "+controlapi.PathPolicy, controlapi.PolicyVersion{Version: 1, AppliedBy: hostile, Document: "{}\n"})
	reply("GET "+controlapi.PathVerify, audit.Report{Problem: hostile, BrokenID: hostile})
	reply("GET "+controlapi.PathNetmap, netmap.Netmap{Version: 1, TrustDomain: "test.mesh",
		Nodes: []netmap.Node{{ID: pkitest.ID(t, pkitest.TrustDomain, identity.KindAdmin, "admin"), Name: "admin", Kind: identity.KindAdmin,
			Tags: []identity.Tag{identity.Tag(hostile)}, Status: netmap.StatusActive}}})
	h.HandleFunc("GET "+controlapi.PathAudit, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("after") != "" && r.URL.Query().Get("after") != "0" {
			return // --follow: nothing newer
		}
		json.NewEncoder(w).Encode(ev)
	})
	h.HandleFunc("POST "+controlapi.PathNodes+"/{name}/revoke", func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusForbidden)
		json.NewEncoder(w).Encode(controlapi.Error{Error: hostile, Code: hostile})
	})
	srv := httptest.NewUnstartedServer(h)
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{*server}, ClientAuth: tls.RequestClientCert, MinVersion: tls.VersionTLS13}
	srv.StartTLS()
	t.Cleanup(srv.Close)

	dir := filepath.Join(t.TempDir(), "admin")
	d, err := nodestate.Create(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, err := range []error{
		d.SaveKey(admin.PrivateKey.(*ecdsa.PrivateKey)),
		d.SaveCertificate(admin.Leaf.Raw),
		d.SaveCABundle(pki.EncodeCertPEM(ca.Certificate())),
		d.SaveConfig(nodestate.Config{CoordinatorURL: srv.URL, CAFingerprint: ca.Fingerprint(), TrustDomain: "test.mesh", Name: "admin", Kind: "admin"}),
	} {
		if err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// signalWriter is a buffer that says when something was written to it.
type signalWriter struct {
	mu    sync.Mutex
	buf   bytes.Buffer
	wrote chan struct{}
	once  sync.Once
}

func (w *signalWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.once.Do(func() { close(w.wrote) })
	return w.buf.Write(p)
}

func (w *signalWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}

func TestEveryCommandEscapesHostileStringsInItsOutput(t *testing.T) {
	state := fakeCoordinator(t)
	for _, tc := range []struct {
		args []string
		json bool // stdout is JSON, which must still decode to the hostile value
	}{
		{args: []string{"nodes", "list"}},
		{args: []string{"nodes", "list", "--json"}, json: true},
		{args: []string{"nodes", "revoke", "victim"}},
		{args: []string{"keys", "list"}},
		{args: []string{"keys", "list", "--json"}, json: true},
		{args: []string{"keys", "create"}},
		{args: []string{"keys", "create", "--json"}, json: true},
		{args: []string{"audit"}},
		{args: []string{"audit", "--json"}, json: true},
		{args: []string{"audit", "export"}, json: true},
		{args: []string{"audit", "--follow"}},
		{args: []string{"audit", "verify"}},
		{args: []string{"audit", "verify", "--json"}, json: true},
		{args: []string{"policy", "history"}},
		{args: []string{"policy", "history", "--json"}, json: true},
		{args: []string{"policy", "get"}},
		{args: []string{"status"}},
		{args: []string{"status", "--json"}, json: true},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			stdout := &signalWriter{wrote: make(chan struct{})}
			var stderr bytes.Buffer
			if tc.args[len(tc.args)-1] == "--follow" {
				go func() {
					<-stdout.wrote
					cancel() // one poll printed: enough
				}()
			}
			Run(ctx, append(tc.args, "--state", state), Env{Stdout: stdout, Stderr: &stderr, Getenv: func(string) string { return "" }})
			out, errOut := stdout.String(), stderr.String()
			for name, s := range map[string]string{"stdout": out, "stderr": errOut} {
				if r, bad := unsafeRune(s); bad {
					t.Errorf("%s carries %U raw:\n%s", name, r, s)
				}
			}
			if tc.json {
				if !strings.Contains(out, `\u202egnp.exe`) {
					t.Errorf("JSON output lacks the escaped hostile string:\n%s", out)
				}
				dec := json.NewDecoder(strings.NewReader(out))
				for dec.More() {
					var v any
					if err := dec.Decode(&v); err != nil {
						t.Fatalf("JSON output does not decode: %v\n%s", err, out)
					}
					if b, _ := json.Marshal(v); !bytes.Contains(b, []byte("\u202egnp.exe")) && !strings.Contains(tc.args[0], "status") {
						t.Errorf("decoded JSON lost the hostile value: %s", b)
					}
				}
				return
			}
			if !strings.Contains(out+errOut, marker) {
				t.Errorf("output lacks the escaped hostile string %s:\nstdout:\n%s\nstderr:\n%s", marker, out, errOut)
			}
			// Tables keep their shape: a hostile field adds no line.
			if strings.Contains(out+errOut, "\nfake") {
				t.Errorf("a hostile field forged a line:\n%s%s", out, errOut)
			}
		})
	}
}
