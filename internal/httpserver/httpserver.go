// Package httpserver runs an http.Server for as long as a context lasts and
// stops it by one rule. Every server agentmesh runs (the coordinator, the
// MCP and model gateways, the connector's local endpoint, the model
// endpoint's local side, and the demo's and benchmark's helpers) goes
// through [Run], so that they all stop the same way:
//
//  1. the context of every request ends first, so that streams, long polls
//     and requests waiting on an upstream return at once instead of
//     holding the shutdown (a netmap long poll lasts 25 s, an SSE stream
//     for ever);
//  2. the listener closes and what is still running gets [Grace] to finish
//     (write its answer, record its audit event);
//  3. whatever is left after that is cut.
//
// Run returns only when the server's Serve has returned, so a caller that
// waits for Run owns every goroutine the server started.
package httpserver

import (
	"context"
	"errors"
	"net"
	"net/http"
	"time"
)

// Grace is how long a stopping server lets requests finish after their
// context ended. They are told to stop before it starts, so it only covers
// finishing what they are doing; a request that ignores its context is cut
// when it runs out.
const Grace = 5 * time.Second

// Run serves srv on ln until ctx ends or Serve fails, then stops srv as
// the package doc says. It returns nil when ctx ended (a request cut at the
// end of the grace period is not an error) and Serve's error otherwise. It
// closes ln.
//
// Run sets srv.BaseContext: request contexts carry no values of ctx and
// end when the server stops, not when ctx does (they end when ctx does
// only through the stop). A BaseContext already set is kept underneath, so
// its values and cancellation still apply.
func Run(ctx context.Context, srv *http.Server, ln net.Listener) error {
	stop, base := newBase(srv.BaseContext)
	srv.BaseContext = base
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	var err error
	select {
	case <-ctx.Done():
	case err = <-errc:
		errc = nil
	}
	stop()
	sctx, cancel := context.WithTimeout(context.Background(), Grace)
	defer cancel()
	if srv.Shutdown(sctx) != nil {
		srv.Close()
	}
	if errc != nil {
		err = <-errc
	}
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	return err
}

// newBase returns the BaseContext of a server run by Run, on top of inner
// (nil: none), and the function that ends every context it returned.
func newBase(inner func(net.Listener) context.Context) (stop func(), base func(net.Listener) context.Context) {
	stopped, stop := context.WithCancel(context.Background())
	return stop, func(ln net.Listener) context.Context {
		if inner == nil {
			return stopped
		}
		// Serve calls BaseContext once per listener: one AfterFunc per
		// Run, which always calls stop in the end.
		ctx, cancel := context.WithCancel(inner(ln))
		context.AfterFunc(stopped, cancel)
		return ctx
	}
}
