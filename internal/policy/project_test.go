package policy

import (
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/agentmesh/agentmesh/internal/identity"
)

// projectDoc exercises every feature a projection must carry: nested
// groups, tags, user: selectors, *, when conditions that read src, dst and
// args, connection-only grants, limits with and without models, paths,
// several grants for one pair, comments and tests.
const projectDoc = `{
  // secret comment: the rota is in room 4
  "groups": {
    "group:fraud":   ["agent:fraud-detector", "tag:fraud", "user:alice@example.com"],
    "group:analyst": ["group:fraud", "agent:analyst"],
    "group:unused":  ["agent:nobody-needs-this"],
    "group:ops":     ["tag:ops", "user:bob@example.com"],
  },
  "grants": [
    {"src": ["group:fraud"], "dst": ["tool:payments-db"], "tools": ["query", "list_*", "!list_secrets"], "resources": ["db://public/*"],
     "when": "tool.name != 'query' || !args.sql.matches(r'(?i)\\bdelete\\b')"},
    {"src": ["group:analyst"], "dst": ["tool:payments-db", "tool:warehouse"], "tools": ["describe_*"], "prompts": ["summary"]},
    {"src": ["tag:monitoring"], "dst": ["*"]},
    {"src": ["agent:teller"], "dst": ["tag:ledger"], "tools": ["transfer"], "when": "args.amount <= 1000"},
    {"src": ["agent:teller"], "dst": ["tag:ledger"], "tools": ["transfer"], "when": "'tag:senior' in src.tags && dst.name == 'ledger'"},
    {"src": ["*"], "dst": ["tool:sandbox"], "tools": ["*"]},
    {"src": ["user:carol@example.com", "tag:support"], "dst": ["group:ops"], "tools": ["restart_*"], "resources": ["file:///var/log/*"]},
    {"src": ["group:ops"], "dst": ["tag:llm"], "models": ["llama-3*", "!llama-3-405b"], "paths": ["GET /v1/files", "POST /v1/audio/*"]},
    {"src": ["tag:support"], "dst": ["model:llm"], "models": ["*"], "when": "has(args.max_tokens) && args.max_tokens <= 512"},
    {"src": ["agent:x"], "dst": ["tool:y"], "tools": ["*"]},
  ],
  "limits": [
    {"src": ["group:ops"], "dst": ["tag:llm"], "models": ["llama-3*"], "rpm": 60},
    {"src": ["*"], "dst": ["model:llm"], "tokens_per_day": 100000},
    {"src": ["*"], "dst": ["model:other"], "rpm": 1},
  ],
  "tests": [
    {"src": "agent:fraud-detector", "dst": "tool:payments-db", "allow": ["tools/call list_x"], "deny": ["tools/call list_secrets"]},
  ],
}`

// projectGateways are the destinations projected for, as the registry
// knows them.
var projectGateways = []Node{
	tool("payments-db"),
	tool("warehouse"),
	tool("ledger", "tag:ledger"),
	tool("sandbox"),
	tool("lonely"),
	tool("restart-svc", "tag:ops"),
	model("llm", "tag:llm"),
	model("other"),
}

// projectSources are the callers asked about: mesh nodes with and without
// tags, and tailnet callers (a person's device, known only by its owner's
// login, and a tagged device).
var projectSources = []Node{
	agent("fraud-detector"),
	agent("new-hire", "tag:fraud"),
	agent("analyst"),
	agent("teller"),
	agent("teller", "tag:senior"),
	agent("mon", "tag:monitoring"),
	agent("helpdesk", "tag:support"),
	agent("oncall", "tag:ops"),
	agent("x"),
	agent("nobody"),
	tool("ledger", "tag:ledger"),
	{Kind: identity.KindAgent, User: "alice@example.com"},
	{Kind: identity.KindAgent, User: "bob@example.com"},
	{Kind: identity.KindAgent, User: "carol@example.com"},
	{Kind: identity.KindAgent, User: "mallory@example.com"},
	{Kind: identity.KindAgent, Name: "laptop", Tags: []identity.Tag{"tag:ops"}, User: "dave@example.com"},
}

// projectRequests are the questions put for each source and gateway.
func projectRequests(src, dst Node) []Request {
	var out []Request
	add := func(r Request) {
		r.Src, r.Dst = src, dst
		out = append(out, r)
	}
	add(Request{Action: ActionConnect, Method: "connect"})
	for _, name := range []string{"query", "list_x", "list_secrets", "describe_t", "transfer", "restart_web", "drop_table", "anything"} {
		for _, args := range []map[string]any{nil, {"sql": "select 1"}, {"sql": "DELETE from t"}, {"amount": json.Number("5")}, {"amount": json.Number("5000")},
			// Keys that some when reads, spelled in another case: they
			// must be judged alike too.
			{"SQL": "DELETE from t"}, {"Amount": json.Number("5000")}, {"path": "/srv", "Sql": "x"}} {
			add(Request{Action: ActionTool, Method: "tools/call", Tool: name, Args: args})
		}
	}
	for _, uri := range []string{"db://public/t", "db://private/t", "file:///var/log/syslog", "file:///etc/passwd", "db://public/../private/t"} {
		add(Request{Action: ActionResource, Method: "resources/read", Resource: uri})
	}
	for _, name := range []string{"summary", "other"} {
		add(Request{Action: ActionPrompt, Method: "prompts/get", Prompt: name})
	}
	for _, m := range []string{"llama-3-8b", "llama-3-405b", "gpt-4"} {
		for _, args := range []map[string]any{nil, {"max_tokens": json.Number("100")}, {"max_tokens": json.Number("4000")}} {
			add(Request{Action: ActionModel, Method: "/v1/chat/completions", Model: m, HTTPMethod: "POST", Path: "/v1/chat/completions", Args: args})
		}
	}
	for _, hp := range [][2]string{{"GET", "/v1/files"}, {"POST", "/v1/audio/speech"}, {"DELETE", "/v1/files/x"}} {
		add(Request{Action: ActionPath, Method: hp[1], HTTPMethod: hp[0], Path: hp[1]})
	}
	return out
}

func TestProjectionDecidesEveryRequestToItsGatewayAsTheWholePolicy(t *testing.T) {
	whole := mustCompile(t, projectDoc)
	whole.version = "7"
	asked := 0
	for _, gw := range projectGateways {
		pr, err := whole.Project(gw)
		if err != nil {
			t.Fatalf("project for %s: %v", gw.Name, err)
		}
		part, err := CompileProjection(pr, "7")
		if err != nil {
			t.Fatalf("compile the projection for %s: %v\n%s", gw.Name, err, pr.Document)
		}
		for _, src := range projectSources {
			for _, r := range projectRequests(src, gw) {
				asked++
				if got, want := part.Decide(r), whole.Decide(r); got != want {
					t.Errorf("%s -> %s %s %s%s%s%s %v: projection %+v, whole policy %+v", who(src), gw.Name, r.Method, r.Tool, r.Resource, r.Prompt, r.Model, r.Args, got, want)
				}
				if r.Action == ActionModel || r.Action == ActionPath {
					if got, want := part.Limits(src, gw, r.Model), whole.Limits(src, gw, r.Model); !reflect.DeepEqual(got, want) {
						t.Errorf("%s -> %s limits for %q: projection %+v, whole policy %+v", who(src), gw.Name, r.Model, got, want)
					}
				}
			}
			pv, wv := part.Visible(src, gw), whole.Visible(src, gw)
			for _, item := range []string{"query", "list_x", "list_secrets", "describe_t", "transfer", "restart_x", "summary", "llama-3-8b", "gpt-4"} {
				if pv.Tool(item) != wv.Tool(item) || pv.Prompt(item) != wv.Prompt(item) || pv.Model(item) != wv.Model(item) {
					t.Errorf("%s -> %s: visibility of %q differs", who(src), gw.Name, item)
				}
			}
			for _, uri := range []string{"db://public/t", "file:///var/log/x", "db://{table}", "file:///var/log/{name}"} {
				if pv.Resource(uri) != wv.Resource(uri) || pv.ResourceTemplate(uri) != wv.ResourceTemplate(uri) {
					t.Errorf("%s -> %s: visibility of %q differs", who(src), gw.Name, uri)
				}
			}
		}
	}
	t.Logf("%d requests decided alike by %d projections", asked, len(projectGateways))
}

func who(n Node) string {
	if n.Name == "" {
		return "user:" + n.User
	}
	return fmt.Sprintf("%s:%s%v", n.Kind, n.Name, n.Tags)
}

func TestProjectionCarriesOnlyWhatItsGatewayNeeds(t *testing.T) {
	whole := mustCompile(t, projectDoc)
	pr, err := whole.Project(tool("ledger", "tag:ledger"))
	if err != nil {
		t.Fatal(err)
	}
	doc := string(pr.Document)
	for _, secret := range []string{"rota", "tests", "payments-db", "warehouse", "llm", "group:fraud", "group:unused", "nobody-needs-this", "list_secrets", "sandbox", "tag:ledger"} {
		if strings.Contains(doc, secret) {
			t.Errorf("the ledger's projection mentions %q:\n%s", secret, doc)
		}
	}
	// The monitoring grant (dst *) and both teller grants, under their
	// numbers in the whole document.
	if !reflect.DeepEqual(pr.Grants, []int{2, 3, 4}) || len(pr.Limits) != 0 {
		t.Errorf("grants %v, limits %v; want [2 3 4] and none", pr.Grants, pr.Limits)
	}
	// Groups come with the groups they name, and nothing else.
	pr, err = whole.Project(model("llm", "tag:llm"))
	if err != nil {
		t.Fatal(err)
	}
	var got projectedDoc
	if err := json.Unmarshal(pr.Document, &got); err != nil {
		t.Fatal(err)
	}
	if len(got.Groups) != 1 || got.Groups["group:ops"] == nil {
		t.Errorf("llm's projection has groups %v, want group:ops only", got.Groups)
	}
	if len(pr.Limits) != 2 || pr.Limits[0].Index != 0 || pr.Limits[1].Index != 1 {
		t.Errorf("llm's limits %+v, want limits 0 and 1", pr.Limits)
	}
	pr, err = whole.Project(tool("restart-svc", "tag:ops"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(pr.Document), `"dst":["tool:restart-svc"]`) || strings.Contains(string(pr.Document), "group:ops") {
		t.Errorf("a dst group is not narrowed to the gateway itself:\n%s", pr.Document)
	}
}

func TestProjectionIsOnlyForGatewaysAndItsNumbersMustFit(t *testing.T) {
	whole := mustCompile(t, projectDoc)
	for _, n := range []Node{agent("teller"), {Kind: identity.KindAdmin, Name: "admin"}, {Kind: identity.KindTool}} {
		if _, err := whole.Project(n); err == nil {
			t.Errorf("projected for %+v, which does not serve", n)
		}
	}
	pr, err := whole.Project(tool("ledger", "tag:ledger"))
	if err != nil {
		t.Fatal(err)
	}
	for name, mutate := range map[string]func(*Projection){
		"too few":    func(p *Projection) { p.Grants = p.Grants[:1] },
		"descending": func(p *Projection) { p.Grants = []int{4, 3, 2} },
		"negative":   func(p *Projection) { p.Grants = []int{-1, 3, 4} },
		"limit":      func(p *Projection) { p.Limits = []LimitRef{{Index: 0, Key: "k"}} },
	} {
		bad := pr
		bad.Grants = append([]int(nil), pr.Grants...)
		mutate(&bad)
		if _, err := CompileProjection(bad, "1"); err == nil {
			t.Errorf("%s: compiled", name)
		}
	}
}

// FuzzProjection: for any document that compiles, every gateway's
// projection compiles too and decides every request to that gateway as the
// whole document does.
func FuzzProjection(f *testing.F) {
	for _, doc := range []string{projectDoc, decideDoc, modelDoc, `{}`,
		`{"grants": [{"src": ["*"], "dst": ["*"], "tools": ["a*b?c", "!x"], "when": "args.x == 1"}]}`,
		`{"groups": {"group:a": ["group:b", "user:u@x"], "group:b": ["tag:t"]}, "grants": [{"src": ["group:a"], "dst": ["tag:t", "tool:sandbox"], "prompts": ["*"]}]}`} {
		f.Add([]byte(doc))
	}
	gateways := []Node{tool("sandbox", "tag:t"), tool("payments-db"), model("llm", "tag:llm"), tool("ledger", "tag:ledger")}
	f.Fuzz(func(t *testing.T, doc []byte) {
		whole, err := Compile(doc, "9")
		if err != nil {
			return
		}
		for _, gw := range gateways {
			pr, err := whole.Project(gw)
			if err != nil {
				t.Fatalf("project for %s: %v", gw.Name, err)
			}
			part, err := CompileProjection(pr, "9")
			if err != nil {
				t.Fatalf("the projection for %s does not compile: %v\n%s", gw.Name, err, pr.Document)
			}
			for _, src := range projectSources[:6] {
				for _, r := range projectRequests(src, gw)[:12] {
					if got, want := part.Decide(r), whole.Decide(r); got != want {
						t.Fatalf("%s -> %s: projection %+v, whole %+v\n%s", who(src), gw.Name, got, want, pr.Document)
					}
				}
				if got, want := part.Limits(src, gw, "llama-3"), whole.Limits(src, gw, "llama-3"); !reflect.DeepEqual(got, want) {
					t.Fatalf("%s -> %s limits: projection %+v, whole %+v", who(src), gw.Name, got, want)
				}
			}
		}
	})
}
