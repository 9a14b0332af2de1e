package coordinator_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/agentmesh/agentmesh/internal/audit"
	"github.com/agentmesh/agentmesh/internal/audit/audittest"
	"github.com/agentmesh/agentmesh/internal/audit/spool"
	"github.com/agentmesh/agentmesh/internal/authkey"
	"github.com/agentmesh/agentmesh/internal/controlapi"
	"github.com/agentmesh/agentmesh/internal/controlclient"
	"github.com/agentmesh/agentmesh/internal/coordinator"
	"github.com/agentmesh/agentmesh/internal/identity"
	"github.com/agentmesh/agentmesh/internal/pki"
	"github.com/agentmesh/agentmesh/internal/reason"
)

const (
	ledgerID = "spiffe://test.mesh/tool/ledger"
	filesID  = "spiffe://test.mesh/tool/files"
	coordID  = "spiffe://test.mesh/admin/coordinator"
)

// eventsAt returns n valid request events recorded by dst.
func eventsAt(dst string, from, n int, base time.Time) []audit.Event {
	out := make([]audit.Event, n)
	for i := range out {
		out[i] = audittest.Event(from+i, base)
		out[i].Dst = dst
	}
	return out
}

// ship posts a batch as the given node and returns the answer's code.
func ship(t *testing.T, cl *controlclient.Client, events []audit.Event) (controlapi.AuditIngestResponse, string) {
	t.Helper()
	var resp controlapi.AuditIngestResponse
	err := cl.Call(context.Background(), http.MethodPost, controlapi.PathAudit, events, &resp)
	if err != nil && apiCode(err) == "" {
		t.Fatal(err)
	}
	return resp, apiCode(err)
}

func TestCoordinatorRefusesEventForAnotherRecorder(t *testing.T) {
	m := startMesh(t)
	ledger := m.mustJoin(m.key(controlapi.KeyCreateRequest{Kind: "tool"}), "ledger", "")
	files := m.mustJoin(m.key(controlapi.KeyCreateRequest{Kind: "tool"}), "files", "")
	agent := m.mustJoin(m.key(controlapi.KeyCreateRequest{Kind: "agent"}), "agent1", "")
	base := m.clock.Now()

	// The files gateway denies agent1 a call; the denial answer tells the
	// agent (and anyone it tells) the event id.
	real := eventsAt(filesID, 0, 1, base)
	learned := real[0].ID

	forged := eventsAt(filesID, 0, 1, base)
	forged[0].Decision, forged[0].Reason = audit.Allow, "granted"
	mine := eventsAt(ledgerID, 1, 1, base)
	asSource := eventsAt(ledgerID, 2, 1, base)
	asSource[0].Src, asSource[0].Dst = ledgerID, filesID // "files allowed me X"
	admin := eventsAt(ledgerID, 3, 1, base)
	admin[0].Kind, admin[0].Action = audit.KindAdmin, "policy.apply"
	for name, batch := range map[string][]audit.Event{
		"another gateway's decision under a learned id": append(append([]audit.Event{}, mine...), forged...),
		"a decision about itself at another gateway":    asSource,
		"an admin event": admin,
	} {
		if _, code := ship(t, ledger, batch); code != "foreign_event" {
			t.Errorf("%s: code %q, want foreign_event", name, code)
		}
	}
	// Agents decide nothing, so they ship nothing, not even "their own".
	if _, code := ship(t, agent, eventsAt("spiffe://test.mesh/agent/agent1", 4, 1, base)); code != "foreign_event" {
		t.Errorf("agent: code %q, want foreign_event", code)
	}
	if got := m.auditEvents(t, "kind=request"); len(got) != 0 {
		t.Fatalf("refused batches stored %d events: %+v", len(got), got)
	}
	// The refusals are in the trail, as integrity events naming who tried.
	var tried []string
	for _, e := range m.auditEvents(t, "kind=integrity") {
		if e.Reason != reason.ForeignEvent || e.Dst != coordID {
			t.Errorf("integrity event %+v", e)
		}
		tried = append(tried, e.Src)
	}
	if len(tried) != 2 {
		// One immediate event per node; the ledger's further refusals wait
		// in its window.
		t.Fatalf("integrity events from %v, want one for the ledger and one for the agent", tried)
	}

	// The real event still lands, and its receipt binds it.
	if err := files.Send(context.Background(), real); err != nil {
		t.Fatalf("the real event: %v", err)
	}
	got := m.auditEvents(t, "kind=request")
	if len(got) != 1 || got[0].ID != learned || got[0].Decision != real[0].Decision {
		t.Fatalf("stored %+v, want the real event", got)
	}
}

func TestCoordinatorFlagsIDConflictInTrailAndVerify(t *testing.T) {
	m := startMesh(t)
	ledger := m.mustJoin(m.key(controlapi.KeyCreateRequest{Kind: "tool"}), "ledger", "")
	base := m.clock.Now()
	batch := eventsAt(ledgerID, 0, 3, base)
	if err := ledger.Send(context.Background(), batch); err != nil {
		t.Fatal(err)
	}
	// Sent again: nothing added, everything accounted for.
	resp, code := ship(t, ledger, batch)
	if code != "" || resp.Added != 0 || resp.Duplicates != 3 || len(resp.Conflicts) != 0 {
		t.Fatalf("re-sent batch: %+v %s", resp, code)
	}
	other := append([]audit.Event{}, batch[1])
	other[0].Reason = "rewritten"
	// Send accepts it (the content is kept) and says so loudly.
	if err := ledger.Send(context.Background(), other); err != nil {
		t.Fatalf("conflicting batch: %v", err)
	}
	ie := m.auditEvents(t, "kind=integrity")
	if len(ie) != 1 || ie[0].Reason != reason.IDConflict || ie[0].Target != batch[1].ID || ie[0].Src != ledgerID {
		t.Fatalf("integrity events %+v", ie)
	}
	var d audit.ConflictDetail
	if err := json.Unmarshal([]byte(ie[0].Detail), &d); err != nil {
		t.Fatal(err)
	}
	var kept audit.Event
	if err := json.Unmarshal(d.Rejected, &kept); err != nil || kept.Reason != "rewritten" {
		t.Fatalf("the rejected content is not kept: %s %v", d.Rejected, err)
	}
	var rep audit.Report
	if err := m.admin.Call(context.Background(), http.MethodGet, controlapi.PathVerify, nil, &rep); err != nil {
		t.Fatal(err)
	}
	if !rep.OK || rep.Conflicts != 1 || len(rep.ConflictIDs) != 1 || rep.ConflictIDs[0] != batch[1].ID {
		t.Fatalf("verify: %+v", rep)
	}
}

// tamperingCoordinator is a coordinator in the middle: it holds a server
// certificate from the mesh CA and passes audit batches to the real
// coordinator, dropping the last event of each while drop is set.
type tamperingCoordinator struct {
	srv     *httptest.Server
	real    *controlclient.Client
	mu      sync.Mutex
	drop    bool
	batches chan int // the size of each batch it received
}

func newTamperingCoordinator(t *testing.T, m *mesh, real *controlclient.Client) *tamperingCoordinator {
	t.Helper()
	ca, err := pki.LoadCA(m.data)
	if err != nil {
		t.Fatal(err)
	}
	cert := issueCert(t, ca, identity.KindAdmin, "coordinator", pki.IssueRequest{Now: m.clock.Now(), IPs: []net.IP{net.IPv4(127, 0, 0, 1)}})
	tc := &tamperingCoordinator{real: real, batches: make(chan int, 16)}
	tc.srv = httptest.NewUnstartedServer(http.HandlerFunc(tc.serve))
	tc.srv.TLS = &tls.Config{Certificates: []tls.Certificate{*cert}, ClientAuth: tls.RequestClientCert, MinVersion: tls.VersionTLS13}
	tc.srv.StartTLS()
	t.Cleanup(tc.srv.Close)
	return tc
}

// issueCert issues a one-hour certificate for kind/name in test.mesh from
// ca, with req's time and addresses.
func issueCert(t *testing.T, ca *pki.CA, kind identity.Kind, name identity.Name, req pki.IssueRequest) *tls.Certificate {
	t.Helper()
	key, _ := pki.NewKey()
	csrDER, _ := pki.CreateCSR(key)
	csr, _ := x509.ParseCertificateRequest(csrDER)
	req.ID, _ = identity.New("test.mesh", kind, name)
	req.Incarnation, req.TTL = "x", time.Hour
	_, der, err := ca.Issue(csr, req)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

func (tc *tamperingCoordinator) setDrop(v bool) {
	tc.mu.Lock()
	tc.drop = v
	tc.mu.Unlock()
}

func (tc *tamperingCoordinator) serve(w http.ResponseWriter, r *http.Request) {
	var batch []audit.Event
	if r.URL.Path != controlapi.PathAudit || controlapi.Decode(r.Body, controlapi.MaxAuditBody, &batch) != nil {
		http.Error(w, `{"error":"no","code":"bad_request"}`, http.StatusBadRequest)
		return
	}
	sent := len(batch)
	// Signalled once the real coordinator has answered.
	defer func() { tc.batches <- sent }()
	tc.mu.Lock()
	drop := tc.drop
	tc.mu.Unlock()
	if drop {
		batch = batch[:len(batch)-1]
	}
	var resp controlapi.AuditIngestResponse
	if err := tc.real.Call(r.Context(), http.MethodPost, controlapi.PathAudit, batch, &resp); err != nil {
		http.Error(w, `{"error":"upstream","code":"internal"}`, http.StatusBadGateway)
		return
	}
	if drop {
		// Lie about the counts too: only the receipt can tell.
		resp.Received, resp.Added = resp.Received+1, resp.Added+1
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(resp)
}

// viaTampering returns a client for the node in dir that talks to tc
// instead of the real coordinator (a copy of its state directory).
func viaTampering(t *testing.T, m *mesh, dir string, tc *tamperingCoordinator) *controlclient.Client {
	t.Helper()
	copyDir := filepath.Join(t.TempDir(), "state")
	if err := os.CopyFS(copyDir, os.DirFS(dir)); err != nil {
		t.Fatal(err)
	}
	// CopyFS does not keep modes; a state directory must be private.
	filepath.WalkDir(copyDir, func(p string, d os.DirEntry, err error) error {
		if err == nil {
			os.Chmod(p, map[bool]os.FileMode{true: 0o700, false: 0o600}[d.IsDir()])
		}
		return err
	})
	cfgPath := filepath.Join(copyDir, "coordinator.json")
	b, err := os.ReadFile(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	var cfg map[string]any
	json.Unmarshal(b, &cfg)
	cfg["coordinator_url"] = tc.srv.URL
	// The only coordinator it knows: not the real one its netmap lists.
	delete(cfg, "coordinators")
	b, _ = json.Marshal(cfg)
	if err := os.WriteFile(cfgPath, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return m.client(copyDir)
}

// TestGatewayNoticesCoordinatorKeepingFewerEvents: a coordinator that keeps
// fewer events than it was sent, and says it kept them all, is caught by
// the receipt; the gateway keeps the batch in its spool and sends it again
// until a coordinator proves it kept every event.
func TestGatewayNoticesCoordinatorKeepingFewerEvents(t *testing.T) {
	m := startMesh(t)
	dir, err := m.join(m.key(controlapi.KeyCreateRequest{Kind: "tool"}), "ledger", "")
	if err != nil {
		t.Fatal(err)
	}
	tc := newTamperingCoordinator(t, m, m.client(dir))
	gw := viaTampering(t, m, dir, tc)
	tc.setDrop(true)

	base := m.clock.Now()
	events := eventsAt(ledgerID, 0, 5, base)
	err = gw.Send(context.Background(), events)
	<-tc.batches
	if !errors.Is(err, audit.ErrNotKept) {
		t.Fatalf("Send through a coordinator that dropped an event = %v, want ErrNotKept", err)
	}

	// Through Ship and a spool: nothing is acknowledged while the
	// coordinator does not prove it kept everything.
	sp, err := spool.Open(t.TempDir(), spool.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer sp.Close()
	ctx, cancel := context.WithCancel(context.Background())
	for i := range events {
		if err := sp.AppendSync(ctx, &events[i]); err != nil {
			t.Fatal(err)
		}
	}
	retry := make(chan chan time.Time, 4)
	done := make(chan error)
	go func() {
		done <- spool.Ship(ctx, sp, gw, spool.ShipOptions{Linger: -1, After: func(time.Duration) <-chan time.Time {
			c := make(chan time.Time, 1)
			retry <- c
			return c
		}})
	}()
	if n := <-tc.batches; n != 5 {
		t.Fatalf("first batch of %d events, want 5", n)
	}
	fire := <-retry // Ship waits to retry: the batch was refused
	if p := sp.Pending(); p != 5 {
		t.Fatalf("%d events pending after a batch the coordinator did not keep, want 5", p)
	}
	tc.setDrop(false)
	fire <- time.Now()
	if n := <-tc.batches; n != 5 {
		t.Fatalf("retried batch of %d events, want 5", n)
	}
	// Only once the last batch was proved kept does the next one start
	// after it.
	more := eventsAt(ledgerID, 5, 1, base)
	if err := sp.AppendSync(ctx, &more[0]); err != nil {
		t.Fatal(err)
	}
	if n := <-tc.batches; n != 1 {
		t.Fatalf("next batch of %d events, want 1 (the 5 were acknowledged)", n)
	}
	cancel()
	<-done
	if got := m.auditEvents(t, "kind=request"); len(got) != 6 {
		t.Fatalf("coordinator holds %d events, want 6", len(got))
	}
}

// TestCoordinatorAggregatesRefusalsAndAccountsForEachAttempt floods the
// coordinator with refused handshakes, refused requests and bad joins: each
// kind of refusal writes one event at once, the rest are counted, and the
// count is written when the coordinator stops; the attempts add up.
func TestCoordinatorAggregatesRefusalsAndAccountsForEachAttempt(t *testing.T) {
	// The fake clock never refills the per-source join bucket: lift it, so
	// that every bad join reaches the key check it is about.
	m := startMeshWith(t, coordinator.Limits{JoinRate: 1e12, JoinBurst: 1 << 30})
	const n = 25
	url := m.co.URL() + controlapi.PathNodes
	tls12 := rawClient(t, m, m.admin.Certificate(), tls.VersionTLS12)
	nocert := rawClient(t, m, nil, 0)
	k, _ := authkey.Parse(m.key(controlapi.KeyCreateRequest{Kind: "agent"}))
	k.Secret = strings.Repeat("0", 64)
	for range n {
		if _, _, err := get(tls12, url); err == nil {
			t.Fatal("a TLS 1.2 client was served")
		}
		if code, _, _ := get(nocert, url); code != http.StatusUnauthorized {
			t.Fatalf("no certificate: status %d", code)
		}
		if _, err := m.join(k.String(), "intruder", ""); !strings.Contains(fmt.Sprint(err), "key_unknown") {
			t.Fatalf("bad join: %v", err)
		}
	}
	count := func(kind string) (events map[string]int, attempts map[string]int64) {
		events, attempts = map[string]int{}, map[string]int64{}
		for _, e := range m.auditEvents(t, "decision=deny&kind="+kind) {
			events[string(e.Reason)]++
			attempts[string(e.Reason)] += e.Attempts()
		}
		return events, attempts
	}
	reasons := map[string]string{"tls_version": "connection", "no_certificate": "connection", "key_unknown": "admin"}
	for reason, kind := range reasons {
		if ev, _ := count(kind); ev[reason] != 1 {
			t.Errorf("%s: %d events during the flood, want 1 (the first, at once)", reason, ev[reason])
		}
	}
	m.stop() // writes the open windows
	m.start()
	for reason, kind := range reasons {
		ev, at := count(kind)
		if ev[reason] != 2 || at[reason] != n {
			t.Errorf("%s: %d events accounting for %d attempts, want 2 and %d", reason, ev[reason], at[reason], n)
		}
	}
}
