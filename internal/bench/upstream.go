package bench

import (
	"context"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// BlobURI is the upstream's large resource.
const BlobURI = "bench://blob"

// upstream is the MCP server every column ends at: the SDK's Streamable
// HTTP handler with its defaults, as a tool server would run it.
type upstream struct {
	url   string
	calls atomic.Int64 // tool calls executed
}

type echoIn struct {
	Msg string `json:"msg"`
}

type workIn struct {
	MS int `json:"ms"`
}

// startUpstream serves the bench MCP server on loopback. blobSize is the
// size of BlobURI in bytes.
func (r *runner) startUpstream(blobSize int) error {
	up := &upstream{}
	srv := mcp.NewServer(&mcp.Implementation{Name: "bench-upstream", Version: "1"}, nil)
	mcp.AddTool(srv, &mcp.Tool{Name: "echo", Description: "returns its msg"}, func(ctx context.Context, _ *mcp.CallToolRequest, in echoIn) (*mcp.CallToolResult, any, error) {
		up.calls.Add(1)
		return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: in.Msg}}}, nil, nil
	})
	mcp.AddTool(srv, &mcp.Tool{Name: "work", Description: "does ms milliseconds of work, then answers"}, func(ctx context.Context, _ *mcp.CallToolRequest, in workIn) (*mcp.CallToolResult, any, error) {
		up.calls.Add(1)
		t := time.NewTimer(time.Duration(min(max(in.MS, 0), 1000)) * time.Millisecond)
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
			return nil, nil, ctx.Err()
		}
		return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "done"}}}, nil, nil
	})
	blob := strings.Repeat("0123456789abcdef", blobSize/16)
	srv.AddResource(&mcp.Resource{URI: BlobURI, Name: "blob", MIMEType: "text/plain"}, func(context.Context, *mcp.ReadResourceRequest) (*mcp.ReadResourceResult, error) {
		return &mcp.ReadResourceResult{Contents: []*mcp.ResourceContents{{URI: BlobURI, MIMEType: "text/plain", Text: blob}}}, nil
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	hs := &http.Server{Handler: mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return srv }, nil), ReadHeaderTimeout: 10 * time.Second}
	r.serve(hs, ln)
	up.url = "http://" + ln.Addr().String() + "/mcp"
	r.up = up
	return nil
}
