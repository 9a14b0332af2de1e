// Package controlclient is a node's side of the coordinator API: joining
// with an auth key, renewing the certificate, watching the netmap (and
// caching it for offline starts), registering served addresses, shipping
// audit batches, and the admin calls the CLI makes.
//
// A client knows every coordinator of the mesh (from join, then from each
// netmap) and fails over between them on its own: see failover.go for
// what moves a call to the next coordinator and what does not.
//
// Threat model: the coordinator is authenticated before anything is sent.
// Joining pins the CA fingerprint carried in the auth key; every later call
// verifies the coordinator's certificate against the cached CA bundle and
// checks that it names the coordinator; that holds for every coordinator
// of the list, so a URL in it can only send the node to a server that
// proves it is a coordinator of this mesh, and a server that cannot is an
// error, never a reason to try the next. The node's private key is created
// locally and never leaves the state directory.
package controlclient

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/agentmesh/agentmesh/internal/audit"
	"github.com/agentmesh/agentmesh/internal/authkey"
	"github.com/agentmesh/agentmesh/internal/backoff"
	"github.com/agentmesh/agentmesh/internal/controlapi"
	"github.com/agentmesh/agentmesh/internal/identity"
	"github.com/agentmesh/agentmesh/internal/netmap"
	"github.com/agentmesh/agentmesh/internal/nodestate"
	"github.com/agentmesh/agentmesh/internal/pki"
	"github.com/agentmesh/agentmesh/internal/reason"
	"github.com/agentmesh/agentmesh/internal/termtext"
	"github.com/agentmesh/agentmesh/internal/transport"
)

// coordinatorName is the node name in the coordinator's server certificate.
const coordinatorName = "coordinator"

// responseHeaderTimeout bounds the wait for the coordinator's answer to a
// call, the netmap long poll included.
const responseHeaderTimeout = 2 * time.Minute

// APIError is a refusal from the coordinator, with its stable code.
type APIError struct {
	Status int
	Code   string
	Msg    string
}

// Error describes the refusal on one line, with every control, bidi and
// invisible character of the coordinator's code and message escaped
// (termtext.Escape): error text ends up on terminals, and a message may
// quote what a peer sent. Code and Msg hold them as received.
func (e *APIError) Error() string {
	return fmt.Sprintf("coordinator refused (%s): %s", termtext.Escape(e.Code), termtext.Escape(e.Msg))
}

// Options tune a Client. The zero value is usable.
type Options struct {
	Now    func() time.Time // nil: time.Now
	Logger *slog.Logger     // nil: discard
	// Clock is what retries wait on (Follow's while the coordinator is
	// away); nil is the wall clock.
	Clock backoff.Clock
}

// Client talks to the coordinator as one node.
type Client struct {
	dir      *nodestate.Dir
	cfg      nodestate.Config
	now      func() time.Time
	clock    backoff.Clock
	log      *slog.Logger
	verifier *pki.Verifier
	cert     atomic.Pointer[tls.Certificate]
	http     *http.Client
	conns    *certTransport // c.http's transport
	id       identity.ID
	revoked  atomic.Bool // see Revoked
	coords   *coordinators
	saveMu   sync.Mutex // serialises writes of the config (learn)
}

// New returns a client for the node whose state is in dir.
func New(dir *nodestate.Dir, opts Options) (*Client, error) {
	cfg, err := dir.Config()
	if err != nil {
		return nil, err
	}
	td, err := identity.ParseTrustDomain(cfg.TrustDomain)
	if err != nil {
		return nil, fmt.Errorf("state %s: %w", dir.Path(), err)
	}
	tlsCert, leaf, err := dir.Certificate()
	if err != nil {
		return nil, err
	}
	id, err := identity.FromCertificate(leaf)
	if err != nil && cfg.Kind == identity.KindUser {
		// A person's login state: admin commands only (sso.go).
		_, err = identity.UserFromCertificate(leaf)
	}
	if err != nil {
		return nil, fmt.Errorf("state %s: %w", dir.Path(), err)
	}
	roots, err := dir.CABundle()
	if err != nil {
		return nil, err
	}
	c := &Client{dir: dir, cfg: cfg, now: opts.Now, clock: opts.Clock, log: opts.Logger, id: id, coords: newCoordinators(cfg.Known(), cfg.CoordinatorURL)}
	if c.now == nil {
		c.now = time.Now
	}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	c.verifier = pki.NewVerifier(td, roots, c.now)
	c.cert.Store(tlsCert)
	want, err := identity.New(td, identity.KindAdmin, coordinatorName)
	if err != nil {
		return nil, fmt.Errorf("state %s: %w", dir.Path(), err)
	}
	tcfg := transport.Config{
		TLS: verifyingCoordinator(transport.ClientTLS(c.Certificate, c.verifier, func() (identity.ID, error) { return want, nil })),
		// The coordinator answers every call within its long poll (25 s by
		// default); one that took a request and never answers is given up
		// on, so that the netmap watch retries instead of hanging.
		ResponseHeaderTimeout: responseHeaderTimeout,
		MaxIdleConnsPerHost:   4,
	}
	// Checked once here, so that newTransport, called again at each
	// renewal, cannot fail.
	if _, err := transport.New(tcfg); err != nil {
		return nil, fmt.Errorf("state %s: %w", dir.Path(), err)
	}
	c.conns = &certTransport{newTransport: func() *http.Transport {
		tr, _ := transport.New(tcfg)
		return tr
	}}
	c.conns.cur = c.conns.newTransport()
	c.http = transport.Client(c.conns)
	return c, nil
}

// certTransport sends each request over connections made with the current
// certificate. A TLS client certificate is presented once, at the
// handshake, and the coordinator checks it on every request: a pooled
// connection made before a renewal would keep presenting the old
// certificate, and be refused once it expires, while the netmap watch kept
// it busy for ever. So a renewal starts a new transport; requests in
// flight finish on the old one, whose connections are closed when idle
// (at the next renewal at the latest).
type certTransport struct {
	newTransport func() *http.Transport

	mu        sync.Mutex
	cur, prev *http.Transport
}

// RoundTrip implements http.RoundTripper.
func (t *certTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	t.mu.Lock()
	cur := t.cur
	t.mu.Unlock()
	return cur.RoundTrip(req)
}

// renewed makes new requests use new connections, which present the
// certificate now current.
func (t *certTransport) renewed() {
	t.mu.Lock()
	retired, old := t.prev, t.cur
	t.prev, t.cur = t.cur, t.newTransport()
	t.mu.Unlock()
	if retired != nil {
		retired.CloseIdleConnections()
	}
	old.CloseIdleConnections()
}

// CloseIdleConnections closes the idle connections of both transports
// (http.Client.CloseIdleConnections calls it).
func (t *certTransport) CloseIdleConnections() {
	t.mu.Lock()
	cur, prev := t.cur, t.prev
	t.mu.Unlock()
	cur.CloseIdleConnections()
	if prev != nil {
		prev.CloseIdleConnections()
	}
}

// ID is the node's identity.
func (c *Client) ID() identity.ID { return c.id }

// Dir is the node's state directory.
func (c *Client) Dir() *nodestate.Dir { return c.dir }

// Verifier checks peer certificates against the mesh's CA bundle with the
// client's clock; serving nodes share it.
func (c *Client) Verifier() *pki.Verifier { return c.verifier }

// Certificate returns the node's current certificate.
func (c *Client) Certificate() *tls.Certificate { return c.cert.Load() }

// Close releases idle connections.
func (c *Client) Close() { c.http.CloseIdleConnections() }

// Renew asks for a fresh certificate for a fresh CSR from the node's own
// key, stores it and swaps it in.
func (c *Client) Renew(ctx context.Context) (*tls.Certificate, error) {
	key, err := c.dir.Key()
	if err != nil {
		return nil, err
	}
	csr, err := pki.CreateCSR(key)
	if err != nil {
		return nil, err
	}
	var resp controlapi.CertResponse
	if err := c.call(ctx, http.MethodPost, controlapi.PathRenew, controlapi.RenewRequest{CSR: string(pki.EncodeCSRPEM(csr))}, &resp); err != nil {
		return nil, fmt.Errorf("renew: %w", err)
	}
	leaf, err := singleCert(resp.Certificate)
	if err != nil {
		return nil, fmt.Errorf("renew: %w", err)
	}
	if got, err := identity.FromCertificate(leaf); err != nil || got != c.id {
		return nil, fmt.Errorf("renew: coordinator issued a certificate for %v, not %v", got, c.id)
	}
	if err := c.dir.SaveCertificate(leaf.Raw); err != nil {
		return nil, fmt.Errorf("renew: %w", err)
	}
	tc := &tls.Certificate{Certificate: [][]byte{leaf.Raw}, PrivateKey: key, Leaf: leaf}
	c.cert.Store(tc)
	c.conns.renewed()
	return tc, nil
}

// RenewIfDue renews when the certificate has passed two thirds of its
// lifetime. Short-lived CLI commands call it so an admin identity that sat
// unused for a while still works.
func (c *Client) RenewIfDue(ctx context.Context) error {
	leaf := c.cert.Load().Leaf
	if leaf == nil {
		return nil
	}
	life := leaf.NotAfter.Sub(leaf.NotBefore)
	if c.now().Before(leaf.NotBefore.Add(life * 2 / 3)) {
		return nil
	}
	_, err := c.Renew(ctx)
	return err
}

// RunRenewal renews the certificate at about two thirds of its lifetime
// until ctx ends. onRenew, if set, runs after every renewal.
func (c *Client) RunRenewal(ctx context.Context, clock pki.Clock, onRenew func(*tls.Certificate)) error {
	r := &pki.Renewer{
		Clock: clock,
		Renew: c.Renew,
		OnRenew: func(tc *tls.Certificate) {
			if onRenew != nil {
				onRenew(tc)
			}
		},
		Logger: c.log,
	}
	return r.Run(ctx, c.cert.Load())
}

// Netmap fetches the netmap once: immediately when since differs from the
// current version, else after the next change or a timeout (then nil, nil).
func (c *Client) Netmap(ctx context.Context, since int64) (*netmap.Netmap, error) {
	resp, base, err := c.roundTrip(func(base string) (*http.Request, error) {
		return http.NewRequestWithContext(ctx, http.MethodGet, base+controlapi.PathNetmap+"?since="+strconv.FormatInt(since, 10), nil)
	}, maxAnswer)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusNoContent {
		return nil, nil
	}
	if resp.StatusCode != http.StatusOK {
		return nil, readAPIError(resp)
	}
	b, _ := io.ReadAll(resp.Body) // in memory
	nm, err := netmap.Decode(b)
	if err != nil {
		return nil, fmt.Errorf("coordinator %s: %w", base, err)
	}
	return nm, nil
}

// maxAnswer bounds the size of an answer the client reads.
const maxAnswer = 64 << 20

// CachedNetmap returns the netmap cached in the state directory, if any.
func (c *Client) CachedNetmap() (*netmap.Netmap, error) {
	b, err := c.dir.Netmap()
	if err != nil {
		return nil, err
	}
	return netmap.Decode(b)
}

// Watch calls onChange with the cached netmap (if there is one), then with
// every newer netmap from the coordinator, caching each, until ctx ends.
// While the coordinator is unreachable it retries with backoff and the node
// keeps working from what it has.
func (c *Client) Watch(ctx context.Context, onChange func(*netmap.Netmap)) error {
	return c.Follow(ctx, func(nm *netmap.Netmap, _ time.Time) {
		if nm != nil {
			onChange(nm)
		}
	})
}

// Follow is Watch that also reports confirmations: it calls update with
// the cached netmap (if there is one) and the time the coordinator last
// confirmed it (zero if unknown), then on every answer of the long poll
// with the newer netmap, or with nil for "nothing new", and the time of
// the answer by the client's clock. Both are kept in the state directory,
// so that a restart knows how fresh its cache is (netmap.Netmap.Fresh).
func (c *Client) Follow(ctx context.Context, update func(nm *netmap.Netmap, confirmed time.Time)) error {
	var since int64
	if nm, err := c.CachedNetmap(); err == nil {
		since = nm.Version
		confirmed, err := c.dir.NetmapConfirmed()
		if err != nil {
			c.log.Warn("netmap watch: the cache's confirmation time is unreadable; treating the cache as unconfirmed", "err", err)
		}
		update(nm, confirmed)
	}
	retry := backoff.Backoff{Min: 100 * time.Millisecond, Max: 10 * time.Second}
	for {
		nm, err := c.Netmap(ctx, since)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if err != nil {
			wait := retry.Next()
			var ae *APIError
			switch {
			case c.Revoked():
				c.log.Error("netmap watch: the coordinator says this node has been revoked; join again with a new auth key", "retry_in", wait)
			case errors.As(err, &ae):
				c.log.Warn("netmap watch: the coordinator refused; keeping the cached netmap", "err", err, "retry_in", wait)
			default:
				c.log.Warn("netmap watch: coordinator unreachable, keeping the cached netmap", "err", err, "retry_in", wait)
			}
			if err := backoff.Sleep(ctx, c.clock, wait); err != nil {
				return err
			}
			continue
		}
		retry.Reset()
		now := c.now()
		if nm != nil {
			since = nm.Version
			if roots, err := pki.DecodeCertsPEM([]byte(nm.CABundle)); err == nil && len(roots) > 0 {
				c.verifier.SetRoots(roots)
			}
			c.learn(nm)
		}
		// Enforce first, cache second: the cache (two fsynced writes) only
		// serves a restart while the coordinator is away, and a crash
		// between the two leaves the older cache, which a restart
		// replaces with the coordinator's current view when it answers.
		// Caching first put four fsyncs of every gateway between an apply
		// and its enforcement.
		update(nm, now)
		c.cache(nm, now)
	}
}

// cache keeps nm (nil: the cached one was confirmed again) and the time of
// its confirmation in the state directory.
func (c *Client) cache(nm *netmap.Netmap, now time.Time) {
	if nm != nil {
		b, err := json.Marshal(nm)
		if err == nil {
			err = c.dir.SaveNetmap(b)
		}
		if err != nil {
			// A confirmation is only kept for the netmap it confirms:
			// never let an older cache look fresh after a restart.
			c.log.Warn("netmap watch: cache", "err", err)
			return
		}
	}
	if err := c.dir.SaveNetmapConfirmed(now); err != nil {
		c.log.Warn("netmap watch: cache", "err", err)
	}
}

// Register announces the addresses this serving node is reachable on.
func (c *Client) Register(ctx context.Context, addrs []string) error {
	return c.call(ctx, http.MethodPost, controlapi.PathRegister, controlapi.RegisterRequest{Addrs: addrs}, nil)
}

// Send ships a batch of audit events; it makes Client an spool.Sender. It
// succeeds only when the coordinator's answer accounts for every event and
// its receipt, signed with the audit key of the cached netmap, binds
// exactly the events sent (audit.Receipt.CheckBatch): otherwise the error
// wraps audit.ErrNotKept and Ship keeps the batch and sends it again. The
// receipt is then kept in the state directory (nodestate.ReceiptFile);
// failing to save it does not fail the send, since the events are stored.
func (c *Client) Send(ctx context.Context, events []audit.Event) error {
	if len(events) == 0 {
		return nil
	}
	var resp controlapi.AuditIngestResponse
	if err := c.call(ctx, http.MethodPost, controlapi.PathAudit, events, &resp); err != nil {
		return err
	}
	pub, err := c.auditKey()
	if err != nil {
		return fmt.Errorf("audit: cannot check the coordinator's receipt: %w", err)
	}
	if err := checkIngest(&resp, events, pub); err != nil {
		return err
	}
	for _, cf := range resp.Conflicts {
		// Only this node may record under its own destination: another
		// event under this id means this node's identity shipped twice.
		c.log.Error("audit: ID CONFLICT: the coordinator already held other content under an id this node shipped; it kept both and flagged it",
			"event_id", cf.ID, "stored_seq", cf.StoredSeq, "integrity_seq", cf.Seq)
	}
	b, err := json.Marshal(resp.Receipt)
	if err == nil {
		err = c.dir.SaveReceipt(b)
	}
	if err != nil {
		c.log.Warn("audit: receipt not kept", "err", err)
	}
	return nil
}

// checkIngest checks that resp accounts for every one of events and that
// its receipt binds them.
func checkIngest(resp *controlapi.AuditIngestResponse, events []audit.Event, pub ed25519.PublicKey) error {
	n := len(events)
	if resp.Received != n || resp.Added < 0 || resp.Duplicates < 0 || resp.Added+resp.Duplicates+len(resp.Conflicts) != n {
		return fmt.Errorf("%w: sent %d events, the coordinator received %d and accounts for %d added, %d already stored, %d conflicting",
			audit.ErrNotKept, n, resp.Received, resp.Added, resp.Duplicates, len(resp.Conflicts))
	}
	for _, cf := range resp.Conflicts {
		if cf.Index < 0 || cf.Index >= n || events[cf.Index].ID != cf.ID {
			return fmt.Errorf("%w: a conflict names event %d (%.40s), which was not sent", audit.ErrNotKept, cf.Index, cf.ID)
		}
	}
	return resp.Receipt.CheckBatch(pub, events)
}

// auditKey is the audit key of the cached netmap: a receipt is only worth
// anything if it is the coordinator's.
func (c *Client) auditKey() (ed25519.PublicKey, error) {
	nm, err := c.CachedNetmap()
	if err != nil {
		return nil, err
	}
	pub, err := audit.ParsePublicKey([]byte(nm.AuditKey))
	if err != nil {
		return nil, fmt.Errorf("audit key of the netmap: %w", err)
	}
	return pub, nil
}

// Call makes an API call: in is sent as JSON (nil: no body) and a 2xx
// answer is decoded into out (nil: ignored). Refusals are *APIError.
func (c *Client) Call(ctx context.Context, method, path string, in, out any) error {
	return c.call(ctx, method, path, in, out)
}

// Stream makes a GET call and returns the body for the caller to read
// incrementally, for audit exports.
func (c *Client) Stream(ctx context.Context, path string) (io.ReadCloser, error) {
	resp, _, err := c.roundTrip(func(base string) (*http.Request, error) {
		return http.NewRequestWithContext(ctx, http.MethodGet, base+path, nil)
	}, 0)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		defer resp.Body.Close()
		return nil, readAPIError(resp)
	}
	return resp.Body, nil
}

func (c *Client) call(ctx context.Context, method, path string, in, out any) error {
	var body []byte
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = b
	}
	resp, _, err := c.roundTrip(func(base string) (*http.Request, error) {
		var r io.Reader
		if in != nil {
			r = bytes.NewReader(body)
		}
		req, err := http.NewRequestWithContext(ctx, method, base+path, r)
		if err == nil && in != nil {
			req.Header.Set("Content-Type", "application/json")
		}
		return req, err
	}, maxAnswer)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return readAPIError(resp)
	}
	if out == nil || resp.StatusCode == http.StatusNoContent {
		return nil
	}
	return json.NewDecoder(resp.Body).Decode(out)
}

// answered notes what an answer says about this node: that it is revoked
// marks the client revoked (Revoked), any success clears the mark.
func (c *Client) answered(resp *http.Response) {
	switch {
	case resp.StatusCode/100 == 2:
		c.revoked.Store(false)
	case resp.StatusCode == http.StatusUnauthorized:
		// Peek at the code without consuming the body for the caller.
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		resp.Body.Close()
		var e controlapi.Error
		if json.Unmarshal(b, &e) == nil && e.Code == string(reason.Revoked) {
			c.revoked.Store(true)
		}
		resp.Body = io.NopCloser(bytes.NewReader(b))
	}
}

// Revoked reports whether the coordinator's last answer to this client
// said that this node has been revoked.
func (c *Client) Revoked() bool { return c.revoked.Load() }

// ErrUnreachable is the error of a call that got no answer from any
// coordinator (nothing listens, a network failure, no answer in time), as
// opposed to a refusal (APIError). The error is an *UnreachableError.
var ErrUnreachable = errors.New("cannot reach the coordinator")

// netCause is the part of a transport error a person can act on: the
// system's words ("connection refused", "no such host", "i/o timeout")
// rather than the whole chain of operations and addresses.
func netCause(err error) string {
	var errno syscall.Errno
	var dnsErr *net.DNSError
	switch {
	case errors.As(err, &errno):
		return errno.Error()
	case errors.As(err, &dnsErr):
		return "no such host " + dnsErr.Name
	case errors.Is(err, os.ErrDeadlineExceeded), errors.Is(err, context.DeadlineExceeded):
		return "no answer in time"
	}
	return err.Error()
}

func readAPIError(resp *http.Response) error {
	var e controlapi.Error
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if json.Unmarshal(b, &e) != nil || e.Code == "" {
		return &APIError{Status: resp.StatusCode, Code: "http_" + strconv.Itoa(resp.StatusCode), Msg: string(bytes.TrimSpace(b))}
	}
	return &APIError{Status: resp.StatusCode, Code: e.Code, Msg: e.Error}
}

func singleCert(pemText string) (*x509.Certificate, error) {
	certs, err := pki.DecodeCertsPEM([]byte(pemText))
	if err != nil {
		return nil, err
	}
	if len(certs) != 1 {
		return nil, fmt.Errorf("want one certificate, got %d", len(certs))
	}
	return certs[0], nil
}

// JoinOptions are the inputs of Join.
type JoinOptions struct {
	AuthKey string
	Name    string
	// Kind may be empty: the key's kind is used.
	Kind  string
	State string
	Now   func() time.Time
	// Coordinators are the API URLs of coordinators to join through, in
	// the order to try them (https://HOST:PORT each, as
	// netmap.CheckCoordinatorURL says), before the auth key's own; empty
	// means the key's alone. Each is authenticated by the CA fingerprint
	// the key pins.
	Coordinators []string
	// SSO joins as a person instead of with an auth key: AuthKey is then
	// empty, Coordinators required, and SSO says how to sign in (sso.go).
	SSO *SSOOptions
	// Tags are the tags asked for with SSO (an auth key has its own).
	Tags []string
}

// Join creates the node's key in the state directory, proves the
// coordinator holds the pinned CA, and stores the issued certificate, CA
// bundle, netmap and connection settings. It tries the coordinators of
// o.Coordinators and then the auth key's, moving on from one that does not
// answer as a Client does (see the package's failover rules); one that
// does not hold the pinned CA ends the join. On a refusal nothing is left
// in the state directory but the key (which can be reused for a retry).
func Join(ctx context.Context, o JoinOptions) (identity.ID, error) {
	var k authkey.Key
	var urls []string
	var err error
	var login *tls.Certificate
	if o.SSO != nil && o.SSO.Login != "" {
		if login, urls, k.CAFingerprint, err = loginState(o.SSO.Login, o.Coordinators); err != nil {
			return identity.ID{}, fmt.Errorf("join: %w", err)
		}
	} else if o.SSO != nil {
		if urls, err = ssoURLs(o.Coordinators); err != nil {
			return identity.ID{}, fmt.Errorf("join: %w", err)
		}
		k.CAFingerprint = NormalizeFingerprint(o.SSO.CAFingerprint)
		if err := checkFingerprint(k.CAFingerprint); err != nil {
			return identity.ID{}, fmt.Errorf("join: %w", err)
		}
	} else {
		if k, err = authkey.Parse(o.AuthKey); err != nil {
			return identity.ID{}, err
		}
		if urls, err = joinOrder(o.Coordinators, k.CoordinatorURL); err != nil {
			return identity.ID{}, fmt.Errorf("join: %w", err)
		}
	}
	name, err := identity.ParseName(o.Name)
	if err != nil {
		return identity.ID{}, err
	}
	if o.Kind != "" {
		if _, err := identity.ParseKind(o.Kind); err != nil {
			return identity.ID{}, err
		}
	}
	dir, err := nodestate.Open(o.State)
	if errors.Is(err, nodestate.ErrNotExist) {
		dir, err = nodestate.Create(o.State)
	}
	if err != nil {
		return identity.ID{}, err
	}
	if _, err := dir.Config(); err == nil {
		return identity.ID{}, fmt.Errorf("join: %s already holds a joined node; use another --state directory", o.State)
	}
	key, err := dir.Key()
	if errors.Is(err, nodestate.ErrNotExist) {
		if key, err = pki.NewKey(); err == nil {
			err = dir.SaveKey(key)
		}
	}
	if err != nil {
		return identity.ID{}, err
	}
	csr, err := pki.CreateCSR(key)
	if err != nil {
		return identity.ID{}, err
	}
	tcfg := pki.PinnedClientTLS(k.CAFingerprint)
	if login != nil {
		// The person's login certificate says who joins (sso.go).
		tcfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return login, nil }
	}
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: tcfg}, Timeout: 30 * time.Second}
	defer hc.CloseIdleConnections()
	jr := controlapi.JoinRequest{KeyID: k.ID, Secret: k.Secret, Name: string(name), Kind: o.Kind, CSR: string(pki.EncodeCSRPEM(csr))}
	if o.SSO != nil {
		if login == nil {
			if jr.IDToken, err = signIn(ctx, hc, urls, *o.SSO); err != nil {
				return identity.ID{}, fmt.Errorf("join: %w", err)
			}
		}
		jr.Tags = o.Tags
	}
	body, _ := json.Marshal(jr)
	var resp *http.Response
	var joined string
	var tried []Attempt
	for _, u := range urls {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, u+controlapi.PathJoin, bytes.NewReader(body))
		if err != nil {
			return identity.ID{}, err
		}
		req.Header.Set("Content-Type", "application/json")
		resp, err = send(hc, req, maxAnswer)
		if err == nil && failoverStatus(resp.StatusCode) {
			err = readAPIError(resp)
			resp.Body.Close()
		}
		if err == nil {
			joined = u
			break
		}
		switch ctxErr := ctx.Err(); {
		case errors.Is(ctxErr, context.Canceled):
			return identity.ID{}, ctxErr
		case errors.Is(err, pki.ErrFingerprintMismatch):
			return identity.ID{}, fmt.Errorf("join: the server at %s does not hold the CA this key pins (fingerprint %s…); nothing was sent: %w", u, k.CAFingerprint[:16], err)
		case notOurs(err):
			return identity.ID{}, fmt.Errorf("join: coordinator %s: %w", u, err)
		}
		tried = append(tried, Attempt{URL: u, Err: err})
		if ctx.Err() != nil {
			break
		}
	}
	if joined == "" {
		return identity.ID{}, fmt.Errorf("join: %w", &UnreachableError{Tried: tried})
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return identity.ID{}, fmt.Errorf("join: %w", readAPIError(resp))
	}
	var cr controlapi.CertResponse
	if err := controlapi.Decode(resp.Body, maxAnswer, &cr); err != nil {
		return identity.ID{}, fmt.Errorf("join: bad answer: %w", err)
	}
	leaf, err := singleCert(cr.Certificate)
	if err != nil {
		return identity.ID{}, fmt.Errorf("join: %w", err)
	}
	id, err := identity.FromCertificate(leaf)
	if err != nil || id.Name != name {
		return identity.ID{}, fmt.Errorf("join: coordinator issued a certificate for %v, not %s", id, name)
	}
	roots, err := pki.DecodeCertsPEM([]byte(cr.CABundle))
	if err != nil || len(roots) == 0 || pki.Fingerprint(roots[0]) != k.CAFingerprint {
		return identity.ID{}, errors.New("join: the CA bundle does not match the pinned fingerprint")
	}
	if err := dir.SaveCABundle([]byte(cr.CABundle)); err != nil {
		return identity.ID{}, err
	}
	if err := dir.SaveCertificate(leaf.Raw); err != nil {
		return identity.ID{}, err
	}
	if cr.Netmap != nil {
		if b, err := json.Marshal(cr.Netmap); err == nil && dir.SaveNetmap(b) == nil {
			now := time.Now
			if o.Now != nil {
				now = o.Now
			}
			dir.SaveNetmapConfirmed(now())
		}
	}
	if err := dir.SaveConfig(nodestate.Config{
		CoordinatorURL: joined,
		Coordinators:   joinedList(cr.Netmap, urls),
		CAFingerprint:  k.CAFingerprint,
		TrustDomain:    string(id.TrustDomain),
		Name:           string(id.Name),
		Kind:           string(id.Kind),
	}); err != nil {
		return identity.ID{}, err
	}
	return id, nil
}

// joinOrder is the order in which Join tries coordinators: given, in
// their order and once each, then the auth key's own.
func joinOrder(given []string, keyURL string) ([]string, error) {
	if len(given) > netmap.MaxCoordinators {
		return nil, fmt.Errorf("%d coordinators given, more than %d", len(given), netmap.MaxCoordinators)
	}
	var urls []string
	for _, u := range append(slices.Clone(given), keyURL) {
		if slices.Contains(urls, u) {
			continue
		}
		if u != keyURL {
			if err := netmap.CheckCoordinatorURL(u); err != nil {
				return nil, err
			}
		}
		urls = append(urls, u)
	}
	return urls, nil
}

// joinedList is the coordinator list a node keeps after joining: the one
// the coordinator's netmap gives, else the ones it was given to try (in
// canonical form; the auth key's own is kept as the one joined through
// if it is spelled otherwise).
func joinedList(nm *netmap.Netmap, tried []string) []string {
	if nm != nil && len(nm.Coordinators) > 0 && netmap.CheckCoordinators(nm.Coordinators) == nil {
		return nm.Coordinators
	}
	var urls []string
	for _, u := range tried {
		if netmap.CheckCoordinatorURL(u) == nil {
			urls = append(urls, u)
		}
	}
	return netmap.SortCoordinators(urls)
}
