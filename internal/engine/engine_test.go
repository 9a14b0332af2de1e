package engine

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/agentmesh/agentmesh/internal/identity"
)

// TestServeGatewayRefusesIncompleteConfigurations: each mistake is an
// ErrConfig (the CLI's usage error) before anything starts.
func TestServeGatewayRefusesIncompleteConfigurations(t *testing.T) {
	for name, cfg := range map[string]GatewayConfig{
		"no state":         {Listen: "127.0.0.1:0", UpstreamURL: "http://127.0.0.1:1/mcp"},
		"no upstream":      {State: t.TempDir(), Listen: "127.0.0.1:0"},
		"two upstreams":    {State: t.TempDir(), Listen: "127.0.0.1:0", UpstreamURL: "http://127.0.0.1:1/mcp", UpstreamCommand: []string{"cat"}},
		"nothing to serve": {State: t.TempDir(), UpstreamURL: "http://127.0.0.1:1/mcp"},
		"bad tailnet rules": {State: t.TempDir(), UpstreamURL: "http://127.0.0.1:1/mcp",
			Tailnet: &TailnetConfig{Rules: "everyone"}},
	} {
		err := ServeGateway(context.Background(), cfg)
		if !errors.Is(err, ErrConfig) && !(cfg.Tailnet != nil && !TailnetBuilt && errors.Is(err, ErrNoTailnet)) {
			t.Errorf("%s: %v, want ErrConfig", name, err)
		}
	}
}

// TestConnectRefusesIncompleteConfigurations: a service that does not
// parse, a model without a listener, no state over mTLS, stdio without
// streams; a listener passed in is closed.
func TestConnectRefusesIncompleteConfigurations(t *testing.T) {
	for name, cfg := range map[string]ConnectConfig{
		"bad service":           {State: t.TempDir(), Service: "agent:x", Listen: "127.0.0.1:0"},
		"model over stdio":      {State: t.TempDir(), Service: "model:llm", Stdin: strings.NewReader(""), Stdout: &strings.Builder{}},
		"no state":              {Service: "files", Listen: "127.0.0.1:0"},
		"stdio without streams": {State: t.TempDir(), Service: "files"},
	} {
		if err := Connect(context.Background(), cfg); !errors.Is(err, ErrConfig) {
			t.Errorf("%s: %v, want ErrConfig", name, err)
		}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if err := Connect(context.Background(), ConnectConfig{Service: "agent:x", Listener: ln}); !errors.Is(err, ErrConfig) {
		t.Fatalf("bad service with a listener: %v", err)
	}
	if _, err := ln.Accept(); err == nil {
		t.Fatal("the listener given to a refused Connect is still open")
	}
}

func TestCheckTailnetRefusesWhatTheTailnetWouldNot(t *testing.T) {
	if !TailnetBuilt {
		if err := CheckTailnet(TailnetConfig{}, true); !errors.Is(err, ErrNoTailnet) {
			t.Fatalf("lean build: %v, want ErrNoTailnet", err)
		}
		return
	}
	for name, tc := range map[string]struct {
		c       TailnetConfig
		gateway bool
	}{
		"port":                 {TailnetConfig{Port: 70000}, true},
		"tag":                  {TailnetConfig{Tags: []string{"Not A Tag"}}, true},
		"hostname":             {TailnetConfig{Hostname: "-x"}, false},
		"rules of a connector": {TailnetConfig{Rules: RulesTailnet}, false},
		"unknown rules":        {TailnetConfig{Rules: "all"}, true},
	} {
		if err := CheckTailnet(tc.c, tc.gateway); !errors.Is(err, ErrConfig) {
			t.Errorf("%s: %v, want ErrConfig", name, err)
		}
	}
	if err := CheckTailnet(TailnetConfig{Hostname: "tools", Tags: []string{"tag:mcp"}, Port: 8080, Rules: RulesTailnet}, true); err != nil {
		t.Fatalf("a valid gateway configuration: %v", err)
	}
}

func TestParseServiceReadsNamesWithAnOptionalServingKind(t *testing.T) {
	for in, want := range map[string]struct {
		kind identity.Kind
		name identity.Name
	}{
		"files":      {"", "files"},
		"tool:files": {identity.KindTool, "files"},
		"model:llm":  {identity.KindModel, "llm"},
	} {
		k, n, err := ParseService(in)
		if err != nil || k != want.kind || n != want.name {
			t.Errorf("%q: %s %s %v", in, k, n, err)
		}
	}
	for _, bad := range []string{"", "agent:x", "admin:coordinator", "tool:", "Files", "tool:a/b"} {
		if _, _, err := ParseService(bad); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
}

// TestLocalAuthWritesAPrivateTokenAndRemovesIt: a TCP endpoint gets a
// token file of mode 0600 in the state directory, gone when the endpoint
// stops; NoToken and a Unix socket get none.
func TestLocalAuthWritesAPrivateTokenAndRemovesIt(t *testing.T) {
	state := t.TempDir()
	if err := os.Chmod(state, 0o700); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	s := Serving{API: "mcp"}
	auth, done, err := localAuth(&s, state, ln, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(s.TokenFile)
	if err != nil || fi.Mode().Perm() != 0o600 || filepath.Dir(s.TokenFile) != state || auth.Token == "" || auth.NoToken {
		t.Fatalf("token file %s (%v, %v), auth %+v", s.TokenFile, fi, err, auth)
	}
	b, _ := os.ReadFile(s.TokenFile)
	if string(b) != auth.Token || s.Network != "http" || s.URL != "http://"+ln.Addr().String()+"/mcp" {
		t.Fatalf("file holds %q, serving %+v", b, s)
	}
	done()
	if _, err := os.Stat(s.TokenFile); !os.IsNotExist(err) {
		t.Fatalf("token file left after the endpoint stopped: %v", err)
	}
	s = Serving{API: "model"}
	if auth, _, err := localAuth(&s, "", ln, true, nil); err != nil || !auth.NoToken || s.TokenFile != "" || !s.NoToken || !strings.HasSuffix(s.URL, "/v1") {
		t.Fatalf("NoToken: %+v %+v %v", auth, s, err)
	}
	s = Serving{API: "mcp"}
	if _, _, err := localAuth(&s, "", ln, false, nil); !errors.Is(err, ErrConfig) {
		t.Fatalf("a token without a state directory: %v", err)
	}
}
