// Package tailnettest runs an offline tailnet for tests: tailscale's own
// test control server (tailscale.com/tstest/integration/testcontrol) with
// its in-process DERP and STUN servers on 127.0.0.1, and tsnet nodes joined
// to it with in-memory state.
//
// Tailnet traffic must never leave the machine, so tests that use it call
// InLoopbackNamespace first: it re-runs the test inside a private network
// namespace whose only interface is lo, with magicsock told not to
// advertise or probe local interface addresses and no port mapping. The
// namespace is what keeps the guarantee: tsnet sends UDP to whatever
// endpoints control, DERP and disco tell it, on sockets no hook sees, so a
// check in the process could only hope, while a namespace without a route
// beyond lo makes every other destination unreachable. It needs no root:
// other users get it through an unprivileged user namespace. Tests are
// skipped, saying what they need, where neither is available.
package tailnettest

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http/httptest"
	"os"
	"os/exec"
	"runtime"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
	"tailscale.com/ipn/store/mem"
	"tailscale.com/net/netns"
	"tailscale.com/tailcfg"
	"tailscale.com/tstest/integration"
	"tailscale.com/tstest/integration/testcontrol"
	"tailscale.com/types/logger"

	"github.com/agentmesh/agentmesh/internal/tailnet"
)

// MagicDNS is the test tailnet's DNS suffix: node HOST is
// HOST.MagicDNS on the tailnet.
const MagicDNS = "tail-scale.ts.net"

// Net is an offline tailnet. Create it with New.
type Net struct {
	// Control is tailscale's test control server: set app capabilities
	// (SetGlobalAppCaps) and inspect nodes through it.
	Control *testcontrol.Server
	// URL is the control server's URL, for tailnet.Config.ControlURL.
	URL string
}

// New starts a control server with DERP and STUN on 127.0.0.1, stopped at
// cleanup. Call it only inside InLoopbackNamespace: anywhere an interface
// other than lo is up, it fails tb before any tailnet starts.
func New(tb testing.TB) *Net {
	tb.Helper()
	if err := onlyLoopbackUp(); err != nil {
		tb.Fatalf("tailnettest.New outside InLoopbackNamespace: %v", err)
	}
	netns.SetEnabled(false) // no SO_MARK or interface binding in tests
	tb.Cleanup(func() { netns.SetEnabled(true) })
	derpMap := integration.RunDERPAndSTUN(tb, logger.Discard, "127.0.0.1")
	c := &testcontrol.Server{
		DERPMap:        derpMap,
		DNSConfig:      &tailcfg.DNSConfig{Proxied: true},
		MagicDNSDomain: MagicDNS,
		TagOwners:      map[string][]string{}, // grant every requested tag
		Logf:           logger.Discard,
	}
	c.HTTPTestServer = httptest.NewUnstartedServer(c)
	c.HTTPTestServer.Start()
	tb.Cleanup(c.HTTPTestServer.Close)
	return &Net{Control: c, URL: c.HTTPTestServer.URL}
}

// Join brings up a node named host with tags (tag:NAME), closed at cleanup.
func (n *Net) Join(tb testing.TB, ctx context.Context, host string, tags ...string) *tailnet.Node {
	tb.Helper()
	node, err := tailnet.Join(ctx, tailnet.Config{
		Hostname: host, ControlURL: n.URL, Store: new(mem.Store), Ephemeral: true, Tags: tags,
	})
	if err != nil {
		tb.Fatalf("join %s: %v", host, err)
	}
	tb.Cleanup(func() { node.Close() })
	return node
}

// SetCaps makes every node grant every other the CapabilityMCP values
// given (none: no capability at all).
func (n *Net) SetCaps(values ...string) {
	if len(values) == 0 {
		n.Control.SetGlobalAppCaps(nil)
		return
	}
	raw := make([]tailcfg.RawMessage, len(values))
	for i, v := range values {
		raw[i] = tailcfg.RawMessage(v)
	}
	n.Control.SetGlobalAppCaps(tailcfg.PeerCapMap{tailnet.CapabilityMCP: raw})
}

// Env is the environment of a process that joins the test tailnet: no
// local interface addresses advertised or pinged, no port mapping, and the
// network taken as up although only lo is.
var Env = []string{
	"TS_DEBUG_OMIT_LOCAL_ADDRS=1",
	"TS_DISABLE_PORTMAPPER=1",
	"TS_ASSUME_NETWORK_UP_FOR_TEST=1",
}

// netnsEnv marks a test binary re-executed inside a fresh network
// namespace by InLoopbackNamespace.
const netnsEnv = "AGENTMESH_TAILNET_NETNS"

// exitNoNamespace is the exit code of a re-executed test binary that got
// a network namespace it cannot bring lo up in (the automake code for
// "skipped"); the parent then skips the test.
const exitNoNamespace = 77

// needs says what the tailnet tests need, in skip messages.
const needs = "tailnet tests run only in a private network namespace; " +
	"run them as root, or as a user on a Linux kernel that allows unprivileged user namespaces " +
	"(user.max_user_namespaces > 0; kernel.unprivileged_userns_clone=1 on Debian before 11; " +
	"kernel.apparmor_restrict_unprivileged_userns=0 on Ubuntu 23.10 and later)"

var errNamespace = errors.New("loopback-only network namespace")

// InLoopbackNamespace makes tb run in a network namespace whose only
// interface is lo, so that no tailnet packet can leave the machine. Outside
// one, it re-executes the test binary for tb alone in a new network
// namespace (the Go runtime is multi-threaded, so unsharing in-process
// would leave other threads in the old namespace), relays its output, and
// returns false: the caller must return. Inside, it brings lo up and
// returns true. tb must be a top-level test or benchmark.
//
// Root gets a network namespace of its own. Any other user gets a user
// namespace that maps it to root and owns a new network namespace, which
// needs no privilege where the kernel allows unprivileged user namespaces
// (Linux's default); root inside it is root over that namespace's lo and
// nothing else. Where neither is possible, tb is skipped with what it
// needs.
func InLoopbackNamespace(tb testing.TB) bool {
	tb.Helper()
	if os.Getenv(netnsEnv) == "1" {
		if err := loopbackOnly(); err != nil {
			if errors.Is(err, unix.EPERM) {
				// A user namespace without the capabilities it should
				// give (an LSM confines it): let the parent skip.
				fmt.Printf("%s: %v\n", tb.Name(), err)
				os.Exit(exitNoNamespace)
			}
			tb.Fatalf("%v", err)
		}
		return true
	}
	self, err := os.Executable()
	if err != nil {
		tb.Fatalf("re-run %s in a network namespace: %v", tb.Name(), err)
	}
	args := []string{"-test.count=1"}
	if b, bench := tb.(*testing.B); bench {
		// The testing package calls a benchmark first with b.N == 1, then
		// again to size b.N; the re-executed one sizes itself, so run it
		// from the first call only (once per -count).
		if b.N != 1 {
			return false
		}
		args = append(args, "-test.run=^$", "-test.bench=^"+tb.Name()+"$")
		for _, name := range []string{"test.benchtime", "test.benchmem", "test.cpuprofile"} {
			if f := flag.Lookup(name); f != nil && f.Value.String() != f.DefValue {
				args = append(args, "-"+name+"="+f.Value.String())
			}
		}
	} else {
		args = append(args, "-test.run=^"+tb.Name()+"$")
	}
	if testing.Verbose() {
		args = append(args, "-test.v")
	}
	if testing.Short() {
		args = append(args, "-test.short")
	}
	cmd := exec.Command(self, args...)
	cmd.Env = append(append(os.Environ(), netnsEnv+"=1"), Env...)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	cmd.SysProcAttr = namespaceAttr()
	// The child dies with the thread that started it (Pdeathsig), so keep
	// that thread until the child has exited.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if err := cmd.Start(); err != nil {
		tb.Skipf("skipping: cannot create a network namespace (%v): %s", err, needs)
	}
	err = cmd.Wait()
	var exit *exec.ExitError
	if errors.As(err, &exit) && exit.ExitCode() == exitNoNamespace {
		tb.Skipf("skipping: cannot bring lo up in the new network namespace (no CAP_NET_ADMIN in it; a security module may withhold it from user namespaces): %s", needs)
	}
	if err != nil {
		tb.Fatalf("%s in a private network namespace: %v", tb.Name(), err)
	}
	return false
}

// namespaceAttr starts a process in a new network namespace: root's own,
// or, for any other user, one owned by a new user namespace in which the
// user is root.
func namespaceAttr() *syscall.SysProcAttr {
	attr := &syscall.SysProcAttr{
		Cloneflags: syscall.CLONE_NEWNET,
		// A test binary killed mid-test (a timeout) takes its child along.
		Pdeathsig: syscall.SIGKILL,
	}
	if uid := os.Geteuid(); uid != 0 {
		attr.Cloneflags |= syscall.CLONE_NEWUSER
		attr.UidMappings = []syscall.SysProcIDMap{{ContainerID: 0, HostID: uid, Size: 1}}
		// An unprivileged user may map its gid only with setgroups
		// denied, which is the zero value of GidMappingsEnableSetgroups.
		attr.GidMappings = []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Getegid(), Size: 1}}
	}
	return attr
}

// loopbackOnly brings lo up and checks that it is the only interface up.
func loopbackOnly() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("%w: socket: %w", errNamespace, err)
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return fmt.Errorf("%w: %w", errNamespace, err)
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return fmt.Errorf("%w: get lo flags: %w", errNamespace, err)
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
		return fmt.Errorf("%w: bring lo up: %w", errNamespace, err)
	}
	return onlyLoopbackUp()
}

// onlyLoopbackUp checks that lo is the only interface up, so that nothing
// but loopback has a route.
func onlyLoopbackUp() error {
	ifs, err := net.Interfaces()
	if err != nil {
		return fmt.Errorf("%w: %w", errNamespace, err)
	}
	for _, i := range ifs {
		if i.Name != "lo" && i.Flags&net.FlagUp != 0 {
			return fmt.Errorf("%w: interface %s is up; want only lo", errNamespace, i.Name)
		}
	}
	return nil
}
