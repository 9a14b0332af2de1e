package audit

import (
	"fmt"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// testBase is the time of event 0 in tests.
var testBase = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// testEvent returns a valid event numbered i with a predictable id.
func testEvent(i int) Event {
	return Event{
		V:             SchemaVersion,
		ID:            fmt.Sprintf("%032x", i+1),
		Time:          testBase.Add(time.Duration(i) * time.Second),
		Kind:          KindRequest,
		Src:           fmt.Sprintf("spiffe://mesh.test/agent/a%d", i%7),
		SrcAddr:       "127.0.0.1:40000",
		Dst:           fmt.Sprintf("spiffe://mesh.test/tool/t%d", i%3),
		Method:        "tools/call",
		Tool:          fmt.Sprintf("tool%d", i%5),
		Decision:      []Decision{Allow, Deny}[i%2],
		Reason:        "granted",
		Rule:          "grants[0]",
		PolicyVersion: "7",
		Session:       "s1",
		LatencyUS:     int64(i % 1000),
		Outcome:       "ok",
	}
}

func testEvents(from, n int) []Event {
	out := make([]Event, n)
	for i := range out {
		out[i] = testEvent(from + i)
	}
	return out
}
