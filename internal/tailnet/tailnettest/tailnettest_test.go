package tailnettest_test

import (
	"errors"
	"fmt"
	"net"
	"runtime"
	"strings"
	"syscall"
	"testing"

	"github.com/agentmesh/agentmesh/internal/tailnet/tailnettest"
)

// TestTailnetNamespaceReachesOnlyLoopback checks the guarantee the tailnet
// tests rest on: inside InLoopbackNamespace, loopback works and every
// other destination is unreachable. Connecting a UDP socket sends nothing,
// so the check itself cannot leak a packet; the addresses are reserved
// for documentation.
func TestTailnetNamespaceReachesOnlyLoopback(t *testing.T) {
	if !tailnettest.InLoopbackNamespace(t) {
		return
	}
	for _, addr := range []string{"127.0.0.1:0", "[::1]:0"} {
		ln, err := net.ListenPacket("udp", addr)
		if err != nil {
			t.Fatalf("loopback %s in the namespace: %v", addr, err)
		}
		c, err := net.Dial("udp", ln.LocalAddr().String())
		if err != nil {
			t.Fatalf("dial loopback %s in the namespace: %v", ln.LocalAddr(), err)
		}
		c.Close()
		ln.Close()
	}
	for _, addr := range []string{"192.0.2.1:9", "[2001:db8::1]:9"} {
		c, err := net.Dial("udp", addr)
		if err == nil {
			c.Close()
			t.Fatalf("dial %s succeeded in the namespace; want no route beyond lo", addr)
		}
		if !errors.Is(err, syscall.ENETUNREACH) {
			t.Fatalf("dial %s in the namespace: %v, want network unreachable", addr, err)
		}
	}
}

// fatalTB records a Fatalf and stops the goroutine that called it, as
// testing.T does, without failing the test it wraps.
type fatalTB struct {
	testing.TB
	fatal string
}

func (f *fatalTB) Helper() {}

func (f *fatalTB) Fatalf(format string, args ...any) {
	f.fatal = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

// TestTailnetNewRefusesHostNetwork checks that a test that forgets
// InLoopbackNamespace fails before any tailnet starts on the host's
// network.
func TestTailnetNewRefusesHostNetwork(t *testing.T) {
	ifs, err := net.Interfaces()
	if err != nil {
		t.Fatal(err)
	}
	up := false
	for _, i := range ifs {
		up = up || (i.Name != "lo" && i.Flags&net.FlagUp != 0)
	}
	if !up {
		t.Skip("skipping: only lo is up here, so there is no host network to refuse")
	}
	tb := &fatalTB{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		tailnettest.New(tb)
	}()
	<-done
	if !strings.Contains(tb.fatal, "outside InLoopbackNamespace") {
		t.Fatalf("New on the host network: fatal %q, want a refusal", tb.fatal)
	}
}
