package etcdtest

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// RequireEnv names the variable that makes a missing etcd a failure.
const RequireEnv = "SWITCHBOARD_REQUIRE_ETCD"

// Server is an etcd process of a test's.
type Server struct {
	// URL is its client URL, http://127.0.0.1:PORT.
	URL string

	t      testing.TB
	dir    string
	peer   string
	cmd    *exec.Cmd
	out    *strings.Builder
	exited chan struct{}
	once   *sync.Once
}

// freePort returns a loopback port nothing listens on now.
func freePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// Start starts a server and waits until it answers; the test's cleanup
// stops it.
func Start(t testing.TB) *Server {
	t.Helper()
	if _, err := exec.LookPath("etcd"); err != nil {
		if os.Getenv(RequireEnv) != "" {
			t.Fatalf("etcd is not on PATH (apt-get install etcd-server): %v", err)
		}
		t.Skip("etcd is not on PATH (apt-get install etcd-server; .ci/run installs it)")
	}
	s := &Server{t: t, dir: t.TempDir(),
		URL:  fmt.Sprintf("http://127.0.0.1:%d", freePort(t)),
		peer: fmt.Sprintf("http://127.0.0.1:%d", freePort(t))}
	s.Restart()
	t.Cleanup(s.Stop)
	return s
}

// Restart starts the server again after Stop, on the same ports and data,
// and waits until it answers.
func (s *Server) Restart() {
	s.t.Helper()
	s.cmd = exec.Command("etcd", "--name", "t", "--data-dir", s.dir,
		"--listen-client-urls", s.URL, "--advertise-client-urls", s.URL,
		"--listen-peer-urls", s.peer, "--initial-advertise-peer-urls", s.peer,
		"--initial-cluster", "t="+s.peer, "--log-level", "error", "--logger", "zap")
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	s.out = &strings.Builder{}
	s.cmd.Stdout, s.cmd.Stderr = s.out, s.out
	if err := s.cmd.Start(); err != nil {
		s.t.Fatal(err)
	}
	exited := make(chan struct{})
	s.exited, s.once = exited, &sync.Once{}
	go func() { s.cmd.Wait(); close(exited) }()
	cli := s.Client()
	defer cli.Close()
	deadline := time.Now().Add(20 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err := cli.Get(ctx, "/")
		cancel()
		if err == nil {
			return
		}
		select {
		case <-exited:
			s.t.Fatalf("etcd exited: %s", s.out.String())
		default:
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("etcd does not answer at %s: %v", s.URL, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Stop kills the server and waits until it has exited.
func (s *Server) Stop() {
	s.once.Do(func() {
		s.cmd.Process.Kill()
		<-s.exited
	})
}

// Client is a client of the server's, for the test to write and read; the
// caller closes it.
func (s *Server) Client() *clientv3.Client {
	s.t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{s.URL}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		s.t.Fatal(err)
	}
	return cli
}
