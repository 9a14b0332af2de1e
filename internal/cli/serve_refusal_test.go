package cli

import (
	"crypto/tls"
	"encoding/json"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"agentmesh/internal/audit"
	"agentmesh/internal/controlapi"
	"agentmesh/internal/controlclient"
	"agentmesh/internal/node"
	"agentmesh/internal/pki"
)

// TestGatewayListenerAggregatesRefusedHandshakes: a client that keeps
// handshaking without a certificate with a gateway's listener is audited
// as one event at once and one counted aggregate, which the node writes
// into its spool when it stops; together they account for every attempt.
func TestGatewayListenerAggregatesRefusedHandshakes(t *testing.T) {
	d, ctx := startTestMesh(t)
	var key controlapi.KeyCreateResponse
	if err := d.admin.Call(ctx, http.MethodPost, controlapi.PathKeys, controlapi.KeyCreateRequest{Kind: "tool"}, &key); err != nil {
		t.Fatal(err)
	}
	state := filepath.Join(d.dir, "files")
	if _, err := controlclient.Join(ctx, controlclient.JoinOptions{AuthKey: key.Key, Name: "files", State: state}); err != nil {
		t.Fatal(err)
	}
	n, err := node.Start(ctx, state, node.Options{Audit: true, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", serverTLS(n, n.ID(), testLogger(t)))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	refused := make(chan struct{})
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			if c.(*tls.Conn).HandshakeContext(ctx) != nil {
				refused <- struct{}{}
			}
			c.Close()
		}
	}()
	const attempts = 15
	for range attempts {
		c, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS13})
		<-refused // the server has refused (and audited) it
		if err == nil {
			c.Close()
		}
	}
	// The node records only its own decisions: an event naming another
	// recorder would block its spool at the coordinator, so it is refused
	// here, and one naming none is its own.
	other := audit.Event{ID: audit.NewID(), V: audit.SchemaVersion, Time: time.Now(), Kind: audit.KindRequest,
		Dst: "spiffe://agentmesh.local/tool/ledger", Decision: audit.Deny, Reason: "x"}
	if err := n.Record(ctx, &other); err == nil {
		t.Fatal("the node recorded an event for another recorder")
	}
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	// What was shipped is at the coordinator; the rest is in the spool.
	var events []audit.Event
	body, err := d.admin.Stream(ctx, controlapi.PathAudit+"?kind=connection&decision=deny&dst=tool:files")
	if err != nil {
		t.Fatal(err)
	}
	dec := json.NewDecoder(body)
	for dec.More() {
		var e audit.Event
		if err := dec.Decode(&e); err != nil {
			t.Fatal(err)
		}
		events = append(events, e)
	}
	body.Close()
	spool, err := audit.OpenSpool(filepath.Join(state, "spool"), audit.SpoolOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer spool.Close()
	if spool.Pending() > 0 {
		b, err := spool.Next(ctx, 100)
		if err != nil {
			t.Fatal(err)
		}
		events = append(events, b.Events...)
	}
	var sum int64
	for _, e := range events {
		if e.Reason != string(pki.ReasonNoCertificate) || e.Dst != n.ID().String() {
			t.Fatalf("event %+v", e)
		}
		sum += e.Attempts()
	}
	if len(events) != 2 || sum != attempts {
		t.Fatalf("%d events for %d attempts, want 2 for %d", len(events), sum, attempts)
	}
}
