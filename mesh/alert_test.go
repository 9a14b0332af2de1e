package mesh_test

import (
	"testing"
	"time"

	"github.com/agentmesh/agentmesh/internal/alert"
	"github.com/agentmesh/agentmesh/mesh"
)

func TestVerifyAlertChecksTheCoordinatorsSignature(t *testing.T) {
	secret, body, now := []byte("receiver-secret-0123456789"), []byte(`{"kind":"denials"}`), time.Now()
	h := alert.Sign(secret, body, now)
	if err := mesh.VerifyAlert(secret, h, body, now, 0); err != nil {
		t.Fatal(err)
	}
	if mesh.VerifyAlert(secret, h, []byte(`{"kind":"other"}`), now, 0) == nil {
		t.Fatal("a changed body verified")
	}
	if mesh.VerifyAlert(secret, h, body, now.Add(time.Hour), 0) == nil {
		t.Fatal("a delivery an hour old verified")
	}
}
