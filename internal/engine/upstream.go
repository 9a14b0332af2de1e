package engine

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os/exec"
	"time"
)

// ErrUpstream is returned by ServeGateway, with RequireUpstream, for an
// upstream that cannot be started or does not answer at start.
var ErrUpstream = errors.New("upstream unavailable")

// upstreamProbeWait bounds how long a starting gateway waits for its HTTP
// upstream to answer.
const upstreamProbeWait = 3 * time.Second

// checkUpstream checks, once at start, what can be checked of cfg's
// upstream (probeUpstream). It returns an error wrapping ErrUpstream when
// that fails and cfg.RequireUpstream is set; otherwise a function that
// warns on log about the failure (nothing if there is none): the upstream
// may come up later, and the gateway answers its clients' requests
// meanwhile with CodeUpstream. ServeGateway checks before it opens the
// node, so that a refusal touches nothing, and warns once it serves, so
// that a mistake of the node's own configuration is told first, alone.
func checkUpstream(ctx context.Context, cfg *GatewayConfig) (warn func(*slog.Logger), err error) {
	problem := probeUpstream(ctx, cfg)
	if problem == nil {
		return func(*slog.Logger) {}, nil
	}
	if cfg.RequireUpstream {
		return nil, fmt.Errorf("serve: %w: %w", ErrUpstream, problem)
	}
	return func(log *slog.Logger) {
		log.Warn("serve: "+problem.Error()+"; serving anyway, clients get upstream_error (-32043) until it works (--require-upstream refuses to start instead)", "upstream", upstreamName(cfg))
	}, nil
}

// probeUpstream says what is wrong with cfg's upstream, or nil: a stdio
// command must be found (on PATH, or at its path), an HTTP upstream must
// answer at all (any HTTP status will do: only a failed connection, or no
// answer within upstreamProbeWait, counts).
func probeUpstream(ctx context.Context, cfg *GatewayConfig) error {
	if cfg.UpstreamHandler != nil {
		return nil // in this process: nothing to reach
	}
	if len(cfg.UpstreamCommand) > 0 {
		if _, err := exec.LookPath(cfg.UpstreamCommand[0]); err != nil {
			return fmt.Errorf("the upstream command %q cannot be started: %w", cfg.UpstreamCommand[0], err)
		}
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, upstreamProbeWait)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, cfg.UpstreamURL, nil)
	if err != nil {
		return fmt.Errorf("the upstream URL %q is not usable: %w", cfg.UpstreamURL, err)
	}
	tr := &http.Transport{Proxy: nil}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("the upstream at %s does not answer (is it running?): %w", cfg.UpstreamURL, err)
	}
	resp.Body.Close()
	return nil
}

// upstreamName is cfg's upstream as a person would name it.
func upstreamName(cfg *GatewayConfig) string {
	if cfg.UpstreamHandler != nil {
		return "in-process handler"
	}
	if len(cfg.UpstreamCommand) > 0 {
		return cfg.UpstreamCommand[0]
	}
	return cfg.UpstreamURL
}
