package gateway

import (
	"testing"

	"github.com/agentmesh/agentmesh/internal/audit"
	"github.com/agentmesh/agentmesh/internal/reason"
)

// shadowState is the fixture's state enforcing active, with shadow as the
// shadow policy.
func (f *fixture) shadowState(active, shadow string) {
	st := f.state(active)
	st.Shadow = compile(f.t, shadow, "shadow-4")
	f.gw.Update(st)
}

// TestGatewayEnforcesActivePolicyAndRecordsShadowDenial: the shadow
// denies echo, the active policy allows it. The call is allowed and
// answered; its event carries the shadow's denial. A call both allow
// carries no shadow fields.
func TestGatewayEnforcesActivePolicyAndRecordsShadowDenial(t *testing.T) {
	f := newFixture(t, fixtureOpts{})
	f.shadowState(basePolicy, noEchoPolicy)
	ctx := testContext(t)
	cs := f.connect(ctx, f.fraud, "2025-11-25", nil)
	if got, err := callText(ctx, cs, "echo", map[string]any{"text": "shadowed"}); err != nil || got != "shadowed" {
		t.Fatalf("echo = %q, %v; the active policy allows it", got, err)
	}
	ev, err := f.rec.WaitFor(ctx, func(e audit.Event) bool { return e.Kind == audit.KindRequest && e.Tool == "echo" })
	if err != nil {
		t.Fatal(err)
	}
	if ev.Decision != audit.Allow || ev.Rule != "0" {
		t.Fatalf("event = %+v, want the active allow", ev)
	}
	want := audit.ShadowDecision{Decision: audit.Deny, Reason: reason.NotGranted, PolicyVersion: "shadow-4"}
	if ev.Shadow == nil || *ev.Shadow != want {
		t.Fatalf("shadow = %+v, want %+v", ev.Shadow, want)
	}
	if _, err := callText(ctx, cs, "query", map[string]any{"sql": "select 1"}); err != nil {
		t.Fatal(err)
	}
	ev, err = f.rec.WaitFor(ctx, func(e audit.Event) bool { return e.Kind == audit.KindRequest && e.Tool == "query" })
	if err != nil {
		t.Fatal(err)
	}
	if ev.Decision != audit.Allow || ev.Shadow != nil {
		t.Fatalf("query event = %+v (shadow %+v); both allow, so no shadow fields", ev, ev.Shadow)
	}
}

// TestGatewayRecordsShadowAllowOfActiveDenial: the active policy denies
// echo, the shadow would allow it; the call stays denied.
func TestGatewayRecordsShadowAllowOfActiveDenial(t *testing.T) {
	f := newFixture(t, fixtureOpts{})
	f.shadowState(noEchoPolicy, basePolicy)
	ctx := testContext(t)
	cs := f.connect(ctx, f.fraud, "2025-11-25", nil)
	_, err := callText(ctx, cs, "echo", map[string]any{"text": "x"})
	if err == nil {
		t.Fatal("echo allowed; the active policy denies it")
	}
	if d := denialOf(t, err); d.Reason != reason.NotGranted {
		t.Fatalf("denial = %+v", d)
	}
	ev, err := f.rec.WaitFor(ctx, func(e audit.Event) bool { return e.Kind == audit.KindRequest && e.Tool == "echo" })
	if err != nil {
		t.Fatal(err)
	}
	if ev.Decision != audit.Deny || ev.Shadow == nil || ev.Shadow.Decision != audit.Allow || ev.Shadow.Rule != "0" || ev.Shadow.PolicyVersion != "shadow-4" {
		t.Fatalf("event = %+v, shadow %+v", ev, ev.Shadow)
	}
}

// TestGatewayRecordsShadowThatFailedAsErrorAndEnforcesActive: a shadow
// that could not be compiled at the node is recorded as an error on every
// decided request; the active decision stands.
func TestGatewayRecordsShadowThatFailedAsErrorAndEnforcesActive(t *testing.T) {
	f := newFixture(t, fixtureOpts{})
	st := f.state(basePolicy)
	st.ShadowFailed = "shadow-9"
	f.gw.Update(st)
	ctx := testContext(t)
	cs := f.connect(ctx, f.fraud, "2025-11-25", nil)
	if _, err := callText(ctx, cs, "echo", map[string]any{"text": "x"}); err != nil {
		t.Fatal(err)
	}
	ev, err := f.rec.WaitFor(ctx, func(e audit.Event) bool { return e.Kind == audit.KindRequest && e.Tool == "echo" })
	if err != nil {
		t.Fatal(err)
	}
	if ev.Decision != audit.Allow || ev.Shadow == nil || ev.Shadow.Decision != audit.ShadowError || ev.Shadow.PolicyVersion != "shadow-9" {
		t.Fatalf("event = %+v, shadow %+v", ev, ev.Shadow)
	}
	if err := ev.Validate(); err != nil {
		t.Fatalf("the event does not validate: %v", err)
	}
}
