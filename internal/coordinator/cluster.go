package coordinator

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/agentmesh/agentmesh/internal/audit/auditstore"
	"github.com/agentmesh/agentmesh/internal/backoff"
	"github.com/agentmesh/agentmesh/internal/netmap"
	"github.com/agentmesh/agentmesh/internal/nodestate"
	"github.com/agentmesh/agentmesh/internal/store"
)

// Several coordinators on one PostgreSQL database form a cluster: any of
// them answers any request, since every one reads and writes the same
// database, under the same locks (package store). What each keeps in
// memory, the registry's committed set (nodeset.go) from which it
// publishes netmaps, follows the others' writes through notifications:
//
//   - a write commits with a notification on changeChannel that says
//     what changed ("node INCARNATION", "policy"), sent by the database on
//     commit only, and signed by the writer's instance id so that it does
//     not handle its own;
//   - every coordinator listens; it rereads that one row and publishes,
//     so a change made on one reaches the nodes watching another in about
//     one round trip to the database, without polling;
//   - when its listening connection is lost, whatever was notified
//     meanwhile is lost too: it rereads the whole set when it is back.
//
// Each coordinator also registers its URL in the coordinators table and
// renews it every heartbeat; the netmap lists those seen within three
// heartbeats, so nodes learn every coordinator to fail over to. With
// SQLite there is one coordinator: none of this runs.
var clusterMigrations = []store.Migration{
	{Version: 1, SQL: `CREATE TABLE coordinators (
	url     TEXT PRIMARY KEY,
	seen_ns BIGINT NOT NULL
)`},
}

const (
	// changeChannel carries every cluster notification.
	changeChannel = "agentmesh"
	// The payloads, after the sender's instance id and a space.
	changedNode         = "node "
	changedPolicy       = "policy"
	changedShadow       = "shadow"
	changedCoordinators = "coordinators"
	// heartbeat is how often a coordinator renews its registration; one
	// not renewed for three is left out of netmaps.
	heartbeat = 5 * time.Second
)

// cluster is a coordinator's part in a cluster.
type cluster struct {
	id   string // this instance, in notifications
	self string // the URL this coordinator is reached at

	mu    sync.Mutex
	peers []string // live coordinators' URLs, sorted; self included

	kick chan struct{} // asks the publisher loop for a publish
}

func (c *Coordinator) shared() bool { return c.db.Dialect == store.Postgres }

// joinCluster registers this coordinator and reads who else is live.
func (c *Coordinator) joinCluster(ctx context.Context) error {
	id := make([]byte, 8)
	rand.Read(id)
	self := c.cfg.AdvertiseURL
	if self == "" {
		self = c.url
	}
	if err := netmap.CheckCoordinatorURL(self); err != nil {
		return fmt.Errorf("--advertise %s: %w", self, err)
	}
	c.cluster = &cluster{id: hex.EncodeToString(id), self: self, peers: []string{self}, kick: make(chan struct{}, 1)}
	c.reg.notifyAs = c.cluster.id
	if !c.shared() {
		return nil
	}
	if err := store.Migrate(ctx, c.db, "cluster", clusterMigrations); err != nil {
		return err
	}
	if err := c.heartbeat(ctx, true); err != nil {
		return fmt.Errorf("registering this coordinator: %w", err)
	}
	return nil
}

// coordinatorURLs returns the API URLs of every live coordinator of the
// mesh, this one included, sorted and without duplicates, for the
// netmap's Coordinators and the admin identity's state: nodes and admins
// fail over between them, and learn of new ones from each netmap.
func (c *Coordinator) coordinatorURLs() []string {
	c.cluster.mu.Lock()
	defer c.cluster.mu.Unlock()
	return slices.Clone(c.cluster.peers)
}

// heartbeat renews this coordinator's registration and rereads the live
// set; announce tells the others at once (on start).
func (c *Coordinator) heartbeat(ctx context.Context, announce bool) error {
	now := c.now()
	tx, err := c.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, `INSERT INTO coordinators(url, seen_ns) VALUES($1, $2)
		ON CONFLICT(url) DO UPDATE SET seen_ns = excluded.seen_ns`, c.cluster.self, now.UnixNano()); err != nil {
		return err
	}
	if announce {
		if err := c.db.Notify(ctx, tx, changeChannel, c.cluster.id+" "+changedCoordinators); err != nil {
			return err
		}
	}
	if err := tx.Commit(); err != nil {
		return err
	}
	return c.readPeers(ctx)
}

// readPeers rereads the live set and asks for a publish when it changed.
func (c *Coordinator) readPeers(ctx context.Context) error {
	rows, err := c.db.QueryContext(ctx, `SELECT url FROM coordinators WHERE seen_ns >= $1 ORDER BY url`,
		c.now().Add(-3*heartbeat).UnixNano())
	if err != nil {
		return err
	}
	defer rows.Close()
	peers := []string{}
	for rows.Next() {
		var u string
		if err := rows.Scan(&u); err != nil {
			return err
		}
		peers = append(peers, u)
	}
	if err := rows.Err(); err != nil {
		return err
	}
	if !slices.Contains(peers, c.cluster.self) {
		peers = append(peers, c.cluster.self)
		slices.Sort(peers)
	}
	c.cluster.mu.Lock()
	changed := !slices.Equal(peers, c.cluster.peers)
	c.cluster.peers = peers
	c.cluster.mu.Unlock()
	if changed {
		c.kickPublish()
		if err := c.saveAdminCoordinators(peers); err != nil {
			c.log.Warn("coordinator: updating the admin identity's list of coordinators", "err", err)
		}
	}
	return nil
}

// saveAdminCoordinators writes the live coordinators into the admin
// identity's state, which this coordinator owns, so that admin commands
// fail over to coordinators that started after this one.
func (c *Coordinator) saveAdminCoordinators(peers []string) error {
	d, err := nodestate.Open(c.AdminDir())
	if errors.Is(err, os.ErrNotExist) {
		return nil // not written yet: writeAdminIdentity writes the list
	}
	if err != nil {
		return err
	}
	cfg, err := d.Config()
	if err != nil {
		return err
	}
	cfg.Coordinators = peers
	return d.SaveConfig(cfg)
}

// kickPublish asks the publisher loop for a publish, without waiting.
func (c *Coordinator) kickPublish() {
	select {
	case c.cluster.kick <- struct{}{}:
	default:
	}
}

// startCluster starts the loops of a cluster member: the publisher, the
// listener and the heartbeat. They end with ctx.
func (c *Coordinator) startCluster(ctx context.Context) {
	if !c.shared() {
		return
	}
	c.wg.Add(3)
	go func() {
		defer c.wg.Done()
		c.publishLoop(ctx)
	}()
	listening := make(chan struct{})
	var once sync.Once
	go func() {
		defer c.wg.Done()
		err := c.db.Listen(ctx, changeChannel, store.Watcher{
			Notify: func(p string) { c.onNotify(ctx, p) },
			// Whatever was notified before this (re)connection is
			// missed: reread all of it.
			Reset: func() {
				c.reg.mu.Lock()
				c.reg.doubt()
				c.reg.mu.Unlock()
				if err := c.readPeers(ctx); err != nil {
					c.log.Warn("coordinator: reading the live coordinators", "err", err)
				}
				c.kickPublish()
				once.Do(func() { close(listening) })
			},
			Lost: func(err error) {
				c.log.Warn("coordinator: lost the database's notifications; rereading the registry once back", "err", err)
			},
		})
		if err != nil && !errors.Is(err, context.Canceled) {
			c.log.Error("coordinator: listening for other coordinators' changes", "err", err)
		}
	}()
	// Start returns once this coordinator hears the others, so that what
	// it serves from then on includes every coordinator that started
	// before it and every change they make. A database slow to accept
	// the listener only delays that: the heartbeat rereads the set too.
	select {
	case <-listening:
	case <-time.After(10 * time.Second):
		c.log.Warn("coordinator: not yet listening for the other coordinators' changes; carrying on")
	case <-ctx.Done():
	}
	go func() {
		defer c.wg.Done()
		for {
			select {
			case <-ctx.Done():
				return
			case <-time.After(heartbeat):
			}
			if err := c.heartbeat(ctx, false); err != nil && ctx.Err() == nil {
				c.log.Warn("coordinator: renewing this coordinator's registration", "err", err)
			}
		}
	}()
}

// publishLoop publishes whenever asked, retrying with backoff while the
// database is away.
func (c *Coordinator) publishLoop(ctx context.Context) {
	var b backoff.Backoff
	for {
		select {
		case <-ctx.Done():
			return
		case <-c.cluster.kick:
		}
		if err := c.publish(ctx); err != nil {
			c.log.Warn("coordinator: publishing another coordinator's change", "err", err)
			c.kickPublish()
			if b.Wait(ctx) != nil {
				return
			}
			continue
		}
		b.Reset()
	}
}

// onNotify applies another coordinator's committed change to the memory
// copy and publishes it.
func (c *Coordinator) onNotify(ctx context.Context, payload string) {
	from, what, _ := strings.Cut(payload, " ")
	if from == c.cluster.id {
		return
	}
	switch {
	case strings.HasPrefix(what, changedNode):
		c.reg.refreshNode(ctx, strings.TrimPrefix(what, changedNode))
	case what == changedPolicy:
		c.reg.refreshPolicy(ctx)
	case what == changedShadow:
		c.reg.refreshShadow(ctx)
	case what == changedDelegations:
		c.reg.refreshDelegations(ctx, c.now())
	case what == changedCoordinators:
		if err := c.readPeers(ctx); err != nil {
			c.log.Warn("coordinator: reading the live coordinators", "err", err)
		}
		return
	default:
		return
	}
	c.kickPublish()
}

// leaveCluster removes this coordinator's registration, so that netmaps
// stop listing it before its heartbeat would have expired.
func (c *Coordinator) leaveCluster() {
	if c.cluster == nil || c.db == nil || !c.shared() {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	tx, err := c.db.BeginTx(ctx, nil)
	if err != nil {
		return
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, `DELETE FROM coordinators WHERE url = $1`, c.cluster.self); err != nil {
		return
	}
	if c.db.Notify(ctx, tx, changeChannel, c.cluster.id+" "+changedCoordinators) == nil {
		tx.Commit()
	}
}

// handleHealth answers that the process serves.
func (c *Coordinator) handleHealth(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

// handleReady answers whether this coordinator can do its work: the
// database answers and its schema is the one this coordinator knows.
// Load balancers and nodes' operators read it; it needs no certificate.
func (c *Coordinator) handleReady(w http.ResponseWriter, r *http.Request) {
	if err := c.ready(r.Context()); err != nil {
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "not ready", "error": err.Error()})
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ready", "database": c.db.Dialect.String()})
}

// ready checks the database for /readyz, one check at a time: the path
// needs no certificate, so anybody may ask, and a flood of it then holds
// at most one of the database's connections, never one per request.
func (c *Coordinator) ready(ctx context.Context) error {
	c.readiness.Lock()
	defer c.readiness.Unlock()
	return c.checkReady(ctx)
}

// checkReady checks that the database answers and every owner's schema is
// the one this coordinator knows.
func (c *Coordinator) checkReady(ctx context.Context) error {
	if err := c.db.Ping(ctx, 2*time.Second); err != nil {
		return fmt.Errorf("the database does not answer: %w", err)
	}
	if err := auditstore.SchemaCurrent(ctx, c.db); err != nil {
		return err
	}
	schemas := map[string][]store.Migration{"registry": registryMigrations}
	if c.shared() {
		schemas["secrets"], schemas["cluster"] = secretsMigrations, clusterMigrations
	}
	for owner, steps := range schemas {
		if err := store.Current(ctx, c.db, owner, steps); err != nil {
			return err
		}
	}
	return nil
}

// DatabaseName says where the coordinator keeps its state, without any
// password: the SQLite file, or the PostgreSQL URL.
func (c *Coordinator) DatabaseName() string {
	if c.shared() {
		return "postgresql " + store.Redact(c.cfg.Database) + " (shared; coordinators live: " + strings.Join(c.coordinatorURLs(), ", ") + ")"
	}
	return "sqlite " + DatabasePath(c.cfg.DataDir)
}
