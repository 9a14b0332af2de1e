package controlclient

// Failover: a client knows every coordinator of the mesh (the state's
// nodestate.Config.Known, then each netmap's list) and talks to one of
// them at a time. A call that cannot get an answer from it, because the
// connection fails (refused, reset, closed, timed out, no such host) or a
// proxy in front of it answers 502, 503 or 504, is sent to the next one at
// once, each known coordinator at most once per call; the client then
// keeps talking to the one that answered. Only when every one failed does
// the call fail, with an UnreachableError that names each one tried and
// why, and the loops that retry (the netmap watch, renewal, audit
// shipping, address registration) wait on their backoff (package backoff)
// before the next round. Moving to another coordinator needs no wait: it
// is another server, and nodes that lost theirs should have their answer
// from another one within the call they were making.
//
// What is not a reason to move on:
//   - an answer with a reason code (revoked, not_admin, rate_limited, ...):
//     every coordinator of the mesh shares one database and gives the same
//     answer;
//   - a server whose certificate does not verify against the mesh's CA,
//     or that is not the coordinator, or that is not TLS at all, or that
//     refuses this node's certificate: that is a misconfiguration or an
//     attack to be seen, not an outage to route around, so the call fails
//     with that error and the client stays where it was.
//
// A request the coordinator may have processed before its connection
// broke is sent again to the next one. Every node call may be repeated:
// a renewal issues another certificate, audit ingest is idempotent by
// event id, registration and the netmap watch are idempotent, and a join
// asked again with the same key pair gets the registration it already
// has (the coordinator's joinTx). An admin
// call repeated this way (keys create, policy apply) may take effect
// twice, as a retry by hand would.

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"

	"github.com/agentmesh/agentmesh/internal/netmap"
)

// coordinators is the list of coordinators a client knows and the one it
// talks to now. It is shared by every call of the client.
type coordinators struct {
	mu   sync.Mutex
	urls []string // never empty
	cur  int
}

// newCoordinators starts with first if it is listed (the one the node
// joined through, which its operator chose), else with the first listed.
func newCoordinators(urls []string, first string) *coordinators {
	return &coordinators{urls: slices.Clone(urls), cur: max(0, slices.Index(urls, first))}
}

// current is the coordinator to talk to now.
func (cs *coordinators) current() string {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	return cs.urls[cs.cur]
}

// list returns every known coordinator, in a new slice.
func (cs *coordinators) list() []string {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	return slices.Clone(cs.urls)
}

// moveOn makes the next coordinator current if failed still is: calls
// that fail at once on the same coordinator move the client on by one,
// not by one each.
func (cs *coordinators) moveOn(failed string) {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	if cs.urls[cs.cur] == failed {
		cs.cur = (cs.cur + 1) % len(cs.urls)
	}
}

// set replaces the list (urls must not be empty), keeping the current
// coordinator if it is still listed, else starting at the first. It
// reports whether the list changed.
func (cs *coordinators) set(urls []string) bool {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	if slices.Equal(cs.urls, urls) {
		return false
	}
	now := cs.urls[cs.cur]
	cs.urls, cs.cur = slices.Clone(urls), 0
	if i := slices.Index(cs.urls, now); i >= 0 {
		cs.cur = i
	}
	return true
}

// Coordinator is the URL of the coordinator the client talks to now.
func (c *Client) Coordinator() string { return c.coords.current() }

// Coordinators are the URLs of every coordinator the client knows, the one
// it talks to now among them.
func (c *Client) Coordinators() []string { return c.coords.list() }

// learn makes the coordinators listed in nm the ones the client knows,
// and saves them in the state directory (an empty list means the one
// joined through), so that the node learns of new coordinators and
// forgets removed ones. A list that cannot be saved is still used.
func (c *Client) learn(nm *netmap.Netmap) {
	if nm == nil || netmap.CheckCoordinators(nm.Coordinators) != nil {
		return // Decode refuses such a netmap; nothing to learn
	}
	cfg := c.cfg
	cfg.Coordinators = nm.Coordinators
	if !c.coords.set(cfg.Known()) {
		return
	}
	c.log.Info("coordinators: the netmap lists a new set", "coordinators", strings.Join(cfg.Known(), " "))
	c.saveMu.Lock()
	defer c.saveMu.Unlock()
	if err := c.dir.SaveConfig(cfg); err != nil {
		c.log.Warn("coordinators: the new list is not kept for the next start", "err", err)
	}
}

// failoverStatus reports whether an HTTP status is a proxy's or load
// balancer's word that the coordinator behind it did not answer.
func failoverStatus(code int) bool {
	return code == http.StatusBadGateway || code == http.StatusServiceUnavailable || code == http.StatusGatewayTimeout
}

// trustError marks a failure to authenticate the coordinator: its
// certificate does not verify against the mesh's CA (or the pinned one),
// or it is not the coordinator's.
type trustError struct{ err error }

func (e *trustError) Error() string { return e.err.Error() }
func (e *trustError) Unwrap() error { return e.err }

// verifyingCoordinator returns cfg with its VerifyConnection's failures
// marked as trustError, so that a call can tell "not our coordinator"
// from "no coordinator".
func verifyingCoordinator(cfg *tls.Config) *tls.Config {
	verify := cfg.VerifyConnection
	cfg.VerifyConnection = func(cs tls.ConnectionState) error {
		if err := verify(cs); err != nil {
			return &trustError{err}
		}
		return nil
	}
	return cfg
}

// notOurs reports whether err says that what answered is not a
// coordinator of this mesh, or refused this node at the TLS layer: a
// certificate that did not verify, a TLS alert from the server, or
// something that does not speak TLS. Such an error ends the call rather
// than moving it to another coordinator.
func notOurs(err error) bool {
	var te *trustError
	var rh tls.RecordHeaderError
	var cv *tls.CertificateVerificationError
	var op *net.OpError
	return errors.As(err, &te) || errors.As(err, &rh) || errors.As(err, &cv) ||
		(errors.As(err, &op) && op.Op == "remote error") // an alert the server sent
}

// Attempt is one coordinator tried by a call, and why it did not answer.
type Attempt struct {
	URL string
	Err error
}

// UnreachableError is the error of a call that no known coordinator
// answered. It matches ErrUnreachable, and the APIError of a coordinator
// that answered 502, 503 or 504.
type UnreachableError struct {
	Tried []Attempt // in the order tried; never empty
}

// Error says which coordinators were tried, in the network's own words
// for what happened to each, and what to check.
func (e *UnreachableError) Error() string {
	const check = "is 'agentmesh coordinator' running there, and reachable from here?"
	if len(e.Tried) == 1 {
		a := e.Tried[0]
		return fmt.Sprintf("%v at %s: %s (%s)", ErrUnreachable, a.URL, check, netCause(a.Err))
	}
	var sb strings.Builder
	fmt.Fprintf(&sb, "%v: tried %d coordinators: ", ErrUnreachable, len(e.Tried))
	for i, a := range e.Tried {
		if i > 0 {
			sb.WriteString(", ")
		}
		fmt.Fprintf(&sb, "%s (%s)", a.URL, netCause(a.Err))
	}
	sb.WriteString("; " + check)
	return sb.String()
}

// Unwrap makes the error match ErrUnreachable, and any APIError among the
// attempts.
func (e *UnreachableError) Unwrap() []error {
	errs := []error{ErrUnreachable}
	for _, a := range e.Tried {
		var ae *APIError
		if errors.As(a.Err, &ae) {
			errs = append(errs, ae)
		}
	}
	return errs
}

// attempt is one request to one coordinator, made by roundTrip.
type attempt func(base string) (*http.Request, error)

// roundTrip makes one call: it builds the request for the current
// coordinator, sends it, and moves on to the next one as the package's
// failover rules say, each known coordinator at most once. With
// readLimit > 0 it reads the answer's body (up to readLimit bytes) within
// the attempt, so that a connection that breaks mid-answer moves on too;
// the returned response's body is then in memory. It returns the answer
// and the coordinator that gave it.
func (c *Client) roundTrip(build attempt, readLimit int64) (*http.Response, string, error) {
	var tried []Attempt
	for range c.coords.list() {
		base := c.coords.current()
		if slices.ContainsFunc(tried, func(a Attempt) bool { return a.URL == base }) {
			break // another call moved the client on meanwhile
		}
		req, err := build(base)
		if err != nil {
			return nil, base, err
		}
		resp, err := send(c.http, req, readLimit)
		if err == nil && failoverStatus(resp.StatusCode) {
			err = readAPIError(resp)
			resp.Body.Close()
		}
		if err == nil {
			c.answered(resp)
			return resp, base, nil
		}
		ctxErr := req.Context().Err()
		switch {
		case errors.Is(ctxErr, context.Canceled):
			return nil, base, ctxErr // nobody waits for the answer
		case notOurs(err):
			return nil, base, fmt.Errorf("coordinator %s: %w", base, err)
		}
		tried = append(tried, Attempt{URL: base, Err: err})
		if ctxErr != nil {
			break // out of time: the rest would fail alike
		}
		c.coords.moveOn(base)
		c.log.Warn("coordinator did not answer; trying the next one", "coordinator", base, "err", netCause(err), "next", c.coords.current())
	}
	return nil, "", &UnreachableError{Tried: tried}
}

// send sends req with hc and, with readLimit > 0, reads the answer's body
// into memory.
func send(hc *http.Client, req *http.Request, readLimit int64) (*http.Response, error) {
	resp, err := hc.Do(req)
	if err != nil || readLimit <= 0 {
		return resp, err
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, readLimit))
	resp.Body.Close()
	if err != nil {
		return nil, err
	}
	resp.Body = io.NopCloser(bytes.NewReader(b))
	return resp, nil
}
