package mcpwire

import (
	"net/http"
	"strings"
)

// Protocol versions of MCP that agentmesh speaks. Versions are dates in
// one format, so they compare as strings: v >= VersionStateless holds for
// every version from the stateless one on, including ones not listed here.
const (
	Version20250326 = "2025-03-26"
	Version20250618 = "2025-06-18"
	Version20251125 = "2025-11-25"
	Version20260728 = "2026-07-28"
	// VersionStateless is the first version without sessions: every
	// request carries its version in params._meta ([MetaKeyProtocolVersion])
	// and Mcp-Method (and Mcp-Name) headers, server/discover replaces
	// initialize and subscriptions/listen the standalone GET stream.
	VersionStateless = Version20260728
)

// SessionVersions returns the versions with an initialize handshake and
// sessions, newest first: what a gateway that can only serve sessions
// offers a stateless client instead.
func SessionVersions() []string {
	return []string{Version20251125, Version20250618, Version20250326}
}

// Header names of the Streamable HTTP transport, in canonical form (the
// form net/http gives every key it parses).
const (
	// HeaderSessionID names the session a request belongs to (up to
	// 2025-11-25). A gateway binds it to the identity that opened it.
	HeaderSessionID = "Mcp-Session-Id"
	// HeaderProtocolVersion names the version a request speaks; from
	// VersionStateless on it must equal the one in params._meta.
	HeaderProtocolVersion = "Mcp-Protocol-Version"
	// HeaderMethod and HeaderName repeat the method and the tool, prompt
	// or resource a POST body names (VersionStateless), and headers that
	// start with HeaderParamPrefix repeat the arguments a tool annotates
	// with x-mcp-header: see [IsMirrorHeader].
	HeaderMethod      = "Mcp-Method"
	HeaderName        = "Mcp-Name"
	HeaderParamPrefix = "Mcp-Param-"
	// HeaderPrefix starts every header the protocol defines.
	HeaderPrefix = "Mcp-"
	// HeaderLastEventID resumes a stream after the event it names.
	HeaderLastEventID = "Last-Event-Id"
)

// Content types of the Streamable HTTP transport, and the Accept of a
// POST, which may be answered with one JSON message or with an event
// stream.
const (
	ContentTypeJSON = "application/json"
	ContentTypeSSE  = "text/event-stream"
	AcceptPOST      = ContentTypeJSON + ", " + ContentTypeSSE
)

// requestHeaders are the headers of a client's request that every hop (the
// connector, the gateway) passes on as they are: what the upstream needs
// to parse the body and find the session. Every other header stays at the
// hop, above all Authorization and Cookie: the mesh identity (the mTLS
// certificate) is a client's only credential, so nothing a local agent
// sends may act as one upstream, and an upstream's own credentials are
// added by its gateway (Config.Header), never taken from a client. Host,
// Forwarded, X-Forwarded-* and hop-by-hop headers stay too: each hop
// names itself. Mirror headers and Last-Event-ID pass only under each
// hop's own rules (the gateway checks them first).
var requestHeaders = []string{"Accept", "Content-Type", HeaderSessionID, HeaderProtocolVersion}

// responseHeaders are the headers of an answer that every hop passes back:
// what a client needs to read the body (Content-Type, Cache-Control), to
// keep its session (Mcp-Session-Id, Mcp-Protocol-Version) and to act on a
// refusal (Allow, Retry-After). Set-Cookie and the rest stay: no upstream
// state other than the session reaches a client.
var responseHeaders = []string{"Content-Type", "Cache-Control", HeaderSessionID, HeaderProtocolVersion, "Allow", "Retry-After"}

// CopyRequestHeaders copies from src to dst the request headers every hop
// passes on as they are: Accept, Content-Type, Mcp-Session-Id and
// Mcp-Protocol-Version.
func CopyRequestHeaders(dst, src http.Header) { CopyHeaders(dst, src, requestHeaders...) }

// CopyResponseHeaders copies from src to dst the answer's headers every
// hop passes back: Content-Type, Cache-Control, Mcp-Session-Id,
// Mcp-Protocol-Version, Allow and Retry-After.
func CopyResponseHeaders(dst, src http.Header) { CopyHeaders(dst, src, responseHeaders...) }

// IsMirrorHeader reports whether the header key k (in any case, as header
// names are) repeats what a POST body says: Mcp-Method, Mcp-Name or an
// Mcp-Param-* header. An upstream, or a load balancer in front of it, may
// act on them, so a gateway passes them on only after checking them
// against the body it decided on.
func IsMirrorHeader(k string) bool {
	return strings.EqualFold(k, HeaderMethod) || strings.EqualFold(k, HeaderName) || IsParamHeader(k)
}

// IsParamHeader reports whether k (in any case) is an Mcp-Param-* header.
func IsParamHeader(k string) bool {
	return len(k) > len(HeaderParamPrefix) && strings.EqualFold(k[:len(HeaderParamPrefix)], HeaderParamPrefix)
}

// CopyHeaders copies the values of the header keys keys (in any case) from
// src to dst, under their canonical form as src holds them. Keys src does
// not have are left alone in dst.
func CopyHeaders(dst, src http.Header, keys ...string) {
	for _, k := range keys {
		if vs := src.Values(k); len(vs) > 0 {
			dst[http.CanonicalHeaderKey(k)] = vs
		}
	}
}
