package bench

import "errors"

var (
	// ErrUnknownScenario is returned for a scenario name Run does not know.
	ErrUnknownScenario = errors.New("unknown scenario")
	// ErrNoComponents is returned when Config lacks what runs the product
	// in its layout (the executable, or the in-process gateway and
	// connector): the bench measures the product, never a stand-in.
	ErrNoComponents = errors.New("bench: no agentmesh executable or components for the layout")
	// ErrUnknownLayout is returned for a Config.Layout Run does not know.
	ErrUnknownLayout = errors.New("unknown layout")
	// ErrUnknownRole is returned by RunRole for a role it does not know.
	ErrUnknownRole = errors.New("unknown bench role")
	// ErrLostCalls marks a run in which calls failed; the figures are
	// reported anyway.
	ErrLostCalls = errors.New("bench: calls failed")
)
