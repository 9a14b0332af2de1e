package gateway

import (
	"context"
	"log/slog"
	"net"
	"time"

	"agentmesh/internal/audit"
	"agentmesh/internal/connlimit"
)

// RecordRefusal records the refused attempt e (a peer that was not
// admitted) and returns the id of the event that accounts for it, the id
// the refusal answer carries. With agg set the attempt is aggregated (see
// audit.Refusals): a client refused over and over writes one event at once
// and a count per window, not one event per attempt. With agg nil it is
// recorded through rec as its own event. The model gateway shares it.
func RecordRefusal(ctx context.Context, agg *audit.Refusals, rec Recorder, e *audit.Event) (string, error) {
	ctx = context.WithoutCancel(ctx)
	e.V = audit.SchemaVersion
	if agg != nil {
		return agg.Refuse(ctx, e)
	}
	if e.ID == "" {
		e.ID = audit.NewID()
	}
	return e.ID, rec.Record(ctx, e)
}

// ConnRefusals returns a connlimit OnRefuse hook that records every
// connection the listener refused or closed for a bound as a refused
// connection to dst() (aggregated through agg when set). The model gateway
// shares it.
func ConnRefusals(agg *audit.Refusals, rec Recorder, now func() time.Time, dst func() string, log *slog.Logger) func(net.Addr, connlimit.Reason) {
	return func(remote net.Addr, reason connlimit.Reason) {
		e := &audit.Event{
			Time: now(), Kind: audit.KindConnection, Dst: dst(), Decision: audit.Deny,
			Reason: string(reason), Outcome: "refused",
		}
		if remote != nil {
			e.SrcAddr = remote.String()
		}
		if id, err := RecordRefusal(context.Background(), agg, rec, e); err != nil {
			log.Error("audit record failed", "event_id", id, "reason", string(reason), "err", err)
		}
	}
}
