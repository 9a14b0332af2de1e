package admission

import (
	"context"
	"log/slog"
	"net"
	"time"

	"github.com/agentmesh/agentmesh/internal/audit"
	"github.com/agentmesh/agentmesh/internal/reason"
)

// Recorder receives audit events. Record may block to apply backpressure; it
// must not drop events. A gateway records every decision before the client
// sees its answer: a denial before the error is written, an allowed request
// when its response starts. If recording an allowed request fails, the
// client gets a 503 (reason audit_failed) instead of the upstream's answer;
// a failure to record a denial is logged and the denial still answered.
type Recorder interface {
	Record(ctx context.Context, e *audit.Event) error
}

// Record stamps e (audit.Event.Stamp, with now from the recorder's
// clock) and hands it to rec. The record outlives ctx's cancellation: a
// client that went away does not cancel the record of what it did.
func Record(ctx context.Context, rec Recorder, e *audit.Event, now time.Time) error {
	e.Stamp(now)
	return rec.Record(context.WithoutCancel(ctx), e)
}

// RecordRefusal records the refused attempt e (a client that was not
// admitted) at now and returns the id of the event that accounts for it,
// the id the refusal answer carries. With agg set the attempt is
// aggregated (see audit.Refusals): a client refused over and over writes
// one event at once and a count per window, not one event per attempt.
// With agg nil it is recorded through rec as its own event.
func RecordRefusal(ctx context.Context, agg *audit.Refusals, rec Recorder, e *audit.Event, now time.Time) (string, error) {
	if agg == nil {
		err := Record(ctx, rec, e, now)
		return e.ID, err
	}
	e.Stamp(now)
	return agg.Refuse(context.WithoutCancel(ctx), e)
}

// ConnRefusals returns a connlimit OnRefuse hook that records every
// connection the listener refused or closed for a bound as a refused
// connection to dst() at now() (aggregated through agg when set).
func ConnRefusals(agg *audit.Refusals, rec Recorder, now func() time.Time, dst func() string, log *slog.Logger) func(net.Addr, reason.Code) {
	return func(remote net.Addr, why reason.Code) {
		e := &audit.Event{
			Kind: audit.KindConnection, Dst: dst(), Decision: audit.Deny,
			Reason: why, Outcome: audit.OutcomeRefused,
		}
		if remote != nil {
			e.SrcAddr = remote.String()
		}
		if id, err := RecordRefusal(context.Background(), agg, rec, e, now()); err != nil {
			log.Error("audit record failed", "event_id", id, "reason", string(why), "err", err)
		}
	}
}
