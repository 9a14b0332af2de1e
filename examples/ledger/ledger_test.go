package ledger

import (
	"context"
	"testing"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

func TestLedgerToolsOverInMemorySession(t *testing.T) {
	ctx := context.Background()
	book := NewBook()
	st, ct := mcp.NewInMemoryTransports()
	ss, err := NewServer(book).Connect(ctx, st, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ss.Close()
	cs, err := mcp.NewClient(&mcp.Implementation{Name: "t", Version: "1"}, nil).Connect(ctx, ct, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer cs.Close()
	tools, err := cs.ListTools(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(tools.Tools) != 4 {
		t.Fatalf("tools = %d, want 4", len(tools.Tools))
	}
	res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "transfer", Arguments: map[string]any{"from": "alice", "to": "bob", "amount": 200}})
	if err != nil || res.IsError {
		t.Fatalf("transfer: %v %+v", err, res)
	}
	if b, _ := book.Balance("bob"); b != 500 {
		t.Fatalf("bob = %d, want 500", b)
	}
	res, _ = cs.CallTool(ctx, &mcp.CallToolParams{Name: "transfer", Arguments: map[string]any{"from": "bob", "to": "alice", "amount": 10_000}})
	if res == nil || !res.IsError {
		t.Fatal("overdraft succeeded")
	}
	rr, err := cs.ReadResource(ctx, &mcp.ReadResourceParams{URI: "ledger://accounts/carol"})
	if err != nil || rr.Contents[0].Text != "carol: 4500" {
		t.Fatalf("resource: %v %+v", err, rr)
	}
}
