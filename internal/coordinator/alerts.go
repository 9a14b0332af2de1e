package coordinator

import (
	"container/list"
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/agentmesh/agentmesh/internal/alert"
	"github.com/agentmesh/agentmesh/internal/audit"
	"github.com/agentmesh/agentmesh/internal/audit/auditstore"
	"github.com/agentmesh/agentmesh/internal/identity"
)

// Alerts (README, "Alerts"). The coordinator sees every node's audit
// events as they are shipped, and its own as it records them; observe
// looks at each for the alert kinds that come from events (denials,
// refused_identity, spool_backlog) with bounded memory and no I/O, so
// the ingest path is never slowed or blocked by alerting. What it raises
// goes into a bounded queue; the alerter's loop claims each alert in the
// database and hands those it claimed to the Sender, which delivers and
// retries on its own goroutines, and every attempt is audited
// (alert.delivered, alert.failed). The loop also checks certificate
// renewals and, when configured, verifies the audit trail.
//
// Claims: coordinators sharing a database each see only the events
// shipped to them, and each checks renewals, so two may raise the same
// alert. The alerts table's key (kind, subject, window) lets one claim
// it: the one whose insert lands delivers it, the others drop it. The
// window is what makes an alert repeatable: a minute's bucket for
// denials, an hour's for spool_backlog, the certificate's expiry for
// renewal_failing, the problem found for audit_verify, and none at all
// for refused_identity, whose claim is its memory: an identity refused
// once is never alerted on again, across restarts and coordinators,
// until its claim is pruned (claimRetention).
const alertsTable = `
CREATE TABLE alerts (
	kind       TEXT NOT NULL,
	subject    TEXT NOT NULL,
	win        TEXT NOT NULL,
	id         TEXT NOT NULL,
	claimed_by TEXT NOT NULL,
	claimed_at BIGINT NOT NULL,
	PRIMARY KEY (kind, subject, win)
);
CREATE INDEX alerts_claimed_at ON alerts(claimed_at);
`

// Bounds of what alerting holds.
const (
	// maxTrackedSources bounds the sources whose denials are counted,
	// and those remembered as refused before; the least recently seen
	// are forgotten first.
	maxTrackedSources = 4096
	// maxNewRefusedPerMinute bounds refused_identity alerts: a scan from
	// many addresses raises this many a minute, and the rest are noticed
	// again when they are refused again.
	maxNewRefusedPerMinute = 60
	// maxPending bounds alerts raised but not yet claimed.
	maxPending = 1024
	// denialWindow is the sliding window of the denials threshold, kept
	// in denialBuckets buckets.
	denialWindow  = time.Minute
	denialBuckets = 6
	// backlogEvery is how often one node may raise spool_backlog.
	backlogEvery = time.Hour
	// Claims of windowed alerts are kept a week, those of once-only
	// alerts (refused_identity) claimRetention.
	windowedRetention = 7 * 24 * time.Hour
	claimRetention    = 90 * 24 * time.Hour
)

// alerter raises, claims and sends the coordinator's alerts.
type alerter struct {
	c       *Coordinator
	cfg     *alert.Config
	sender  *alert.Sender
	pending *alert.Queue
	margin  time.Duration // renewal_failing

	mu         sync.Mutex
	denials    *lru[*denialCount]
	refused    *lru[struct{}]
	newRefused int   // refused_identity raised in refusedMin
	refusedMin int64 // the minute newRefused counts
	backlog    *lru[time.Time]
}

// denialCount is one source's denials in a sliding window.
type denialCount struct {
	slot    [denialBuckets]int64 // bucket number (unix time / bucket)
	n       [denialBuckets]int64
	alerted time.Time
	reasons map[string]int64
}

func (c *Coordinator) newAlerter(cfg *alert.Config, o alert.Options) *alerter {
	a := &alerter{c: c, cfg: cfg, pending: alert.NewQueue(maxPending),
		denials: newLRU[*denialCount](maxTrackedSources), refused: newLRU[struct{}](maxTrackedSources),
		backlog: newLRU[time.Time](maxTrackedSources)}
	// A Config made in code may leave thresholds zero: the defaults, as
	// a parsed file gets them.
	th := cfg.Thresholds
	if th.DenialsPerMinute <= 0 {
		th.DenialsPerMinute = alert.DefaultDenialsPerMinute
	}
	if th.SpoolBacklog <= 0 {
		th.SpoolBacklog = alert.DefaultSpoolBacklog
	}
	c2 := *cfg
	c2.Thresholds = th
	a.cfg = &c2
	a.margin = cfg.Thresholds.RenewalMargin
	if a.margin == 0 {
		a.margin = c.cfg.CertTTL / 4
	}
	if o.MaxAttempts == 0 {
		o.MaxAttempts = cfg.Delivery.MaxAttempts
	}
	if o.Timeout == 0 {
		o.Timeout = cfg.Delivery.Timeout
	}
	if o.QueueSize == 0 {
		o.QueueSize = cfg.Delivery.QueueSize
	}
	o.Logger, o.Now, o.OnAttempt = c.log, c.now, a.audited
	a.sender = alert.NewSender(cfg.Receivers, o)
	return a
}

// run delivers, claims and checks until ctx ends.
func (a *alerter) run(ctx context.Context) {
	var wg sync.WaitGroup
	wg.Go(func() { a.sender.Run(ctx) })
	wg.Go(func() { a.periodic(ctx) })
	defer wg.Wait()
	for {
		select {
		case <-ctx.Done():
			return
		case <-a.pending.Ready():
		}
		for {
			al, ok := a.pending.Pop()
			if !ok {
				break
			}
			if a.claim(ctx, al) {
				a.sender.Send(al)
			}
		}
	}
}

// raise queues al for claiming; it never blocks.
func (a *alerter) raise(al alert.Alert) {
	if a == nil {
		return
	}
	al.Coordinator = a.c.cluster.self
	if a.pending.Push(al) && alert.LogDrop(a.pending.Dropped()) {
		a.c.log.Warn("coordinator: alerts are raised faster than they are claimed; dropped the oldest", "dropped_total", a.pending.Dropped())
	}
}

// claim records al in the alerts table; it reports whether this
// coordinator claimed it (and so delivers it). When the database fails,
// the alert is sent anyway: a duplicate is better than a missed alarm.
func (a *alerter) claim(ctx context.Context, al alert.Alert) bool {
	res, err := a.c.db.ExecContext(ctx, `INSERT INTO alerts(kind, subject, win, id, claimed_by, claimed_at)
		VALUES($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING`,
		string(al.Kind), al.Subject, al.Window, al.ID, a.c.cluster.self, a.c.now().UnixNano())
	if err != nil {
		if ctx.Err() == nil {
			a.c.log.Error("coordinator: claiming an alert failed; sending it unclaimed", "kind", al.Kind, "err", err)
		}
		return ctx.Err() == nil
	}
	n, err := res.RowsAffected()
	return err != nil || n == 1
}

// audited records one delivery attempt in the audit trail.
func (a *alerter) audited(at alert.Attempt) {
	c := a.c
	ev := c.event(audit.KindAdmin, "", "coordinator")
	ev.Src = ev.Dst
	ev.Action, ev.Target = "alert.delivered", at.Receiver
	ev.Detail = fmt.Sprintf("alert %s kind %s subject %s: attempt %d of %d", at.Alert.ID, at.Alert.Kind, at.Alert.Subject, at.N, at.Max)
	if at.Status != 0 {
		ev.Detail += fmt.Sprintf(": HTTP %d", at.Status)
	}
	if !at.Delivered() {
		ev.Action = "alert.failed"
		ev.Detail += ": " + at.Err.Error()
		if at.Final {
			ev.Detail += "; not retried"
		} else {
			ev.Detail += fmt.Sprintf("; retrying in %v", at.RetryIn.Round(time.Millisecond))
		}
	}
	c.record(context.Background(), ev)
}

// observe looks at stored events for the alerts they raise. from is the
// node that shipped them ("" for the coordinator's own). It holds no
// lock but its own and does no I/O.
func (a *alerter) observe(from string, evs []audit.Event) {
	if a == nil {
		return
	}
	now := a.c.now()
	var raised []alert.Alert
	a.mu.Lock()
	oldest := now
	for i := range evs {
		ev := &evs[i]
		if ev.Time.Before(oldest) {
			oldest = ev.Time
		}
		if ev.Decision != audit.Deny {
			continue
		}
		if d, ok := toolChangedAlert(from, ev); ok {
			node := from
			if id, err := identity.Parse(from); err == nil {
				node = string(id.Name)
			}
			raised = append(raised, alert.ToolChangedAlert(node, d.Tool, d.Pinned, d.Seen, now))
		}
		src := denialSource(ev)
		if al, ok := a.countDenial(src, ev, now); ok {
			raised = append(raised, al)
		}
		if al, ok := a.firstRefusal(src, ev, now); ok {
			raised = append(raised, al)
		}
	}
	if from != "" && now.Sub(oldest) > a.cfg.Thresholds.SpoolBacklog {
		if last, ok := a.backlog.get(from); !ok || now.Sub(last) >= backlogEvery {
			a.backlog.put(from, now)
			al := alert.New(alert.SpoolBacklog, from, fmt.Sprintf("%s shipped audit events %v old: its spool is backing up or it was cut off", from, now.Sub(oldest).Round(time.Second)), now)
			al.Details["node"] = from
			al.Details["oldest_event"] = oldest.UTC()
			al.Details["age_seconds"] = int64(now.Sub(oldest) / time.Second)
			al.Details["threshold_seconds"] = int64(a.cfg.Thresholds.SpoolBacklog / time.Second)
			al.Details["events"] = len(evs)
			al.Window = strconv.FormatInt(now.Unix()/int64(backlogEvery/time.Second), 10)
			raised = append(raised, al)
		}
	}
	a.mu.Unlock()
	for _, al := range raised {
		a.raise(al)
	}
}

// denialSource is who was denied: the identity, or the address when the
// peer was not identified.
func denialSource(ev *audit.Event) string {
	if ev.Src != "" {
		return ev.Src
	}
	if ev.SrcAddr != "" {
		host, _, err := net.SplitHostPort(ev.SrcAddr)
		if err != nil {
			host = ev.SrcAddr
		}
		return "addr:" + host
	}
	return "unidentified"
}

// countDenial adds ev to src's sliding window; it returns the denials
// alert when the window is over the threshold and src has not had one in
// the last window. Called with a.mu held.
func (a *alerter) countDenial(src string, ev *audit.Event, now time.Time) (alert.Alert, bool) {
	bucket := denialWindow / denialBuckets
	at := ev.Time
	if at.After(now) {
		at = now
	}
	cur := now.UnixNano() / int64(bucket)
	slot := at.UnixNano() / int64(bucket)
	if slot <= cur-denialBuckets {
		return alert.Alert{}, false // older than the window: not a burst now
	}
	d, ok := a.denials.get(src)
	if !ok {
		d = &denialCount{reasons: map[string]int64{}}
		a.denials.put(src, d)
	}
	i := slot % denialBuckets
	if d.slot[i] != slot {
		d.slot[i], d.n[i] = slot, 0
	}
	d.n[i] += ev.Attempts()
	if r := string(ev.Reason); len(d.reasons) < 8 || d.reasons[r] > 0 {
		d.reasons[r] += ev.Attempts()
	}
	var total int64
	for j := range d.n {
		if d.slot[j] > cur-denialBuckets {
			total += d.n[j]
		}
	}
	if total < int64(a.cfg.Thresholds.DenialsPerMinute) || now.Sub(d.alerted) < denialWindow {
		return alert.Alert{}, false
	}
	d.alerted = now
	al := alert.New(alert.Denials, src, fmt.Sprintf("%s was denied %d times within a minute", src, total), now)
	al.Details["source"] = src
	al.Details["denials"] = total
	al.Details["window_seconds"] = int64(denialWindow / time.Second)
	al.Details["threshold"] = a.cfg.Thresholds.DenialsPerMinute
	reasons := map[string]int64{}
	for r, n := range d.reasons {
		reasons[r] = n
	}
	al.Details["reasons"] = reasons
	if ev.Dst != "" {
		al.Details["last_denied_by"] = ev.Dst
	}
	clear(d.reasons)
	al.Window = strconv.FormatInt(now.UnixNano()/int64(denialWindow), 10)
	return al, true
}

// firstRefusal returns the refused_identity alert the first time src is
// denied, as far as this coordinator remembers; the claim in the
// database remembers for every coordinator and across restarts. Called
// with a.mu held.
func (a *alerter) firstRefusal(src string, ev *audit.Event, now time.Time) (alert.Alert, bool) {
	if _, ok := a.refused.get(src); ok {
		return alert.Alert{}, false
	}
	if m := now.Unix() / 60; m != a.refusedMin {
		a.refusedMin, a.newRefused = m, 0
	}
	if a.newRefused >= maxNewRefusedPerMinute {
		return alert.Alert{}, false
	}
	a.newRefused++
	a.refused.put(src, struct{}{})
	al := alert.New(alert.RefusedIdentity, src, fmt.Sprintf("%s was refused for the first time (%s)", src, ev.Reason), now)
	al.Details["source"] = src
	al.Details["reason"] = string(ev.Reason)
	al.Details["event_kind"] = string(ev.Kind)
	if ev.Outcome != "" {
		al.Details["outcome"] = string(ev.Outcome)
	}
	if ev.Dst != "" {
		al.Details["refused_by"] = ev.Dst
	}
	al.Details["event_id"] = ev.ID
	return al, true
}

// verified raises audit_verify when a verification found a problem; how
// says who asked for it.
func (a *alerter) verified(rep audit.Report, how string) {
	if a == nil || rep.OK && rep.Conflicts == 0 {
		return
	}
	now := a.c.now()
	summary := "audit verify found a problem: " + rep.Problem
	if rep.OK {
		summary = fmt.Sprintf("audit verify found %d event id conflicts", rep.Conflicts)
	}
	al := alert.New(alert.AuditVerify, "audit", summary, now)
	al.Details["ok"] = rep.OK
	al.Details["run"] = how
	al.Details["events"] = rep.Events
	if rep.Problem != "" {
		al.Details["problem"] = rep.Problem
		al.Details["broken_seq"] = rep.BrokenSeq
	}
	if rep.Conflicts > 0 {
		al.Details["conflicts"] = rep.Conflicts
	}
	// One alert per distinct finding.
	h := sha256.Sum256(fmt.Appendf(nil, "%t\x00%d\x00%s\x00%d", rep.OK, rep.BrokenSeq, rep.Problem, rep.Conflicts))
	al.Window = hex.EncodeToString(h[:8])
	a.raise(al)
}

// AlertToolChanged raises tool_changed: the definition of tool on the
// service node changed from the pinned digest to the changed one. It is
// raised from a gateway's ingested tool_changed audit event (observe), so
// that only the node that decided records it. Each new definition alerts
// once. Without alerts configured it does
// nothing.
func (c *Coordinator) AlertToolChanged(node, tool, pinned, changed string) {
	c.alerts.raise(alert.ToolChangedAlert(node, tool, pinned, changed, c.now()))
}

// periodic checks renewals (and verifies the trail, when configured).
func (a *alerter) periodic(ctx context.Context) {
	every := min(max(a.margin/4, time.Second), time.Minute)
	tick := time.NewTicker(every)
	defer tick.Stop()
	var verify <-chan time.Time
	if v := a.cfg.Thresholds.VerifyEvery; v > 0 {
		t := time.NewTicker(v)
		defer t.Stop()
		verify = t.C
	}
	var pruned time.Time
	a.checkRenewals(ctx)
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			a.checkRenewals(ctx)
			if now := a.c.now(); now.Sub(pruned) > time.Hour {
				pruned = now
				a.prune(ctx, now)
			}
		case <-verify:
			a.verifyNow(ctx)
		}
	}
}

// checkRenewals raises renewal_failing for every active node (other than
// admins, which renew when they are used) whose certificate expires
// within the margin: nodes renew at two thirds of the lifetime, so one
// this close has failed to. Once per certificate.
func (a *alerter) checkRenewals(ctx context.Context) {
	now := a.c.now()
	rows, err := a.c.db.QueryContext(ctx, `SELECT name, kind, cert_expires FROM nodes
		WHERE status = 'active' AND kind <> $1 AND cert_expires > 0 AND cert_expires <= $2`,
		string(identity.KindAdmin), now.Add(a.margin).UnixNano())
	if err != nil {
		if ctx.Err() == nil {
			a.c.log.Warn("coordinator: checking certificate renewals", "err", err)
		}
		return
	}
	defer rows.Close()
	for rows.Next() {
		var name, kind string
		var exp int64
		if err := rows.Scan(&name, &kind, &exp); err != nil {
			a.c.log.Warn("coordinator: checking certificate renewals", "err", err)
			return
		}
		expires := time.Unix(0, exp).UTC()
		summary := fmt.Sprintf("node %s has not renewed its certificate, which expires at %s", name, expires.Format(time.RFC3339))
		if !now.Before(expires) {
			summary = fmt.Sprintf("node %s did not renew its certificate, which expired at %s", name, expires.Format(time.RFC3339))
		}
		al := alert.New(alert.RenewalFailing, name, summary, now)
		al.Details["node"], al.Details["node_kind"] = name, kind
		al.Details["expires"] = expires
		al.Details["margin_seconds"] = int64(a.margin / time.Second)
		al.Details["expired"] = !now.Before(expires)
		al.Window = strconv.FormatInt(exp, 10)
		a.raise(al)
	}
}

// verifyNow verifies the trail as 'audit verify' does, for VerifyEvery.
func (a *alerter) verifyNow(ctx context.Context) {
	if err := a.c.audit.Checkpoint(ctx); err != nil {
		a.c.log.Warn("coordinator: checkpoint before the periodic verify", "err", err)
	}
	rep, err := auditstore.Verify(ctx, a.c.db, a.c.auditPub)
	if err != nil {
		if ctx.Err() == nil {
			a.c.log.Error("coordinator: periodic audit verify", "err", err)
		}
		return
	}
	a.verified(rep, "periodic")
}

// prune forgets old claims.
func (a *alerter) prune(ctx context.Context, now time.Time) {
	if _, err := a.c.db.ExecContext(ctx, `DELETE FROM alerts WHERE (win <> '' AND claimed_at < $1) OR claimed_at < $2`,
		now.Add(-windowedRetention).UnixNano(), now.Add(-claimRetention).UnixNano()); err != nil && ctx.Err() == nil {
		a.c.log.Warn("coordinator: pruning alert claims", "err", err)
	}
}

// lru is a map of at most max entries that forgets the least recently
// used one to make room.
type lru[V any] struct {
	max   int
	order *list.List // of *lruEntry[V], most recent first
	m     map[string]*list.Element
}

type lruEntry[V any] struct {
	k string
	v V
}

func newLRU[V any](max int) *lru[V] {
	return &lru[V]{max: max, order: list.New(), m: map[string]*list.Element{}}
}

func (l *lru[V]) get(k string) (V, bool) {
	e, ok := l.m[k]
	if !ok {
		var zero V
		return zero, false
	}
	l.order.MoveToFront(e)
	return e.Value.(*lruEntry[V]).v, true
}

func (l *lru[V]) put(k string, v V) {
	if e, ok := l.m[k]; ok {
		e.Value.(*lruEntry[V]).v = v
		l.order.MoveToFront(e)
		return
	}
	if l.order.Len() >= l.max {
		last := l.order.Back()
		l.order.Remove(last)
		delete(l.m, last.Value.(*lruEntry[V]).k)
	}
	l.m[k] = l.order.PushFront(&lruEntry[V]{k: k, v: v})
}

// certIssued records a certificate's expiry for renewal_failing. A
// failure is logged: the certificate is good, and the worst outcome is a
// renewal_failing alert that should not have fired, or one missing.
func (c *Coordinator) certIssued(ctx context.Context, incarnation string, cert *x509.Certificate) {
	if err := c.reg.setCertExpiry(context.WithoutCancel(ctx), incarnation, cert.NotAfter); err != nil {
		c.log.Warn("coordinator: recording a certificate's expiry", "err", err)
	}
}

// AlertReceivers names the webhooks alerts go to (none: alerts are off).
func (c *Coordinator) AlertReceivers() []string {
	if c.alerts == nil {
		return nil
	}
	var names []string
	for _, r := range c.alerts.cfg.Receivers {
		names = append(names, r.Name)
	}
	return names
}
