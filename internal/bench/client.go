package bench

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// column is one way to reach the upstream.
type column struct {
	name string
	url  string // the MCP endpoint; "" when the column could not start
	why  string // why url is empty
	hc   *http.Client
	// newClient makes a fresh HTTP client to url (a new connection);
	// nil means newHTTPClient.
	newClient func() *http.Client
	// procs are the processes of the column's hops (as deployed): what
	// the memory scenario weighs.
	procs []*proc
	// protocol is the MCP version the column's clients ask for; "" is
	// the SDK's latest.
	protocol string
}

func newHTTPClient() *http.Client {
	return &http.Client{Transport: &http.Transport{
		MaxIdleConns: 1024, MaxIdleConnsPerHost: 1024, IdleConnTimeout: time.Minute,
		// The endpoints are all plain HTTP on loopback.
		ForceAttemptHTTP2: false,
	}}
}

// client returns a fresh HTTP client to c (its own connections).
func (c *column) client() *http.Client {
	if c.newClient != nil {
		return c.newClient()
	}
	return newHTTPClient()
}

// connect opens one SDK client session at c.
func (c *column) connect(ctx context.Context, hc *http.Client) (*mcp.ClientSession, error) {
	if hc == nil {
		hc = c.hc
	}
	cl := mcp.NewClient(&mcp.Implementation{Name: "bench-client", Version: "1"}, nil)
	var opts *mcp.ClientSessionOptions
	if c.protocol != "" {
		opts = &mcp.ClientSessionOptions{ProtocolVersion: c.protocol}
	}
	s, err := cl.Connect(ctx, &mcp.StreamableClientTransport{Endpoint: c.url, HTTPClient: hc, MaxRetries: -1, MaxEventSize: 64 << 20}, opts)
	if err != nil {
		return nil, fmt.Errorf("%s: connect: %w", c.name, err)
	}
	return s, nil
}

// available returns the columns that run, with a note for those that do not.
func (r *runner) available(res *Result, names ...string) []*column {
	var out []*column
	for i := range r.columns {
		c := &r.columns[i]
		if len(names) > 0 && !slices.Contains(names, c.name) || len(r.cfg.Columns) > 0 && c.name != ColDirect && c.name != ColAgentmeshEnv && !slices.Contains(r.cfg.Columns, c.name) {
			continue
		}
		res.Columns = append(res.Columns, c.name)
		if c.url == "" {
			res.note("%s: %s", c.name, c.why)
			continue
		}
		out = append(out, c)
	}
	return out
}

func callEcho(ctx context.Context, s *mcp.ClientSession, msg string) error {
	return callEchoAs(ctx, s, "echo", msg)
}

// callEchoAs calls the upstream's echo tool listed under name.
func callEchoAs(ctx context.Context, s *mcp.ClientSession, name, msg string) error {
	res, err := s.CallTool(ctx, &mcp.CallToolParams{Name: name, Arguments: echoIn{Msg: msg}})
	if err != nil {
		return err
	}
	if res.IsError || len(res.Content) != 1 {
		return fmt.Errorf("echo: unexpected result (error %v, %d contents)", res.IsError, len(res.Content))
	}
	if t, ok := res.Content[0].(*mcp.TextContent); !ok || t.Text != msg {
		return fmt.Errorf("echo: wrong answer")
	}
	return nil
}

func callWork(ctx context.Context, s *mcp.ClientSession, ms int) error {
	res, err := s.CallTool(ctx, &mcp.CallToolParams{Name: "work", Arguments: workIn{MS: ms}})
	if err != nil {
		return err
	}
	if res.IsError {
		return fmt.Errorf("work: tool error")
	}
	return nil
}

// samples collects durations.
type samples []time.Duration

func (s samples) pct(p float64) time.Duration {
	if len(s) == 0 {
		return 0
	}
	c := slices.Clone(s)
	slices.Sort(c)
	i := int(p/100*float64(len(c))+0.5) - 1
	return c[min(max(i, 0), len(c)-1)]
}

func us(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e3 }
func ms(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e6 }
