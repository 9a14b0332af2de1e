package cli

import (
	"context"
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	"github.com/agentmesh/agentmesh/internal/controlapi"
	"github.com/agentmesh/agentmesh/internal/controlclient"
	"github.com/agentmesh/agentmesh/internal/coordinator"
	"github.com/agentmesh/agentmesh/internal/demo"
)

func TestConnectModelWithoutListenIsUsageError(t *testing.T) {
	code, _, errOut := run(t, nil, "connect", "model:llm", "--state", t.TempDir())
	if code != 2 || !strings.Contains(errOut, "--listen") {
		t.Fatalf("exit status %d, stderr %q; want 2 and a hint to use --listen", code, errOut)
	}
}

func TestServeModelNodeRefusesCommandUpstream(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	dir := t.TempDir()
	co, err := coordinator.Start(ctx, coordinator.Config{DataDir: filepath.Join(dir, "coordinator"), Listen: "127.0.0.1:0", Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer co.Close()
	d := &demo.Mesh{}
	admin, err := d.Client(co.AdminDir())
	if err != nil {
		t.Fatal(err)
	}
	var key controlapi.KeyCreateResponse
	if err := admin.Call(ctx, http.MethodPost, controlapi.PathKeys, controlapi.KeyCreateRequest{Kind: "model"}, &key); err != nil {
		t.Fatal(err)
	}
	state := filepath.Join(dir, "llm")
	if _, err := controlclient.Join(ctx, controlclient.JoinOptions{AuthKey: key.Key, Name: "llm", State: state}); err != nil {
		t.Fatal(err)
	}
	code, _, errOut := run(t, nil, "serve", "--state", state, "--", "cat")
	if code != 2 || !strings.Contains(errOut, "--upstream") {
		t.Fatalf("exit status %d, stderr %q; want 2 and a hint to use --upstream", code, errOut)
	}
}
