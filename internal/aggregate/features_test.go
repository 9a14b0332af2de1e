package aggregate

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// rich is an upstream with the tool "t", the named prompts (each
// answering "SERVICE/PROMPT: ARGS"), the resource URIs (each read as
// "SERVICE:URI") and the URI templates; subscribe and unsubscribe
// requests are sent to subs, prefixed with "+" or "-".
func rich(svc string, prompts, resources, templates []string, subs chan string) *mcp.Server {
	opts := &mcp.ServerOptions{}
	if subs != nil {
		opts.SubscribeHandler = func(_ context.Context, r *mcp.SubscribeRequest) error { subs <- "+" + r.Params.URI; return nil }
		opts.UnsubscribeHandler = func(_ context.Context, r *mcp.UnsubscribeRequest) error { subs <- "-" + r.Params.URI; return nil }
	}
	s := mcp.NewServer(&mcp.Implementation{Name: svc, Version: "1"}, opts)
	s.AddTool(&mcp.Tool{Name: "t", InputSchema: map[string]any{"type": "object"}},
		func(context.Context, *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
			return &mcp.CallToolResult{}, nil
		})
	for _, p := range prompts {
		s.AddPrompt(&mcp.Prompt{Name: p, Description: "the " + p, Arguments: []*mcp.PromptArgument{{Name: "who"}}},
			func(_ context.Context, r *mcp.GetPromptRequest) (*mcp.GetPromptResult, error) {
				if p == "deny" {
					return nil, &jsonrpc.Error{Code: -32040, Message: "denied by policy"}
				}
				text := fmt.Sprintf("%s/%s: %s", svc, r.Params.Name, r.Params.Arguments["who"])
				return &mcp.GetPromptResult{Messages: []*mcp.PromptMessage{{Role: "user", Content: &mcp.TextContent{Text: text}}}}, nil
			})
	}
	read := func(_ context.Context, r *mcp.ReadResourceRequest) (*mcp.ReadResourceResult, error) {
		return &mcp.ReadResourceResult{Contents: []*mcp.ResourceContents{{URI: r.Params.URI, Text: svc + ":" + r.Params.URI}}}, nil
	}
	for _, u := range resources {
		s.AddResource(&mcp.Resource{URI: u, Name: u}, read)
	}
	for _, u := range templates {
		s.AddResourceTemplate(&mcp.ResourceTemplate{URITemplate: u, Name: u}, read)
	}
	return s
}

// waitList polls list until it returns want (sorted), woken by changed.
func waitList(t *testing.T, changed chan struct{}, list func(context.Context) ([]string, error), want ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for {
		got, err := list(ctx)
		if err != nil {
			t.Fatal(err)
		}
		slices.Sort(got)
		if slices.Equal(got, want) {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("list = %v, want %v", got, want)
		case <-changed:
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// drain empties changed.
func drain(changed chan struct{}) {
	for len(changed) > 0 {
		<-changed
	}
}

// awaitChanged waits for a list_changed notification to reach the client.
func awaitChanged(t *testing.T, changed chan struct{}) {
	t.Helper()
	select {
	case <-changed:
	case <-time.After(30 * time.Second):
		t.Fatal("no list_changed reached the client")
	}
}

func promptNames(cs *mcp.ClientSession) func(context.Context) ([]string, error) {
	return func(ctx context.Context) ([]string, error) {
		var out []string
		for p, err := range cs.Prompts(ctx, nil) {
			if err != nil {
				return nil, err
			}
			out = append(out, p.Name)
		}
		return out, nil
	}
}

func resourceURIs(cs *mcp.ClientSession) func(context.Context) ([]string, error) {
	return func(ctx context.Context) ([]string, error) {
		var out []string
		for r, err := range cs.Resources(ctx, nil) {
			if err != nil {
				return nil, err
			}
			out = append(out, r.URI)
		}
		for r, err := range cs.ResourceTemplates(ctx, nil) {
			if err != nil {
				return nil, err
			}
			out = append(out, "T "+r.URITemplate)
		}
		return out, nil
	}
}

// TestPromptsAreNamespacedAndRouted: prompts follow the tools' rules
// (a name with the separator is skipped, no service shadows another), a
// get reaches its own service under the prompt's own name with its
// arguments, an upstream's error comes back unchanged, and a service's
// prompts/list_changed reaches the client.
func TestPromptsAreNamespacedAndRouted(t *testing.T) {
	up := rich("a", []string{"greet", "c__greet", "deny"}, nil, nil, nil)
	a, cs, changed := newFixtureWith(t, map[string]*mcp.Server{"a": up, "c": rich("c", []string{"greet"}, nil, nil, nil)},
		fixtureOptions{services: []Service{{Name: "a", Addr: "1"}, {Name: "c", Addr: "2"}}})
	waitList(t, changed, promptNames(cs), "a__deny", "a__greet", "c__greet")
	ctx := context.Background()
	for name, want := range map[string]string{"a__greet": "a/greet: ann", "c__greet": "c/greet: ann"} {
		res, err := cs.GetPrompt(ctx, &mcp.GetPromptParams{Name: name, Arguments: map[string]string{"who": "ann"}})
		if err != nil || len(res.Messages) != 1 || res.Messages[0].Content.(*mcp.TextContent).Text != want {
			t.Errorf("%s: %v, %v; want %q", name, res, err, want)
		}
	}
	_, err := cs.GetPrompt(ctx, &mcp.GetPromptParams{Name: "a__deny"})
	var je *jsonrpc.Error
	if !errors.As(err, &je) || je.Code != -32040 {
		t.Errorf("a__deny: %v, want the upstream's error unchanged", err)
	}
	drain(changed)
	up.AddPrompt(&mcp.Prompt{Name: "late"}, func(context.Context, *mcp.GetPromptRequest) (*mcp.GetPromptResult, error) {
		return &mcp.GetPromptResult{}, nil
	})
	awaitChanged(t, changed)
	waitList(t, changed, promptNames(cs), "a__deny", "a__greet", "a__late", "c__greet")
	a.Update(Snapshot{Services: []Service{{Name: "c", Addr: "2"}}})
	waitList(t, changed, promptNames(cs), "c__greet")
}

// TestResourcesLiveUnderTheirServicesPrefix: every service's resources
// and templates are listed under agentmesh://SERVICE/, so two services
// listing the same URI do not collide; a read goes to the owning service
// with its own URI and comes back in the aggregated form; a bare URI is
// read when exactly one service can have meant it, and refused when it
// is ambiguous.
func TestResourcesLiveUnderTheirServicesPrefix(t *testing.T) {
	up := rich("a", nil, []string{"file:///same.txt", "file:///only-a.txt"}, []string{"file:///dyn/{id}"}, nil)
	a, cs, changed := newFixtureWith(t, map[string]*mcp.Server{
		"a": up,
		"c": rich("c", nil, []string{"file:///same.txt"}, []string{"{+any}"}, nil),
	}, fixtureOptions{services: []Service{{Name: "a", Addr: "1"}, {Name: "c", Addr: "2"}}})
	waitList(t, changed, resourceURIs(cs),
		"T agentmesh://a/file:///dyn/{id}", "T agentmesh://c/{+any}",
		"agentmesh://a/file:///only-a.txt", "agentmesh://a/file:///same.txt", "agentmesh://c/file:///same.txt")
	ctx := context.Background()
	for uri, want := range map[string][2]string{
		"agentmesh://a/file:///same.txt": {"agentmesh://a/file:///same.txt", "a:file:///same.txt"},
		"agentmesh://c/file:///same.txt": {"agentmesh://c/file:///same.txt", "c:file:///same.txt"},
		"agentmesh://a/file:///dyn/7":    {"agentmesh://a/file:///dyn/7", "a:file:///dyn/7"},
		"file:///only-a.txt":             {"agentmesh://a/file:///only-a.txt", "a:file:///only-a.txt"},
		"file:///dyn/8":                  {"agentmesh://a/file:///dyn/8", "a:file:///dyn/8"},
	} {
		res, err := cs.ReadResource(ctx, &mcp.ReadResourceParams{URI: uri})
		if err != nil || len(res.Contents) != 1 || res.Contents[0].URI != want[0] || res.Contents[0].Text != want[1] {
			t.Errorf("read %s: %+v, %v; want %v", uri, res, err, want)
		}
	}
	for _, uri := range []string{"file:///same.txt", "agentmesh://a/file:///nothing.txt", "agentmesh://nobody/file:///same.txt"} {
		if res, err := cs.ReadResource(ctx, &mcp.ReadResourceParams{URI: uri}); err == nil {
			t.Errorf("read %s: %+v, want not found", uri, res)
		}
	}
	drain(changed)
	up.RemoveResources("file:///only-a.txt")
	awaitChanged(t, changed)
	waitList(t, changed, resourceURIs(cs),
		"T agentmesh://a/file:///dyn/{id}", "T agentmesh://c/{+any}", "agentmesh://a/file:///same.txt", "agentmesh://c/file:///same.txt")
	a.Update(Snapshot{Services: []Service{{Name: "c", Addr: "2"}}})
	waitList(t, changed, resourceURIs(cs), "T agentmesh://c/{+any}", "agentmesh://c/file:///same.txt")
	// c's catch-all template never takes a bare URI; its own form works.
	if res, err := cs.ReadResource(ctx, &mcp.ReadResourceParams{URI: "file:///dyn/9"}); err == nil {
		t.Errorf("a bare URI went to c's catch-all template: %+v", res)
	}
	if res, err := cs.ReadResource(ctx, &mcp.ReadResourceParams{URI: "agentmesh://c/file:///dyn/9"}); err != nil || res.Contents[0].Text != "c:file:///dyn/9" {
		t.Errorf("read through c's template: %+v, %v", res, err)
	}
}

// TestSubscriptionsAreRoutedAndUpdatesMappedBack: a subscription reaches
// the owning service with its own URI, the service's update reaches the
// client under the aggregated URI, and the last unsubscribe ends the
// service's subscription.
func TestSubscriptionsAreRoutedAndUpdatesMappedBack(t *testing.T) {
	// Before 2026-07-28 a client sends resources/subscribe; from it on,
	// subscriptions/listen, which the SDK turns into the same handlers.
	for _, version := range []string{"2025-11-25", ""} {
		t.Run("version="+version, func(t *testing.T) { testSubscriptions(t, version) })
	}
}

// subscribable aggregates one service "a" that lists file:///x.txt and
// tells subs of each subscribe (+URI) and unsubscribe (-URI), for a client
// of version whose resources/updated arrive on updated.
func subscribable(t *testing.T, version string) (up *mcp.Server, subs, updated chan string, cs *mcp.ClientSession) {
	t.Helper()
	subs = make(chan string, 16)
	up = rich("a", nil, []string{"file:///x.txt"}, nil, subs)
	updated = make(chan string, 16)
	_, cs, changed := newFixtureWith(t, map[string]*mcp.Server{"a": up}, fixtureOptions{version: version,
		services: []Service{{Name: "a", Addr: "1"}},
		client: &mcp.ClientOptions{
			ResourceUpdatedHandler: func(_ context.Context, r *mcp.ResourceUpdatedNotificationRequest) { updated <- r.Params.URI },
		}})
	waitList(t, changed, resourceURIs(cs), "agentmesh://a/file:///x.txt")
	return up, subs, updated, cs
}

func testSubscriptions(t *testing.T, version string) {
	up, subs, updated, cs := subscribable(t, version)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	recv := func(ch chan string, want string) {
		t.Helper()
		select {
		case got := <-ch:
			if got != want {
				t.Fatalf("got %q, want %q", got, want)
			}
		case <-ctx.Done():
			t.Fatalf("no %q", want)
		}
	}
	if err := cs.Subscribe(ctx, &mcp.SubscribeParams{URI: "agentmesh://a/file:///x.txt"}); err != nil {
		t.Fatal(err)
	}
	recv(subs, "+file:///x.txt")
	deliverUpdate(t, ctx, up, updated)
	if err := cs.Unsubscribe(ctx, &mcp.UnsubscribeParams{URI: "agentmesh://a/file:///x.txt"}); err != nil {
		t.Fatal(err)
	}
	recv(subs, "-file:///x.txt")
	if version != "" { // the SDK's subscriptions/listen client reports no refusal
		if err := cs.Subscribe(ctx, &mcp.SubscribeParams{URI: "agentmesh://nobody/file:///x.txt"}); err == nil {
			t.Error("a subscription to no service's URI succeeded")
		}
	}
}

// deliverUpdate has up send resources/updated for file:///x.txt until the
// client gets it under its aggregated URI: the upstream's subscribe
// handler tells of a subscription before the SDK records it.
func deliverUpdate(t *testing.T, ctx context.Context, up *mcp.Server, updated chan string) {
	t.Helper()
	for {
		if err := up.ResourceUpdated(ctx, &mcp.ResourceUpdatedNotificationParams{URI: "file:///x.txt"}); err != nil {
			t.Fatal(err)
		}
		select {
		case got := <-updated:
			if got != "agentmesh://a/file:///x.txt" {
				t.Fatalf("resources/updated for %q, want the aggregated URI", got)
			}
			return
		case <-ctx.Done():
			t.Fatal("no resources/updated reached the client")
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// TestAClientsSubscriptionOutlivesItsSessionToTheService: a client of MCP
// before 2026-07-28 subscribes over a session of its own to the service.
// When the service's side ends that session (a gateway restart or its
// idle timeout: the client is not told), the subscription is made again
// on a new one and updates keep reaching the client; so too when every
// session to the service ends at once.
func TestAClientsSubscriptionOutlivesItsSessionToTheService(t *testing.T) {
	for _, every := range []bool{false, true} {
		t.Run(fmt.Sprintf("every=%v", every), func(t *testing.T) {
			up, subs, updated, cs := subscribable(t, "2025-11-25")
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if err := cs.Subscribe(ctx, &mcp.SubscribeParams{URI: "agentmesh://a/file:///x.txt"}); err != nil {
				t.Fatal(err)
			}
			if got := <-subs; got != "+file:///x.txt" {
				t.Fatalf("the service got %q", got)
			}
			deliverUpdate(t, ctx, up, updated)

			closed := 0
			for ss := range up.Sessions() {
				// The client's own session carries its clientInfo.
				if every || ss.InitializeParams().ClientInfo.Name == "client" {
					ss.Close()
					closed++
				}
			}
			if closed == 0 {
				t.Fatal("no session of the client's own at the service")
			}
			select {
			case got := <-subs:
				if got != "+file:///x.txt" {
					t.Fatalf("the service got %q, want the subscription made again", got)
				}
			case <-ctx.Done():
				t.Fatal("the subscription was not made again")
			}
			deliverUpdate(t, ctx, up, updated)
		})
	}
}

// TestCapabilitiesFollowTheServices: prompts and resources (with
// subscribe) are offered only when some service offers them.
func TestCapabilitiesFollowTheServices(t *testing.T) {
	for _, tc := range []struct {
		name                       string
		up                         *mcp.Server
		prompts, resources, subscr bool
	}{
		{"tools only", upstream("", "x"), false, false, false},
		{"prompts", rich("a", []string{"p"}, nil, nil, nil), true, false, false},
		{"resources", rich("a", nil, []string{"file:///x"}, nil, nil), false, true, false},
		{"subscribe", rich("a", nil, []string{"file:///x"}, nil, make(chan string, 1)), false, true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, cs, changed := newFixture(t, map[string]*mcp.Server{"a": tc.up})
			a.Update(Snapshot{Services: []Service{{Name: "a", Addr: "1"}}})
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if err := a.WaitSettled(ctx); err != nil {
				t.Fatal(err)
			}
			_ = changed
			// A client initializing now sees the capabilities.
			ct, st := mcp.NewInMemoryTransports()
			ss, err := a.Server().Connect(ctx, st, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer ss.Close()
			cs2, err := mcp.NewClient(&mcp.Implementation{Name: "c2", Version: "1"}, nil).Connect(ctx, ct, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer cs2.Close()
			_ = cs
			c := cs2.InitializeResult().Capabilities
			if (c.Prompts != nil) != tc.prompts || (c.Resources != nil) != tc.resources ||
				(c.Resources != nil && c.Resources.Subscribe != tc.subscr) || c.Tools == nil {
				t.Fatalf("capabilities = %+v (prompts %+v, resources %+v)", c, c.Prompts, c.Resources)
			}
		})
	}
}

// TestTheSeparatorIsConfigurableAndChecked: a valid separator names the
// tools and prompts and is told in _meta; invalid ones are refused; a
// service whose name ends with part of the separator cannot make a name
// that reads as another service's.
func TestTheSeparatorIsConfigurableAndChecked(t *testing.T) {
	for _, sep := range []string{"", "a", "/", "__x", "_________", " "} {
		if CheckSeparator(sep) == nil {
			t.Errorf("CheckSeparator(%q) = nil, want an error", sep)
		}
	}
	for _, sep := range []string{"__", ".", "-_-", "_"} {
		if err := CheckSeparator(sep); err != nil {
			t.Errorf("CheckSeparator(%q) = %v", sep, err)
		}
	}
	if _, err := New(Config{Transport: func(Service) (mcp.Transport, error) { return nil, errors.New("x") }, Separator: "::"}); err == nil {
		t.Error("New accepted the separator ::")
	}

	a, cs, changed := newFixtureWith(t, map[string]*mcp.Server{"a": rich("a", []string{"p.q", "p"}, nil, nil, nil), "b-c": upstream("", "x")}, fixtureOptions{sep: "."})
	a.Update(Snapshot{Services: []Service{{Name: "a", Addr: "1"}, {Name: "b-c", Addr: "2"}}})
	waitTools(t, cs, changed, "a.t", "b-c.x")
	waitList(t, changed, promptNames(cs), "a.p")
	if m, _ := a.describe(); m.Separator != "." {
		t.Errorf("_meta separator = %q", m.Separator)
	}

	// "a" + "__" + "_x" and "a_" + "__" + "x" are both "a___x": only the
	// reading whose first separator ends the service's name is admitted.
	a2, cs2, changed2 := newFixture(t, map[string]*mcp.Server{"a": upstream("", "_x"), "a_": upstream("", "x", "y")})
	a2.Update(Snapshot{Services: []Service{{Name: "a", Addr: "1"}, {Name: "a_", Addr: "2"}}})
	waitTools(t, cs2, changed2, "a___x")
	res, err := cs2.CallTool(context.Background(), &mcp.CallToolParams{Name: "a___x"})
	if err != nil || res.Content[0].(*mcp.TextContent).Text != "_x" {
		t.Fatalf("a___x: %v, %v; want service a's _x", res, err)
	}
}

// TestWhatAServiceListsIsBounded: past MaxPromptsPerService prompts are
// skipped, as are a resource URI that is too long, a definition that is
// too large, a resource listed twice and a template that is not one
// (which the SDK would panic on); the rest are served.
func TestWhatAServiceListsIsBounded(t *testing.T) {
	up := rich("a", []string{"p"}, []string{"file:///x"}, []string{"file:///t/{id}"}, nil)
	up.AddReceivingMiddleware(func(next mcp.MethodHandler) mcp.MethodHandler {
		return func(ctx context.Context, method string, req mcp.Request) (mcp.Result, error) {
			switch method {
			case "prompts/list":
				res := &mcp.ListPromptsResult{}
				for i := range MaxPromptsPerService + 5 {
					res.Prompts = append(res.Prompts, &mcp.Prompt{Name: fmt.Sprintf("p%04d", i)})
				}
				return res, nil
			case "resources/list":
				return &mcp.ListResourcesResult{Resources: []*mcp.Resource{
					{URI: "file:///ok", Name: "ok"},
					{URI: "file:///ok", Name: "twice"},
					{URI: "file:///" + strings.Repeat("x", maxURI), Name: "long"},
					{URI: "file:///big", Name: "big", Description: strings.Repeat("x", maxItemBytes)},
				}}, nil
			case "resources/templates/list":
				return &mcp.ListResourceTemplatesResult{ResourceTemplates: []*mcp.ResourceTemplate{
					{URITemplate: "file:///t/{id}", Name: "ok"},
					{URITemplate: "file:///{unclosed", Name: "bad"},
				}}, nil
			}
			return next(ctx, method, req)
		}
	})
	a, cs, changed := newFixture(t, map[string]*mcp.Server{"a": up})
	a.Update(Snapshot{Services: []Service{{Name: "a", Addr: "1"}}})
	waitList(t, changed, resourceURIs(cs), "T agentmesh://a/file:///t/{id}", "agentmesh://a/file:///ok")
	names, err := promptNames(cs)(context.Background())
	if err != nil || len(names) != MaxPromptsPerService {
		t.Fatalf("%d prompts (%v), want %d", len(names), err, MaxPromptsPerService)
	}
}

// TestNoPrefixKeepsPromptsAndResourcesOwnNames: under NoPrefix the one
// service's prompts and resources keep their own names and URIs, and a
// read and a get reach it with them.
func TestNoPrefixKeepsPromptsAndResourcesOwnNames(t *testing.T) {
	a, cs, changed := newNoPrefixFixture(t, map[string]*mcp.Server{"a": rich("a", []string{"greet"}, []string{"file:///x"}, []string{"file:///t/{id}"}, nil)})
	a.Update(Snapshot{Services: []Service{{Name: "a", Addr: "1"}}})
	waitList(t, changed, resourceURIs(cs), "T file:///t/{id}", "file:///x")
	waitList(t, changed, promptNames(cs), "greet")
	ctx := context.Background()
	for uri, want := range map[string]string{"file:///x": "a:file:///x", "file:///t/5": "a:file:///t/5"} {
		res, err := cs.ReadResource(ctx, &mcp.ReadResourceParams{URI: uri})
		if err != nil || res.Contents[0].URI != uri || res.Contents[0].Text != want {
			t.Errorf("read %s: %+v, %v", uri, res, err)
		}
	}
	res, err := cs.GetPrompt(ctx, &mcp.GetPromptParams{Name: "greet", Arguments: map[string]string{"who": "bo"}})
	if err != nil || res.Messages[0].Content.(*mcp.TextContent).Text != "a/greet: bo" {
		t.Errorf("greet: %+v, %v", res, err)
	}
}
