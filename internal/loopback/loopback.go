// Package loopback guards agentmesh's local endpoints, the connector's MCP
// endpoint and the local model API: listeners on loopback addresses or
// private Unix sockets only, and the Guard every request to them passes
// (Host and Origin checks, and a per-endpoint bearer token).
//
// Threat model: a local endpoint carries the node's identity to the mesh,
// so whoever can talk to it acts as the node. Listening on loopback keeps
// other hosts out. Browsers on this machine remain: a web page can make
// its browser send requests to 127.0.0.1, and by DNS rebinding
// (evil.example resolving to 127.0.0.1) even read the answers. Such a
// request carries the page's own name in Host and its origin in Origin,
// so a Host that is not a loopback name with the listener's port, or an
// Origin that is not a loopback origin, is refused. "localhost" is taken
// to mean 127.0.0.1, never resolved, so a hostile resolver cannot move it.
//
// Other local users and their processes remain: a loopback port is open to
// every account on the machine. Two ways bind an endpoint to its owner:
//
//   - a bearer token (Auth.Token, from NewToken), required on every request
//     and compared in constant time; the CLI writes it with mode 0600 into
//     the node's state directory, where only the owner (and root) can read
//     it, and makes a new one at every start. A TCP endpoint without a
//     token must be asked for explicitly (Auth.NoToken).
//   - a Unix socket (Listen("unix:PATH")): mode 0600 in a directory of
//     mode 0700 that the user owns, so the kernel admits only the owner
//     (and root); few MCP clients speak HTTP over a Unix socket yet.
//
// A token file is readable by every process of the owner and by root, as
// is the node's key beside it; an attacker with the owner's account is out
// of scope. A stdio endpoint needs neither: the client starts the
// connector itself and talks to it over pipes no one else holds.
package loopback

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"strings"

	"github.com/agentmesh/agentmesh/internal/httpserver"
)

// ErrNotLoopback reports an address that is not a loopback address.
var ErrNotLoopback = errors.New("address is not loopback")

// Listen opens a TCP listener on a loopback address and refuses any other:
// "127.0.0.1:0", "[::1]:7801" and "localhost:7801" (which listens on
// 127.0.0.1) are accepted; "0.0.0.0:7801", ":7801" or "10.1.2.3:1" fail
// with ErrNotLoopback. "unix:PATH" listens on a Unix socket at PATH with
// mode 0600 in a directory only this user may enter (see listenUnix).
func Listen(addr string) (net.Listener, error) {
	if path, ok := strings.CutPrefix(addr, UnixPrefix); ok {
		return listenUnix(path)
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("%w %q: want 127.0.0.1:PORT, [::1]:PORT or unix:PATH", httpserver.ErrAddress, addr)
	}
	if strings.EqualFold(host, "localhost") {
		host = "127.0.0.1"
	}
	ip, err := netip.ParseAddr(host)
	if err != nil || !ip.IsLoopback() || ip.Zone() != "" {
		return nil, fmt.Errorf("listen %q: %w: give 127.0.0.1:PORT, [::1]:PORT or unix:PATH", addr, ErrNotLoopback)
	}
	// httpserver.Listen checks the port and explains a failure (a port
	// in use) to the operator.
	return httpserver.Listen(net.JoinHostPort(ip.String(), port))
}

// isLocalHost reports whether host (no port, no brackets) names the local
// machine: "localhost" or a loopback IP literal.
func isLocalHost(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.IsLoopback() && ip.Zone() == ""
}

// HostAllowed reports whether a request's Host header is a loopback name
// with the listener's port. A DNS-rebinding page carries its own domain
// name in Host, which this refuses.
func HostAllowed(hostHeader, port string) bool {
	host, p, err := net.SplitHostPort(hostHeader)
	if err != nil {
		// No port: only valid when listening on the default port.
		host, p = hostHeader, "80"
		if strings.HasPrefix(host, "[") && strings.HasSuffix(host, "]") {
			host = host[1 : len(host)-1]
		}
	}
	return p == port && isLocalHost(host)
}

// OriginAllowed reports whether an Origin header names a loopback origin
// (http or https, any port). "null" and every other origin are refused.
func OriginAllowed(origin string) bool {
	u, err := url.Parse(origin)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.User != nil {
		return false
	}
	return isLocalHost(u.Hostname())
}
