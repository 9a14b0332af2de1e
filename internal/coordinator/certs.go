package coordinator

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"os"
	"time"

	"github.com/agentmesh/agentmesh/internal/identity"
	"github.com/agentmesh/agentmesh/internal/netmap"
	"github.com/agentmesh/agentmesh/internal/nodestate"
	"github.com/agentmesh/agentmesh/internal/pki"
)

// newIncarnation returns a fresh random incarnation for a node record.
func newIncarnation() string {
	var b [12]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic("coordinator: no randomness: " + err.Error())
	}
	return hex.EncodeToString(b[:])
}

// issueServerCert gives the coordinator a fresh TLS certificate from its
// own CA, valid for the names and addresses clients dial.
func (c *Coordinator) issueServerCert() error {
	id, err := identity.New(c.td, identity.KindAdmin, ServerName)
	if err != nil {
		return err
	}
	key, err := pki.NewKey()
	if err != nil {
		return err
	}
	csrDER, err := pki.CreateCSR(key)
	if err != nil {
		return err
	}
	csr, err := x509.ParseCertificateRequest(csrDER)
	if err != nil {
		return err
	}
	req := pki.IssueRequest{ID: id, Incarnation: "server", TTL: c.cfg.CertTTL, Now: c.now(), DNSNames: []string{"localhost"}}
	req.IPs = []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}
	if host, _, err := net.SplitHostPort(c.ln.Addr().String()); err == nil {
		if ip := net.ParseIP(host); ip != nil && !ip.IsUnspecified() && !ip.IsLoopback() {
			req.IPs = append(req.IPs, ip)
		}
	}
	if h, err := os.Hostname(); err == nil && h != "" {
		req.DNSNames = append(req.DNSNames, h)
	}
	_, der, err := c.ca.Issue(csr, req)
	if err != nil {
		return err
	}
	// The CA certificate travels with the leaf: joining nodes pin it by
	// fingerprint before they trust anything else.
	c.serverCert.Store(&tls.Certificate{Certificate: [][]byte{der, c.ca.Certificate().Raw}, PrivateKey: key})
	return nil
}

// renewLoop renews the server certificate and the local admin identity at
// about two thirds of their lifetime.
func (c *Coordinator) renewLoop(ctx context.Context) {
	for {
		wait := c.cfg.CertTTL * 2 / 3
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		if err := c.issueServerCert(); err != nil {
			c.log.Error("coordinator: renew server certificate", "err", err)
		}
		if err := c.writeAdminIdentity(ctx); err != nil {
			c.log.Error("coordinator: renew admin identity", "err", err)
		}
	}
}

// writeAdminIdentity makes sure DATA/admin holds a valid admin identity:
// on first start it creates the key and registers the admin node; on later
// starts it re-issues the certificate, since the coordinator owns this
// directory and an expired admin certificate would lock the operator out.
func (c *Coordinator) writeAdminIdentity(ctx context.Context) error {
	dir := c.AdminDir()
	d, err := nodestate.Open(dir)
	if errors.Is(err, os.ErrNotExist) {
		d, err = nodestate.Create(dir)
	}
	if err != nil {
		return err
	}
	key, err := d.Key()
	if errors.Is(err, os.ErrNotExist) {
		key, err = pki.NewKey()
		if err == nil {
			err = d.SaveKey(key)
		}
	}
	if err != nil {
		return err
	}
	n, err := c.reg.ensureNode(ctx, netmap.Node{Name: AdminName, Kind: identity.KindAdmin, Tags: []identity.Tag{}, Incarnation: newIncarnation()}, c.now())
	if err != nil {
		return err
	}
	id, _ := identity.New(c.td, identity.KindAdmin, AdminName)
	csrDER, err := pki.CreateCSR(key)
	if err != nil {
		return err
	}
	csr, err := x509.ParseCertificateRequest(csrDER)
	if err != nil {
		return err
	}
	_, der, err := c.ca.Issue(csr, pki.IssueRequest{ID: id, Incarnation: n.Incarnation, TTL: c.cfg.CertTTL, Now: c.now()})
	if err != nil {
		return err
	}
	if err := d.SaveCABundle(pki.EncodeCertPEM(c.ca.Certificate())); err != nil {
		return err
	}
	if err := d.SaveCertificate(der); err != nil {
		return err
	}
	return d.SaveConfig(nodestate.Config{
		CoordinatorURL: c.url,
		CAFingerprint:  c.ca.Fingerprint(),
		TrustDomain:    string(c.td),
		Name:           AdminName,
		Kind:           string(identity.KindAdmin),
		// Admin commands on this state fail over between these.
		Coordinators: netmap.SortCoordinators(c.coordinatorURLs()),
	})
}

// auditKeyHint says what to do when the audit key cannot be read or made.
const auditKeyHint = "give --audit-key a file in a directory that exists and this user can read and write"

// loadOrCreateAuditKey returns the ed25519 key that signs audit
// checkpoints, creating it (mode 0600) on first start. It refuses to create
// one when create is false (the trail already holds checkpoints): a new
// key would leave every earlier signature unverifiable, and replacing the
// key is what someone rewriting the trail would do.
func loadOrCreateAuditKey(path string, create bool) (ed25519.PrivateKey, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) && !create {
		return nil, fmt.Errorf("audit key %s is missing, but the audit trail holds checkpoints it signed; restore the key there, or pass --audit-key FILE where it is (a new key would make the trail unverifiable)", path)
	}
	if errors.Is(err, os.ErrNotExist) {
		out, err := newAuditKeyPEM()
		if err != nil {
			return nil, err
		}
		if err := os.WriteFile(path, out, 0o600); err != nil {
			return nil, fmt.Errorf("cannot create the audit signing key: %w; %s", err, auditKeyHint)
		}
		return parseAuditKey(out, "audit key "+path)
	}
	if err != nil {
		return nil, fmt.Errorf("cannot read the audit signing key: %w; %s", err, auditKeyHint)
	}
	if fi, err := os.Stat(path); err == nil && fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("audit key %s is readable by other users; run: chmod 600 %s", path, path)
	}
	return parseAuditKey(b, "audit key "+path)
}

// newAuditKeyPEM makes a new audit signing key, PEM (PKCS #8) encoded.
func newAuditKeyPEM() ([]byte, error) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// parseAuditKey reads a PEM (PKCS #8) ed25519 key; what names it in
// errors.
func parseAuditKey(b []byte, what string) (ed25519.PrivateKey, error) {
	blk, _ := pem.Decode(b)
	if blk == nil {
		return nil, fmt.Errorf("%s: not PEM", what)
	}
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	priv, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("%s: not an ed25519 key", what)
	}
	return priv, nil
}
