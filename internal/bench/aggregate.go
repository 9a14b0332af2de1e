package bench

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strconv"
	"time"

	"github.com/agentmesh/agentmesh/internal/aggregate"
)

// ColAggregate is the aggregated endpoint ('agentmesh connect --all') of
// the agentmesh column's agent, in front of the same gateway: the
// aggregate scenario's second column.
const ColAggregate = "agentmesh-all"

// ColAggregateSession is the same endpoint for a client that asks for
// MCP 2025-11-25, which it serves over a session; ColAggregate's client
// asks for the latest version (2026-07-28), served statelessly.
const ColAggregateSession = "agentmesh-all-2025"

// scenarioAggregate measures the same tools/call (echo) through the
// single-service connector of the agentmesh column and through the
// aggregated endpoint of the same agent ('agentmesh connect --all
// --listen', the tool named SERVICE__echo), which adds one MCP server
// and client session in the connector process, for a client of the
// latest protocol (served statelessly) and one of 2025-11-25 (served over
// a session): sequential calls, alternating the three in rounds.
func scenarioAggregate(ctx context.Context, r *runner, res *Result) error {
	res.Columns = []string{ColAgentmesh, ColAggregate, ColAggregateSession}
	var single *column
	for i := range r.columns {
		if r.columns[i].name == ColAgentmesh {
			single = &r.columns[i]
		}
	}
	if single == nil || single.url == "" {
		res.note("%s: needs the agentmesh column (--columns)", ColAggregate)
		return nil
	}
	if !r.deployed() {
		res.note("%s: measured in the deployed layout only ('agentmesh connect --all' as a process)", ColAggregate)
		return nil
	}
	all, err := r.startAggregate(ctx)
	if err != nil {
		return err
	}
	session := *all
	session.name, session.protocol = ColAggregateSession, "2025-11-25"
	cols := []*column{single, all, &session}
	aggregated := toolName + aggregate.Separator + "echo"
	tools := map[string]string{ColAgentmesh: "echo", ColAggregate: aggregated, ColAggregateSession: aggregated}
	ss, closeAll, err := openSessions(ctx, cols)
	if err != nil {
		return err
	}
	defer closeAll()
	call := func(c *column, i int) error {
		return callEchoAs(ctx, ss[c.name], tools[c.name], "ping "+strconv.Itoa(i))
	}
	for _, c := range cols { // warm up both paths
		for i := range 5 {
			if err := call(c, i); err != nil {
				return fmt.Errorf("%s: warm-up: %w", c.name, err)
			}
		}
	}
	rounds, per := pick(r.cfg.Quick, 2, 20), pick(r.cfg.Quick, 10, 100)
	got := map[string]samples{}
	for round := range rounds {
		for _, c := range rotate(cols, round) {
			for i := range per {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				start := time.Now()
				err := call(c, i)
				d := time.Since(start)
				res.Calls++
				if err != nil {
					res.Failed++
					res.note("%s: call failed: %v", c.name, err)
					continue
				}
				got[c.name] = append(got[c.name], d)
			}
		}
	}
	pctRows(res, got, "µs", us)
	s := got[ColAgentmesh]
	for _, c := range []struct{ name, how string }{{ColAggregate, "2026-07-28, stateless"}, {ColAggregateSession, "2025-11-25, a session"}} {
		if a := got[c.name]; len(s) > 0 && len(a) > 0 {
			res.note("the aggregated path (%s) adds %.0f µs at p50 (%.2fx the single-service path), %.0f µs at p99",
				c.how, us(a.pct(50)-s.pct(50)), float64(a.pct(50))/float64(s.pct(50)), us(a.pct(99)-s.pct(99)))
		}
	}
	res.goal(res.Failed == 0, "zero lost calls", "%d of %d failed", res.Failed, res.Calls)
	return nil
}

// startAggregate starts 'agentmesh connect --all --listen' for the
// agentmesh column's agent (its netmap holds one tool service, the
// column's gateway) and returns its column.
func (r *runner) startAggregate(ctx context.Context) (*column, error) {
	if r.dmesh == nil {
		return nil, errors.New("the agentmesh column's mesh is not running")
	}
	// No token, as for the single-service connector: the client is the
	// bench process, and both paths should pay the same.
	_, s, err := r.startProc(ctx, "connector --all", r.cfg.ChildEnv, r.cfg.Executable,
		"connect", "--all", "--state", filepath.Join(r.dmesh.dir, agentName), "--listen", "127.0.0.1:0", "--no-token", "--ready-fd", "3")
	if err != nil {
		return nil, err
	}
	c := &column{name: ColAggregate, url: s.URL, hc: newHTTPClient()}
	r.onStop(c.hc.CloseIdleConnections)
	return c, nil
}
