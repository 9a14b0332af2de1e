package controlclient

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"testing"
	"time"

	"github.com/agentmesh/agentmesh/internal/audit"
	"github.com/agentmesh/agentmesh/internal/audit/audittest"
	"github.com/agentmesh/agentmesh/internal/controlapi"
)

// answer is what an honest coordinator answers for events stored at seqs
// 1..n, signed with key.
func answer(t *testing.T, key ed25519.PrivateKey, events []audit.Event) controlapi.AuditIngestResponse {
	t.Helper()
	seqs := make([]int64, len(events))
	hashes := make([]audit.Hash, len(events))
	for i := range events {
		c, err := audit.Canonical(&events[i])
		if err != nil {
			t.Fatal(err)
		}
		seqs[i], hashes[i] = int64(i+1), sha256.Sum256(c)
	}
	r, err := audit.SignReceipt(key, int64(len(events)), audit.Hash{1}, time.Now(), audit.NewBatchCommit(seqs, hashes))
	if err != nil {
		t.Fatal(err)
	}
	return controlapi.AuditIngestResponse{Received: len(events), Added: len(events), Receipt: r}
}

func TestCheckIngestRefusesAnAnswerThatDoesNotProveTheBatchKept(t *testing.T) {
	pub, key, _ := ed25519.GenerateKey(rand.Reader)
	_, otherKey, _ := ed25519.GenerateKey(rand.Reader)
	sent := audittest.Events(0, 4, time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC))
	if err := checkIngest(ptr(answer(t, key, sent)), sent, pub); err != nil {
		t.Fatalf("an honest answer: %v", err)
	}
	for name, edit := range map[string]func(*controlapi.AuditIngestResponse){
		"fewer received":      func(r *controlapi.AuditIngestResponse) { r.Received = 3 },
		"fewer accounted for": func(r *controlapi.AuditIngestResponse) { r.Added = 3 },
		"negative duplicates": func(r *controlapi.AuditIngestResponse) { r.Added, r.Duplicates = 5, -1 },
		"a conflict out of range": func(r *controlapi.AuditIngestResponse) {
			r.Added, r.Conflicts = 3, []audit.Conflict{{Index: 4, ID: sent[3].ID}}
		},
		"a conflict of another id": func(r *controlapi.AuditIngestResponse) {
			r.Added, r.Conflicts = 3, []audit.Conflict{{Index: 1, ID: sent[2].ID}}
		},
		"a receipt without batch": func(r *controlapi.AuditIngestResponse) { r.Receipt.Batch = nil },
		"a receipt of other events": func(r *controlapi.AuditIngestResponse) {
			other := append([]audit.Event(nil), sent...)
			other[2].Reason = "rewritten"
			r.Receipt = answer(t, key, other).Receipt
		},
		"a receipt of fewer events": func(r *controlapi.AuditIngestResponse) { r.Receipt = answer(t, key, sent[:3]).Receipt },
		"a receipt by another key":  func(r *controlapi.AuditIngestResponse) { r.Receipt = answer(t, otherKey, sent).Receipt },
		"no receipt":                func(r *controlapi.AuditIngestResponse) { r.Receipt = audit.Receipt{} },
	} {
		resp := answer(t, key, sent)
		edit(&resp)
		if err := checkIngest(&resp, sent, pub); !errors.Is(err, audit.ErrNotKept) {
			t.Errorf("%s: checkIngest = %v, want ErrNotKept", name, err)
		}
	}
}

func ptr[T any](v T) *T { return &v }
