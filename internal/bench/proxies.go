package bench

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"flag"
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
	// PEM files in the work directory.
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
	p := &chainPKI{}
	p.caFile = filepath.Join(dir, "ca.pem")
	if err := writePEM(p.caFile, "CERTIFICATE", caDER); err != nil {
		return nil, err
	}
	leaf := func(serial int64, name string, usage x509.ExtKeyUsage) (string, string, error) {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return "", "", err
		}
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: name},
			NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour), DNSNames: []string{name},
			IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage}}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
		if err != nil {
			return "", "", err
		}
		kder, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			return "", "", err
		}
		certFile, keyFile := filepath.Join(dir, name+".pem"), filepath.Join(dir, name+".key")
		if err := writePEM(certFile, "CERTIFICATE", der); err != nil {
			return "", "", err
		}
		return certFile, keyFile, writePEM(keyFile, "PRIVATE KEY", kder)
	}
	if p.serverCert, p.serverKey, err = leaf(2, chainServerName, x509.ExtKeyUsageServerAuth); err != nil {
		return nil, err
	}
	if p.clientCert, p.clientKey, err = leaf(3, "bench-hop1", x509.ExtKeyUsageClientAuth); err != nil {
		return nil, err
	}
	return p, nil
}

func writePEM(path, typ string, der []byte) error {
	return os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600)
}

// proxyOpts configures one comparison proxy hop; the files come from
// chainPKI. The same options run a hop in this process or, as flags, in a
// process of its own (the proxy role).
type proxyOpts struct {
	target string // where it proxies to
	// With serveCert, the hop serves TLS 1.3 and requires a client
	// certificate issued by clientCA.
	serveCert, serveKey, clientCA string
	// With dialCert, the hop dials target over TLS 1.3 with that client
	// certificate, verifying dialName against dialCA.
	dialCert, dialKey, dialCA, dialName string
}

func (o *proxyOpts) flags(fs *flag.FlagSet) {
	fs.StringVar(&o.target, "target", "", "URL to proxy to")
	fs.StringVar(&o.serveCert, "serve-cert", "", "serve TLS with this certificate file")
	fs.StringVar(&o.serveKey, "serve-key", "", "its key file")
	fs.StringVar(&o.clientCA, "client-ca", "", "require client certificates from this CA file")
	fs.StringVar(&o.dialCert, "dial-cert", "", "dial the target over TLS with this client certificate file")
	fs.StringVar(&o.dialKey, "dial-key", "", "its key file")
	fs.StringVar(&o.dialCA, "dial-ca", "", "CA file that verifies the target")
	fs.StringVar(&o.dialName, "dial-name", "", "server name the target's certificate carries")
}

func (o proxyOpts) args() []string {
	var out []string
	for _, f := range []struct{ name, v string }{{"target", o.target}, {"serve-cert", o.serveCert}, {"serve-key", o.serveKey},
		{"client-ca", o.clientCA}, {"dial-cert", o.dialCert}, {"dial-key", o.dialKey}, {"dial-ca", o.dialCA}, {"dial-name", o.dialName}} {
		if f.v != "" {
			out = append(out, "-"+f.name, f.v)
		}
	}
	return out
}

// server returns the hop's HTTP server and the TLS configuration of its
// listener (nil for plain HTTP).
func (o proxyOpts) server() (*http.Server, *tls.Config, error) {
	u, err := url.Parse(o.target)
	if err != nil {
		return nil, nil, err
	}
	tr := &http.Transport{MaxIdleConns: 1024, MaxIdleConnsPerHost: 1024, IdleConnTimeout: time.Minute}
	if o.dialCert != "" {
		cert, err := tls.LoadX509KeyPair(o.dialCert, o.dialKey)
		if err != nil {
			return nil, nil, err
		}
		pool, err := loadPool(o.dialCA)
		if err != nil {
			return nil, nil, err
		}
		tr.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: pool, ServerName: o.dialName, Certificates: []tls.Certificate{cert}}
	}
	var serverTLS *tls.Config
	if o.serveCert != "" {
		cert, err := tls.LoadX509KeyPair(o.serveCert, o.serveKey)
		if err != nil {
			return nil, nil, err
		}
		pool, err := loadPool(o.clientCA)
		if err != nil {
			return nil, nil, err
		}
		serverTLS = &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{cert}, ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: pool}
	}
	rp := &httputil.ReverseProxy{
		Rewrite:   func(pr *httputil.ProxyRequest) { pr.SetURL(u); pr.Out.URL.Path = pr.In.URL.Path; pr.Out.Host = u.Host },
		Transport: tr,
		// Stream SSE responses as they come, as nginx's proxy_buffering off.
		FlushInterval: -1,
	}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// An HTTP/1.1 server reads what is left of a request body and
		// closes it when the handler sends its response headers, unless
		// told the handler reads and writes at once. Here the transport
		// still reads the body (a last read to see EOF after
		// Content-Length bytes) when a fast upstream's headers come
		// back: that read failed with "invalid Read on closed Body", the
		// transport closed the upstream connection and the response was
		// cut (about one call in a thousand with the hops as processes).
		http.NewResponseController(w).EnableFullDuplex()
		rp.ServeHTTP(w, r)
	})
	return &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}, serverTLS, nil
}

func loadPool(file string) (*x509.CertPool, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("%s: no certificate", file)
	}
	return pool, nil
}

// startProxy runs one hop, as a process of its own when deployed, and
// returns its address.
func (r *runner) startProxy(ctx context.Context, role string, o proxyOpts) (string, error) {
	if r.deployed() {
		_, s, err := r.startProc(ctx, role, []string{RoleEnv + "=proxy"}, r.cfg.Executable, append([]string{"bench"}, o.args()...)...)
		return s.Addr, err
	}
	hs, serverTLS, err := o.server()
	if err != nil {
		return "", err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	if serverTLS != nil {
		ln = tls.NewListener(ln, serverTLS)
	}
	r.serve(hs, ln)
	return ln.Addr().String(), nil
}

func hostOf(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return ""
	}
	return u.Host
}
