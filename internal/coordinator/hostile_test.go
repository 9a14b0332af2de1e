package coordinator_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/agentmesh/agentmesh/internal/audit"
	"github.com/agentmesh/agentmesh/internal/authkey"
	"github.com/agentmesh/agentmesh/internal/controlapi"
	"github.com/agentmesh/agentmesh/internal/pki"
	"github.com/agentmesh/agentmesh/internal/termtext"
)

// hostileName is what a client with no key at all may send as a join name.
var hostileName = "\x1b]0;pwned\x07\x1b[2J\u202eevil\u2066" + strings.Repeat("A", 3000) + "\xff"

func TestRefusedJoinRecordsTheHostileNameEscapedAndBounded(t *testing.T) {
	m := startMesh(t)
	k, err := authkey.Parse(m.key(controlapi.KeyCreateRequest{Kind: "agent"}))
	if err != nil {
		t.Fatal(err)
	}
	key, _ := pki.NewKey()
	csr, _ := pki.CreateCSR(key)
	body := mustJSON(t, controlapi.JoinRequest{KeyID: k.ID, Secret: k.Secret, Name: hostileName, CSR: string(pki.EncodeCSRPEM(csr))})
	resp, err := rawClient(t, m, nil, 0).Post(m.co.URL()+controlapi.PathJoin, "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	var apiErr controlapi.Error
	json.NewDecoder(resp.Body).Decode(&apiErr)
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest || apiErr.Code != "bad_name" {
		t.Fatalf("join with a hostile name: %d %+v, want 400 bad_name", resp.StatusCode, apiErr)
	}
	if termtext.Escape(apiErr.Error) != apiErr.Error || len(apiErr.Error) > 400 {
		t.Errorf("the refusal repeats the name raw or unbounded: %q", apiErr.Error)
	}
	var found *audit.Event
	for _, e := range m.auditEvents(t, "kind=admin&decision=deny") {
		if e.Action == "node.join" && e.Reason == "bad_name" {
			found = &e
		}
	}
	if found == nil {
		t.Fatal("the refused join is not in the audit trail")
	}
	for _, s := range []string{found.Target, found.Detail} {
		if termtext.Escape(s) != s || !utf8.ValidString(s) || len(s) > 400 {
			t.Errorf("audit event carries the name raw or unbounded: %q", s)
		}
	}
	if !strings.HasPrefix(found.Target, `\x1b]0;pwned\x07\x1b[2J\u202eevil\u2066AAA`) {
		t.Errorf("audit target %q does not show what was sent", found.Target)
	}
	// The key was not consumed by the refused attempt.
	m.mustJoin(k.String(), "honest", "")
}

func TestRegisterRefusesAddressesThatAreNotHostPort(t *testing.T) {
	m := startMesh(t)
	ctx := context.Background()
	tool := m.mustJoin(m.key(controlapi.KeyCreateRequest{Kind: "tool"}), "files", "")
	for _, addr := range []string{
		"\x1b[31mred:80", "files\u202e.example:80", "a b:80", "host/path:80", "[fe80::1%\x1b]:80", "files.example:0", "x:99999",
		strings.Repeat("a", 64) + ":80", "..:80",
	} {
		if err := tool.Register(ctx, []string{addr}); apiCode(err) != "bad_address" && apiCode(err) != "bad_request" {
			t.Errorf("register %q: %v, want bad_address", addr, err)
		}
	}
	for _, addr := range []string{"files.internal:7800", "10.0.0.5:7800", "[::1]:7800", "[fe80::1%eth0]:7800", "FILES.example.com:443"} {
		if err := tool.Register(ctx, []string{addr}); err != nil {
			t.Errorf("register %q: %v", addr, err)
		}
	}
	var nodes []controlapi.NodeInfo
	if err := m.admin.Call(ctx, http.MethodGet, controlapi.PathNodes, nil, &nodes); err != nil {
		t.Fatal(err)
	}
	for _, n := range nodes {
		for _, a := range n.Addrs {
			if termtext.Escape(a) != a {
				t.Errorf("node %s has address %q", n.Name, a)
			}
		}
	}
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return bytes.TrimSpace(b)
}
