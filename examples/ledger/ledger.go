// Package ledger is a small example MCP tool server, written with the MCP Go
// SDK: accounts with balances, a transfer tool, a history resource and a
// prompt. The demo and the tests put it behind an agentmesh gateway; it
// knows nothing about agentmesh.
package ledger

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// Book holds the accounts. The zero Book is empty and usable.
type Book struct {
	mu       sync.Mutex
	balances map[string]int64
	history  []string
}

// NewBook returns a book with a few accounts.
func NewBook() *Book {
	return &Book{balances: map[string]int64{"alice": 1200, "bob": 300, "carol": 4500}}
}

type accountArgs struct {
	Account string `json:"account" jsonschema:"the account name"`
}

type balanceOut struct {
	Account string `json:"account"`
	Balance int64  `json:"balance"`
}

type transferArgs struct {
	From   string `json:"from" jsonschema:"account to debit"`
	To     string `json:"to" jsonschema:"account to credit"`
	Amount int64  `json:"amount" jsonschema:"amount in cents, positive"`
	Memo   string `json:"memo,omitempty" jsonschema:"free text"`
}

type historyOut struct {
	Entries []string `json:"entries"`
}

// NewServer returns an MCP server over book with the tools balance,
// history, list_accounts and transfer, the resource template
// ledger://accounts/{account} and the prompt summarize_account.
func NewServer(book *Book) *mcp.Server {
	s := mcp.NewServer(&mcp.Implementation{Name: "ledger", Version: "1.0.0"}, nil)
	mcp.AddTool(s, &mcp.Tool{Name: "balance", Description: "Read an account's balance"},
		func(ctx context.Context, req *mcp.CallToolRequest, in accountArgs) (*mcp.CallToolResult, balanceOut, error) {
			b, err := book.Balance(in.Account)
			if err != nil {
				return nil, balanceOut{}, err
			}
			return nil, balanceOut{Account: in.Account, Balance: b}, nil
		})
	mcp.AddTool(s, &mcp.Tool{Name: "history", Description: "List the transfers on the ledger"},
		func(ctx context.Context, req *mcp.CallToolRequest, in struct{}) (*mcp.CallToolResult, historyOut, error) {
			return nil, historyOut{Entries: book.History()}, nil
		})
	mcp.AddTool(s, &mcp.Tool{Name: "list_accounts", Description: "List account names"},
		func(ctx context.Context, req *mcp.CallToolRequest, in struct{}) (*mcp.CallToolResult, historyOut, error) {
			return nil, historyOut{Entries: book.Accounts()}, nil
		})
	mcp.AddTool(s, &mcp.Tool{Name: "transfer", Description: "Move money between accounts"},
		func(ctx context.Context, req *mcp.CallToolRequest, in transferArgs) (*mcp.CallToolResult, balanceOut, error) {
			if err := book.Transfer(in.From, in.To, in.Amount, in.Memo); err != nil {
				return nil, balanceOut{}, err
			}
			b, _ := book.Balance(in.From)
			return nil, balanceOut{Account: in.From, Balance: b}, nil
		})
	s.AddResourceTemplate(&mcp.ResourceTemplate{Name: "account", URITemplate: "ledger://accounts/{account}", MIMEType: "text/plain"},
		func(ctx context.Context, req *mcp.ReadResourceRequest) (*mcp.ReadResourceResult, error) {
			name, ok := strings.CutPrefix(req.Params.URI, "ledger://accounts/")
			if !ok {
				return nil, mcp.ResourceNotFoundError(req.Params.URI)
			}
			b, err := book.Balance(name)
			if err != nil {
				return nil, mcp.ResourceNotFoundError(req.Params.URI)
			}
			return &mcp.ReadResourceResult{Contents: []*mcp.ResourceContents{{URI: req.Params.URI, MIMEType: "text/plain", Text: fmt.Sprintf("%s: %d", name, b)}}}, nil
		})
	s.AddPrompt(&mcp.Prompt{Name: "summarize_account", Arguments: []*mcp.PromptArgument{{Name: "account", Required: true}}},
		func(ctx context.Context, req *mcp.GetPromptRequest) (*mcp.GetPromptResult, error) {
			return &mcp.GetPromptResult{Messages: []*mcp.PromptMessage{{Role: "user",
				Content: &mcp.TextContent{Text: "Summarise the recent activity of account " + req.Params.Arguments["account"]}}}}, nil
		})
	return s
}

// Balance returns an account's balance.
func (b *Book) Balance(account string) (int64, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	v, ok := b.balances[account]
	if !ok {
		return 0, fmt.Errorf("no account %q", account)
	}
	return v, nil
}

// Accounts lists the account names in order.
func (b *Book) Accounts() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make([]string, 0, len(b.balances))
	for k := range b.balances {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// History returns the transfers made so far.
func (b *Book) History() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string{}, b.history...)
}

// Transfer moves amount from one account to another.
func (b *Book) Transfer(from, to string, amount int64, memo string) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if amount <= 0 {
		return fmt.Errorf("amount must be positive")
	}
	fb, ok := b.balances[from]
	if !ok {
		return fmt.Errorf("no account %q", from)
	}
	if _, ok := b.balances[to]; !ok {
		return fmt.Errorf("no account %q", to)
	}
	if fb < amount {
		return fmt.Errorf("insufficient funds in %q", from)
	}
	b.balances[from] -= amount
	b.balances[to] += amount
	b.history = append(b.history, fmt.Sprintf("%s -> %s: %d %s", from, to, amount, memo))
	return nil
}
