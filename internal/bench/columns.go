package bench

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"time"
)

// columnDef is one way to reach the upstream. Run starts the columns in
// the order of columnDefs, which is also the order of the tables: a new
// column is one line there.
type columnDef struct {
	name string
	// start starts the column's hops and returns its MCP endpoint. An
	// error of an optional column (one that needs software the machine
	// may lack) becomes the column's note instead of failing the run.
	start    func(ctx context.Context, r *runner) (target, error)
	optional bool
}

// target is where a column's client sends MCP: url, with HTTP clients
// from client (nil: a plain HTTP client, newHTTPClient).
type target struct {
	url    string
	client func() *http.Client
}

// plain is a column reached over plain HTTP at url.
func plain(url string, err error) (target, error) { return target{url: url}, err }

var columnDefs = []columnDef{
	{ColDirect, func(_ context.Context, r *runner) (target, error) { return plain(r.up.url, nil) }, false},
	{ColHTTPUtil, func(ctx context.Context, r *runner) (target, error) { return plain(startHTTPUtilColumn(ctx, r)) }, false},
	{ColGoChain, func(ctx context.Context, r *runner) (target, error) { return plain(startGoChainColumn(ctx, r)) }, false},
	{ColNginx, func(ctx context.Context, r *runner) (target, error) { return plain(startNginxColumn(ctx, r)) }, true},
	{ColAgentmesh, func(ctx context.Context, r *runner) (target, error) { return plain(r.startMesh(ctx)) }, false},
	{ColLibrary, startLibraryColumn, false},
}

// ColumnNames lists the columns in the order tables print them.
func ColumnNames() []string {
	var out []string
	for _, c := range columnDefs {
		out = append(out, c.name)
	}
	return out
}

// errColumnSkipped is an optional column's reason not to run.
type errColumnSkipped struct{ why string }

func (e errColumnSkipped) Error() string { return e.why }

func startHTTPUtilColumn(ctx context.Context, r *runner) (string, error) {
	a, err := r.startProxy(ctx, "httputil", proxyOpts{target: "http://" + hostOf(r.up.url)})
	if err != nil {
		return "", fmt.Errorf("httputil hop: %w", err)
	}
	return "http://" + a + "/mcp", nil
}

// startGoChainColumn starts two httputil hops: plain HTTP into hop 1 (like
// the connector), TLS 1.3 with a client certificate to hop 2 (like
// connector -> gateway), plain HTTP to the upstream.
func startGoChainColumn(ctx context.Context, r *runner) (string, error) {
	p := r.pki
	b, err := r.startProxy(ctx, "go-chain hop 2", proxyOpts{target: "http://" + hostOf(r.up.url), serveCert: p.serverCert, serveKey: p.serverKey, clientCA: p.caFile})
	if err != nil {
		return "", fmt.Errorf("go chain hop 2: %w", err)
	}
	a, err := r.startProxy(ctx, "go-chain hop 1", proxyOpts{target: "https://" + b, dialCert: p.clientCert, dialKey: p.clientKey, dialCA: p.caFile, dialName: chainServerName})
	if err != nil {
		return "", fmt.Errorf("go chain hop 1: %w", err)
	}
	return "http://" + a + "/mcp", nil
}

func startNginxColumn(ctx context.Context, r *runner) (string, error) {
	url, why := r.startNginx(ctx, r.pki)
	if url == "" {
		return "", errColumnSkipped{why}
	}
	return url, nil
}

// start starts everything the scenarios share: the upstream and the
// columns that run, each checked with one call before anything is
// measured.
func (r *runner) start(ctx context.Context) error {
	if err := r.startUpstream(ctx); err != nil {
		return fmt.Errorf("upstream: %w", err)
	}
	p, err := newChainPKI(r.dir)
	if err != nil {
		return fmt.Errorf("chain certificates: %w", err)
	}
	r.pki = p
	defs := columnDefs
	if len(r.cfg.CompareEnv) > 0 && r.deployed() {
		defs = append(slices.Clone(defs), columnDef{ColAgentmeshEnv, func(ctx context.Context, r *runner) (target, error) {
			return plain(r.startPair(ctx, "-env", append(slices.Clone(r.cfg.ChildEnv), r.cfg.CompareEnv...)))
		}, false})
	}
	for _, def := range defs {
		c := column{name: def.name, hc: newHTTPClient()}
		r.onStop(c.hc.CloseIdleConnections)
		if def.name != ColDirect && def.name != ColAgentmeshEnv && len(r.cfg.Columns) > 0 && !slices.Contains(r.cfg.Columns, def.name) {
			c.why = "not selected (--columns)"
			r.columns = append(r.columns, c)
			continue
		}
		before := len(r.children)
		t, err := def.start(ctx, r)
		c.procs = r.children[before:]
		if def.name == ColDirect {
			c.procs = nil // the upstream, which every column shares
		}
		if err == nil {
			c.url = t.url
			if t.client != nil {
				c.newClient = t.client
				c.hc = t.client()
				r.onStop(c.hc.CloseIdleConnections)
			}
			err = c.check(ctx)
		}
		var skip errColumnSkipped
		switch {
		case err == nil:
		case errors.As(err, &skip):
			c.url, c.why = "", skip.why
		case def.optional:
			c.url, c.why = "", def.name+" failed its first call: "+err.Error()
		default:
			return fmt.Errorf("%s: %w", def.name, err)
		}
		r.columns = append(r.columns, c)
	}
	return nil
}

// check makes one call through c.
func (c *column) check(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	s, err := c.connect(ctx, nil)
	if err != nil {
		return err
	}
	defer s.Close()
	return callEcho(ctx, s, "hello")
}
