package bench

import (
	"context"
	"fmt"
	"net/http"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// rotate returns cols starting at round % len(cols), so that no column is
// always measured first (or right after the same neighbour).
func rotate[T any](cols []T, round int) []T {
	if len(cols) == 0 {
		return nil
	}
	k := round % len(cols)
	return append(append([]T{}, cols[k:]...), cols[:k]...)
}

// sessions opens one session per column.
func openSessions(ctx context.Context, cols []*column) (map[string]*mcp.ClientSession, func(), error) {
	out := map[string]*mcp.ClientSession{}
	closeAll := func() {
		for _, s := range out {
			s.Close()
		}
	}
	for _, c := range cols {
		s, err := c.connect(ctx, nil)
		if err != nil {
			closeAll()
			return nil, nil, err
		}
		out[c.name] = s
	}
	return out, closeAll, nil
}

// sequential measures calls made one at a time on one session per column,
// alternating columns in rounds.
func (r *runner) sequential(ctx context.Context, res *Result, cols []*column, rounds, perRound int, call func(context.Context, *mcp.ClientSession, int) error) (map[string]samples, error) {
	ss, closeAll, err := openSessions(ctx, cols)
	if err != nil {
		return nil, err
	}
	defer closeAll()
	out := map[string]samples{}
	for _, c := range cols { // warm up every path
		for i := range 5 {
			if err := call(ctx, ss[c.name], i); err != nil {
				return nil, fmt.Errorf("%s: warm-up: %w", c.name, err)
			}
		}
	}
	for round := range rounds {
		for _, c := range rotate(cols, round) {
			for i := range perRound {
				if ctx.Err() != nil {
					return nil, ctx.Err()
				}
				start := time.Now()
				err := call(ctx, ss[c.name], i)
				d := time.Since(start)
				res.Calls++
				if err != nil {
					res.Failed++
					res.note("%s: call failed: %v", c.name, err)
					continue
				}
				out[c.name] = append(out[c.name], d)
			}
		}
	}
	return out, nil
}

func pctRows(res *Result, got map[string]samples, unit string, conv func(time.Duration) float64) {
	for _, p := range []float64{50, 90, 99} {
		vals := map[string]float64{}
		for name, s := range got {
			vals[name] = conv(s.pct(p))
		}
		res.row("p"+strconv.Itoa(int(p)), unit, true, vals)
	}
}

func scenarioLatency(ctx context.Context, r *runner, res *Result) error {
	cols := r.available(res)
	rounds, per := pick(r.cfg.Quick, 2, 20), pick(r.cfg.Quick, 10, 100)
	got, err := r.sequential(ctx, res, cols, rounds, per, func(ctx context.Context, s *mcp.ClientSession, i int) error {
		return callEcho(ctx, s, "ping "+strconv.Itoa(i))
	})
	if err != nil {
		return err
	}
	pctRows(res, got, "µs", us)
	added := map[string]float64{}
	d := got[ColDirect]
	for name, s := range got {
		added[name] = us(s.pct(50) - d.pct(50))
	}
	res.row("added p50", "µs", true, added)
	for name, s := range got {
		added[name] = us(s.pct(99) - d.pct(99))
	}
	res.row("added p99", "µs", true, added)
	am, ngx := got[ColAgentmesh], got[ColNginx]
	if len(ngx) > 0 && len(am) > 0 {
		for _, p := range []float64{50, 99} {
			a, n := am.pct(p)-d.pct(p), ngx.pct(p)-d.pct(p)
			res.goal(a < n, fmt.Sprintf("agentmesh adds less than the nginx chain at p%.0f", p), "agentmesh +%.0f µs, nginx +%.0f µs", us(a), us(n))
		}
	}
	if lib := got[ColLibrary]; len(ngx) > 0 && len(lib) > 0 {
		a, n := lib.pct(50)-d.pct(50), ngx.pct(50)-d.pct(50)
		res.goal(2*a <= n, "the library adds at most half of the nginx chain at p50", "library +%.0f µs, nginx +%.0f µs (%.2fx)", us(a), us(n), float64(a)/float64(n))
	}
	res.goal(res.Failed == 0, "zero lost calls", "%d of %d failed", res.Failed, res.Calls)
	return nil
}

func scenarioWork(ctx context.Context, r *runner, res *Result) error {
	cols := r.available(res)
	rounds, per := pick(r.cfg.Quick, 2, 10), pick(r.cfg.Quick, 3, 20)
	got, err := r.sequential(ctx, res, cols, rounds, per, func(ctx context.Context, s *mcp.ClientSession, _ int) error {
		return callWork(ctx, s, 10)
	})
	if err != nil {
		return err
	}
	pctRows(res, got, "ms", ms)
	added := map[string]float64{}
	d := got[ColDirect].pct(50)
	for name, s := range got {
		added[name] = 100 * float64(s.pct(50)-d) / float64(d)
	}
	res.row("added p50", "%", true, added)
	if am := got[ColAgentmesh]; len(am) > 0 {
		pc := added[ColAgentmesh]
		res.goal(pc <= 2, "a 10 ms tool call: agentmesh adds <= 2 %", "+%.2f %% at p50", pc)
	}
	return nil
}

func scenarioThroughput(ctx context.Context, r *runner, res *Result) error {
	cols := r.available(res)
	rounds := pick(r.cfg.Quick, 1, 3)
	slot := pick(r.cfg.Quick, 150*time.Millisecond, time.Second)
	var c16 map[string]float64
	for _, conc := range []int{1, 16, 64} {
		// One session per worker, opened before the clock starts.
		sess := map[string][]*mcp.ClientSession{}
		closeAll := func() {
			for _, l := range sess {
				for _, s := range l {
					s.Close()
				}
			}
		}
		for _, c := range cols {
			for range conc {
				s, err := c.connect(ctx, nil)
				if err != nil {
					closeAll()
					return err
				}
				sess[c.name] = append(sess[c.name], s)
			}
		}
		calls, elapsed := map[string]int64{}, map[string]time.Duration{}
		lat := map[string]samples{}
		for round := range rounds {
			for _, c := range rotate(cols, round) {
				n, failed, d, l := burst(ctx, sess[c.name], slot)
				calls[c.name] += n
				elapsed[c.name] += d
				lat[c.name] = append(lat[c.name], l...)
				res.Calls += n + failed
				res.Failed += failed
				if failed > 0 {
					res.note("%s: %d calls failed at concurrency %d", c.name, failed, conc)
				}
			}
		}
		closeAll()
		vals, p99 := map[string]float64{}, map[string]float64{}
		for name, n := range calls {
			vals[name] = float64(n) / elapsed[name].Seconds()
			p99[name] = us(lat[name].pct(99))
		}
		res.row(fmt.Sprintf("c%d", conc), "calls/s", false, vals)
		res.row(fmt.Sprintf("c%d p99", conc), "µs", true, p99)
		if conc == 16 {
			c16 = vals
		}
	}
	if a, ok := c16[ColAgentmesh]; ok {
		if n, ok := c16[ColNginx]; ok {
			res.goal(a >= n, "agentmesh keeps at least the nginx chain's throughput at concurrency 16", "%.0f vs %.0f calls/s (%.2fx)", a, n, a/n)
		}
	}
	res.goal(res.Failed == 0, "zero lost calls", "%d of %d failed", res.Failed, res.Calls)
	return nil
}

// burst runs one worker per session, calling echo back to back for d.
func burst(ctx context.Context, sess []*mcp.ClientSession, d time.Duration) (ok, failed int64, elapsed time.Duration, lat samples) {
	var (
		wg  sync.WaitGroup
		mu  sync.Mutex
		nOK atomic.Int64
		nF  atomic.Int64
	)
	start := time.Now()
	end := start.Add(d)
	for w, s := range sess {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var mine samples
			for i := 0; time.Now().Before(end) && ctx.Err() == nil; i++ {
				t := time.Now()
				if err := callEcho(ctx, s, strconv.Itoa(w)+"/"+strconv.Itoa(i)); err != nil {
					nF.Add(1)
					continue
				}
				mine = append(mine, time.Since(t))
				nOK.Add(1)
			}
			mu.Lock()
			lat = append(lat, mine...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	return nOK.Load(), nF.Load(), time.Since(start), lat
}

func scenarioSession(ctx context.Context, r *runner, res *Result) error {
	cols := r.available(res)
	rounds, per := pick(r.cfg.Quick, 1, 10), pick(r.cfg.Quick, 5, 20)
	got := map[string]samples{}
	for round := range rounds {
		for _, c := range rotate(cols, round) {
			for range per {
				// A new client transport: a new TCP connection to the first
				// hop. Hops behind it keep their connections, as in use.
				hc := c.client()
				start := time.Now()
				s, err := c.connect(ctx, hc)
				d := time.Since(start)
				res.Calls++
				if err != nil {
					res.Failed++
					res.note("%v", err)
					hc.CloseIdleConnections()
					continue
				}
				got[c.name] = append(got[c.name], d)
				s.Close()
				hc.CloseIdleConnections()
			}
		}
	}
	pctRows(res, got, "µs", us)
	am, ngx := got[ColAgentmesh], got[ColNginx]
	if len(am) > 0 && len(ngx) > 0 {
		res.goal(am.pct(50) <= ngx.pct(50), "session setup no slower than the nginx chain", "p50 %.0f µs vs %.0f µs", us(am.pct(50)), us(ngx.pct(50)))
	}
	res.note("session = new client connection + initialize + notifications/initialized; the hops behind the first reuse their (m)TLS connections, as they do in use")
	return nil
}

func scenarioResource(ctx context.Context, r *runner, res *Result) error {
	cols := r.available(res)
	reps := pick(r.cfg.Quick, 2, 8)
	ss, closeAll, err := openSessions(ctx, cols)
	if err != nil {
		return err
	}
	defer closeAll()
	got := map[string]samples{}
	size := 0
	for round := range reps {
		for _, c := range rotate(cols, round) {
			start := time.Now()
			rr, err := ss[c.name].ReadResource(ctx, &mcp.ReadResourceParams{URI: BlobURI})
			d := time.Since(start)
			res.Calls++
			if err != nil || len(rr.Contents) != 1 {
				res.Failed++
				res.note("%s: read failed: %v", c.name, err)
				continue
			}
			size = len(rr.Contents[0].Text)
			got[c.name] = append(got[c.name], d)
		}
	}
	mbs, p50 := map[string]float64{}, map[string]float64{}
	for name, s := range got {
		p50[name] = ms(s.pct(50))
		mbs[name] = float64(size) / (1 << 20) / s.pct(50).Seconds()
	}
	res.row("read p50", "ms", true, p50)
	res.row("throughput", "MiB/s", false, mbs)
	res.note("resource %s of %d bytes (text), read with resources/read", BlobURI, size)
	return nil
}

func scenarioMemory(ctx context.Context, r *runner, res *Result) error {
	if r.deployed() {
		return memoryDeployed(ctx, r, res)
	}
	cols := r.available(res, ColDirect, ColGoChain, ColAgentmesh)
	n := r.cfg.Sessions
	perSess, gor := map[string]float64{}, map[string]float64{}
	for _, c := range cols {
		hc := c.client()
		before, g0 := heap()
		open, err := openIdle(ctx, c, hc, n, res)
		after, g1 := heap()
		for _, s := range open {
			s.Close()
		}
		hc.CloseIdleConnections()
		if err != nil {
			return err
		}
		perSess[c.name] = float64(int64(after)-int64(before)) / float64(n) / 1024
		gor[c.name] = float64(g1-g0) / float64(n)
	}
	res.row("heap+stacks per session", "KiB", true, perSess)
	res.row("goroutines per session", "", true, gor)
	if a, ok := perSess[ColAgentmesh]; ok {
		added := a - perSess[ColDirect]
		res.goal(added <= 64, "agentmesh adds <= 64 KiB per idle session", "%.1f KiB (connector + gateway, in process)", added)
	}
	res.note("in-process breakdown: %d idle sessions, each with its standalone SSE stream; everything runs in this process, so the direct column is the client and upstream's share, and each other column adds what its hops hold", n)
	return nil
}

// memoryDeployed weighs idle sessions as deployed: the growth of the
// resident set (VmRSS) of each column's hop processes (connector and
// gateway; nginx's master and workers; the Go hops), and of the shared
// upstream, while n sessions are open.
func memoryDeployed(ctx context.Context, r *runner, res *Result) error {
	if err := procfs(); err != nil {
		return err
	}
	cols := r.available(res, ColDirect, ColGoChain, ColNginx, ColAgentmesh, ColAgentmeshEnv)
	n := r.cfg.Sessions
	hops, up := map[string]float64{}, map[string]float64{}
	weigh := func(ps []*proc) (int64, error) {
		var sum int64
		for _, p := range ps {
			b, err := rss(p.pid())
			if err != nil {
				return 0, err
			}
			sum += b
		}
		return sum, nil
	}
	for _, c := range cols {
		hc := c.client()
		h0, err := weigh(c.procs)
		if err != nil {
			return err
		}
		u0, err := weigh([]*proc{r.up.proc})
		if err != nil {
			return err
		}
		open, err := openIdle(ctx, c, hc, n, res)
		var h1, u1 int64
		if err == nil {
			if h1, err = weigh(c.procs); err == nil {
				u1, err = weigh([]*proc{r.up.proc})
			}
		}
		for _, s := range open {
			s.Close()
		}
		hc.CloseIdleConnections()
		if err != nil {
			return err
		}
		hops[c.name] = float64(h1-h0) / float64(n) / 1024 // direct: no hops, 0
		up[c.name] = float64(u1-u0) / float64(n) / 1024
	}
	res.row("hops' RSS per session", "KiB", true, hops)
	res.row("upstream's RSS per session", "KiB", true, up)
	if a, ok := hops[ColAgentmesh]; ok {
		res.goal(a <= 64, "agentmesh adds <= 64 KiB per idle session", "%.1f KiB (connector + gateway processes' RSS)", a)
		if ng, ok := hops[ColNginx]; ok {
			res.note("nginx's two hops add %.1f KiB per idle session (master and workers' RSS)", ng)
		}
	}
	res.note("%d idle sessions per column, each with its standalone SSE stream; growth of VmRSS (/proc/PID/status) of the column's own processes while they are open; a Go process's RSS also holds garbage not yet collected, and returns freed memory to the kernel only slowly, so columns are measured one after the other in separate processes", n)
	return nil
}

// openIdle opens n sessions through c and makes one call on the last, so
// that every session's standalone stream is open (it opens once a call
// has gone through after it).
func openIdle(ctx context.Context, c *column, hc *http.Client, n int, res *Result) ([]*mcp.ClientSession, error) {
	var open []*mcp.ClientSession
	var err error
	for range n {
		var s *mcp.ClientSession
		if s, err = c.connect(ctx, hc); err != nil {
			break
		}
		res.Calls++
		open = append(open, s)
	}
	if err == nil && len(open) > 0 {
		err = callEcho(ctx, open[len(open)-1], "settle")
	}
	if err != nil {
		res.Failed++
		return open, fmt.Errorf("%s: after %d sessions: %w", c.name, len(open), err)
	}
	return open, nil
}

// heap returns the live heap and goroutine stacks after a collection, and
// the number of goroutines.
func heap() (uint64, int) {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc + m.StackInuse, runtime.NumGoroutine()
}
