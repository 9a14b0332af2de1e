package coordinator

import (
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"strconv"
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
	if host == "" || len(host) > 253 {
		return "", 0, errors.New("bad host")
	}
	return host, p, nil
}
