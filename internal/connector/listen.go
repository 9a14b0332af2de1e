package connector

import (
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"strings"
)

// Listen opens a TCP listener for [Connector.ServeListener] and refuses any
// address that is not loopback: "127.0.0.1:0", "[::1]:7801" and
// "localhost:7801" (which listens on 127.0.0.1) are accepted; "0.0.0.0:7801",
// ":7801" or "10.1.2.3:1" fail with [ErrNotLoopback].
func Listen(addr string) (net.Listener, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("listen %q: %w", addr, err)
	}
	if strings.EqualFold(host, "localhost") {
		// Do not trust the resolver with what "localhost" means.
		host = "127.0.0.1"
	}
	ip, err := netip.ParseAddr(host)
	if err != nil || !ip.IsLoopback() || ip.Zone() != "" {
		return nil, fmt.Errorf("listen %q: %w", addr, ErrNotLoopback)
	}
	ln, err := net.Listen("tcp", net.JoinHostPort(ip.String(), port))
	if err != nil {
		return nil, fmt.Errorf("listen %q: %w", addr, err)
	}
	return ln, nil
}

// loopbackPort returns the port of a loopback TCP address, or ErrNotLoopback.
func loopbackPort(a net.Addr) (string, error) {
	tcp, ok := a.(*net.TCPAddr)
	if !ok || !tcp.IP.IsLoopback() {
		return "", fmt.Errorf("%w: %v", ErrNotLoopback, a)
	}
	return fmt.Sprint(tcp.Port), nil
}

// isLoopbackHost reports whether host (no port, no brackets) names the local
// machine: "localhost" or a loopback IP literal.
func isLoopbackHost(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.IsLoopback() && ip.Zone() == ""
}

// hostAllowed reports whether a request's Host header is a loopback name
// with the listener's port. A DNS-rebinding page carries its own domain name
// in Host, which this refuses.
func hostAllowed(hostHeader, port string) bool {
	host, p, err := net.SplitHostPort(hostHeader)
	if err != nil {
		// No port: only valid when listening on the default port.
		host, p = hostHeader, "80"
		if strings.HasPrefix(host, "[") && strings.HasSuffix(host, "]") {
			host = host[1 : len(host)-1]
		}
	}
	return p == port && isLoopbackHost(host)
}

// originAllowed reports whether an Origin header names a loopback origin
// (http or https, any port). "null" and every other origin are refused.
func originAllowed(origin string) bool {
	u, err := url.Parse(origin)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.User != nil {
		return false
	}
	return isLoopbackHost(u.Hostname())
}
