package coordinator_test

import (
	"context"
	"fmt"
	"net/http"
	"path/filepath"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/agentmesh/agentmesh/internal/audit"
	"github.com/agentmesh/agentmesh/internal/audit/audittest"
	"github.com/agentmesh/agentmesh/internal/connlimit"
	"github.com/agentmesh/agentmesh/internal/controlapi"
	"github.com/agentmesh/agentmesh/internal/controlclient"
	"github.com/agentmesh/agentmesh/internal/coordinator"
)

// BenchmarkJoin measures one join round trip on loopback: key pair, pinned
// TLS handshake, CSR, key check and node record in one transaction,
// certificate, state files written.
func BenchmarkJoin(b *testing.B) {
	m := startMesh(b)
	defer m.stop()
	key := m.keyB(b, controlapi.KeyCreateRequest{Kind: "agent", Reusable: true})
	dir := b.TempDir()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		if _, err := controlclient.Join(context.Background(), controlclient.JoinOptions{AuthKey: key, Name: fmt.Sprintf("n%d", i), State: filepath.Join(dir, fmt.Sprint(i))}); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "joins/s")
}

func (m *mesh) keyB(b *testing.B, req controlapi.KeyCreateRequest) string {
	var resp controlapi.KeyCreateResponse
	if err := m.admin.Call(context.Background(), http.MethodPost, controlapi.PathKeys, req, &resp); err != nil {
		b.Fatal(err)
	}
	return resp.Key
}

// BenchmarkNetmapFanout1000 measures how long one change (a re-tag) takes
// to reach 1,000 nodes that each hold a long-poll watch on their own TLS
// connection. It reports the time until the last watcher has it and the
// median.
func BenchmarkNetmapFanout1000(b *testing.B) {
	const watchers = 1000
	// A thousand nodes on one host reconnect at once: the per-source
	// handshake bound would make them queue, which is not what this
	// measures.
	m := &mesh{t: b, data: filepath.Join(b.TempDir(), "mesh"), listen: "127.0.0.1:0", clock: newClock(),
		limits: coordinator.Limits{Conn: connlimit.Config{MaxHandshaking: 4 * watchers, MaxHandshakingPerSource: 4 * watchers}}}
	m.start()
	defer m.stop()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	node := m.mustJoinB(b, m.keyB(b, controlapi.KeyCreateRequest{Kind: "tool"}), "watched")
	got := make(chan time.Time, watchers)
	start, _ := node.Netmap(ctx, -1)
	ready := make(chan struct{}, watchers)
	for range watchers {
		c := m.client(node.Dir().Path())
		go func() {
			since := start.Version
			// Open the connection first so handshakes are not timed.
			ready <- struct{}{}
			for ctx.Err() == nil {
				nm, err := c.Netmap(ctx, since)
				if err != nil || nm == nil {
					continue
				}
				since = nm.Version
				got <- time.Now()
			}
		}()
	}
	for range watchers {
		<-ready
	}
	// Give every watcher a moment to have its poll parked at the server.
	time.Sleep(2 * time.Second)
	var lastAll, medianAll []time.Duration
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		t0 := time.Now()
		if err := m.admin.Call(ctx, http.MethodPost, controlapi.PathNodes+"/watched/tags", controlapi.TagRequest{Tags: []string{fmt.Sprintf("tag:v%d", i)}}, nil); err != nil {
			b.Fatal(err)
		}
		lat := make([]time.Duration, 0, watchers)
		for range watchers {
			lat = append(lat, (<-got).Sub(t0))
		}
		sort.Slice(lat, func(a, c int) bool { return lat[a] < lat[c] })
		lastAll = append(lastAll, lat[len(lat)-1])
		medianAll = append(medianAll, lat[len(lat)/2])
	}
	b.StopTimer()
	b.ReportMetric(float64(avg(lastAll).Microseconds())/1000, "ms-to-all-1000")
	b.ReportMetric(float64(avg(medianAll).Microseconds())/1000, "ms-median")
}

func avg(d []time.Duration) time.Duration {
	var s time.Duration
	for _, x := range d {
		s += x
	}
	return s / time.Duration(len(d))
}

func (m *mesh) mustJoinB(b *testing.B, key, name string) *controlclient.Client {
	dir := filepath.Join(b.TempDir(), name)
	if _, err := controlclient.Join(context.Background(), controlclient.JoinOptions{AuthKey: key, Name: name, State: dir}); err != nil {
		b.Fatal(err)
	}
	return m.client(dir)
}

// BenchmarkAuditIngest measures sustained ingest of shipped events, as
// gateways ship them: 1,000-event batches over each node's mTLS
// connection, strict decoding, validation, and the hash-chained store. The
// senders are 1 and 4 tool nodes shipping at once (decoding overlaps the
// store's single writer). One op is one event.
func BenchmarkAuditIngest(b *testing.B) {
	for _, senders := range []int{1, 4} {
		b.Run(fmt.Sprintf("senders=%d", senders), func(b *testing.B) {
			m := startMesh(b)
			defer m.stop()
			key := m.keyB(b, controlapi.KeyCreateRequest{Kind: "tool", Reusable: true})
			base := time.Now().UTC()
			const batch = 1000
			var next atomic.Int64 // events handed out so far
			errc := make(chan error, senders)
			clients := make([]*controlclient.Client, senders)
			for w := range clients {
				clients[w] = m.mustJoin(key, fmt.Sprintf("ingest-%d", w), "")
			}
			b.ResetTimer()
			var wg sync.WaitGroup
			for w, c := range clients {
				self := fmt.Sprintf("spiffe://test.mesh/tool/ingest-%d", w)
				wg.Go(func() {
					events := make([]audit.Event, batch)
					for {
						from := int(next.Add(batch)) - batch
						if from >= b.N {
							return
						}
						n := min(batch, b.N-from)
						for i := range n {
							events[i] = audittest.Event(from+i, base)
							events[i].Dst = self
						}
						if err := c.Send(context.Background(), events[:n]); err != nil {
							errc <- err
							return
						}
					}
				})
			}
			wg.Wait()
			b.StopTimer() // not the shutdown
			select {
			case err := <-errc:
				b.Fatal(err)
			default:
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
		})
	}
}

// BenchmarkJoin1000 joins 1,000 agents into one mesh with one reusable
// key, 8 at a time (the per-address join rate limit is lifted: every
// joiner here is on one host), and reports joins per second and the
// latency of one join at p50 and p99. Each join publishes a netmap, which
// reads every node back, so the mesh grows to 1,000 nodes as it runs.
func BenchmarkJoin1000(b *testing.B) {
	const agents, parallel = 1000, 8
	for b.Loop() {
		b.StopTimer()
		m := &mesh{t: b, data: filepath.Join(b.TempDir(), "mesh"), listen: "127.0.0.1:0", clock: newClock(),
			limits: coordinator.Limits{JoinRate: 1e9, JoinBurst: 1 << 30}}
		m.start()
		key := m.keyB(b, controlapi.KeyCreateRequest{Kind: "agent", Reusable: true})
		b.StartTimer()
		all := coordinator.JoinAgents(b, key, "agent", agents, parallel)
		b.StopTimer()
		m.stop()
		b.ReportMetric(all.Seconds(), "s-for-1000")
		b.StartTimer()
	}
}
