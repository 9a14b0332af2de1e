package policy

import (
	"encoding/json"
	"errors"
	"os"
	"testing"

	"agentmesh/internal/identity"
)

func FuzzCompile(f *testing.F) {
	f.Add([]byte(decideDoc))
	f.Add([]byte(modelDoc))
	f.Add([]byte(`{}`))
	f.Add([]byte(`{"groups": {"group:a": ["group:b"], "group:b": ["group:a"]}}`))
	f.Add([]byte(`{"grants": [{"src": ["*"], "dst": ["*"], "tools": ["a*b?c", "!x"], "when": "args.x == 1"}]}`))
	f.Add([]byte("// c\n{\"tests\": [{\"src\": \"agent:a\", \"dst\": \"tool:b\", \"args\": {\"k\": [1, 2.5, null, true]}, \"deny\": [\"connect\"]}],}"))
	f.Add([]byte(`{"grants": [{"src": ["*"], "dst": ["*"], "when": "'\\b'.matches('\\b')"}]}`))
	if doc, err := os.ReadFile("../../examples/policy.hujson"); err == nil {
		f.Add(doc)
	}
	f.Fuzz(func(t *testing.T, doc []byte) {
		p, err := Compile(doc, "f")
		if err != nil {
			if p != nil {
				t.Fatal("Compile returned a policy and an error")
			}
			if !errors.Is(err, ErrSyntax) && !errors.Is(err, ErrInvalid) && !errors.Is(err, ErrTestFailed) {
				t.Fatalf("error wraps no sentinel: %v", err)
			}
			return
		}
		// A compiled policy answers without panicking and keeps its text.
		if string(p.Document()) != string(doc) {
			t.Fatal("Document differs from the input")
		}
		d := p.Decide(Request{Src: agent("a", "tag:x"), Dst: tool("b"), Action: ActionTool, Tool: "t", Args: map[string]any{"x": json.Number("1")}})
		if d.Allow && d.Grant < 0 {
			t.Fatalf("allowed without a grant: %+v", d)
		}
		v := p.Visible(agent("a"), tool("b"))
		_ = v.Tool("t") || v.ResourceTemplate("x://{y}")
	})
}

func FuzzDecide(f *testing.F) {
	p, err := Compile([]byte(decideDoc), "f")
	if err != nil {
		f.Fatal(err)
	}
	f.Add("fraud-detector", "tag:fraud", "payments-db", uint8(ActionTool), "query", `{"sql": "select 1"}`)
	f.Add("fraud-detector", "", "payments-db", uint8(ActionResource), "db://public/../x", `{}`)
	f.Add("teller", "tag:senior", "ledger", uint8(ActionTool), "transfer", `{"amount": 5e3}`)
	f.Add("bot", "tag:support", "llm-internal", uint8(ActionModel), "llama-3", `null`)
	f.Add("x", "", "y", uint8(0), "", ``)
	f.Fuzz(func(t *testing.T, src, tag, dst string, action uint8, item, args string) {
		r := Request{
			Src:    Node{Kind: identity.KindAgent, Name: identity.Name(src)},
			Dst:    Node{Kind: identity.KindTool, Name: identity.Name(dst), Tags: []identity.Tag{"tag:ledger"}},
			Action: Action(action % 7),
			Method: "tools/call",
			Tool:   item, Resource: item, Prompt: item, Model: item,
		}
		if tag != "" {
			r.Src.Tags = []identity.Tag{identity.Tag(tag)}
		}
		var a map[string]any
		if json.Unmarshal([]byte(args), &a) == nil {
			r.Args = a
		}
		d := p.Decide(r)
		if d.Allow != (d.Reason == ReasonAllowed) {
			t.Fatalf("Allow %v with reason %s", d.Allow, d.Reason)
		}
		if d.Allow && (d.Grant < 0 || d.Grant >= len(p.grants)) {
			t.Fatalf("allowed by grant %d", d.Grant)
		}
		if r.Action == ActionResource && d.Allow && unsafeURI(item) {
			t.Fatalf("unsafe URI %q allowed", item)
		}
		if d.Allow && !p.Links(r.Src, r.Dst) {
			t.Fatal("allowed without a link")
		}
	})
}
