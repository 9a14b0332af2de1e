package cli

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const peoplePolicy = `{
  "grants": [
    {"src": ["user:alice@example.com"], "dst": ["tool:ledger"], "tools": ["read", "write"]},
    {"src": ["agent:keyed"], "dst": ["tool:ledger"], "tools": ["status"]},
  ],
}`

// peopleNodes is 'nodes list --json' with a node Alice joined with --sso,
// one joined with a key, and one whose owner is not in the registry's
// spelling (which no selector may match).
const peopleNodes = `[
  {"name": "alice-agent", "kind": "agent", "id": "spiffe://m/agent/alice-agent", "tags": [], "status": "active", "owner": "alice@example.com", "created": "2026-01-01T00:00:00Z"},
  {"name": "keyed", "kind": "agent", "id": "spiffe://m/agent/keyed", "tags": [], "status": "active", "created": "2026-01-01T00:00:00Z"},
  {"name": "odd", "kind": "agent", "id": "spiffe://m/agent/odd", "tags": [], "status": "active", "owner": "Alice@Example.com", "created": "2026-01-01T00:00:00Z"},
  {"name": "ledger", "kind": "tool", "id": "spiffe://m/tool/ledger", "tags": [], "status": "active", "created": "2026-01-01T00:00:00Z"}
]`

// 'policy who' and 'can' read a registered node's owner as its user, so
// a user: grant names the nodes that person joined; 'can --src
// user:LOGIN' and 'check --src user:LOGIN' ask for a person's tailnet
// device, and agree.
func TestPolicyWhoCanAndCheckKnowOwners(t *testing.T) {
	dir := t.TempDir()
	pf, nf := filepath.Join(dir, "p.hujson"), filepath.Join(dir, "nodes.json")
	os.WriteFile(pf, []byte(peoplePolicy), 0o600)
	os.WriteFile(nf, []byte(peopleNodes), 0o600)

	who := rightsJSON(t, "who", "--dst", "tool:ledger", "--policy", pf, "--nodes", nf)
	r := rightOf(t, who, "agent:alice-agent", 0)
	if r.Via != "user:alice@example.com" || r.User != "alice@example.com" {
		t.Fatalf("alice-agent's right: %+v", r)
	}
	for _, r := range who.Rights {
		if r.Src == "agent:odd" {
			t.Fatalf("a node whose owner is not canonical got a right: %+v", r)
		}
	}
	can := rightsJSON(t, "can", "--src", "agent:alice-agent", "--policy", pf, "--nodes", nf)
	if len(can.Rights) != 1 || can.Rights[0].Dst != "tool:ledger" || can.Rights[0].Via != "tool:ledger" {
		t.Fatalf("alice-agent can: %+v", can.Rights)
	}
	device := rightsJSON(t, "can", "--src", "user:alice@example.com", "--policy", pf, "--nodes", nf)
	if len(device.Rights) != 1 || device.Rights[0].Src != "user:alice@example.com" || device.Rights[0].Grant != 0 {
		t.Fatalf("alice's tailnet device can: %+v", device.Rights)
	}
	code, out, _ := run(t, nil, "policy", "who", "--dst", "tool:ledger", "--policy", pf, "--nodes", nf)
	if code != 0 || !strings.Contains(out, "agent:alice-agent (user:alice@example.com)") {
		t.Fatalf("who text: %d\n%s", code, out)
	}

	for tool, allow := range map[string]bool{"write": true, "status": false} {
		code, out, errOut := run(t, nil, "policy", "check", "--file", pf, "--src", "user:alice@example.com", "--dst", "tool:ledger", "--tool", tool, "--json")
		var res checkResult
		if code != 0 || json.Unmarshal([]byte(out), &res) != nil || res.Allow != allow {
			t.Fatalf("check user:alice %s: %d %q %s", tool, code, out, errOut)
		}
	}
	code, _, errOut := run(t, nil, "policy", "check", "--file", pf, "--src", "user:Alice@example.com", "--dst", "tool:ledger", "--tool", "read")
	if code == 0 || !strings.Contains(errOut, "user:alice@example.com") {
		t.Fatalf("check with an upper-case login: %d %s", code, errOut)
	}
}
