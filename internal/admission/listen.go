package admission

import (
	"crypto/tls"
	"net"
	"net/http"

	"github.com/agentmesh/agentmesh/internal/connlimit"
)

// ServeOn prepares srv to serve on ln and returns the listener to serve:
// ln wrapped in tlsCfg's TLS, or, with tlsCfg nil, ln itself with HTTP/1.1
// and prior-knowledge HTTP/2 (as connectors speak it over a transport that
// authenticates and encrypts). Only a server whose handler identifies
// callers without TLS (an Identifier) may pass nil.
//
// With TLS, connections that have not finished their handshake are bounded
// by conns (see package connlimit; zero fields are its defaults): anybody
// who can reach the port can open them, and without a bound enough of them
// exhaust the gateway's file descriptors before any certificate is seen.
// tlsCfg must require a client certificate, so a finished handshake is an
// authenticated one.
func ServeOn(srv *http.Server, ln net.Listener, tlsCfg *tls.Config, conns connlimit.Config) net.Listener {
	if tlsCfg != nil {
		l := connlimit.NewListener(ln, conns)
		return tls.NewListener(l, l.ServerTLS(tlsCfg, presentedCertificate))
	}
	srv.Protocols = new(http.Protocols)
	srv.Protocols.SetHTTP1(true)
	srv.Protocols.SetUnencryptedHTTP2(true)
	return ln
}

// presentedCertificate says whether a finished handshake authenticated the
// client. The gateway's TLS configuration refuses a handshake without a
// verified certificate, so every finished one did.
func presentedCertificate(cs tls.ConnectionState) bool { return len(cs.PeerCertificates) > 0 }
