package tests

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Helpers for the tests of the cmd/node daemon and tool: each test builds
// the binary once (buildNode), runs `node serve` as a child with its own
// socket and configuration in a temp dir, and drives it with the CLI.

// daemon is a `node serve` process started by a test.
type daemon struct {
	cmd    *exec.Cmd
	dir    string // the test's directory: socket, configuration
	socket string
	log    *syncBuffer // its standard error (and output)
	waited chan struct{}
}

// nodeEnv is the environment of a daemon or CLI child: this process's,
// less anything that would configure the node from outside the test.
func nodeEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "SWITCHBOARD_") || strings.HasPrefix(k, "LISTEN_") || strings.HasPrefix(k, "WATCHDOG_") || k == "NOTIFY_SOCKET" {
			continue
		}
		env = append(env, kv)
	}
	return append(env, extra...)
}

// daemonOpts says how to start a daemon.
type daemonOpts struct {
	config string   // TOML written to dir/node.toml and passed to --config; "" for none
	socket string   // the socket to serve on; "" for DIR/node.sock
	args   []string // more flags for serve
	env    []string
	files  []*os.File // passed as fds 3, 4, …
	// activate starts the node the way systemd does under socket
	// activation: LISTEN_FDS=1 and LISTEN_PID set to the node's own pid (a
	// shell sets it to its own pid, then execs the node in its place).
	activate bool
	noWait   bool // do not wait for the socket to accept
	// netns runs the node in that named network namespace (ip netns
	// exec, which execs the node in its place: the pid is the node's).
	netns string
}

// startDaemon starts `node serve --socket DIR/node.sock` (or o.socket)
// and waits until the socket accepts. Cleanup stops it with SIGTERM
// (SIGKILL after 10s) and waits for it, and fails the test if it exited
// with an error by itself or not with 0 on SIGTERM; it also dies with the
// test process (Pdeathsig).
func startDaemon(t *testing.T, o daemonOpts) *daemon {
	t.Helper()
	bin := buildNode(t)
	dir := publicDir(t)
	d := &daemon{dir: dir, socket: cmp.Or(o.socket, filepath.Join(dir, "node.sock")), log: &syncBuffer{}, waited: make(chan struct{})}
	args := []string{"serve", "--socket", d.socket}
	if o.config != "" {
		path := filepath.Join(dir, "node.toml")
		if err := os.WriteFile(path, []byte(o.config), 0o644); err != nil {
			t.Fatal(err)
		}
		args = append(args, "--config", path)
	}
	args = append(args, o.args...)
	name := bin
	if o.activate {
		args = append([]string{"-c", `export LISTEN_PID=$$ LISTEN_FDS=1; exec "$0" "$@"`, bin}, args...)
		name = "/bin/sh"
	}
	if o.netns != "" {
		args = append([]string{"netns", "exec", o.netns, name}, args...)
		name = "ip"
	}
	d.cmd = exec.Command(name, args...)
	d.cmd.Env = nodeEnv(o.env...)
	d.cmd.ExtraFiles = o.files
	d.cmd.Stdout = d.log
	d.cmd.Stderr = d.log
	d.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { d.cmd.Wait(); close(d.waited) }()
	t.Cleanup(func() {
		// A node that exits with an error by itself during a test (a
		// panic, a fatal error) fails it, whatever the test checked; so
		// does one that does not stop cleanly on SIGTERM. One the test
		// killed with a signal, or stopped itself, is the test's.
		select {
		case <-d.waited:
			if st := d.cmd.ProcessState; !o.noWait && st.Exited() && st.ExitCode() != 0 {
				t.Errorf("the node exited by itself during the test: %v", st)
			}
		default:
			d.cmd.Process.Signal(syscall.SIGCONT) // in case a test stopped it
			d.cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-d.waited:
				if st := d.cmd.ProcessState; st.ExitCode() != 0 {
					t.Errorf("the node exited with %v on SIGTERM, want status 0", st)
				}
			case <-time.After(10 * time.Second):
				d.cmd.Process.Kill()
				<-d.waited
				t.Error("the node did not stop within 10 s of SIGTERM")
			}
		}
		if t.Failed() {
			t.Logf("node log:\n%s", d.log.String())
		}
	})
	if !o.noWait {
		d.waitServing(t)
	}
	return d
}

// waitServing waits until the node accepts on its socket (a bare connect,
// closed at once: the node counts no connection for it).
func (d *daemon) waitServing(t *testing.T) {
	t.Helper()
	checkFor(t, 15*time.Second, func() error {
		select {
		case <-d.waited:
			t.Fatalf("node exited: %v\n%s", d.cmd.ProcessState, d.log.String())
		default:
		}
		c, err := net.Dial("unix", d.socket)
		if err != nil {
			return err
		}
		c.Close()
		return nil
	})
}

// writeConfig replaces the daemon's configuration file.
func (d *daemon) writeConfig(t *testing.T, config string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(d.dir, "node.toml"), []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
}

// signal sends sig to the node.
func (d *daemon) signal(t *testing.T, sig syscall.Signal) {
	t.Helper()
	if err := d.cmd.Process.Signal(sig); err != nil {
		t.Fatal(err)
	}
}

// stop sends SIGTERM and returns the exit code.
func (d *daemon) stop(t *testing.T) int {
	t.Helper()
	d.signal(t, syscall.SIGTERM)
	select {
	case <-d.waited:
	case <-time.After(15 * time.Second):
		t.Fatal("node did not stop within 15s of SIGTERM")
	}
	return d.cmd.ProcessState.ExitCode()
}

// waitLog waits until the node's log holds n occurrences of s.
func (d *daemon) waitLog(t *testing.T, s string, n int) {
	t.Helper()
	checkFor(t, 10*time.Second, func() error {
		if got := strings.Count(d.log.String(), s); got < n {
			return fmt.Errorf("node log has %q %d times, want %d", s, got, n)
		}
		return nil
	})
}

// cliResult is what a run of the node binary printed and how it exited.
type cliResult struct {
	stdout, stderr string
	code           int
}

// runCLI runs the node binary with args (and env) and waits for it.
func runCLI(t *testing.T, env []string, args ...string) cliResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, buildNode(t), args...)
	cmd.Env = nodeEnv(env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatalf("node %s: %v", strings.Join(args, " "), err)
	}
	return cliResult{out.String(), errb.String(), cmd.ProcessState.ExitCode()}
}
