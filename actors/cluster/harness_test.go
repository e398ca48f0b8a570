package cluster

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestMain(m *testing.M) {
	if os.Getenv(memberEnv) != "" {
		os.Exit(memberMain())
	}
	os.Exit(m.Run())
}

const netnsEnv = "SWITCHBOARD_CLUSTER_NETNS"

// inNetns runs the calling test in a private network namespace: called
// outside one, it runs the test again in a child process made with
// CLONE_NEWNET, reports its result, and returns false (the caller
// returns); in the child, it brings loopback up and returns true. The
// namespace ends with the child, and the members it starts die with it.
func inNetns(t testing.TB) bool {
	t.Helper()
	if os.Getenv(netnsEnv) != "" {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer unix.Close(fd)
		ifr, err := unix.NewIfreq("lo")
		if err != nil {
			t.Fatal(err)
		}
		if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
			t.Fatal(err)
		}
		ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
		if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
			t.Fatalf("bringing lo up: %v", err)
		}
		return true
	}
	if os.Geteuid() != 0 {
		t.Skip("multi-node tests run each node in its own process on loopback in a private network namespace (unshare -n), which needs root")
	}
	args := []string{"-test.run=^" + t.Name() + "$", "-test.v", "-test.count=1", "-test.timeout=120s"}
	if _, bench := t.(*testing.B); bench {
		args = []string{"-test.run=^$", "-test.bench=^" + t.Name() + "$", "-test.benchmem", "-test.count=1", "-test.timeout=300s"}
		for _, a := range os.Args[1:] {
			if strings.HasPrefix(a, "-test.benchtime") || strings.HasPrefix(a, "-test.cpu") {
				args = append(args, a)
			}
		}
	}
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), netnsEnv+"=1")
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET, Pdeathsig: syscall.SIGKILL}
	out, err := cmd.CombinedOutput()
	for _, line := range strings.Split(strings.TrimRight(string(out), "\n"), "\n") {
		t.Log(line)
	}
	if err != nil {
		t.Fatalf("in its network namespace, the test failed: %v", err)
	}
	if strings.Contains(string(out), "--- SKIP") {
		t.Skip("skipped in its network namespace")
	}
	return false
}

// member is one node, a child process running memberMain.
type member struct {
	t     testing.TB
	name  string
	inc   string
	addr  string
	cmd   *exec.Cmd
	stdin io.WriteCloser
	ids   int

	mu    sync.Mutex
	lines []line
	more  chan struct{} // closed and replaced when a line arrives
	exit  chan struct{}
}

type line struct {
	text string
	at   time.Time
}

type memberOpts struct {
	budget int64
	env    []string
	// secret is the cluster's secret file; "" is the test's
	// (testSecret), "-" none.
	secret string
}

var secrets sync.Map // test name → its secret file

// testSecret returns a secret file for t's cluster, the same for all its
// members: made on first use, readable by its owner only.
func testSecret(t testing.TB) string {
	t.Helper()
	if path, ok := secrets.Load(t.Name()); ok {
		if _, err := os.Stat(path.(string)); err == nil {
			return path.(string)
		} // a benchmark's earlier run, whose directory is gone
	}
	path := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(path, []byte("the cluster's secret for "+t.Name()+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	secrets.Store(t.Name(), path)
	return path
}

// startMember starts a member named name (incarnation inc) listening at
// addr and dialling peers, and waits until it listens.
func startMember(t testing.TB, name, inc, addr string, peers []string, o memberOpts) *member {
	t.Helper()
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), memberEnv+"=1",
		"SBM_CLUSTER=test", "SBM_NAME="+name, "SBM_INC="+inc, "SBM_LISTEN="+addr,
		"SBM_PEERS="+strings.Join(peers, ","))
	if o.secret == "" {
		o.secret = testSecret(t)
	}
	if o.secret != "-" {
		cmd.Env = append(cmd.Env, "SBM_SECRET="+o.secret)
	}
	if o.budget != 0 {
		cmd.Env = append(cmd.Env, fmt.Sprintf("SBM_BUDGET=%d", o.budget))
	}
	cmd.Env = append(cmd.Env, o.env...)
	stderr := &raceWatch{}
	cmd.Stderr = stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	m := &member{t: t, name: name, inc: inc, addr: addr, cmd: cmd, stdin: stdin, more: make(chan struct{}), exit: make(chan struct{})}
	go func() {
		sc := bufio.NewScanner(stdout)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			m.mu.Lock()
			m.lines = append(m.lines, line{sc.Text(), time.Now()})
			close(m.more)
			m.more = make(chan struct{})
			m.mu.Unlock()
		}
		cmd.Wait()
		close(m.exit)
	}()
	t.Cleanup(func() {
		m.kill()
		if stderr.raced() {
			t.Errorf("member %s (%s) reported a data race", name, inc)
		}
	})
	m.wait("ready", 10*time.Second)
	return m
}

// kill ends the member (SIGKILL) and waits for it.
func (m *member) kill() {
	m.cmd.Process.Signal(syscall.SIGCONT)
	m.cmd.Process.Kill()
	<-m.exit
}

// wait returns the first line the member printed that starts with
// prefix, waiting up to d for it, and when it was read.
func (m *member) wait(prefix string, d time.Duration) line {
	m.t.Helper()
	return m.waitNth(prefix, 1, d)
}

// waitNth is wait for the nth line that starts with prefix.
func (m *member) waitNth(prefix string, nth int, d time.Duration) line {
	m.t.Helper()
	deadline := time.After(d)
	for {
		m.mu.Lock()
		seen := 0
		for _, l := range m.lines {
			if strings.HasPrefix(l.text, prefix) {
				if seen++; seen == nth {
					m.mu.Unlock()
					return l
				}
			}
		}
		more := m.more
		m.mu.Unlock()
		select {
		case <-more:
		case <-m.exit:
			m.t.Fatalf("%s exited waiting for %q; it printed:\n%s", m.name, prefix, m.output())
		case <-deadline:
			m.t.Fatalf("%s: no %q within %v; it printed:\n%s", m.name, prefix, d, m.output())
		}
	}
}

// has reports whether the member printed a line starting with prefix.
func (m *member) has(prefix string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, l := range m.lines {
		if strings.HasPrefix(l.text, prefix) {
			return true
		}
	}
	return false
}

func (m *member) output() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	var b strings.Builder
	for _, l := range m.lines {
		b.WriteString(l.text + "\n")
	}
	return b.String()
}

// do sends a command and returns its answer (without the id).
func (m *member) do(verb string, args ...any) string {
	m.t.Helper()
	id := m.start(verb, args...)
	return strings.TrimPrefix(m.wait(id+" ", 60*time.Second).text, id+" ")
}

// start sends a command and returns its id, not waiting for its answer.
func (m *member) start(verb string, args ...any) string {
	m.t.Helper()
	m.ids++
	id := fmt.Sprintf("#%d", m.ids)
	cmd := verb + " " + id
	for _, a := range args {
		cmd += " " + fmt.Sprint(a)
	}
	if _, err := io.WriteString(m.stdin, cmd+"\n"); err != nil {
		m.t.Fatalf("%s: %v", m.name, err)
	}
	return id
}

// raceWatch passes a member's standard error on and notes a race report.
type raceWatch struct {
	mu   sync.Mutex
	tail []byte
	race bool
}

func (w *raceWatch) Write(b []byte) (int, error) {
	os.Stderr.Write(b)
	w.mu.Lock()
	defer w.mu.Unlock()
	w.tail = append(w.tail, b...)
	if strings.Contains(string(w.tail), "WARNING: DATA RACE") {
		w.race = true
	}
	w.tail = w.tail[max(0, len(w.tail)-32):]
	return len(b), nil
}

func (w *raceWatch) raced() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.race
}
