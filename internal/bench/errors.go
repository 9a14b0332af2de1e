package bench

import "errors"

var (
	// ErrUnknownScenario is returned for a scenario name Run does not know.
	ErrUnknownScenario = errors.New("unknown scenario")
	// ErrNoComponents is returned when Config lacks the gateway or connector
	// runner: the bench measures the product, never a stand-in.
	ErrNoComponents = errors.New("bench: Config.Components is incomplete")
	// ErrLostCalls marks a run in which calls failed; the figures are
	// reported anyway.
	ErrLostCalls = errors.New("bench: calls failed")
)
