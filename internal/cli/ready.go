package cli

import (
	"encoding/json"
	"flag"
	"os"
	"sync"

	"github.com/agentmesh/agentmesh/internal/engine"
)

// readyFlag adds --ready-fd: the machine-readable ready signal of the
// commands that serve.
func readyFlag(fs *flag.FlagSet) *int {
	return fs.Int("ready-fd", 0, "announce each endpoint that starts serving as one JSON line on file descriptor `N` (3 or more; inherited from the parent)")
}

// readySignal returns the function that announces a serving endpoint on fd
// (a no-op when fd is 0) and the one that closes fd. A supervisor or test
// reads the lines instead of matching the human log; the descriptor stays
// open while the command runs, so a reader sees end of file only when it
// stops.
func readySignal(env Env, fd int) (announce func(engine.Serving), closeFD func(), err error) {
	if fd == 0 {
		return func(engine.Serving) {}, func() {}, nil
	}
	if fd < 3 {
		return nil, nil, usagef("--ready-fd %d: want a descriptor of 3 or more (0, 1 and 2 are stdin, stdout and stderr)", fd)
	}
	f := os.NewFile(uintptr(fd), "ready")
	if _, err := f.Stat(); err != nil {
		return nil, nil, usagef("--ready-fd %d: not an open descriptor (%v)", fd, err)
	}
	var mu sync.Mutex
	announce = func(s engine.Serving) {
		b, _ := json.Marshal(s)
		mu.Lock()
		defer mu.Unlock()
		if _, err := f.Write(append(b, '\n')); err != nil {
			printf(env.Stderr, "agentmesh: --ready-fd: %v\n", err)
		}
	}
	return announce, func() { f.Close() }, nil
}

// servingSignal is readySignal for the commands that serve clients: each
// endpoint is also printed for people (printServing).
func servingSignal(env Env, fd int) (ready func(engine.Serving), closeFD func(), err error) {
	announce, closeFD, err := readySignal(env, fd)
	if err != nil {
		return nil, nil, err
	}
	return func(s engine.Serving) {
		printServing(env, s)
		announce(s)
	}, closeFD, nil
}
