package tailnettest_test

import (
	"errors"
	"net"
	"syscall"
	"testing"

	"agentmesh/internal/tailnet/tailnettest"
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
