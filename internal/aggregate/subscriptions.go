package aggregate

import (
	"context"
	"fmt"
	"sync"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// Subscriptions over a 2026-07-28 session. On a client session that
// speaks MCP 2026-07-28, the SDK's ClientSession.Subscribe sends
// subscriptions/listen and does not wait for its answer
// (callSubscriptionsListen in the SDK's mcp/transport.go discards the
// call), so a gateway's refusal of the subscription never reaches the
// caller: the subscription would look made and bring no updates. So the
// subscriptions made over the backend's shared session, when that session
// speaks 2026-07-28, ride instead on a session of MCP 2025-11-25 to the
// same gateway (the carrier), where resources/subscribe is a request whose
// answer, a refusal among them, comes back. The carrier is opened on the
// first such subscription and lives as long as the shared session it
// serves; a new shared session (after a reconnect) gets a new carrier,
// and the subscriptions are made again on it (resubscribe).

// subscribeProtocol is the carrier's protocol version: the latest one in
// which resources/subscribe is a request of its own.
const subscribeProtocol = "2025-11-25"

// carrierState is a backend's carrier, guarded by its mu.
type carrierState struct {
	mu     sync.Mutex
	shared *mcp.ClientSession // the shared session cs carries for
	cs     *mcp.ClientSession
}

// speaks2026 reports whether s negotiated MCP 2026-07-28 or later.
func speaks2026(s *mcp.ClientSession) bool {
	ir := s.InitializeResult()
	return ir != nil && ir.ProtocolVersion >= protocol2026
}

// carrier returns the session that carries a subscription made over s: s
// itself, unless s speaks 2026-07-28, and then the carrier of s, opened if
// need be.
func (b *backend) carrier(s *mcp.ClientSession) (*mcp.ClientSession, error) {
	if !speaks2026(s) {
		return s, nil
	}
	c := &b.subs
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.shared == s && c.cs != nil {
		return c.cs, nil
	}
	if c.cs != nil {
		c.cs.Close() // a previous shared session's
		c.shared, c.cs = nil, nil
	}
	cs, err := b.openCarrier()
	if err != nil {
		return nil, unavailable(b.svc.Name, fmt.Errorf("a session for subscriptions: %w", err))
	}
	c.shared, c.cs = s, cs
	b.a.wg.Add(1)
	go func() {
		defer b.a.wg.Done()
		// Closed with its shared session (closeCarrier), the backend, or
		// on its own: the next subscription opens another.
		stop := context.AfterFunc(b.ctx, func() { cs.Close() })
		defer stop()
		cs.Wait()
		c.mu.Lock()
		if c.cs == cs {
			c.shared, c.cs = nil, nil
		}
		c.mu.Unlock()
	}()
	return cs, nil
}

// closeCarrier closes the carrier of s, the shared session that ended.
func (b *backend) closeCarrier(s *mcp.ClientSession) {
	c := &b.subs
	c.mu.Lock()
	cs := c.cs
	if c.shared != s {
		cs = nil
	}
	c.mu.Unlock()
	if cs != nil {
		cs.Close()
	}
}

// openCarrier connects a session of subscribeProtocol to the service that
// only subscribes and hears resources/updated. Not under the client's
// request's context: the SDK's HTTP client takes the protocol version of
// an initialize's Mcp-Protocol-Version header from its context, where the
// SDK's server put the client's (2026-07-28, which a server refuses on
// an initialize).
func (b *backend) openCarrier() (*mcp.ClientSession, error) {
	cl := b.newClient(&mcp.ClientOptions{
		Capabilities:           &mcp.ClientCapabilities{},
		ResourceUpdatedHandler: b.resourceUpdated,
		Logger:                 b.a.log,
	})
	tr, err := b.a.transport(b.svc)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(b.ctx, b.a.cfg.ListTimeout)
	defer cancel()
	return cl.Connect(ctx, tr, &mcp.ClientSessionOptions{ProtocolVersion: subscribeProtocol})
}
