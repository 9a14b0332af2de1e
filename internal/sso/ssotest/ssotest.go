// Package ssotest runs a real OpenID Connect provider in process for
// tests: zitadel/oidc's op package (discovery, signed ID tokens, the
// device authorization flow of RFC 8628) over the in-memory storage that
// the zitadel module ships for its example server, with this package's
// people and their e-mail and groups claims. No token here is minted by
// hand: every one comes out of the provider's token endpoint.
package ssotest

import (
	"context"
	"crypto/rand"
	"net"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/zitadel/oidc/v3/example/server/storage"
	"github.com/zitadel/oidc/v3/pkg/oidc"
	"github.com/zitadel/oidc/v3/pkg/op"
	"golang.org/x/text/language"
)

// Person is a user of the test provider.
type Person struct {
	ID, Email string
	// Unverified marks the e-mail address email_verified: false.
	Unverified bool
	Groups     []string
	// Claims are further claims of the person's ID tokens ("upn", say).
	Claims map[string]any
}

// Provider is a running OpenID Connect provider.
type Provider struct {
	// Issuer is its issuer URL (http://127.0.0.1:PORT).
	Issuer string
	// Clients are the device clients' ids: ClientID and OtherClientID,
	// each with the secret Secret.
	ClientID, OtherClientID, Secret string

	store *store
	srv   *http.Server
}

// GroupsClaim is the claim the provider lists groups in.
const GroupsClaim = "groups"

// Start runs a provider on 127.0.0.1 with people; it stops at the end of
// the test.
func Start(t testing.TB, people ...Person) *Provider {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &Provider{Issuer: "http://" + ln.Addr().String(), ClientID: "agentmesh", OtherClientID: "another-app", Secret: "test-secret"}
	users := users{m: map[string]*storage.User{}, people: map[string]Person{}}
	for _, pe := range people {
		users.m[pe.ID] = &storage.User{ID: pe.ID, Username: pe.ID, Email: pe.Email, EmailVerified: !pe.Unverified, PreferredLanguage: language.English}
		users.people[pe.ID] = pe
	}
	clients := map[string]*storage.Client{
		p.ClientID:      storage.DeviceClient(p.ClientID, p.Secret),
		p.OtherClientID: storage.DeviceClient(p.OtherClientID, p.Secret),
	}
	p.store = &store{Storage: storage.NewStorageWithClients(users, clients), users: users}
	var key [32]byte
	if _, err := rand.Read(key[:]); err != nil {
		t.Fatal(err)
	}
	cfg := &op.Config{
		CryptoKey:          key,
		SupportedUILocales: []language.Tag{language.English},
		DeviceAuthorization: op.DeviceAuthorizationConfig{
			Lifetime:     5 * time.Minute,
			PollInterval: 1 * time.Second,
			UserFormPath: "/device",
			UserCode:     op.UserCodeBase20,
		},
	}
	h, err := op.NewProvider(cfg, p.store, op.StaticIssuer(p.Issuer), op.WithAllowInsecure())
	if err != nil {
		t.Fatal(err)
	}
	p.srv = &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	done := make(chan struct{})
	go func() { defer close(done); p.srv.Serve(ln) }()
	t.Cleanup(func() {
		p.srv.Close()
		<-done
	})
	return p
}

// Approve completes a pending device authorization for the person with
// this id, as their browser would after they signed in and entered code.
func (p *Provider) Approve(ctx context.Context, userCode, personID string) error {
	return p.store.CompleteDeviceAuthorization(ctx, userCode, personID)
}

var codeRE = regexp.MustCompile(`enter the code ([A-Z0-9-]+)`)

// CodeWriter collects what a sign-in prints and hands out the user code
// once it is printed.
type CodeWriter struct {
	mu   sync.Mutex
	buf  strings.Builder
	code chan string
	sent bool
}

// NewCodeWriter returns an empty CodeWriter.
func NewCodeWriter() *CodeWriter { return &CodeWriter{code: make(chan string, 1)} }

func (w *CodeWriter) Write(b []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf.Write(b)
	if m := codeRE.FindStringSubmatch(w.buf.String()); m != nil && !w.sent {
		w.sent = true
		w.code <- m[1]
	}
	return len(b), nil
}

// String is everything written.
func (w *CodeWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}

// ApproveWhenPrinted waits (until ctx ends) for the user code to be
// printed to w and approves it for personID; it returns the error, if
// any, for the test to check.
func (p *Provider) ApproveWhenPrinted(ctx context.Context, w *CodeWriter, personID string) error {
	select {
	case code := <-w.code:
		return p.Approve(ctx, code, personID)
	case <-ctx.Done():
		return ctx.Err()
	}
}

// users is the example storage's UserStore over this test's people.
type users struct {
	m      map[string]*storage.User
	people map[string]Person
}

func (u users) GetUserByID(id string) *storage.User { return u.m[id] }
func (u users) GetUserByUsername(n string) *storage.User {
	return u.m[n]
}
func (u users) ExampleClientID() string { return "" }

// store is the example storage with this test's claims in ID tokens: the
// e-mail address, whether it is verified, and the groups.
type store struct {
	*storage.Storage
	users users
}

func (s *store) SetUserinfoFromScopes(ctx context.Context, info *oidc.UserInfo, userID, clientID string, scopes []string) error {
	pe, ok := s.users.people[userID]
	if !ok {
		return nil
	}
	info.Email = pe.Email
	info.EmailVerified = oidc.Bool(!pe.Unverified)
	if pe.Groups != nil {
		info.AppendClaims(GroupsClaim, pe.Groups)
	}
	for k, v := range pe.Claims {
		info.AppendClaims(k, v)
	}
	return nil
}

// WhileApproving runs signIn, a sign-in that prints its user code to the
// writer it is given, while the provider approves that code for the
// person with personID, as their browser would. It returns signIn's
// error; a failed approval fails the test.
func (p *Provider) WhileApproving(t testing.TB, personID string, signIn func(out *CodeWriter) error) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out := NewCodeWriter()
	approved := make(chan error, 1)
	go func() { approved <- p.ApproveWhenPrinted(ctx, out, personID) }()
	err := signIn(out)
	cancel()
	if aerr := <-approved; err == nil && aerr != nil {
		t.Fatalf("approve the sign-in of %s: %v", personID, aerr)
	}
	return err
}
