package coordinator

import (
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"

	"github.com/agentmesh/agentmesh/internal/termtext"
)

// parseCSR decodes a PEM certificate request and checks its signature, which
// proves the requester holds the private key.
func parseCSR(s string) (*x509.CertificateRequest, error) {
	blk, rest := pem.Decode([]byte(s))
	if blk == nil || blk.Type != "CERTIFICATE REQUEST" || len(rest) > 0 && len(pemTrim(rest)) > 0 {
		return nil, errors.New("csr: want exactly one PEM CERTIFICATE REQUEST")
	}
	csr, err := x509.ParseCertificateRequest(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("csr: %w", err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("csr: bad signature: %w", err)
	}
	return csr, nil
}

func pemTrim(b []byte) []byte {
	for len(b) > 0 && (b[0] == '\n' || b[0] == '\r' || b[0] == ' ' || b[0] == '\t') {
		b = b[1:]
	}
	return b
}

// splitHostPort validates a served address: a literal IP or host name and a
// port from 1 to 65535.
func splitHostPort(a string) (string, int, error) {
	host, port, err := net.SplitHostPort(a)
	if err != nil {
		return "", 0, err
	}
	p, err := strconv.Atoi(port)
	if err != nil || p < 1 || p > 65535 {
		return "", 0, fmt.Errorf("bad port %q", port)
	}
	if !validHost(host) {
		return "", 0, fmt.Errorf("host %s is neither an IP address nor a DNS name", peerText(host))
	}
	return host, p, nil
}

// validHost reports whether host is an IP address or a DNS name (labels of
// letters, digits, '-' and '_'): what connectors dial, and what 'nodes
// list' shows an admin, so nothing else may be registered.
func validHost(host string) bool {
	if ip, err := netip.ParseAddr(host); err == nil {
		return ip.Zone() == "" || validLabels(ip.Zone())
	}
	return len(host) <= 253 && validLabels(host)
}

func validLabels(s string) bool {
	for _, l := range strings.Split(s, ".") {
		if len(l) == 0 || len(l) > 63 {
			return false
		}
		for i := 0; i < len(l); i++ {
			c := l[i]
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return false
			}
		}
	}
	return true
}

// maxPeerText bounds how much of a string a peer chose, that failed
// validation, is kept for the audit trail and error messages.
const maxPeerText = 80

// peerText returns s as the audit trail and error messages may carry it
// although it failed validation: at most maxPeerText bytes of it, with
// every control, invisible or bidi character and invalid byte escaped
// (termtext.Escape), so an event always stays valid and small and no
// reader's terminal acts on it.
func peerText(s string) string {
	if len(s) <= maxPeerText {
		return termtext.Escape(s)
	}
	return termtext.Escape(s[:maxPeerText]) + fmt.Sprintf("…(%d bytes)", len(s))
}
