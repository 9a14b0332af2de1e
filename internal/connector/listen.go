package connector

import (
	"net"

	"github.com/agentmesh/agentmesh/internal/loopback"
)

// Listen opens a listener for [Connector.ServeListener] and refuses any
// address that is not loopback: "127.0.0.1:0", "[::1]:7801" and
// "localhost:7801" (which listens on 127.0.0.1) are accepted; "0.0.0.0:7801",
// ":7801" or "10.1.2.3:1" fail with [ErrNotLoopback]. "unix:PATH" is a Unix
// socket with mode 0600 in a directory only this user may enter.
func Listen(addr string) (net.Listener, error) { return loopback.Listen(addr) }
