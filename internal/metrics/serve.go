package metrics

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/agentmesh/agentmesh/internal/httpserver"
	"github.com/agentmesh/agentmesh/internal/loopback"
)

// Path is where the metrics are served.
const Path = "/metrics"

// ErrRemote reports a non-loopback metrics address given without the
// explicit permission to serve it there.
var ErrRemote = errors.New("the metrics address is not loopback")

// Listen opens the metrics listener on addr: a loopback address
// ("127.0.0.1:9464", "[::1]:0", "localhost:9464"), or any address when
// allowRemote is set (the operator's explicit --metrics-allow-remote: the
// counters are then readable by whoever reaches the port).
func Listen(addr string, allowRemote bool) (net.Listener, error) {
	if allowRemote {
		return httpserver.Listen(addr)
	}
	ln, err := loopback.Listen(addr)
	if errors.Is(err, loopback.ErrNotLoopback) {
		return nil, fmt.Errorf("metrics %q: %w: give 127.0.0.1:PORT or [::1]:PORT, or allow remote scrapes with --metrics-allow-remote", addr, ErrRemote)
	}
	if err == nil {
		if _, ok := ln.Addr().(*net.TCPAddr); !ok {
			ln.Close()
			return nil, fmt.Errorf("metrics %q: %w: want a TCP address", addr, httpserver.ErrAddress)
		}
	}
	return ln, err
}

// Handler serves the Set at Path in the Prometheus text format. When ln is
// a loopback listener, requests must name a loopback host with its port
// (a DNS-rebinding page names its own).
func (s *Set) Handler(ln net.Listener) http.Handler {
	h := promhttp.HandlerFor(s.reg, promhttp.HandlerOpts{MaxRequestsInFlight: 4, Timeout: 10 * time.Second})
	port := ""
	if a, ok := ln.Addr().(*net.TCPAddr); ok {
		if ip, ok := netip.AddrFromSlice(a.IP); ok && ip.Unmap().IsLoopback() {
			port = strconv.Itoa(a.Port)
		}
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+Path, func(w http.ResponseWriter, r *http.Request) {
		if port != "" && !loopback.HostAllowed(r.Host, port) {
			http.Error(w, "metrics: this endpoint answers only to a loopback host name", http.StatusForbidden)
			return
		}
		h.ServeHTTP(w, r)
	})
	return mux
}

// Serve serves the Set on ln until ctx ends (see httpserver.Run).
func (s *Set) Serve(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{Handler: s.Handler(ln), ReadHeaderTimeout: 10 * time.Second}
	return httpserver.Run(ctx, srv, ln)
}

// URL is where a Set served on ln is scraped.
func URL(ln net.Listener) string { return "http://" + ln.Addr().String() + Path }
