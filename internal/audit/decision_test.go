package audit

import (
	"encoding/json"
	"testing"
	"time"
)

func TestStampFillsOnlyWhatTheRecorderLeftOpenInUTC(t *testing.T) {
	at := time.Date(2030, 1, 2, 3, 4, 5, 6, time.FixedZone("x", -7200))
	var e Event
	e.Stamp(at)
	if e.V != SchemaVersion || !validID(e.ID) || !e.Time.Equal(at) || e.Time.Location() != time.UTC {
		t.Fatalf("stamped %+v", e)
	}
	id, first := e.ID, e.Time
	e.V = 0
	e.Stamp(at.Add(time.Hour))
	if e.ID != id || !e.Time.Equal(first) || e.V != SchemaVersion {
		t.Fatalf("a second stamp changed the id or time, or left the version: %+v", e)
	}
}

func TestOutcomeOfStatusClassifiesTheUpstreamsAnswer(t *testing.T) {
	for status, want := range map[int]Outcome{
		200: OutcomeOK, 202: OutcomeOK, 204: OutcomeOK,
		304: OutcomeClientError, 400: OutcomeClientError, 404: OutcomeClientError, 429: OutcomeClientError,
		500: OutcomeUpstreamError, 502: OutcomeUpstreamError, 503: OutcomeUpstreamError,
	} {
		if got := OutcomeOfStatus(status); got != want {
			t.Errorf("OutcomeOfStatus(%d) = %q, want %q", status, got, want)
		}
	}
}

// TestTypedDecisionAndOutcomeEncodeAsTheStringsTheyWere: the types are
// strings underneath, so events written before them decode and encode to
// the same bytes.
func TestTypedDecisionAndOutcomeEncodeAsTheStringsTheyWere(t *testing.T) {
	in := `{"decision":"deny","reason":"unknown_peer","outcome":"refused"}`
	var e struct {
		Decision Decision `json:"decision"`
		Reason   string   `json:"reason"`
		Outcome  Outcome  `json:"outcome"`
	}
	if err := json.Unmarshal([]byte(in), &e); err != nil {
		t.Fatal(err)
	}
	if e.Decision != Deny || e.Outcome != OutcomeRefused {
		t.Fatalf("decoded %+v", e)
	}
	out, _ := json.Marshal(e)
	if string(out) != in {
		t.Fatalf("encoded %s, want %s", out, in)
	}
}
