package engine

import (
	"context"
	"log/slog"
	"net/http"
	"sync"

	"github.com/agentmesh/agentmesh/internal/backoff"
	"github.com/agentmesh/agentmesh/internal/controlapi"
	"github.com/agentmesh/agentmesh/internal/controlclient"
	"github.com/agentmesh/agentmesh/internal/toolpin"
)

// toolReporter sends the coordinator the tool definitions a tool node's
// gateways see (controlapi.PathTools), for the review workflow of tool
// pinning (agentmesh tools list). The gateway hands it each new state
// without waiting (offer); run sends the latest one, coalescing bursts
// and retrying with backoff while the coordinator is away. A report is
// bounded as the coordinator requires: the first MaxReportTools
// definitions by name, up to MaxReportBytes.
type toolReporter struct {
	client *controlclient.Client
	log    *slog.Logger

	mu     sync.Mutex
	latest []toolpin.Definition
	wake   chan struct{}
}

func newToolReporter(client *controlclient.Client, log *slog.Logger) *toolReporter {
	return &toolReporter{client: client, log: log, wake: make(chan struct{}, 1)}
}

// offer is the gateway's Config.OnTools: it never blocks.
func (r *toolReporter) offer(defs []toolpin.Definition) {
	r.mu.Lock()
	r.latest = defs
	r.mu.Unlock()
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// run sends each offered state until ctx ends.
func (r *toolReporter) run(ctx context.Context) error {
	var bo backoff.Backoff
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-r.wake:
		}
		r.mu.Lock()
		defs := r.latest
		r.mu.Unlock()
		rep := controlapi.ToolReport{Tools: []controlapi.ReportedTool{}}
		size := 0
		for _, d := range defs {
			if len(rep.Tools) == controlapi.MaxReportTools || size+len(d.Canonical) > controlapi.MaxReportBytes {
				r.log.Warn("tools: reporting only part of the tool definitions to the coordinator (too many or too large)", "tools", len(defs))
				break
			}
			size += len(d.Canonical)
			rep.Tools = append(rep.Tools, controlapi.ReportedTool{Name: d.Name, Hash: d.Hash, Definition: d.Canonical})
		}
		if err := r.client.Call(ctx, http.MethodPost, controlapi.PathTools, rep, nil); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			r.log.Warn("tools: could not report tool definitions to the coordinator; retrying", "err", err)
			if bo.Wait(ctx) != nil {
				return ctx.Err()
			}
			r.offer(r.snapshot())
			continue
		}
		bo.Reset()
	}
}

func (r *toolReporter) snapshot() []toolpin.Definition {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.latest
}
