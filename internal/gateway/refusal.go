package gateway

import (
	"context"

	"agentmesh/internal/audit"
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
