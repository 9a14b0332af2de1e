package controlclient_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/agentmesh/agentmesh/internal/controlapi"
	"github.com/agentmesh/agentmesh/internal/controlclient"
	"github.com/agentmesh/agentmesh/internal/coordinator/coordinatortest"
	"github.com/agentmesh/agentmesh/internal/identity"
	"github.com/agentmesh/agentmesh/internal/netmap"
	"github.com/agentmesh/agentmesh/internal/nodestate"
	"github.com/agentmesh/agentmesh/internal/pki"
	"github.com/agentmesh/agentmesh/internal/pki/pkitest"
)

// fakeCoordinator is a loopback TLS server that presents the
// coordinator's identity from a test CA and requires a client certificate
// from it, as the coordinator does, with a handler the test writes.
type fakeCoordinator struct {
	url  string
	hits atomic.Int64 // requests that reached the handler
	srv  *http.Server
	done chan struct{}
	once sync.Once
}

// startCoordinator serves h on 127.0.0.1:0 with a coordinator certificate
// issued by ca; the test's cleanup closes it.
func startCoordinator(t *testing.T, ca *pki.CA, h http.HandlerFunc) *fakeCoordinator {
	t.Helper()
	now := time.Now()
	cert := pkitest.Issue(t, ca, pkitest.ID(t, pkitest.TrustDomain, identity.KindAdmin, "coordinator"), now, time.Hour)
	v := pki.NewVerifier(pkitest.TrustDomain, []*x509.Certificate{ca.Certificate()}, time.Now)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	fc := &fakeCoordinator{url: "https://" + ln.Addr().String(), done: make(chan struct{})}
	fc.srv = &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fc.hits.Add(1)
			h(w, r)
		}),
		TLSConfig: pki.ServerTLS(func() *tls.Certificate { return cert }, v, nil),
	}
	go func() {
		defer close(fc.done)
		fc.srv.Serve(tls.NewListener(ln, fc.srv.TLSConfig))
	}()
	t.Cleanup(fc.Close)
	return fc
}

// Close stops the server and drops every connection, requests in flight
// included, as a coordinator that dies does.
func (fc *fakeCoordinator) Close() {
	fc.once.Do(func() {
		fc.srv.Close()
		<-fc.done
	})
}

// nodeState writes the state of node agent/fraud with a certificate from
// ca, joined through joined and knowing coordinators, and returns a
// client for it.
func nodeState(t *testing.T, ca *pki.CA, joined string, coordinators []string) (*controlclient.Client, *nodestate.Dir) {
	t.Helper()
	id := pkitest.ID(t, pkitest.TrustDomain, identity.KindAgent, "fraud")
	cert := pkitest.Issue(t, ca, id, time.Now(), time.Hour)
	d, err := nodestate.Create(filepath.Join(t.TempDir(), "fraud"))
	if err != nil {
		t.Fatal(err)
	}
	for _, err := range []error{
		d.SaveKey(cert.PrivateKey.(*ecdsa.PrivateKey)),
		d.SaveCertificate(cert.Leaf.Raw),
		d.SaveCABundle(pki.EncodeCertPEM(ca.Certificate())),
		d.SaveConfig(nodestate.Config{CoordinatorURL: joined, Coordinators: netmap.SortCoordinators(coordinators),
			CAFingerprint: ca.Fingerprint(), TrustDomain: string(pkitest.TrustDomain), Name: "fraud", Kind: "agent"}),
	} {
		if err != nil {
			t.Fatal(err)
		}
	}
	cl, err := controlclient.New(d, controlclient.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return cl, d
}

// answer writes v as JSON with status.
func answer(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

// listNodes answers the nodes list with one node named by the server, so
// that the test sees which coordinator answered.
func listNodes(name string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		answer(w, http.StatusOK, []controlapi.NodeInfo{{Name: name}})
	}
}

func callNodes(cl *controlclient.Client) (string, error) {
	var nodes []controlapi.NodeInfo
	err := cl.Call(context.Background(), http.MethodGet, controlapi.PathNodes, nil, &nodes)
	if err != nil {
		return "", err
	}
	if len(nodes) != 1 {
		return "", errors.New("not one node in the answer")
	}
	return nodes[0].Name, nil
}

func TestCallMovesOnFromACoordinatorThatIsDownAndStaysWithTheOneThatAnswers(t *testing.T) {
	ca := pkitest.NewCA(t, pkitest.TrustDomain, time.Now())
	dead := coordinatortest.DeadURL(t)
	b := startCoordinator(t, ca, listNodes("b"))
	cl, _ := nodeState(t, ca, dead, []string{dead, b.url})
	if cl.Coordinator() != dead {
		t.Fatalf("a new client talks to %s, want the one it joined through, %s", cl.Coordinator(), dead)
	}
	for i := range 2 {
		got, err := callNodes(cl)
		if err != nil || got != "b" {
			t.Fatalf("call %d with the first coordinator down = %q, %v; want b's answer", i, got, err)
		}
	}
	if cl.Coordinator() != b.url || b.hits.Load() != 2 {
		t.Fatalf("the client talks to %s after the failover, b served %d calls; want b, 2", cl.Coordinator(), b.hits.Load())
	}
}

func TestCallsInFlightWhenTheirCoordinatorDiesAreAnsweredByTheNextOne(t *testing.T) {
	ca := pkitest.NewCA(t, pkitest.TrustDomain, time.Now())
	const calls = 8
	arrived := make(chan struct{}, calls)
	a := startCoordinator(t, ca, func(w http.ResponseWriter, r *http.Request) {
		arrived <- struct{}{}
		<-r.Context().Done() // never answers: it dies first
	})
	b := startCoordinator(t, ca, listNodes("b"))
	c := startCoordinator(t, ca, listNodes("c"))
	cl, _ := nodeState(t, ca, a.url, []string{a.url, b.url, c.url})
	// The list is sorted: the next one after a is b or c, by port.
	list := cl.Coordinators()
	next, other, name := b, c, "b"
	if list[(slices.Index(list, a.url)+1)%len(list)] == c.url {
		next, other, name = c, b, "c"
	}

	results := make(chan error, calls)
	for range calls {
		go func() {
			got, err := callNodes(cl)
			if err == nil && got != name {
				err = errors.New("answered by " + got + ", not by the next coordinator, " + name)
			}
			results <- err
		}()
	}
	for range calls {
		<-arrived
	}
	a.Close()
	for range calls {
		if err := <-results; err != nil {
			t.Errorf("a call in flight when its coordinator died: %v", err)
		}
	}
	// Every call that failed on a moved the client on once, together.
	if cl.Coordinator() != next.url || next.hits.Load() != calls || other.hits.Load() != 0 {
		t.Fatalf("after a died: talking to %s, the next one served %d, the other %d; want the next one (%s), %d, 0",
			cl.Coordinator(), next.hits.Load(), other.hits.Load(), next.url, calls)
	}
}

func TestNetmapWatchMovesOnWhenItsCoordinatorDiesAndLearnsTheNewList(t *testing.T) {
	ca := pkitest.NewCA(t, pkitest.TrustDomain, time.Now())
	polling := make(chan struct{}, 1)
	a := startCoordinator(t, ca, func(w http.ResponseWriter, r *http.Request) {
		polling <- struct{}{}
		<-r.Context().Done() // a long poll with nothing new, until a dies
	})
	var bURL, cURL string
	b := startCoordinator(t, ca, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != controlapi.PathNetmap || r.URL.Query().Get("since") != "7" {
			http.Error(w, "unexpected "+r.URL.String(), http.StatusBadRequest)
			return
		}
		// b knows a is gone, and that c came.
		answer(w, http.StatusOK, &netmap.Netmap{Version: 8, TrustDomain: pkitest.TrustDomain, Nodes: []netmap.Node{},
			Coordinators: netmap.SortCoordinators([]string{bURL, cURL})})
	})
	c := startCoordinator(t, ca, listNodes("c"))
	bURL, cURL = b.url, c.url
	cl, d := nodeState(t, ca, a.url, []string{a.url, b.url})
	// The watch starts from a cached netmap at version 7.
	cached, _ := json.Marshal(&netmap.Netmap{Version: 7, TrustDomain: pkitest.TrustDomain, Nodes: []netmap.Node{}})
	if err := d.SaveNetmap(cached); err != nil {
		t.Fatal(err)
	}
	updates, stop := follow(t, cl)
	if u := <-updates; u.nm == nil || u.nm.Version != 7 {
		t.Fatalf("first update %+v, want the cache", u)
	}
	<-polling
	a.Close()
	u := <-updates
	if u.nm == nil || u.nm.Version != 8 {
		t.Fatalf("after a died mid-poll: %+v, want b's netmap", u)
	}
	stop()
	want := netmap.SortCoordinators([]string{b.url, c.url})
	if got := cl.Coordinators(); !slices.Equal(got, want) || cl.Coordinator() != b.url {
		t.Fatalf("the client knows %q and talks to %s; want %q and b", got, cl.Coordinator(), want)
	}
	cfg, err := d.Config()
	if err != nil || !slices.Equal(cfg.Known(), want) || cfg.CoordinatorURL != a.url {
		t.Fatalf("saved config %+v, %v; want the netmap's list and the joined coordinator kept", cfg, err)
	}
	// The next start knows c, which the node was never told of at join.
	again, err := controlclient.New(d, controlclient.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer again.Close()
	if !slices.Equal(again.Coordinators(), want) {
		t.Fatalf("a restarted client knows %q, want %q", again.Coordinators(), want)
	}
}

func TestAnswersWithAReasonCodeAreNotFailedOver(t *testing.T) {
	ca := pkitest.NewCA(t, pkitest.TrustDomain, time.Now())
	for _, tc := range []struct {
		status  int
		code    string
		revoked bool
	}{
		{http.StatusForbidden, "not_admin", false},
		{http.StatusUnauthorized, "revoked", true},
		{http.StatusTooManyRequests, "rate_limited", false},
		{http.StatusInternalServerError, "internal", false},
	} {
		a := startCoordinator(t, ca, func(w http.ResponseWriter, r *http.Request) {
			answer(w, tc.status, controlapi.Error{Error: "no", Code: tc.code})
		})
		b := startCoordinator(t, ca, listNodes("b"))
		cl, _ := nodeState(t, ca, a.url, []string{a.url, b.url})
		_, err := callNodes(cl)
		var ae *controlclient.APIError
		if !errors.As(err, &ae) || ae.Code != tc.code || errors.Is(err, controlclient.ErrUnreachable) {
			t.Errorf("%d %s: call = %v, want the refusal", tc.status, tc.code, err)
		}
		if b.hits.Load() != 0 || cl.Coordinator() != a.url || cl.Revoked() != tc.revoked {
			t.Errorf("%d %s: b served %d, the client talks to %s, revoked %v; want 0, a, %v",
				tc.status, tc.code, b.hits.Load(), cl.Coordinator(), cl.Revoked(), tc.revoked)
		}
	}
}

func TestGatewayErrorsInFrontOfACoordinatorAreFailedOver(t *testing.T) {
	ca := pkitest.NewCA(t, pkitest.TrustDomain, time.Now())
	for _, status := range []int{http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout} {
		a := startCoordinator(t, ca, func(w http.ResponseWriter, r *http.Request) {
			http.Error(w, "upstream down", status)
		})
		b := startCoordinator(t, ca, listNodes("b"))
		cl, _ := nodeState(t, ca, a.url, []string{a.url, b.url})
		if got, err := callNodes(cl); err != nil || got != "b" {
			t.Errorf("%d from a: call = %q, %v; want b's answer", status, got, err)
		}
	}
}

func TestACoordinatorOutsideTheMeshCAIsAnErrorNotAFailover(t *testing.T) {
	ca := pkitest.NewCA(t, pkitest.TrustDomain, time.Now())
	other := pkitest.NewCA(t, pkitest.TrustDomain, time.Now())
	impostor := startCoordinator(t, other, listNodes("impostor"))
	b := startCoordinator(t, ca, listNodes("b"))
	cl, _ := nodeState(t, ca, impostor.url, []string{impostor.url, b.url})
	_, err := callNodes(cl)
	if err == nil || errors.Is(err, controlclient.ErrUnreachable) || !errors.Is(err, pki.ErrUnknownCA) || !strings.Contains(err.Error(), impostor.url) {
		t.Fatalf("call to a server from another CA = %v, want an error naming it and the unknown CA", err)
	}
	if impostor.hits.Load() != 0 || b.hits.Load() != 0 || cl.Coordinator() != impostor.url {
		t.Fatalf("impostor served %d, b served %d, the client talks to %s; want 0, 0 and no move", impostor.hits.Load(), b.hits.Load(), cl.Coordinator())
	}
}

func TestAFailedCallNamesEveryCoordinatorTriedAndWhy(t *testing.T) {
	ca := pkitest.NewCA(t, pkitest.TrustDomain, time.Now())
	first, second := coordinatortest.DeadURL(t), coordinatortest.DeadURL(t)
	cl, _ := nodeState(t, ca, first, []string{first, second})
	_, err := callNodes(cl)
	var ue *controlclient.UnreachableError
	if !errors.Is(err, controlclient.ErrUnreachable) || !errors.As(err, &ue) || len(ue.Tried) != 2 {
		t.Fatalf("call with every coordinator down = %v, want an UnreachableError with two attempts", err)
	}
	want := "cannot reach the coordinator: tried 2 coordinators: " + first + " (connection refused), " + second + " (connection refused); is 'agentmesh coordinator' running there"
	if !strings.HasPrefix(err.Error(), want) {
		t.Fatalf("error:\n got %s\nwant %s…", err, want)
	}
}

func TestRenewalAndAuditShippingFailOverToALiveCoordinator(t *testing.T) {
	m := coordinatortest.Start(t, coordinatortest.Options{})
	dir := m.Join("tool", "files")
	coordinatortest.JoinedThroughDead(t, dir, m.URL())
	cl := m.Client(dir)
	ctx := context.Background()
	old := cl.Certificate().Leaf
	m.Clock.Advance(time.Minute)
	if tc, err := cl.Renew(ctx); err != nil || tc.Leaf.Equal(old) {
		t.Fatalf("Renew with the joined coordinator down: %v", err)
	}
	if err := cl.Send(ctx, events(cl.ID(), 3)); err != nil {
		t.Fatalf("Send with the joined coordinator down: %v", err)
	}
	if err := cl.Register(ctx, []string{"127.0.0.1:9"}); err != nil {
		t.Fatalf("Register with the joined coordinator down: %v", err)
	}
	if cl.Coordinator() != m.URL() {
		t.Fatalf("talking to %s, want the live coordinator %s", cl.Coordinator(), m.URL())
	}
}

func TestTheNetmapListsTheCoordinator(t *testing.T) {
	m := coordinatortest.Start(t, coordinatortest.Options{})
	cl := m.Client(m.Join("agent", "fraud"))
	nm, err := cl.Netmap(context.Background(), -1)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{m.URL()}; !slices.Equal(nm.Coordinators, want) {
		t.Fatalf("netmap coordinators %q, want %q", nm.Coordinators, want)
	}
}

func TestJoinTriesTheGivenCoordinatorsThenTheKeysAndKeepsTheNetmapsList(t *testing.T) {
	m := coordinatortest.Start(t, coordinatortest.Options{})
	dead := coordinatortest.DeadURL(t)
	key := m.Key(controlapi.KeyCreateRequest{Kind: "agent"})
	dir := filepath.Join(t.TempDir(), "fraud")
	if _, err := controlclient.Join(context.Background(), controlclient.JoinOptions{AuthKey: key, Name: "fraud", State: dir, Coordinators: []string{dead}}); err != nil {
		t.Fatalf("join with the first coordinator down: %v", err)
	}
	d, _ := nodestate.Open(dir)
	cfg, err := d.Config()
	if err != nil || cfg.CoordinatorURL != m.URL() || !slices.Equal(cfg.Known(), []string{m.URL()}) {
		t.Fatalf("config %+v, %v; want joined through %s, knowing what its netmap lists", cfg, err, m.URL())
	}
}

func TestJoinStopsAtACoordinatorThatDoesNotHoldThePinnedCA(t *testing.T) {
	m := coordinatortest.Start(t, coordinatortest.Options{})
	impostor := startCoordinator(t, pkitest.NewCA(t, pkitest.TrustDomain, time.Now()), listNodes("impostor"))
	key := m.Key(controlapi.KeyCreateRequest{Kind: "agent"})
	dir := filepath.Join(t.TempDir(), "fraud")
	_, err := controlclient.Join(context.Background(), controlclient.JoinOptions{AuthKey: key, Name: "fraud", State: dir, Coordinators: []string{impostor.url}})
	if !errors.Is(err, pki.ErrFingerprintMismatch) || !strings.Contains(err.Error(), impostor.url) {
		t.Fatalf("join through an impostor first = %v, want the fingerprint mismatch naming it", err)
	}
	// The key was not tried elsewhere: it still joins.
	if _, err := controlclient.Join(context.Background(), controlclient.JoinOptions{AuthKey: key, Name: "fraud", State: dir}); err != nil {
		t.Fatalf("join with the key afterwards: %v", err)
	}
}

func TestJoinRefusesACoordinatorURLNotInCanonicalForm(t *testing.T) {
	m := coordinatortest.Start(t, coordinatortest.Options{})
	key := m.Key(controlapi.KeyCreateRequest{Kind: "agent", Reusable: true})
	for _, u := range []string{"http://127.0.0.1:1", "https://127.0.0.1:1/api", "127.0.0.1:1"} {
		_, err := controlclient.Join(context.Background(), controlclient.JoinOptions{
			AuthKey: key, Name: "fraud", State: filepath.Join(t.TempDir(), "fraud"), Coordinators: []string{u}})
		if err == nil || !strings.Contains(err.Error(), "is not https://HOST:PORT") {
			t.Errorf("join through %q = %v, want the URL refused", u, err)
		}
	}
}
