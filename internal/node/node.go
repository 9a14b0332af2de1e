// Package node runs the long-lived side of a mesh node that every data-plane
// process shares: it loads the identity from the state directory, keeps the
// certificate renewed, watches the netmap (starting from the cached copy so
// a node works while the coordinator is down), compiles each new policy
// once, and keeps the audit spool shipping to the coordinator.
//
// Fail closed: a policy that does not compile on the node is replaced by
// nil, which denies everything, and the error is logged; the node never
// keeps serving under rules it could not read. A view that the coordinator
// has not confirmed for longer than a certificate lifetime is marked
// stale (netmap.Netmap.Fresh), and a gateway then admits nobody until the
// coordinator answers again.
package node

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/agentmesh/agentmesh/internal/audit"
	"github.com/agentmesh/agentmesh/internal/audit/spool"
	"github.com/agentmesh/agentmesh/internal/controlclient"
	"github.com/agentmesh/agentmesh/internal/dirlock"
	"github.com/agentmesh/agentmesh/internal/identity"
	"github.com/agentmesh/agentmesh/internal/metrics"
	"github.com/agentmesh/agentmesh/internal/netmap"
	"github.com/agentmesh/agentmesh/internal/nodestate"
	"github.com/agentmesh/agentmesh/internal/pki"
	"github.com/agentmesh/agentmesh/internal/policy"
)

// View is one netmap with its compiled policy. Policy is nil when no policy
// was applied yet or the document did not compile: both deny everything.
type View struct {
	Netmap *netmap.Netmap
	Policy *policy.Policy
	// Shadow is the netmap's shadow policy compiled (version
	// "shadow-N"), nil when there is none or it does not compile: a
	// gateway evaluates it next to Policy and records where they differ.
	Shadow *policy.Policy
	// ShadowFailed is the version ("shadow-N") of a shadow policy that
	// does not compile here, "" otherwise: a gateway records every
	// request's shadow decision as an error meanwhile.
	ShadowFailed string
	// Confirmed is when the coordinator last confirmed this view, by the
	// node's clock (zero: never, as far as the cache says).
	Confirmed time.Time
	// Stale is set while the view is not fresh (netmap.Netmap.Fresh): the
	// coordinator has not confirmed it for longer than a certificate
	// lifetime. A gateway then admits nobody (stale_netmap) until the
	// coordinator answers again.
	Stale bool
}

// Options configure Start. The zero value is usable.
type Options struct {
	Logger *slog.Logger
	// OnView is called, one call at a time, with the cached view at start
	// (if any) and then with each newer one: a new netmap, or the view
	// going stale or fresh again. A confirmation alone does not call it
	// (View and WaitView show it).
	OnView func(View)
	// OnCertificate is called after each renewal.
	OnCertificate func(*tls.Certificate)
	// Clock drives renewal and decides when a view goes stale; nil is the
	// system clock.
	Clock pki.Clock
	// Audit opens the audit spool in the state directory and ships it. Only
	// one process can hold a spool, so only nodes that record events
	// (gateways) open it; several connectors of one agent can then run
	// side by side, one per MCP server an agent uses. A node with Audit
	// locks the whole state directory first (nodestate.Dir.Lock), so a
	// second gateway on it is refused with the first one named.
	Audit bool
	// Command is what this process runs, recorded in the state
	// directory's lock file for that error ("agentmesh serve" when empty;
	// used only with Audit).
	Command string
	// Spool tunes the audit spool.
	Spool spool.Options
	// Metrics records the node's certificate expiry, view, spool and
	// shipping, and its refusals; nil records nothing.
	Metrics *metrics.Set
}

// Node is a running node. Close stops it.
type Node struct {
	Client *controlclient.Client
	// Spool is nil unless Options.Audit was set.
	Spool *spool.Spool
	// Refusals aggregates refused attempts (handshakes, admissions) into
	// the spool, so a client refused over and over writes counts, not one
	// event per attempt. Nil unless Options.Audit was set.
	Refusals *audit.Refusals
	log      *slog.Logger
	metrics  *metrics.Set
	// lock holds the state directory while Audit is set (nil otherwise).
	lock *dirlock.Lock

	mu      sync.Mutex
	view    View
	changed chan struct{} // closed and replaced when view changes

	cancel context.CancelFunc
	wg     sync.WaitGroup
	once   sync.Once
}

// Start opens the node in stateDir and starts renewal, the netmap watch and
// audit shipping. It fails if the certificate has already expired: a node
// that was offline for longer than its certificate's life must join again.
func Start(ctx context.Context, stateDir string, o Options) (*Node, error) {
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	dir, err := nodestate.Open(stateDir)
	if err != nil {
		return nil, err
	}
	clock := o.Clock
	if clock == nil {
		clock = pki.SystemClock{}
	}
	o.Clock = clock
	// A gateway locks the directory before anything in it is written
	// (renewal writes the certificate).
	var lock *dirlock.Lock
	if o.Audit {
		if o.Command == "" {
			o.Command = "agentmesh serve"
		}
		if lock, err = dir.Lock(dirlock.Holder{Command: o.Command, Since: clock.Now()}); err != nil {
			return nil, err
		}
	}
	// One clock for certificate checks, renewal, and the confirmations and
	// staleness of the view.
	cl, err := controlclient.New(dir, controlclient.Options{Logger: log, Now: clock.Now, Clock: clock})
	if err != nil {
		lock.Close()
		return nil, err
	}
	leaf := cl.Certificate().Leaf
	if leaf != nil && clock.Now().After(leaf.NotAfter) {
		lock.Close()
		cl.Close()
		return nil, fmt.Errorf("the certificate in %s expired at %s; join again with a new auth key", stateDir, leaf.NotAfter.Format(time.RFC3339))
	}
	if err := cl.RenewIfDue(ctx); err != nil {
		log.Warn("node: renewal at start failed; continuing with the current certificate", "err", err)
	}
	o.Metrics.Certificate(leafExpiry(cl.Certificate()))
	var sp *spool.Spool
	if o.Audit {
		if sp, err = spool.Open(dir.SpoolDir(), withLogger(o.Spool, log)); err != nil {
			lock.Close()
			cl.Close()
			return nil, fmt.Errorf("audit spool: %w", err)
		}
	}
	n := &Node{Client: cl, Spool: sp, lock: lock, log: log, metrics: o.Metrics, changed: make(chan struct{})}
	if sp != nil {
		n.Refusals = audit.NewRefusals(audit.RefusalOptions{Record: n.Record, Logger: log, Observe: o.Metrics.Refused})
		o.Metrics.WatchSpool(sp.Pending)
	}
	onCert := o.OnCertificate
	if o.Metrics != nil {
		onCert = func(c *tls.Certificate) {
			o.Metrics.Certificate(leafExpiry(c))
			if o.OnCertificate != nil {
				o.OnCertificate(c)
			}
		}
	}
	runCtx, cancel := context.WithCancel(context.Background())
	n.cancel = cancel
	n.wg.Add(2)
	go func() {
		defer n.wg.Done()
		err := cl.RunRenewal(runCtx, o.Clock, onCert)
		if err != nil && !errors.Is(err, context.Canceled) {
			log.Error("node: certificate renewal stopped", "err", err)
		}
	}()
	updates := make(chan update)
	go func() {
		defer n.wg.Done()
		cl.Follow(runCtx, func(nm *netmap.Netmap, confirmed time.Time) {
			select {
			case updates <- update{nm, confirmed}:
			case <-runCtx.Done():
			}
		})
	}()
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		n.followViews(runCtx, updates, o.Clock, o.OnView)
	}()
	if sp != nil {
		n.wg.Add(2)
		go func() {
			defer n.wg.Done()
			spool.Ship(runCtx, sp, cl, spool.ShipOptions{Logger: log, Metrics: o.Metrics})
		}()
		go func() {
			defer n.wg.Done()
			n.Refusals.Run(runCtx)
		}()
	}
	return n, nil
}

func withLogger(o spool.Options, log *slog.Logger) spool.Options {
	if o.Logger == nil {
		o.Logger = log
	}
	return o
}

// update is one answer of the coordinator (or the cache at start): a
// newer netmap, or nil for "nothing new", and when it was confirmed.
type update struct {
	nm        *netmap.Netmap
	confirmed time.Time
}

// followViews turns the coordinator's answers into views, one at a time,
// and marks the view stale when the coordinator has not confirmed it for
// a certificate lifetime (netmap.Netmap.Fresh), on the clock.
func (n *Node) followViews(ctx context.Context, updates <-chan update, clock pki.Clock, onView func(View)) {
	var (
		cur     View
		lastPol *netmap.Policy   // the one cur.Policy was compiled from
		lastSh  *netmap.Policy   // the one cur.Shadow was compiled from
		expiry  <-chan time.Time // fires when cur may have gone stale
	)
	for {
		changed := false
		select {
		case <-ctx.Done():
			return
		case u := <-updates:
			if u.nm != nil {
				if lastPol == nil || !samePolicy(*lastPol, u.nm.Policy) {
					cur.Policy = compile(u.nm.Policy, n.log)
					lastPol = &u.nm.Policy
				}
				if !sameShadow(lastSh, u.nm.Shadow) {
					cur.Shadow, cur.ShadowFailed = compileShadow(u.nm.Shadow, n.log)
					lastSh = u.nm.Shadow
				}
				cur.Netmap, changed = u.nm, true
			}
			cur.Confirmed = u.confirmed
		case <-expiry:
			expiry = nil
		}
		now := clock.Now()
		stale := !cur.Netmap.Fresh(cur.Confirmed, now)
		if stale != cur.Stale {
			cur.Stale, changed = stale, true
			if stale {
				n.log.Warn("node: the coordinator has not confirmed this node's view for a certificate lifetime; admitting nobody until it answers",
					"confirmed", cur.Confirmed)
			}
		}
		if !stale && expiry == nil {
			// One timer at a time: when it fires, a newer confirmation
			// may have pushed the deadline on, and it is armed again.
			expiry = clock.After(cur.Confirmed.Add(cur.Netmap.CertTTL).Sub(now) + time.Nanosecond)
		}
		n.metrics.View(netmapVersion(cur.Netmap), policyVersion(cur.Netmap), cur.Confirmed, cur.Stale, now)
		if changed {
			n.publish(cur, onView)
		} else {
			// A confirmation alone changes nothing a gateway enforces, so
			// onView is not bothered; WaitView still sees it.
			n.mu.Lock()
			n.view.Confirmed = cur.Confirmed
			close(n.changed)
			n.changed = make(chan struct{})
			n.mu.Unlock()
		}
	}
}

// netmapVersion is nm's version (0 for no netmap).
func netmapVersion(nm *netmap.Netmap) int64 {
	if nm == nil {
		return 0
	}
	return nm.Version
}

// policyVersion is the version of nm's policy (0 for none or no netmap).
func policyVersion(nm *netmap.Netmap) int64 {
	if nm == nil {
		return 0
	}
	return nm.Policy.Version
}

// leafExpiry is when c expires (zero when unknown).
func leafExpiry(c *tls.Certificate) time.Time {
	if c == nil || c.Leaf == nil {
		return time.Time{}
	}
	return c.Leaf.NotAfter
}

// samePolicy reports whether a and b compile to the same policy.
func samePolicy(a, b netmap.Policy) bool {
	return a.Version == b.Version && a.Document == b.Document && slices.Equal(a.Grants, b.Grants) && slices.Equal(a.Limits, b.Limits)
}

// publish makes v the current view and tells onView.
func (n *Node) publish(v View, onView func(View)) {
	n.mu.Lock()
	n.view = v
	close(n.changed)
	n.changed = make(chan struct{})
	n.mu.Unlock()
	if onView != nil {
		onView(v)
	}
}

// compile compiles a netmap's policy (a projection for this node, or a
// whole document); failure yields nil, which denies.
func compile(p netmap.Policy, log *slog.Logger) *policy.Policy {
	if p.Version == 0 || p.Document == "" && !p.Projected() {
		// No policy, or none for this node: the coordinator sends a
		// policy's text to the nodes that serve (a gateway gets at least
		// "{}"), and only its version to the others. Either way nothing
		// here is allowed; an agent's connector has nothing to log.
		return nil
	}
	pol, err := compileAs(&p, strconv.FormatInt(p.Version, 10))
	if err != nil {
		log.Error("node: policy does not compile here; denying everything until a good one arrives", "version", p.Version, "err", err)
		return nil
	}
	return pol
}

// ID is the node's identity.
func (n *Node) ID() identity.ID { return n.Client.ID() }

// View returns the newest view, which is empty before the first netmap.
func (n *Node) View() View {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.view
}

// WaitView waits until cond holds for the current view and returns it,
// or returns ctx's error. Callers bound ctx: a node whose coordinator is
// unreachable may never see a newer view.
func (n *Node) WaitView(ctx context.Context, cond func(View) bool) (View, error) {
	for {
		n.mu.Lock()
		v, ch := n.view, n.changed
		n.mu.Unlock()
		if cond(v) {
			return v, nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return v, ctx.Err()
		}
	}
}

// Record appends an audit event to the spool. It blocks while the spool's
// queue is full: audit slows requests down, it never drops them.
//
// Only the node that made a decision may record it, and the coordinator
// refuses a batch with an event whose destination is another node's: so
// an event without a destination gets this node's, and one naming another
// node is refused here rather than left to block the spool.
func (n *Node) Record(ctx context.Context, e *audit.Event) error {
	if n.Spool == nil {
		return errors.New("node: started without an audit spool")
	}
	self := n.ID().String()
	if e.Dst == "" {
		e.Dst = self
	}
	if e.Dst != self {
		return fmt.Errorf("node: audit event %s names %q as its recorder, not this node (%s)", e.ID, e.Dst, self)
	}
	return n.Spool.Append(ctx, e)
}

// Close writes the open refusal windows, stops renewal, the watch and
// shipping, flushes the spool to disk and closes it. Events not yet shipped stay in the spool for next time.
func (n *Node) Close() error {
	var err error
	n.once.Do(func() {
		if n.Refusals != nil {
			// Open windows go into the spool before it closes.
			rctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			if rerr := n.Refusals.Close(rctx); rerr != nil {
				n.log.Error("node: writing aggregated refusals", "err", rerr)
			}
			cancel()
		}
		n.cancel()
		if n.Spool != nil {
			fctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			if ferr := n.Spool.Flush(fctx); ferr != nil {
				n.log.Error("node: flushing the audit spool", "err", ferr)
			}
			cancel()
			err = n.Spool.Close()
		}
		n.wg.Wait()
		n.Client.Close()
		n.lock.Close()
	})
	return err
}

// Listening records, in the lock file of a node started with Audit, where
// it serves, so that a second gateway on the state directory is told
// where the first one listens. It does nothing for other nodes.
func (n *Node) Listening(addr string) {
	if n.lock == nil {
		return
	}
	if err := n.lock.SetListen(addr); err != nil {
		n.log.Warn("node: recording the listen address in the state directory's lock file failed", "err", err)
	}
}
