package cli

import (
	"fmt"
	"os"
	"runtime/pprof"

	"github.com/agentmesh/agentmesh/internal/bench"
)

// cpuProfileEnv names a file for a CPU profile of the whole command. It
// is how 'agentmesh bench --profile-dir' profiles the gateway and
// connector processes it starts; it is not a user-facing option, and a
// process whose environment another user controls is theirs anyway.
const cpuProfileEnv = bench.CPUProfileEnv

// startCPUProfile profiles this process into path until stop is called.
func startCPUProfile(path string) (stop func(), err error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("cpu profile: %w", err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("cpu profile: %w", err)
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}, nil
}
