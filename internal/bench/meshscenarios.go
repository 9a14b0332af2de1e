package bench

import (
	"context"
	"fmt"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/agentmesh/agentmesh/internal/audit"
	"github.com/agentmesh/agentmesh/internal/audit/spool"
	"github.com/agentmesh/agentmesh/internal/controlclient"
	"github.com/agentmesh/agentmesh/internal/node"
)

// scenarioPolicy measures the time from the start of a policy apply (the
// admin API call) until every gateway node has the compiled policy. The
// gateways are node runtimes in this process, watching the coordinator as
// 'agentmesh serve' does; serve() swaps the gateway's state in the same
// OnView callback that timestamps here, so this is apply -> enforced.
func scenarioPolicy(ctx context.Context, r *runner, res *Result) error {
	res.Columns = []string{ColAgentmesh}
	r.controlPlaneNote(res)
	n, applies := r.cfg.Gateways, pick(r.cfg.Quick, 3, 20)
	m, err := r.controlMesh(ctx)
	if err != nil {
		return err
	}
	key, err := m.key(ctx, "tool", []string{"tag:bench-fleet"}, true)
	if err != nil {
		return fmt.Errorf("key: %w", err)
	}
	r.progress("  joining %d gateway nodes", n)
	type seen struct {
		mu sync.Mutex
		at map[int64]time.Time // policy version -> first time seen
	}
	views := make([]*seen, n)
	var nodes []*node.Node
	defer func() {
		for _, nd := range nodes {
			nd.Close()
		}
	}()
	for i := range n {
		name := "fleet-" + strconv.Itoa(i)
		state := filepath.Join(r.dir, "fleet", name)
		if _, err := controlclient.Join(ctx, controlclient.JoinOptions{AuthKey: key, Name: name, State: state}); err != nil {
			return fmt.Errorf("join %s: %w", name, err)
		}
		sv := &seen{at: map[int64]time.Time{}}
		views[i] = sv
		nd, err := node.Start(ctx, state, node.Options{Logger: r.log, OnView: func(v node.View) {
			if v.Policy == nil {
				return
			}
			ver, err := strconv.ParseInt(v.Policy.Version(), 10, 64)
			if err != nil {
				return
			}
			now := time.Now()
			sv.mu.Lock()
			if _, ok := sv.at[ver]; !ok {
				sv.at[ver] = now
			}
			sv.mu.Unlock()
		}})
		if err != nil {
			return fmt.Errorf("start %s: %w", name, err)
		}
		nodes = append(nodes, nd)
	}
	var all, worst samples
	for range applies {
		start := time.Now()
		ver, err := m.apply(ctx)
		res.Calls++
		if err != nil {
			res.Failed++
			return fmt.Errorf("apply: %w", err)
		}
		var last time.Duration
		for i, nd := range nodes {
			wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			_, err := nd.WaitView(wctx, func(v node.View) bool { return v.Policy != nil && v.Policy.Version() == strconv.FormatInt(ver, 10) })
			cancel()
			if err != nil {
				res.Failed++
				return fmt.Errorf("gateway %d never saw version %d: %w", i, ver, err)
			}
			sv := views[i]
			// OnView runs after the view is published; wait for it.
			var at time.Time
			for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
				sv.mu.Lock()
				at = sv.at[ver]
				sv.mu.Unlock()
				if !at.IsZero() {
					break
				}
			}
			d := at.Sub(start)
			all = append(all, d)
			last = max(last, d)
		}
		worst = append(worst, last)
	}
	res.row("per gateway p50", "ms", true, map[string]float64{ColAgentmesh: ms(all.pct(50))})
	res.row("per gateway p99", "ms", true, map[string]float64{ColAgentmesh: ms(all.pct(99))})
	res.row("last gateway p50", "ms", true, map[string]float64{ColAgentmesh: ms(worst.pct(50))})
	res.row("last gateway max", "ms", true, map[string]float64{ColAgentmesh: ms(worst.pct(100))})
	met := all.pct(99) <= 250*time.Millisecond
	text := fmt.Sprintf("apply -> enforced <= 250 ms at p99 on %d gateways", n)
	if n < 100 {
		text += " (the goal is for 100; run without --quick)"
	}
	res.goal(met, text, "p99 %.1f ms over %d applies x %d gateways", ms(all.pct(99)), applies, n)
	return nil
}

// scenarioJoin measures joins: auth key check, CSR, certificate, netmap,
// state directory written. One reusable key, so the figure is the join
// alone.
func scenarioJoin(ctx context.Context, r *runner, res *Result) error {
	res.Columns = []string{ColAgentmesh}
	r.controlPlaneNote(res)
	n := pick(r.cfg.Quick, 5, 100)
	m, err := r.controlMesh(ctx)
	if err != nil {
		return err
	}
	key, err := m.key(ctx, "agent", nil, true)
	if err != nil {
		return fmt.Errorf("key: %w", err)
	}
	rates := map[string]float64{}
	var lat samples
	for _, conc := range []int{1, 8} {
		start := time.Now()
		var wg sync.WaitGroup
		var mu sync.Mutex
		next := 0
		for range conc {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					mu.Lock()
					i := next
					next++
					mu.Unlock()
					if i >= n || ctx.Err() != nil {
						return
					}
					name := fmt.Sprintf("joiner-c%d-%d", conc, i)
					t := time.Now()
					_, err := controlclient.Join(ctx, controlclient.JoinOptions{AuthKey: key, Name: name, State: filepath.Join(r.dir, "joins", name)})
					d := time.Since(t)
					mu.Lock()
					res.Calls++
					if err != nil {
						res.Failed++
						if res.Failed == 1 {
							res.note("join failed: %v", err)
						}
					} else if conc == 1 {
						lat = append(lat, d)
					}
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
		rates["c"+strconv.Itoa(conc)] = float64(n) / time.Since(start).Seconds()
	}
	res.row("sequential", "joins/s", false, map[string]float64{ColAgentmesh: rates["c1"]})
	res.row("8 at a time", "joins/s", false, map[string]float64{ColAgentmesh: rates["c8"]})
	res.row("join p50", "ms", true, map[string]float64{ColAgentmesh: ms(lat.pct(50))})
	res.note("%d joins per concurrency level; each creates a key pair and a state directory on disk", n)
	return nil
}

// scenarioAudit measures the two halves of the audit path: a gateway's
// spool (append + group commit to disk) and the coordinator's ingest of
// shipped batches (decode, validate, hash chain, SQLite).
func scenarioAudit(ctx context.Context, r *runner, res *Result) error {
	res.Columns = []string{ColAgentmesh}
	r.controlPlaneNote(res)
	m, err := r.controlMesh(ctx)
	if err != nil {
		return err
	}
	const name = "bench-audit"
	if err := m.join(ctx, name, "tool", nil); err != nil {
		return err
	}
	cl, err := r.client(filepath.Join(r.dir, name))
	if err != nil {
		return err
	}
	self := cl.ID().String()
	mk := func(i int) audit.Event {
		return audit.Event{V: audit.SchemaVersion, ID: audit.NewID(), Time: time.Now().UTC(), Kind: audit.KindRequest,
			Src: "spiffe://bench.agentmesh/agent/bench-agent", SrcAddr: "127.0.0.1:40000", Dst: self, Method: "tools/call",
			Tool: "echo", Decision: audit.Allow, Reason: "granted", Rule: "grants[0]", PolicyVersion: "1", Session: "s" + strconv.Itoa(i%16),
			LatencyUS: int64(i % 1000), Outcome: "ok"}
	}
	// Spool.
	nSpool := pick(r.cfg.Quick, 1000, 100_000)
	sp, err := spool.Open(filepath.Join(r.dir, "spool-bench"), spool.Options{Logger: r.log})
	if err != nil {
		return err
	}
	start := time.Now()
	for i := range nSpool {
		e := mk(i)
		res.Calls++
		if err := sp.Append(ctx, &e); err != nil {
			res.Failed++
			sp.Close()
			return fmt.Errorf("spool append: %w", err)
		}
	}
	if err := sp.Flush(ctx); err != nil {
		sp.Close()
		return fmt.Errorf("spool flush: %w", err)
	}
	spoolRate := float64(nSpool) / time.Since(start).Seconds()
	sp.Close()
	// Coordinator ingest, in batches of the shipper's default size.
	const batch = 1000
	nBatches := pick(r.cfg.Quick, 2, 50)
	evs := make([][]audit.Event, nBatches)
	for b := range evs {
		for i := range batch {
			evs[b] = append(evs[b], mk(b*batch+i))
		}
	}
	start = time.Now()
	for _, b := range evs {
		res.Calls += int64(len(b))
		if err := cl.Send(ctx, b); err != nil {
			res.Failed += int64(len(b))
			return fmt.Errorf("ingest: %w", err)
		}
	}
	ingestRate := float64(nBatches*batch) / time.Since(start).Seconds()
	res.row("gateway spool append+flush", "events/s", false, map[string]float64{ColAgentmesh: spoolRate})
	res.row("coordinator ingest", "events/s", false, map[string]float64{ColAgentmesh: ingestRate})
	res.note("spool: %d events; ingest: %d batches of %d events over mTLS", nSpool, nBatches, batch)
	return nil
}

// controlPlaneNote labels a control-plane scenario's layout: its
// coordinator always runs in the bench process (see controlMesh).
func (r *runner) controlPlaneNote(res *Result) {
	if r.deployed() {
		res.note("in-process breakdown: the coordinator and the nodes of this scenario run in the bench process, whatever the layout")
	}
}
