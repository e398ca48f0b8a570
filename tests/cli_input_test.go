package tests

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestCLIBadInput: every kind of bad input ends with exactly one line
// on standard error and exit code 2, and nothing on standard output;
// a payload over the node's max_message is refused before it is sent.
func TestCLIBadInput(t *testing.T) {
	d := startDaemon(t, daemonOpts{args: []string{"--max-message", "1024"}})
	sock := "--socket=" + d.socket
	dir := t.TempDir()
	big := filepath.Join(dir, "big")
	if err := os.WriteFile(big, make([]byte, 2000), 0o644); err != nil {
		t.Fatal(err)
	}
	badKey := filepath.Join(dir, "bad.toml")
	if err := os.WriteFile(badKey, []byte("name = \"n1\"\nbogus_key = 1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	badValue := filepath.Join(dir, "badvalue.toml")
	if err := os.WriteFile(badValue, []byte("[events]\nqueue_limit = -1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		env  []string
		want string // in the line
	}{
		{[]string{"frobnicate"}, nil, `unknown command "frobnicate"`},
		{[]string{"--frobnicate"}, nil, "unknown flag --frobnicate"},
		{[]string{"help", "frobnicate"}, nil, `unknown command "frobnicate"`},
		{[]string{"status", "--bogus"}, nil, "unknown flag --bogus"},
		{[]string{"status", "--timeout=soon"}, nil, `invalid value "soon" for flag --timeout`},
		{[]string{"subscribe", "--count=many", "g"}, nil, `invalid value "many" for flag --count`},
		{[]string{"publish", "--want-answer=perhaps", "g"}, nil, `invalid boolean value "perhaps" for --want-answer`},
		{[]string{"status", "--timeout"}, nil, "flag needs an argument: --timeout"},
		{[]string{"status", "--timeout=-1s"}, nil, `invalid value "-1s" for flag --timeout: must be positive`},
		{[]string{"subscribe", "--timeout=0", "g"}, nil, `invalid value "0" for flag --timeout: must be positive`},
		{[]string{"ls", "--width=-5"}, nil, `invalid value "-5" for flag --width: must not be negative`},
		{[]string{"services", "--width", "wide"}, nil, `invalid value "wide" for flag --width: not a number`},
		{[]string{"status", "extra"}, nil, `unexpected argument "extra"`},
		{[]string{"call", sock, "0xffff"}, nil, "usage: switchboard call"},
		{[]string{"call", sock, "70000", "1"}, nil, "numbers from 0 to 65535"},
		{[]string{"call", sock, "0xffff", "2", "@" + filepath.Join(dir, "missing")}, nil, "cannot read the payload file"},
		{[]string{"publish", sock, "g", "@" + filepath.Join(dir, "missing")}, nil, "cannot read the payload file"},
		{[]string{"request", sock, "svc.x", "@" + filepath.Join(dir, "missing")}, nil, "cannot read the payload file"},
		{[]string{"call", sock, "0xffff", "2", "@" + big}, nil, "2000 bytes; the node takes at most 1024"},
		{[]string{"publish", sock, "g", "@" + big}, nil, "2000 bytes; the node takes at most 1024"},
		{[]string{"request", sock, "svc.x", "@" + big}, nil, "2000 bytes; the node takes at most 1024"},
		{[]string{"reply", sock, "svc.x", "--data", "@" + big}, nil, "2000 bytes; the node takes at most 1024"},
		{[]string{"serve", "--config", badKey}, nil, "bogus_key: unknown key"},
		{[]string{"serve", "--config", badValue}, nil, "events.queue_limit: must be >= 0"},
		{[]string{"serve", "--config", filepath.Join(dir, "missing.toml")}, nil, "no such file"},
		{[]string{"serve", "--log-level", "loud"}, nil, "log.level: must be debug, info, warn or error"},
		{[]string{"serve", "--max-message", "lots"}, nil, "max_message (from --max-message): not an integer"},
		{[]string{"serve"}, []string{"SWITCHBOARD_RINGS_EVENT=3"}, "rings.event: must be a power of two"},
		{[]string{"serve"}, []string{"SWITCHBOARD_HANDSHAKE_TIMEOUT=soon"}, "handshake_timeout (from $SWITCHBOARD_HANDSHAKE_TIMEOUT): not a duration"},
		{[]string{"serve", "--bogus"}, nil, "unknown flag --bogus"},
		{[]string{"completion", "tcsh"}, nil, `no completion for "tcsh"`},
		{[]string{"completion"}, nil, "usage: switchboard completion"},
		{[]string{"man", "extra"}, nil, `unexpected argument "extra"`},
		{[]string{"version", "--short"}, nil, "unknown flag --short"},
	} {
		r := runCLI(t, tc.env, tc.args...)
		lines := strings.Split(strings.TrimSuffix(r.stderr, "\n"), "\n")
		if r.code != 2 || len(lines) != 1 || !strings.HasSuffix(r.stderr, "\n") || r.stdout != "" ||
			!strings.Contains(r.stderr, tc.want) || !strings.Contains(r.stderr, "switchboard") {
			t.Errorf("switchboard %s: exit %d, stdout %q, stderr %q; want exit 2 and one line with %q",
				strings.Join(tc.args, " "), r.code, r.stdout, r.stderr, tc.want)
		}
	}
	// At the limit, it goes through.
	if err := os.WriteFile(big, []byte(strings.Repeat("x", 1024)), 0o644); err != nil {
		t.Fatal(err)
	}
	if r := runCLI(t, nil, "call", sock, "0xffff", "2", "@"+big); r.code != 0 || len(r.stdout) != 1024 {
		t.Errorf("call with 1024 bytes: exit %d, %d bytes out, %s", r.code, len(r.stdout), r.stderr)
	}
}

// TestCLIVersion: --version and version print the version, a commit
// field and the Go version.
func TestCLIVersion(t *testing.T) {
	a, b := runCLI(t, nil, "--version"), runCLI(t, nil, "version")
	if a.code != 0 || b.code != 0 || a.stdout != b.stdout || a.stderr != "" {
		t.Fatalf("--version: exit %d %q %q; version: exit %d %q", a.code, a.stdout, a.stderr, b.code, b.stdout)
	}
	re := regexp.MustCompile(`^switchboard \S+( \(module \S+\))?\ncommit: ([0-9a-f]{40}( \(.*\))?|unknown)\ngo: go1\.\d+\S* \w+/\w+\n$`)
	if !re.MatchString(a.stdout) {
		t.Errorf("--version printed %q, want it to match %s", a.stdout, re)
	}
}

// TestCLIVersionFromCheckout builds the binary in a fresh clone (a .git
// directory: Go does not stamp a build in a linked worktree) and checks
// that --version names the clone's commit.
func TestCLIVersionFromCheckout(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary again: not with -short")
	}
	git, err := exec.LookPath("git")
	if err != nil {
		t.Skip("no git")
	}
	if out, err := exec.Command(git, "-C", "..", "rev-parse", "HEAD").Output(); err != nil || len(out) == 0 {
		t.Skip("not a git checkout")
	}
	clone := filepath.Join(t.TempDir(), "src")
	if out, err := exec.Command(git, "clone", "-q", "--no-local", "..", clone).CombinedOutput(); err != nil {
		t.Fatalf("git clone: %v\n%s", err, out)
	}
	head, err := exec.Command(git, "-C", clone, "rev-parse", "HEAD").Output()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(t.TempDir(), "switchboard")
	build := exec.Command("go", "build", "-buildvcs=true", "-o", bin, "./cmd/node")
	build.Dir = clone
	build.Env = append(os.Environ(), "GOFLAGS=")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	out, err := exec.Command(bin, "--version").Output()
	if err != nil {
		t.Fatal(err)
	}
	if want := "commit: " + strings.TrimSpace(string(head)) + " ("; !strings.Contains(string(out), want) {
		t.Errorf("--version of a build from the checkout at %s:\n%s", head, out)
	}
}

// TestServeSaysWhereNotOnAPipe: at the default level (warn), with
// standard error not a terminal, serve prints nothing at all: logs and
// scripts see what they saw before.
func TestServeSaysWhereNotOnAPipe(t *testing.T) {
	d := startDaemon(t, daemonOpts{})
	if r := runCLI(t, nil, "status", "--socket="+d.socket); r.code != 0 {
		t.Fatalf("status: %d %s", r.code, r.stderr)
	}
	if log := d.log.String(); log != "" {
		t.Errorf("serve at warn on a pipe wrote %q", log)
	}
}

// TestServeSaysWhereOnATerminal: with standard error a terminal (a
// pseudo-terminal here), serve says in one line where it listens, at
// the default level; with --log-format json it does not (the JSON lines
// stay JSON lines).
func TestServeSaysWhereOnATerminal(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want bool
	}{{nil, true}, {[]string{"--log-format", "json"}, false}} {
		ptmx, pts := openPTY(t)
		socket := filepath.Join(publicDir(t), "node.sock")
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		cmd := exec.CommandContext(ctx, buildNode(t), append([]string{"serve", "--socket", socket}, tc.args...)...)
		cmd.Env = nodeEnv()
		cmd.Stderr = pts
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		pts.Close()
		lines := make(chan string, 16)
		go func() {
			sc := bufio.NewScanner(ptmx)
			for sc.Scan() {
				lines <- sc.Text()
			}
			close(lines)
		}()
		waitSocketFile(t, socket)
		var got []string
		deadline := time.After(2 * time.Second)
	read:
		for {
			select {
			case l, ok := <-lines:
				if !ok {
					break read
				}
				got = append(got, l)
				if strings.Contains(l, "serving on") {
					break read
				}
			case <-deadline:
				break read
			}
		}
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
		cancel()
		ptmx.Close()
		want := fmt.Sprintf("switchboard: node n1 serving on %s (pid %d; Ctrl-C stops it)", socket, cmd.Process.Pid)
		said := len(got) > 0 && strings.TrimSpace(got[len(got)-1]) == want
		if said != tc.want || (tc.want && len(got) != 1) {
			t.Errorf("serve %s on a terminal wrote %q; want the line %v (%q)", strings.Join(tc.args, " "), got, tc.want, want)
		}
	}
}

// openPTY opens a pseudo-terminal pair (posix_openpt, unlockpt, ptsname).
func openPTY(t *testing.T) (ptmx, pts *os.File) {
	t.Helper()
	ptmx, err := os.OpenFile("/dev/ptmx", os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("no pseudo-terminal: %v", err)
	}
	fd := int(ptmx.Fd())
	if err := unix.IoctlSetPointerInt(fd, unix.TIOCSPTLCK, 0); err != nil {
		ptmx.Close()
		t.Skipf("unlockpt: %v", err)
	}
	n, err := unix.IoctlGetInt(fd, unix.TIOCGPTN)
	if err != nil {
		ptmx.Close()
		t.Skipf("ptsname: %v", err)
	}
	pts, err = os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		ptmx.Close()
		t.Skipf("open pts: %v", err)
	}
	return ptmx, pts
}

func waitSocketFile(t *testing.T, socket string) {
	t.Helper()
	checkFor(t, 15*time.Second, func() error {
		_, err := os.Stat(socket)
		return err
	})
}
