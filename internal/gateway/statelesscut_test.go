package gateway

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/agentmesh/agentmesh/internal/audit"
	"github.com/agentmesh/agentmesh/internal/delegation"
	"github.com/agentmesh/agentmesh/internal/reason"
)

// statelessKinds are the upstream kinds that serve stateless (2026-07-28)
// calls: a stdio upstream answers them with the unsupported-version error
// (clients fall back to a session), so it has none to cut.
var statelessKinds = upstreamKinds[:2]

// wantRunning checks that a call in flight has not ended.
func wantRunning(t *testing.T, name string, a <-chan cutAnswer) {
	t.Helper()
	select {
	case got := <-a:
		t.Fatalf("%s ended: %d %s %v", name, got.status, got.body, got.err)
	default:
	}
}

// wantAnswered checks that a call ended with its result, not with a cut.
func wantAnswered(t *testing.T, ctx context.Context, name string, a <-chan cutAnswer) {
	t.Helper()
	select {
	case got := <-a:
		if got.err != nil || !strings.Contains(string(got.body), `"result"`) || strings.Contains(string(got.body), "access ended") {
			t.Errorf("%s: %d %s %v, want its result", name, got.status, got.body, got.err)
		}
	case <-ctx.Done():
		t.Fatalf("%s never answered", name)
	}
}

// cutEvents counts the session events recording the cut of a stateless
// request of the delegation id with why.
func (f *fixture) cutEvents(why reason.Code, id string) int {
	n := 0
	for _, e := range f.rec.Events() {
		if e.Kind == audit.KindSession && e.Session == "" && e.Reason == why && e.OnBehalfOf != nil && e.OnBehalfOf.Delegation == id {
			n++
		}
	}
	return n
}

func TestGatewayCutsStatelessCallsOfARevokedDelegation(t *testing.T) {
	for _, k := range statelessKinds {
		t.Run(k.name, func(t *testing.T) {
			f := newFixture(t, k.o)
			t.Cleanup(f.up.Calls.Release) // before the gateway stops
			f.gw.Update(f.delegState(waitPolicy, nil, nil))
			ctx := testContext(t)
			alice, aliceID := f.delegate(t, delegOpts{})
			alice2, alice2ID := f.delegate(t, delegOpts{})
			cl := f.delegClient(f.fraud, alice)
			streaming := f.startWait(t, ctx, cl, "", 61, 1, nil)
			// A call whose answer has not started: no notification.
			pending := f.startWait(t, ctx, cl, "", 62, 0, f.waitCalls(""))
			// Another delegation's call, and the node's own.
			other := f.startWait(t, ctx, f.delegClient(f.fraud, alice2), "", 63, 1, nil)
			own := f.startWait(t, ctx, f.httpClient(f.fraud), "", 64, 1, nil)

			f.gw.Update(f.delegState(waitPolicy, []string{aliceID}, nil))
			f.wantCut(t, ctx, streaming, 61, reason.DelegationRevoked, audit.KindSession, false)
			f.wantCut(t, ctx, pending, 62, reason.DelegationRevoked, audit.KindSession, true)
			wantRunning(t, "another delegation's call", other)
			wantRunning(t, "the node's own call", own)
			// Once per cut request, not again on the next netmap.
			f.gw.Update(f.delegState(waitPolicy, []string{aliceID}, nil))
			if n := f.cutEvents(reason.DelegationRevoked, aliceID); n != 2 {
				t.Errorf("%d cut events for the revoked delegation, want one per request (2)", n)
			}

			// Revoking the person cuts every delegation of theirs.
			f.gw.Update(f.delegState(waitPolicy, []string{aliceID}, []string{"alice@example.com"}))
			f.wantCut(t, ctx, other, 63, reason.DelegationRevoked, audit.KindSession, false)
			if n := f.cutEvents(reason.DelegationRevoked, alice2ID); n != 1 {
				t.Errorf("%d cut events for the revoked person's delegation, want 1", n)
			}
			wantRunning(t, "the node's own call", own)
			f.up.Calls.Release()
			wantAnswered(t, ctx, "the node's own call", own)
		})
	}
}

func TestGatewayCutsStatelessCallsAtTheirDelegationsExpiry(t *testing.T) {
	f := newFixture(t, fixtureOpts{})
	t.Cleanup(f.up.Calls.Release)
	f.gw.Update(f.delegState(waitPolicy, nil, nil))
	ctx := testContext(t)
	// A delegation the gateway stops accepting in a few seconds (its
	// expiry plus the allowed skew), and one that lasts.
	now := time.Now()
	exp := now.Add(-delegation.DefaultSkew + 4*time.Second)
	short, shortID := f.delegate(t, delegOpts{iat: exp.Add(-time.Minute), exp: exp})
	long, _ := f.delegate(t, delegOpts{})
	expiring := f.startWait(t, ctx, f.delegClient(f.fraud, short), "", 71, 1, nil)
	lasting := f.startWait(t, ctx, f.delegClient(f.fraud, long), "", 72, 1, nil)
	f.wantCut(t, ctx, expiring, 71, reason.DelegationExpired, audit.KindSession, false)
	if n := f.cutEvents(reason.DelegationExpired, shortID); n != 1 {
		t.Errorf("%d expiry events, want 1", n)
	}
	wantRunning(t, "the lasting delegation's call", lasting)
	f.up.Calls.Release()
	wantAnswered(t, ctx, "the lasting delegation's call", lasting)
}
