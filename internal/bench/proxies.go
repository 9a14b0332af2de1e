package bench

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"time"
)

// chainServerName is the name the second hop's certificate carries and
// the first hop verifies.
const chainServerName = "bench-hop2"

// chainPKI is a throwaway CA with one server and one client certificate
// for the proxy chains (the mesh has its own CA).
type chainPKI struct {
	pool           *x509.CertPool
	server, client tls.Certificate
	// Files for nginx, in the work directory.
	caFile, serverCert, serverKey, clientCert, clientKey string
}

func newChainPKI(dir string) (*chainPKI, error) {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "bench chain CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, err
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return nil, err
	}
	p := &chainPKI{pool: x509.NewCertPool()}
	p.pool.AddCert(ca)
	p.caFile = filepath.Join(dir, "ca.pem")
	if err := writePEM(p.caFile, "CERTIFICATE", caDER); err != nil {
		return nil, err
	}
	leaf := func(serial int64, name string, usage x509.ExtKeyUsage) (tls.Certificate, string, string, error) {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return tls.Certificate{}, "", "", err
		}
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: name},
			NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour), DNSNames: []string{name},
			IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage}}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
		if err != nil {
			return tls.Certificate{}, "", "", err
		}
		kder, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			return tls.Certificate{}, "", "", err
		}
		certFile, keyFile := filepath.Join(dir, name+".pem"), filepath.Join(dir, name+".key")
		if err := writePEM(certFile, "CERTIFICATE", der); err != nil {
			return tls.Certificate{}, "", "", err
		}
		if err := writePEM(keyFile, "PRIVATE KEY", kder); err != nil {
			return tls.Certificate{}, "", "", err
		}
		c, err := tls.LoadX509KeyPair(certFile, keyFile)
		return c, certFile, keyFile, err
	}
	if p.server, p.serverCert, p.serverKey, err = leaf(2, chainServerName, x509.ExtKeyUsageServerAuth); err != nil {
		return nil, err
	}
	if p.client, p.clientCert, p.clientKey, err = leaf(3, "bench-hop1", x509.ExtKeyUsageClientAuth); err != nil {
		return nil, err
	}
	return p, nil
}

func writePEM(path, typ string, der []byte) error {
	return os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600)
}

// serveProxy serves a reverse proxy to target on a new loopback listener,
// with TLS requiring client certificates when serverTLS is set, and
// returns its address.
func (r *runner) serveProxy(target string, rt http.RoundTripper, serverTLS *tls.Config) (string, error) {
	u, err := url.Parse(target)
	if err != nil {
		return "", err
	}
	rp := &httputil.ReverseProxy{
		Rewrite:   func(pr *httputil.ProxyRequest) { pr.SetURL(u); pr.Out.URL.Path = pr.In.URL.Path; pr.Out.Host = u.Host },
		Transport: rt,
		// Stream SSE responses as they come, as nginx's proxy_buffering off.
		FlushInterval: -1,
		ErrorLog:      nil,
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	if serverTLS != nil {
		ln = tls.NewListener(ln, serverTLS)
	}
	r.serve(&http.Server{Handler: rp, ReadHeaderTimeout: 10 * time.Second}, ln)
	return ln.Addr().String(), nil
}

func upstreamTransport() *http.Transport {
	return &http.Transport{MaxIdleConns: 1024, MaxIdleConnsPerHost: 1024, IdleConnTimeout: time.Minute}
}

// startProxies starts the httputil hop and the Go mTLS chain.
func (r *runner) startProxies(p *chainPKI) (hop, chain string, err error) {
	upBase := "http://" + hostOf(r.up.url)
	a, err := r.serveProxy(upBase, upstreamTransport(), nil)
	if err != nil {
		return "", "", fmt.Errorf("httputil hop: %w", err)
	}
	// Hop 2: TLS 1.3, client certificate required, to the upstream.
	b, err := r.serveProxy(upBase, upstreamTransport(), &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{p.server},
		ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: p.pool})
	if err != nil {
		return "", "", fmt.Errorf("go chain hop 2: %w", err)
	}
	// Hop 1: plain HTTP on loopback in (like the connector), mTLS out.
	tr := upstreamTransport()
	tr.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: p.pool, ServerName: chainServerName, Certificates: []tls.Certificate{p.client}}
	c, err := r.serveProxy("https://"+b, tr, nil)
	if err != nil {
		return "", "", fmt.Errorf("go chain hop 1: %w", err)
	}
	return "http://" + a + "/mcp", "http://" + c + "/mcp", nil
}

func hostOf(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return ""
	}
	return u.Host
}
