package node

import (
	"log/slog"

	"github.com/agentmesh/agentmesh/internal/netmap"
	"github.com/agentmesh/agentmesh/internal/policy"
)

// sameShadow reports whether a and b compile to the same shadow policy.
func sameShadow(a, b *netmap.Policy) bool {
	if a == nil || b == nil {
		return a == b
	}
	return samePolicy(*a, *b)
}

// compileShadow compiles a netmap's shadow policy: nil and "" when there
// is none; nil and its version when it does not compile here. Unlike the
// active policy, a failure denies nothing: the shadow never decides.
func compileShadow(p *netmap.Policy, log *slog.Logger) (*policy.Policy, string) {
	if p == nil || p.Version == 0 {
		return nil, ""
	}
	version := netmap.ShadowVersion(p.Version)
	pol, err := compileAs(p, version)
	if err != nil {
		log.Error("node: shadow policy does not compile here; recording its decisions as errors", "version", p.Version, "err", err)
		return nil, version
	}
	return pol, ""
}

// compileAs compiles the netmap's policy p (a gateway's projection, or a
// whole document) under version.
func compileAs(p *netmap.Policy, version string) (*policy.Policy, error) {
	if p.Projected() {
		return policy.CompileProjection(policy.Projection{Document: []byte(p.Document), Grants: p.Grants, Limits: p.Limits}, version)
	}
	return policy.Compile([]byte(p.Document), version)
}
