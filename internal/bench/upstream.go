package bench

import (
	"context"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// BlobURI is the upstream's large resource.
const BlobURI = "bench://blob"

// upstream is the MCP server every column ends at: the SDK's Streamable
// HTTP handler with its defaults, as a tool server would run it.
type upstream struct {
	url  string
	proc *proc // nil in the in-process layout
}

type echoIn struct {
	Msg string `json:"msg"`
}

type workIn struct {
	MS int `json:"ms"`
}

// upstreamHandler is the bench MCP server. blobSize is the size of
// BlobURI in bytes.
func upstreamHandler(blobSize int) http.Handler {
	srv := mcp.NewServer(&mcp.Implementation{Name: "bench-upstream", Version: "1"}, nil)
	mcp.AddTool(srv, &mcp.Tool{Name: "echo", Description: "returns its msg"}, func(ctx context.Context, _ *mcp.CallToolRequest, in echoIn) (*mcp.CallToolResult, any, error) {
		return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: in.Msg}}}, nil, nil
	})
	mcp.AddTool(srv, &mcp.Tool{Name: "work", Description: "does ms milliseconds of work, then answers"}, func(ctx context.Context, _ *mcp.CallToolRequest, in workIn) (*mcp.CallToolResult, any, error) {
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
	return mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return srv }, nil)
}

// startUpstream starts the upstream every column shares: a process of its
// own as deployed (the bench binary in its upstream role), a server in
// this process otherwise.
func (r *runner) startUpstream(ctx context.Context) error {
	blob := pick(r.cfg.Quick, 1<<20, 10<<20)
	if r.deployed() {
		p, s, err := r.startProc(ctx, "upstream", []string{RoleEnv + "=upstream"}, r.cfg.Executable, "bench", "-blob", strconv.Itoa(blob))
		if err != nil {
			return err
		}
		r.up = &upstream{url: s.URL, proc: p}
		return nil
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	r.serve(&http.Server{Handler: upstreamHandler(blob), ReadHeaderTimeout: 10 * time.Second}, ln)
	r.up = &upstream{url: "http://" + ln.Addr().String() + "/mcp"}
	return nil
}
