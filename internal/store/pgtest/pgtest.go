// Package pgtest runs private PostgreSQL servers for tests: initdb in a
// temporary directory, the server listening only on a Unix socket in that
// directory (no port, nothing on the network), owned by an unprivileged
// user when the tests run as root (PostgreSQL refuses to run as root).
//
// Where no PostgreSQL is installed a test that needs one is skipped with a
// printed reason, unless AGENTMESH_REQUIRE_POSTGRES is set (as .ci/run
// sets it after installing Debian's postgresql): then it fails.
package pgtest

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// RequireEnv makes a missing PostgreSQL a failure instead of a skip.
const RequireEnv = "AGENTMESH_REQUIRE_POSTGRES"

// Server is a running private PostgreSQL server.
type Server struct {
	dir  string // data directory, also the socket directory
	bin  string // directory of postgres, initdb, pg_ctl
	cred *syscall.Credential

	mu  sync.Mutex
	cmd *exec.Cmd
	// exited is closed when cmd has been waited for.
	exited chan struct{}
	dbs    atomic.Int64
}

// Start starts a server for tb and stops it, and removes its files, when
// tb ends.
func Start(tb testing.TB) *Server {
	tb.Helper()
	s, err := start()
	if err != nil {
		unavailable(tb, err)
	}
	tb.Cleanup(s.Close)
	return s
}

var (
	shared     *Server
	sharedErr  error
	sharedOnce sync.Once
)

// Shared returns a server shared by the tests of one test binary, started
// on first use; the package's TestMain stops it with StopShared. Each test
// takes a database of its own (NewDatabase).
func Shared(tb testing.TB) *Server {
	tb.Helper()
	sharedOnce.Do(func() { shared, sharedErr = start() })
	if sharedErr != nil {
		unavailable(tb, sharedErr)
	}
	return shared
}

// StopShared stops the shared server, if one was started.
func StopShared() {
	if shared != nil {
		shared.Close()
	}
}

// errNotInstalled says that no PostgreSQL binaries were found.
var errNotInstalled = errors.New("PostgreSQL is not installed (apt-get install postgresql)")

func unavailable(tb testing.TB, err error) {
	tb.Helper()
	if errors.Is(err, errNotInstalled) && os.Getenv(RequireEnv) == "" {
		tb.Skipf("skipped: %v; set %s=1 to make this a failure", err, RequireEnv)
	}
	tb.Fatalf("pgtest: %v", err)
}

// binDir finds initdb and postgres: on PATH, else Debian's
// /usr/lib/postgresql/VERSION/bin, the newest version first.
func binDir() (string, error) {
	if p, err := exec.LookPath("initdb"); err == nil {
		if real, err := filepath.EvalSymlinks(p); err == nil {
			p = real
		}
		if _, err := os.Stat(filepath.Join(filepath.Dir(p), "postgres")); err == nil {
			return filepath.Dir(p), nil
		}
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool { return versionOf(dirs[i]) > versionOf(dirs[j]) })
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, "initdb")); err == nil {
			return d, nil
		}
	}
	return "", errNotInstalled
}

func versionOf(binDir string) int {
	v, _ := strconv.Atoi(filepath.Base(filepath.Dir(binDir)))
	return v
}

// credential is who runs the server: this user, or when this is root an
// unprivileged one (postgres, made by Debian's package, else nobody).
func credential() (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	for _, name := range []string{"postgres", "nobody"} {
		u, err := user.Lookup(name)
		if err != nil {
			continue
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
	}
	return nil, errors.New("running as root and no unprivileged user (postgres or nobody) to run PostgreSQL as")
}

func start() (*Server, error) {
	bin, err := binDir()
	if err != nil {
		return nil, err
	}
	cred, err := credential()
	if err != nil {
		return nil, err
	}
	// Short: the socket's path must fit in 107 bytes.
	dir, err := os.MkdirTemp("", "ampg")
	if err != nil {
		return nil, err
	}
	s := &Server{dir: dir, bin: bin, cred: cred}
	if cred != nil {
		if err := os.Chown(dir, int(cred.Uid), int(cred.Gid)); err != nil {
			os.RemoveAll(dir)
			return nil, err
		}
	}
	out, err := s.command("initdb", "-D", s.data(), "-U", "postgres", "--auth=trust", "--no-sync",
		"--encoding=UTF8", "--locale=C").CombinedOutput()
	if err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("initdb: %v: %s", err, out)
	}
	if err := s.Restart(); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

func (s *Server) data() string { return filepath.Join(s.dir, "data") }

func (s *Server) command(name string, args ...string) *exec.Cmd {
	cmd := exec.Command(filepath.Join(s.bin, name), args...)
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	cmd.Dir = s.dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: s.cred, Setpgid: true, Pdeathsig: syscall.SIGKILL}
	return cmd
}

// The server keeps PostgreSQL's durable defaults (fsync, synchronous
// commit): benchmarks compare it with SQLite at synchronous=FULL, and the
// restart tests rely on what a commit promises.

// Restart starts the server if it is stopped, and returns once it accepts
// connections: it reads the server's log for the line that says so.
func (s *Server) Restart() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil {
		return nil
	}
	cmd := s.command("postgres", "-D", s.data(),
		"-c", "listen_addresses=", "-c", "unix_socket_directories="+s.dir,
		"-c", "max_connections=200", "-c", "lc_messages=C", "-c", "log_min_messages=warning",
		"-c", "log_min_error_statement=panic")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("postgres: %w", err)
	}
	ready := make(chan struct{})
	var lines []string
	var linesMu sync.Mutex
	go func() {
		sc := bufio.NewScanner(stderr)
		signalled := false
		for sc.Scan() {
			linesMu.Lock()
			if len(lines) < 50 {
				lines = append(lines, sc.Text())
			}
			linesMu.Unlock()
			if !signalled && strings.Contains(sc.Text(), "ready to accept connections") {
				close(ready)
				signalled = true
			}
		}
		io.Copy(io.Discard, stderr)
	}()
	exited := make(chan struct{})
	go func() {
		cmd.Wait()
		close(exited)
	}()
	select {
	case <-ready:
	case <-exited:
		linesMu.Lock()
		defer linesMu.Unlock()
		return fmt.Errorf("postgres exited before it was ready: %s", strings.Join(lines, "\n"))
	case <-time.After(2 * time.Minute):
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-exited
		return errors.New("postgres was not ready within 2 minutes")
	}
	s.cmd, s.exited = cmd, exited
	return nil
}

// Stop shuts the server down (fast shutdown: sessions are ended, data is
// kept) and waits for it. Restart starts it again.
func (s *Server) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return
	}
	syscall.Kill(s.cmd.Process.Pid, syscall.SIGINT)
	select {
	case <-s.exited:
	case <-time.After(time.Minute):
		syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
		<-s.exited
	}
	s.cmd = nil
}

// Close stops the server and removes its files.
func (s *Server) Close() {
	s.Stop()
	os.RemoveAll(s.dir)
}

// URL is the connection URL of database name on s.
func (s *Server) URL(name string) string {
	q := url.Values{"host": {s.dir}, "user": {"postgres"}, "sslmode": {"disable"}}
	return "postgres:///" + name + "?" + q.Encode()
}

// SocketDir is the directory of the server's Unix socket (for a proxy in
// front of it).
func (s *Server) SocketDir() string { return s.dir }

// NewDatabase creates an empty database for tb on s and returns its URL;
// it is dropped when tb ends.
func (s *Server) NewDatabase(tb testing.TB) string {
	tb.Helper()
	name := fmt.Sprintf("t%d_%d", os.Getpid(), s.dbs.Add(1))
	if err := s.exec("CREATE DATABASE " + name + " TEMPLATE template0"); err != nil {
		tb.Fatalf("pgtest: create database: %v", err)
	}
	tb.Cleanup(func() {
		// WITH (FORCE) ends sessions a test left open.
		s.exec("DROP DATABASE IF EXISTS " + name + " WITH (FORCE)")
	})
	return s.URL(name)
}

func (s *Server) exec(stmt string) error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn, err := pgx.Connect(ctx, s.URL("postgres"))
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	_, err = conn.Exec(ctx, stmt)
	return err
}
