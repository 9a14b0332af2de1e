// Package transport is the one HTTP client transport with which a node
// reaches another node: the connector its gateway, the local side of a
// model endpoint its model gateway, every node its coordinator. It holds
// the rules every such client shares, so that they cannot drift apart:
//
//   - TLS 1.3 at least, with the node's certificate read at every handshake
//     (renewals take effect at once), and a server that is checked by a
//     mesh verifier ([ClientTLS]: the chain against the mesh CA with the
//     node's clock, then the server's SPIFFE ID against the one expected);
//   - or, with [Config.Dial], a transport that authenticates and encrypts
//     by itself (a tailnet), spoken as prior-knowledge HTTP/2;
//   - HTTP/2 pings that replace a silently dead connection instead of
//     hanging every stream on it, and timeouts for dialing, handshakes,
//     idle connections and (where a caller knows a bound) response headers;
//   - no proxy from the environment, no transparent compression (SSE must
//     arrive event by event and bodies are relayed verbatim) and, through
//     [Client], no redirects (a redirect could carry a session to another
//     host).
//
// # Threat model
//
// The server a node dials may be any node of the mesh (they all hold
// certificates valid for serving) or, on the network path, anybody. A
// transport that accepted any server of the mesh CA would let one node
// impersonate another; one that skipped verification would let anybody.
// [New] therefore refuses a TLS configuration that does not check the
// server with a verifier of its own (VerifyConnection or
// VerifyPeerCertificate, as [ClientTLS] and pki.ClientTLS set), with or
// without Go's built-in verification; and [ServerIs] is the one rule for
// which identity is expected: exactly the SPIFFE ID the caller resolved,
// in the node's own trust domain.
//
// Before this package the connector and the model endpoint's local side
// each built their transport; the local side did not refuse a
// configuration that skipped server verification without a verifier, so a
// library caller could have handed it one that trusted any server.
package transport

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"
)

// Timeouts and pool sizes of every transport New makes.
const (
	// DialTimeout bounds connecting, and HandshakeTimeout the TLS
	// handshake after it.
	DialTimeout      = 10 * time.Second
	HandshakeTimeout = 10 * time.Second
	// PingAfter is how long an HTTP/2 connection may stay silent before
	// it is pinged, and PingTimeout how long the ping may go unanswered
	// before the connection is closed and its requests fail.
	PingAfter   = 30 * time.Second
	PingTimeout = 15 * time.Second
	// IdleTimeout closes an idle pooled connection.
	IdleTimeout = 90 * time.Second
	// DefaultMaxIdleConnsPerHost is Config.MaxIdleConnsPerHost's default:
	// with HTTP/1.1 (a peer without h2) every open SSE stream holds a
	// connection, so keep enough idle ones for an agent's concurrency.
	DefaultMaxIdleConnsPerHost = 64
)

// ErrConfig is returned by New for a configuration it refuses.
var ErrConfig = errors.New("invalid client transport configuration")

// Config configures New.
type Config struct {
	// TLS is the node's client configuration: its certificate (through
	// GetClientCertificate, so that renewals are used at once) and a
	// verifier of the server (see ClientTLS). It is cloned; TLS 1.3 is
	// enforced. Required unless Dial is set.
	TLS *tls.Config
	// Dial, when set, connects over a transport that authenticates and
	// encrypts by itself, such as a tailnet (tailnet.Node.Dial): its
	// identity is then the credential, TLS must be nil, and requests go
	// to http:// URLs as HTTP/2 without TLS inside that transport. Nil
	// dials TCP, and TLS is required.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// ResponseHeaderTimeout bounds the wait for a response's headers after
	// the request was written; zero means no bound. MCP tool calls and
	// non-streamed completions may take minutes before their first byte,
	// so only callers that know a bound set one (the control client);
	// pings catch dead connections either way.
	ResponseHeaderTimeout time.Duration
	// MaxIdleConnsPerHost is how many idle connections to one peer are
	// kept; zero means DefaultMaxIdleConnsPerHost.
	MaxIdleConnsPerHost int
}

// Scheme is the scheme of the URLs a transport from cfg serves: https, or
// http with Dial.
func (cfg Config) Scheme() string {
	if cfg.Dial != nil {
		return "http"
	}
	return "https"
}

// New checks cfg and returns a transport for it. The transport's
// DialContext is cfg.Dial or a TCP dialer with DialTimeout; a caller may
// wrap it (the connector re-resolves its gateway on every dial).
func New(cfg Config) (*http.Transport, error) {
	perHost := cfg.MaxIdleConnsPerHost
	if perHost <= 0 {
		perHost = DefaultMaxIdleConnsPerHost
	}
	t := &http.Transport{
		Proxy:                 nil, // mesh traffic never goes through $HTTPS_PROXY
		TLSHandshakeTimeout:   HandshakeTimeout,
		ResponseHeaderTimeout: cfg.ResponseHeaderTimeout,
		Protocols:             new(http.Protocols),
		HTTP2: &http.HTTP2Config{
			SendPingTimeout: PingAfter,
			PingTimeout:     PingTimeout,
		},
		MaxIdleConns:        max(256, perHost),
		MaxIdleConnsPerHost: perHost,
		IdleConnTimeout:     IdleTimeout,
		DisableCompression:  true,
		ReadBufferSize:      32 << 10,
		WriteBufferSize:     32 << 10,
	}
	switch {
	case cfg.Dial != nil && cfg.TLS != nil:
		return nil, fmt.Errorf("%w: Dial and TLS are exclusive (the dialer's transport is the credential)", ErrConfig)
	case cfg.Dial != nil:
		// One multiplexed connection, as with TLS: prior-knowledge HTTP/2,
		// which gateways serve on a listener without TLS.
		t.DialContext = cfg.Dial
		t.Protocols.SetUnencryptedHTTP2(true)
		return t, nil
	case cfg.TLS == nil:
		return nil, fmt.Errorf("%w: TLS is required (the node identity is the credential)", ErrConfig)
	}
	tlsCfg := cfg.TLS.Clone()
	if len(tlsCfg.Certificates) == 0 && tlsCfg.GetClientCertificate == nil {
		return nil, fmt.Errorf("%w: TLS has no client certificate", ErrConfig)
	}
	if tlsCfg.VerifyConnection == nil && tlsCfg.VerifyPeerCertificate == nil {
		if tlsCfg.InsecureSkipVerify {
			return nil, fmt.Errorf("%w: TLS skips server verification without a verifier", ErrConfig)
		}
		return nil, fmt.Errorf("%w: TLS does not check the server's mesh identity (use transport.ClientTLS)", ErrConfig)
	}
	tlsCfg.MinVersion = max(tlsCfg.MinVersion, tls.VersionTLS13)
	// ALPN is the transport's business: it offers h2 and http/1.1.
	tlsCfg.NextProtos = nil
	t.TLSClientConfig = tlsCfg
	t.DialContext = (&net.Dialer{Timeout: DialTimeout, KeepAlive: 30 * time.Second}).DialContext
	t.Protocols.SetHTTP1(true)
	t.Protocols.SetHTTP2(true)
	return t, nil
}

// Client returns an HTTP client on rt that never follows a redirect: a
// mesh peer never redirects, and following one could carry a session (and
// the node's certificate) to another host.
func Client(rt http.RoundTripper) *http.Client {
	return &http.Client{
		Transport:     rt,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}
