package httpserver

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"syscall"
)

// ErrAddress matches the error of Listen for an address that is not
// HOST:PORT: a mistake in the configuration, not in the environment.
var ErrAddress = errors.New("invalid listen address")

// Listen opens a TCP listener on addr (HOST:PORT, the port a number; 0
// picks a free one) for a server. Its errors are for the operator who gave
// addr: one line that names the address and what to do, for the mistakes
// people make (no port, a port in use, a privileged port, an address that
// is not this machine's); they wrap the system's error. An address that is
// not HOST:PORT matches ErrAddress.
func Listen(addr string) (net.Listener, error) {
	_, port, err := net.SplitHostPort(addr)
	if err != nil || port == "" {
		return nil, fmt.Errorf("%w %q: want HOST:PORT, such as 127.0.0.1:7443 (port 0 picks a free one)", ErrAddress, addr)
	}
	if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		return nil, fmt.Errorf("%w %q: the port must be a number from 0 to 65535", ErrAddress, addr)
	}
	ln, err := net.Listen("tcp", addr)
	if err == nil {
		return ln, nil
	}
	var dns *net.DNSError
	switch {
	case errors.Is(err, syscall.EADDRINUSE):
		return nil, &listenError{addr, "the address is in use by another process; stop it or choose another address", err}
	case errors.Is(err, syscall.EACCES):
		return nil, &listenError{addr, "not permitted (ports below 1024 need privileges); choose a port from 1024", err}
	case errors.Is(err, syscall.EADDRNOTAVAIL):
		return nil, &listenError{addr, "the address is not one of this machine's; give one of its addresses, or 0.0.0.0 for all", err}
	case errors.As(err, &dns):
		return nil, &listenError{addr, "the host name does not resolve; give an IP address or a name of this machine", err}
	}
	return nil, fmt.Errorf("cannot listen on %s: %w", addr, err)
}

// listenError explains a failed listen in place of the system's message,
// which it wraps.
type listenError struct {
	addr, why string
	err       error
}

func (e *listenError) Error() string { return "cannot listen on " + e.addr + ": " + e.why }
func (e *listenError) Unwrap() error { return e.err }
