package aggregate

import (
	"context"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// newNoPrefixFixture is newFixture with Config.NoPrefix.
func newNoPrefixFixture(t *testing.T, up map[string]*mcp.Server) (*Aggregator, *mcp.ClientSession, chan struct{}) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	f := &fixture{t: t, ctx: ctx, up: up}
	a, err := New(Config{SPIFFEID: "spiffe://test/agent/bot", Transport: f.transport, ListTimeout: 200 * time.Millisecond, NoPrefix: true})
	if err != nil {
		t.Fatal(err)
	}
	changed := make(chan struct{}, 16)
	cl := mcp.NewClient(&mcp.Implementation{Name: "client", Version: "1"}, &mcp.ClientOptions{
		ToolListChangedHandler: func(context.Context, *mcp.ToolListChangedRequest) {
			select {
			case changed <- struct{}{}:
			default:
			}
		},
	})
	ct, st := mcp.NewInMemoryTransports()
	ss, err := a.Server().Connect(ctx, st, nil)
	if err != nil {
		t.Fatal(err)
	}
	cs, err := cl.Connect(ctx, ct, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cs.Close()
		ss.Close()
		a.Close()
		f.close()
		cancel()
	})
	return a, cs, changed
}

// TestNoPrefixServesOneServiceUnderItsOwnNames: with NoPrefix the one
// service's tools keep their names (even one containing the separator)
// and calls reach them; a second service reachable at once makes the
// endpoint serve none (no service may shadow another's tool), and the
// first comes back when it is alone again.
func TestNoPrefixServesOneServiceUnderItsOwnNames(t *testing.T) {
	a, cs, changed := newNoPrefixFixture(t, map[string]*mcp.Server{"a": upstream("Use a.", "x", "y__z"), "b": upstream("", "x")})
	one := Snapshot{PolicyVersion: 1, Services: []Service{{Name: "a", Addr: "1"}}}
	a.Update(one)
	waitTools(t, cs, changed, "x", "y__z")
	ctx := context.Background()
	res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "y__z"})
	if err != nil || len(res.Content) != 1 || res.Content[0].(*mcp.TextContent).Text != "y__z" {
		t.Fatalf("y__z: %v, %v; want a's y__z", res, err)
	}
	m, instr := a.describe()
	if m.Separator != "" || len(m.Services) != 1 || m.Services[0] != "a" || instr != "## a\nUse a." {
		t.Errorf("describe() = %+v, %q; want no separator, service a, a's instructions", m, instr)
	}

	a.Update(Snapshot{PolicyVersion: 2, Services: []Service{{Name: "a", Addr: "1"}, {Name: "b", Addr: "2"}}})
	waitTools(t, cs, changed)
	if _, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "x"}); err == nil {
		t.Error("x was served while two services were reachable without prefixes")
	}

	a.Update(one)
	waitTools(t, cs, changed, "x", "y__z")
}
