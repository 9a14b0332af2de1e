package audit

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"
)

func TestCanonicalRoundTripsToIdenticalBytes(t *testing.T) {
	zone := time.FixedZone("X", 5*3600+1800)
	tests := []struct {
		name string
		e    Event
	}{
		{"request", testEvent(1)},
		{"non-UTC time with nanoseconds", func() Event {
			e := testEvent(2)
			e.Time = time.Date(2026, 5, 6, 7, 8, 9, 123456789, zone)
			return e
		}()},
		{"HTML and unicode in detail", func() Event {
			e := testEvent(3)
			e.Kind, e.Action, e.Detail = KindAdmin, "policy.apply", "<b>&amp;</b> \u2028 ünïcödé \"quoted\"\n"
			return e
		}()},
		{"usage with zeros", func() Event {
			e := testEvent(4)
			e.Model, e.Usage = "llama-3", &Usage{}
			return e
		}()},
		{"seq is not canonical", func() Event {
			e := testEvent(5)
			e.Seq = 42
			return e
		}()},
		{"aggregate with count and a non-UTC first time", func() Event {
			e := testEvent(6)
			e.Kind, e.Decision, e.Reason = KindConnection, Deny, "tls_version"
			e.Count, e.First = 12345, time.Date(2026, 5, 6, 7, 8, 0, 987654321, zone)
			e.Time = e.First.Add(59 * time.Second)
			return e
		}()},
		{"integrity event", func() Event {
			e := testEvent(7)
			e.Kind, e.Decision, e.Reason, e.Target = KindIntegrity, Deny, ReasonIDConflict, "0123456789abcdef0123456789abcdef"
			e.Detail = `{"rejected":{"v":1,"id":"x"}}`
			return e
		}()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			first, err := Canonical(&tt.e)
			if err != nil {
				t.Fatal(err)
			}
			if bytes.Contains(first, []byte(`"seq"`)) {
				t.Fatalf("canonical bytes contain seq: %s", first)
			}
			dec, err := DecodeEvent(first)
			if err != nil {
				t.Fatal(err)
			}
			second, err := Canonical(&dec)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(first, second) {
				t.Fatalf("round trip changed bytes:\n%s\n%s", first, second)
			}
			if !dec.Time.Equal(tt.e.Time) || dec.Time.Location() != time.UTC {
				t.Fatalf("time %v, want %v in UTC", dec.Time, tt.e.Time)
			}
		})
	}
}

func TestValidateRejectsGarbage(t *testing.T) {
	tests := []struct {
		name string
		edit func(*Event)
	}{
		{"wrong version", func(e *Event) { e.V = 2 }},
		{"short id", func(e *Event) { e.ID = "abc" }},
		{"upper-case id", func(e *Event) { e.ID = "ABCDEF" + strings.Repeat("0", 26) }},
		{"non-hex id", func(e *Event) { e.ID = strings.Repeat("z", 32) }},
		{"unknown kind", func(e *Event) { e.Kind = "party" }},
		{"no time", func(e *Event) { e.Time = time.Time{} }},
		{"time beyond int64 nanoseconds", func(e *Event) { e.Time = time.Date(2300, 1, 1, 0, 0, 0, 0, time.UTC) }},
		{"unknown decision", func(e *Event) { e.Decision = "maybe" }},
		{"negative latency", func(e *Event) { e.LatencyUS = -1 }},
		{"negative usage", func(e *Event) { e.Usage = &Usage{TotalTokens: -5} }},
		{"invalid UTF-8", func(e *Event) { e.Tool = "\xff\xfe" }},
		{"long field", func(e *Event) { e.Src = strings.Repeat("a", maxFieldLen+1) }},
		{"oversized event", func(e *Event) { e.Detail = strings.Repeat("d", MaxEventSize) }},
		{"oversized integrity event", func(e *Event) {
			e.Kind, e.Detail = KindIntegrity, strings.Repeat("d", maxIntegritySize)
		}},
		{"negative count", func(e *Event) { e.Count, e.First = -1, e.Time }},
		{"count without first", func(e *Event) { e.Count = 3 }},
		{"first without count", func(e *Event) { e.First = e.Time }},
		{"first after time", func(e *Event) { e.Count, e.First = 2, e.Time.Add(time.Second) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := testEvent(1)
			tt.edit(&e)
			if err := e.Validate(); !errors.Is(err, ErrInvalidEvent) {
				t.Fatalf("Validate = %v, want ErrInvalidEvent", err)
			}
		})
	}
	ok := testEvent(1)
	if err := ok.Validate(); err != nil {
		t.Fatalf("valid event rejected: %v", err)
	}
}

// TestCanonicalOfExistingEventsIsUnchanged pins the canonical bytes of an
// event written before Count and First existed: the chain of every stored
// trail hashes these bytes, so a new field must never change them.
func TestCanonicalOfExistingEventsIsUnchanged(t *testing.T) {
	e := testEvent(1)
	got, err := Canonical(&e)
	if err != nil {
		t.Fatal(err)
	}
	const want = `{"v":1,"id":"00000000000000000000000000000002","time":"2026-03-01T12:00:01Z","kind":"request",` +
		`"src":"spiffe://mesh.test/agent/a1","src_addr":"127.0.0.1:40000","dst":"spiffe://mesh.test/tool/t1",` +
		`"method":"tools/call","tool":"tool1","decision":"deny","reason":"granted","rule":"grants[0]",` +
		`"policy_version":"7","session":"s1","latency_us":1,"outcome":"ok"}`
	if string(got) != want {
		t.Fatalf("canonical bytes changed:\n got %s\nwant %s", got, want)
	}
	// An aggregate carries its count and first time after every older field.
	e.Count, e.First = 2, e.Time.Add(-time.Second)
	got, err = Canonical(&e)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(string(got), `"outcome":"ok","count":2,"first":"2026-03-01T12:00:00Z"}`) {
		t.Fatalf("aggregate encoding: %s", got)
	}
}

func TestDecodeEventRejectsUnknownFieldsAndTrailingData(t *testing.T) {
	e := testEvent(1)
	b, err := Canonical(&e)
	if err != nil {
		t.Fatal(err)
	}
	for name, in := range map[string][]byte{
		"unknown field": append(b[:len(b)-1:len(b)-1], []byte(`,"evil":1}`)...),
		"trailing data": append(append([]byte{}, b...), []byte(` {}`)...),
		"not json":      []byte("nope"),
	} {
		if _, err := DecodeEvent(in); !errors.Is(err, ErrInvalidEvent) {
			t.Errorf("%s: DecodeEvent = %v, want ErrInvalidEvent", name, err)
		}
	}
}

func TestChainHashCoversSeqAndPrevious(t *testing.T) {
	body := []byte(`{"v":1}`)
	base := ChainHash(Hash{}, 1, body)
	if ChainHash(Hash{}, 2, body) == base {
		t.Error("hash does not depend on seq")
	}
	if ChainHash(Hash{1}, 1, body) == base {
		t.Error("hash does not depend on the previous hash")
	}
	if ChainHash(Hash{}, 1, []byte(`{"v":2}`)) == base {
		t.Error("hash does not depend on the event")
	}
}
