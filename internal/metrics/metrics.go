package metrics

import (
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/agentmesh/agentmesh/internal/audit"
	"github.com/agentmesh/agentmesh/internal/reason"
)

// Type is a metric's Prometheus type.
type Type string

// The types agentmesh uses.
const (
	Counter   Type = "counter"
	Gauge     Type = "gauge"
	Histogram Type = "histogram"
)

// Def declares one metric: what the README documents and what a Set
// registers.
type Def struct {
	Name   string
	Type   Type
	Labels []string
	Help   string
}

// Metric names, one constant each, so that recording code and Defs cannot
// disagree.
const (
	nameRequests        = "agentmesh_gateway_requests_total"
	nameLatency         = "agentmesh_gateway_latency_seconds"
	nameFirstByte       = "agentmesh_gateway_stream_first_byte_seconds"
	nameSessions        = "agentmesh_gateway_sessions"
	nameStreams         = "agentmesh_gateway_streams"
	nameProcesses       = "agentmesh_gateway_stdio_processes"
	nameRefused         = "agentmesh_refused_connections_total"
	nameTokens          = "agentmesh_model_tokens_total"
	nameCertExpiry      = "agentmesh_node_certificate_expiry_timestamp_seconds"
	nameNetmapVersion   = "agentmesh_netmap_version"
	nameNetmapUpdated   = "agentmesh_netmap_updated_timestamp_seconds"
	nameNetmapConfirmed = "agentmesh_netmap_confirmed_timestamp_seconds"
	nameNetmapStale     = "agentmesh_netmap_stale"
	namePolicyVersion   = "agentmesh_policy_version"
	namePolicyUpdated   = "agentmesh_policy_updated_timestamp_seconds"
	nameSpoolEvents     = "agentmesh_audit_spool_events"
	nameSpoolOldest     = "agentmesh_audit_spool_oldest_event_age_seconds"
	nameShipped         = "agentmesh_audit_shipped_events_total"
	nameShipErrors      = "agentmesh_audit_ship_errors_total"
	nameJoins           = "agentmesh_coordinator_joins_total"
	nameRenewals        = "agentmesh_coordinator_renewals_total"
	nameRevocations     = "agentmesh_coordinator_revocations_total"
	nameIngested        = "agentmesh_coordinator_audit_events_ingested_total"
	nameChainHead       = "agentmesh_coordinator_audit_chain_head_seq"
	nameShadowDiffs     = "agentmesh_gateway_shadow_differences_total"
)

// defs is every metric agentmesh exports, in the README's order.
var defs = []Def{
	{nameRequests, Counter, []string{"method", "decision", "reason", "peer_kind"},
		"Requests an MCP or model gateway decided (one per audit event of kind request): the method (MCP method, GET or DELETE of a stream, response, or the model API's METHOD PATH; other for anything else), allow or deny, the reason code, and the caller's kind (agent, tool, model, admin; tailnet for a tailnet caller)."},
	{nameLatency, Histogram, []string{"hop"},
		"Gateway latency per hop: decision (the policy's decision on one message), upstream (from handing a request to the upstream to its response head), total (from arrival to the end of a response that is not a stream)."},
	{nameFirstByte, Histogram, nil,
		"Time from a request's arrival to the first byte of its answer, for answers that are event streams (SSE)."},
	{nameSessions, Gauge, nil, "Open MCP sessions (with a session id) on the gateway."},
	{nameStreams, Gauge, nil, "Open server-to-client streams (GET streams and subscriptions/listen) on the gateway."},
	{nameProcesses, Gauge, nil, "Running stdio upstream processes (one per session of a stdio upstream)."},
	{nameRefused, Counter, []string{"reason"},
		"Connections and requests refused before admission, by reason: failed TLS handshakes, connection limits, unknown or revoked peers (gateway), refused joins and foreign audit batches (coordinator), local requests without the token or from a foreign Host or Origin (connector)."},
	{nameTokens, Counter, []string{"model", "source"},
		"Model tokens used (usage reported by the upstream) by model and caller SPIFFE ID. Per identity: bounded by the mesh's nodes, and both labels keep at most 200 distinct values (later ones are other)."},
	{nameCertExpiry, Gauge, nil, "When this node's certificate expires (unix seconds); renewal moves it on."},
	{nameNetmapVersion, Gauge, nil, "Version of the netmap this node enforces."},
	{nameNetmapUpdated, Gauge, nil, "When this node received the netmap version it enforces (unix seconds); time() minus it is the netmap's age."},
	{nameNetmapConfirmed, Gauge, nil, "When the coordinator last confirmed this node's view (unix seconds)."},
	{nameNetmapStale, Gauge, nil, "1 while the view is stale (unconfirmed for a certificate lifetime: a gateway admits nobody), else 0."},
	{namePolicyVersion, Gauge, nil, "Version of the policy this node enforces (0: none)."},
	{namePolicyUpdated, Gauge, nil, "When this node received the policy version it enforces (unix seconds)."},
	{nameSpoolEvents, Gauge, nil, "Audit events in this gateway's spool not yet acknowledged by the coordinator (0 on a node without a spool)."},
	{nameSpoolOldest, Gauge, nil, "Age of the oldest audit event waiting to be shipped, in seconds (0 when none waits)."},
	{nameShipped, Counter, nil, "Audit events shipped to the coordinator and acknowledged."},
	{nameShipErrors, Counter, nil, "Failed attempts to ship a batch of audit events (retried with backoff)."},
	{nameJoins, Counter, []string{"reason"}, "Join attempts at the coordinator: allowed, or the refusal's reason code."},
	{nameRenewals, Counter, []string{"result"}, "Certificate renewals at the coordinator: ok or error."},
	{nameRevocations, Counter, []string{"what"}, "Revocations at the coordinator: node or key."},
	{nameIngested, Counter, []string{"result"}, "Audit events received from nodes in accepted batches: added, duplicate (stored before) or conflict."},
	{nameChainHead, Gauge, nil, "Seq of the audit hash chain's head after the last batch this coordinator ingested (its own admin events move the head too, and show at the next ingest)."},
	{nameShadowDiffs, Counter, []string{"active", "shadow"},
		"Requests on which the shadow policy (agentmesh policy shadow) decided otherwise than the enforced one: the active decision (allow, deny) and the shadow's (allow, deny, error)."},
}

// Defs returns every metric agentmesh exports (a copy).
func Defs() []Def {
	out := make([]Def, len(defs))
	copy(out, defs)
	return out
}

func def(name string) Def {
	for _, d := range defs {
		if d.Name == name {
			return d
		}
	}
	panic("metrics: undeclared metric " + name)
}

// buckets span 50 µs (a policy decision) to 30 s (a slow upstream).
var buckets = []float64{.00005, .0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30}

// Set is one process' (or one node's) metrics with their registry. A nil
// *Set records nothing.
type Set struct {
	reg *prometheus.Registry

	requests                       *prometheus.CounterVec
	decision, upstream, total      prometheus.Observer
	firstByte                      prometheus.Observer
	sessions, streams, processes   prometheus.Gauge
	refused                        *prometheus.CounterVec
	tokens                         *prometheus.CounterVec
	tokenModels, tokenSources      capLabel
	certExpiry                     prometheus.Gauge
	netmapVersion, netmapUpdated   prometheus.Gauge
	netmapConfirmed, netmapStale   prometheus.Gauge
	policyVersion, policyUpdated   prometheus.Gauge
	shipped, shipErrors            prometheus.Counter
	joins, renewals, revocations   *prometheus.CounterVec
	ingested                       *prometheus.CounterVec
	chainHead                      prometheus.Gauge
	shadowDiffs                    *prometheus.CounterVec
	lastNetmap, lastPolicy         atomic.Int64
	spoolPending                   atomic.Pointer[func() uint64]
	spoolOldest                    atomic.Int64 // unix nanoseconds; 0 when nothing waits
	renewOK, renewErr              prometheus.Counter
	revokeNode, revokeKey          prometheus.Counter
	ingestAdded, ingestDup, ingCfl prometheus.Counter
	headMu                         sync.Mutex
	head                           int64
}

// New returns a Set with every metric of Defs registered, and the Go
// runtime and process collectors.
func New() *Set {
	s := &Set{reg: prometheus.NewRegistry()}
	s.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	s.requests = s.counterVec(nameRequests)
	lat := s.histogramVec(nameLatency)
	s.decision, s.upstream, s.total = lat.WithLabelValues("decision"), lat.WithLabelValues("upstream"), lat.WithLabelValues("total")
	s.firstByte = s.histogram(nameFirstByte)
	s.sessions, s.streams, s.processes = s.gauge(nameSessions), s.gauge(nameStreams), s.gauge(nameProcesses)
	s.refused = s.counterVec(nameRefused)
	s.tokens = s.counterVec(nameTokens)
	s.tokenModels.max, s.tokenSources.max = maxLabelValues, maxLabelValues
	s.certExpiry = s.gauge(nameCertExpiry)
	s.netmapVersion, s.netmapUpdated = s.gauge(nameNetmapVersion), s.gauge(nameNetmapUpdated)
	s.netmapConfirmed, s.netmapStale = s.gauge(nameNetmapConfirmed), s.gauge(nameNetmapStale)
	s.policyVersion, s.policyUpdated = s.gauge(namePolicyVersion), s.gauge(namePolicyUpdated)
	s.lastNetmap.Store(-1)
	s.lastPolicy.Store(-1)
	s.gaugeFunc(nameSpoolEvents, func() float64 {
		if f := s.spoolPending.Load(); f != nil {
			return float64((*f)())
		}
		return 0
	})
	s.gaugeFunc(nameSpoolOldest, func() float64 {
		t := s.spoolOldest.Load()
		if t == 0 {
			return 0
		}
		return max(time.Since(time.Unix(0, t)).Seconds(), 0)
	})
	s.shipped, s.shipErrors = s.counter(nameShipped), s.counter(nameShipErrors)
	s.joins, s.renewals, s.revocations = s.counterVec(nameJoins), s.counterVec(nameRenewals), s.counterVec(nameRevocations)
	s.renewOK, s.renewErr = s.renewals.WithLabelValues("ok"), s.renewals.WithLabelValues("error")
	s.revokeNode, s.revokeKey = s.revocations.WithLabelValues("node"), s.revocations.WithLabelValues("key")
	s.ingested = s.counterVec(nameIngested)
	s.ingestAdded, s.ingestDup, s.ingCfl = s.ingested.WithLabelValues("added"), s.ingested.WithLabelValues("duplicate"), s.ingested.WithLabelValues("conflict")
	s.chainHead = s.gauge(nameChainHead)
	s.shadowDiffs = s.counterVec(nameShadowDiffs)
	return s
}

// Registry is the Set's registry, for its handler and tests.
func (s *Set) Registry() *prometheus.Registry { return s.reg }

func (s *Set) register(c prometheus.Collector) {
	s.reg.MustRegister(c)
}

func (s *Set) check(name string, t Type) Def {
	d := def(name)
	if d.Type != t {
		panic(fmt.Sprintf("metrics: %s is a %s, not a %s", name, d.Type, t))
	}
	return d
}

func (s *Set) counterVec(name string) *prometheus.CounterVec {
	d := s.check(name, Counter)
	c := prometheus.NewCounterVec(prometheus.CounterOpts{Name: d.Name, Help: d.Help}, d.Labels)
	s.register(c)
	return c
}

func (s *Set) counter(name string) prometheus.Counter {
	d := s.check(name, Counter)
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: d.Name, Help: d.Help})
	s.register(c)
	return c
}

func (s *Set) gauge(name string) prometheus.Gauge {
	d := s.check(name, Gauge)
	g := prometheus.NewGauge(prometheus.GaugeOpts{Name: d.Name, Help: d.Help})
	s.register(g)
	return g
}

func (s *Set) gaugeFunc(name string, f func() float64) {
	d := s.check(name, Gauge)
	s.register(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: d.Name, Help: d.Help}, f))
}

func (s *Set) histogram(name string) prometheus.Histogram {
	d := s.check(name, Histogram)
	h := prometheus.NewHistogram(prometheus.HistogramOpts{Name: d.Name, Help: d.Help, Buckets: buckets})
	s.register(h)
	return h
}

func (s *Set) histogramVec(name string) *prometheus.HistogramVec {
	d := s.check(name, Histogram)
	h := prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: d.Name, Help: d.Help, Buckets: buckets}, d.Labels)
	s.register(h)
	return h
}

// Event counts an audit event a gateway records: a request's decision,
// and the model tokens it reports. Other kinds are not counted here
// (refusals are counted by Refused).
func (s *Set) Event(e *audit.Event) {
	if s == nil || e.Kind != audit.KindRequest {
		return
	}
	s.requests.WithLabelValues(methodLabel(e.Method), string(e.Decision), reasonLabel(e.Reason), peerKind(e.Src)).Inc()
	if sh := e.Shadow; sh != nil {
		s.shadowDiffs.WithLabelValues(string(e.Decision), shadowLabel(sh.Decision)).Inc()
	}
	if e.Usage != nil && e.Usage.TotalTokens > 0 {
		s.tokens.WithLabelValues(s.tokenModels.value(e.Model), s.tokenSources.value(e.Src)).Add(float64(e.Usage.TotalTokens))
	}
}

// Refused counts one refused connection or request; e is the refusal's
// audit event (only its reason is used).
func (s *Set) Refused(e *audit.Event) {
	if s == nil {
		return
	}
	s.RefusedFor(e.Reason)
}

// RefusedFor counts one refused connection or request for why.
func (s *Set) RefusedFor(why reason.Code) {
	if s != nil {
		s.refused.WithLabelValues(reasonLabel(why)).Inc()
	}
}

// Decision observes how long one policy decision took.
func (s *Set) Decision(d time.Duration) {
	if s != nil {
		s.decision.Observe(d.Seconds())
	}
}

// Upstream observes the time from handing a request to the upstream to its
// response head.
func (s *Set) Upstream(d time.Duration) {
	if s != nil {
		s.upstream.Observe(d.Seconds())
	}
}

// Total observes a whole request that was not answered with a stream.
func (s *Set) Total(d time.Duration) {
	if s != nil {
		s.total.Observe(d.Seconds())
	}
}

// FirstByte observes the time to the first byte of a streamed answer.
func (s *Set) FirstByte(d time.Duration) {
	if s != nil {
		s.firstByte.Observe(d.Seconds())
	}
}

// AddSessions, AddStreams and AddProcesses move the gateway's gauges of
// open sessions, open streams and running stdio processes by delta.
func (s *Set) AddSessions(delta int) {
	if s != nil {
		s.sessions.Add(float64(delta))
	}
}

// AddStreams: see AddSessions.
func (s *Set) AddStreams(delta int) {
	if s != nil {
		s.streams.Add(float64(delta))
	}
}

// AddProcesses: see AddSessions.
func (s *Set) AddProcesses(delta int) {
	if s != nil {
		s.processes.Add(float64(delta))
	}
}

// Certificate records when the node's certificate expires.
func (s *Set) Certificate(notAfter time.Time) {
	if s != nil && !notAfter.IsZero() {
		s.certExpiry.Set(float64(notAfter.Unix()))
	}
}

// View records the node's view: the netmap and policy versions it
// enforces (a version that changed is stamped with now), when the
// coordinator last confirmed it, and whether it is stale.
func (s *Set) View(netmapVersion, policyVersion int64, confirmed time.Time, stale bool, now time.Time) {
	if s == nil {
		return
	}
	if s.lastNetmap.Swap(netmapVersion) != netmapVersion {
		s.netmapVersion.Set(float64(netmapVersion))
		s.netmapUpdated.Set(unixSeconds(now))
	}
	if s.lastPolicy.Swap(policyVersion) != policyVersion {
		s.policyVersion.Set(float64(policyVersion))
		s.policyUpdated.Set(unixSeconds(now))
	}
	if !confirmed.IsZero() {
		s.netmapConfirmed.Set(unixSeconds(confirmed))
	}
	stv := 0.0
	if stale {
		stv = 1
	}
	s.netmapStale.Set(stv)
}

// WatchSpool makes the spool depth gauge read pending at each scrape.
func (s *Set) WatchSpool(pending func() uint64) {
	if s != nil {
		s.spoolPending.Store(&pending)
	}
}

// Shipping records the time of the oldest event waiting to be shipped
// (zero: none waits).
func (s *Set) Shipping(oldest time.Time) {
	if s == nil {
		return
	}
	if oldest.IsZero() {
		s.spoolOldest.Store(0)
		return
	}
	s.spoolOldest.Store(oldest.UnixNano())
}

// Shipped counts n events the coordinator acknowledged.
func (s *Set) Shipped(n int) {
	if s != nil {
		s.shipped.Add(float64(n))
	}
}

// ShipFailed counts one failed attempt to ship a batch.
func (s *Set) ShipFailed() {
	if s != nil {
		s.shipErrors.Inc()
	}
}

// Join counts one join attempt at the coordinator, allowed or refused
// for why.
func (s *Set) Join(why reason.Code) {
	if s != nil {
		s.joins.WithLabelValues(reasonLabel(why)).Inc()
	}
}

// Renewal counts one certificate renewal.
func (s *Set) Renewal(ok bool) {
	switch {
	case s == nil:
	case ok:
		s.renewOK.Inc()
	default:
		s.renewErr.Inc()
	}
}

// RevokedNode and RevokedKey count one revocation each.
func (s *Set) RevokedNode() {
	if s != nil {
		s.revokeNode.Inc()
	}
}

// RevokedKey: see RevokedNode.
func (s *Set) RevokedKey() {
	if s != nil {
		s.revokeKey.Inc()
	}
}

// Ingested counts the events of one accepted audit batch, and records
// the chain's head after it.
func (s *Set) Ingested(added, duplicates, conflicts int, head int64) {
	if s == nil {
		return
	}
	s.ingestAdded.Add(float64(added))
	s.ingestDup.Add(float64(duplicates))
	s.ingCfl.Add(float64(conflicts))
	s.ChainHead(head)
}

// ChainHead records the seq of the audit chain's head (a lower seq, from
// an older answer, is ignored).
func (s *Set) ChainHead(seq int64) {
	if s == nil || seq <= 0 {
		return
	}
	s.headMu.Lock()
	defer s.headMu.Unlock()
	if seq > s.head {
		s.head = seq
		s.chainHead.Set(float64(seq))
	}
}

func unixSeconds(t time.Time) float64 { return float64(t.UnixNano()) / 1e9 }

// maxLabelValues bounds the distinct values of a capped label.
const maxLabelValues = 200

// capLabel keeps at most max distinct values of a label; later values are
// "other", so a peer cannot grow the series without bound.
type capLabel struct {
	max  int
	mu   sync.Mutex
	seen map[string]struct{}
}

func (c *capLabel) value(v string) string {
	if v == "" {
		return "none"
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.seen[v]; ok {
		return v
	}
	if len(c.seen) >= c.max {
		return "other"
	}
	if c.seen == nil {
		c.seen = make(map[string]struct{})
	}
	c.seen[v] = struct{}{}
	return v
}

// Value sums what s holds of the metric name over the series whose labels
// include want: a counter's or gauge's value, a histogram's count of
// observations. It gathers the whole registry, for tests and diagnostics,
// not for a hot path.
func (s *Set) Value(name string, want map[string]string) (float64, error) {
	mfs, err := s.reg.Gather()
	if err != nil {
		return 0, err
	}
	total := 0.0
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			n := 0
			for _, l := range m.GetLabel() {
				if v, ok := want[l.GetName()]; ok && v == l.GetValue() {
					n++
				}
			}
			switch {
			case n != len(want):
			case m.Counter != nil:
				total += m.Counter.GetValue()
			case m.Gauge != nil:
				total += m.Gauge.GetValue()
			case m.Histogram != nil:
				total += float64(m.Histogram.GetSampleCount())
			}
		}
	}
	return total, nil
}
