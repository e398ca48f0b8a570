package tests

import (
	"context"
	"errors"
	osexec "os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// buildExamples builds every program under examples/ into a directory
// of the test's own.
func buildExamples(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	out, err := osexec.Command("go", "build", "-o", dir+"/", "../examples/...").CombinedOutput()
	if err != nil {
		t.Fatal(&buildError{err, string(out)})
	}
	return dir
}

// runExample runs the example program dir/name to its end (at most a
// minute) and returns its output; it fails the test if the program fails.
func runExample(t *testing.T, dir, name string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := osexec.CommandContext(ctx, filepath.Join(dir, name), args...)
	cmd.Env = nodeEnv()
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGQUIT) }
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

func wantLines(t *testing.T, what, out string, patterns ...string) {
	t.Helper()
	for _, p := range patterns {
		if !regexp.MustCompile(`(?m)` + p).MatchString(out) {
			t.Errorf("%s: no line matching %q in\n%s", what, p, out)
		}
	}
}

// TestExamples builds every example and runs the bus examples against a
// node in a child process and alone (with a node of their own), and the
// HTTP example once, checking what each prints.
func TestExamples(t *testing.T) {
	dir := buildExamples(t)
	_, socket := nodeChild(t)
	for _, args := range [][]string{{"-socket", socket}, nil} {
		wantLines(t, "pubsub", runExample(t, dir, "pubsub", args...),
			`^sub: member of example.chat: :n1\.[0-9a-z]+\.\d+ \(pubsub-sub, pid \d+\)$`,
			`^sub: notice on sys.connections: connected :n1\.[0-9a-z]+\.\d+ \(pubsub-pub\)`,
			`^sub: notice on example.chat: subscribed :n1\.[0-9a-z]+\.\d+ \(pubsub-pub\) example.chat$`,
			`^sub: message from :n1\.[0-9a-z]+\.\d+ on example.chat: hello\n(.*\n)*sub: message from :n1\.[0-9a-z]+\.\d+ on example.chat: from\n(.*\n)*sub: message from :n1\.[0-9a-z]+\.\d+ on example.chat: the publisher$`)
		wantLines(t, "peerrpc", runExample(t, dir, "peerrpc", args...),
			`^server A \(:n1\.[0-9a-z]+\.\d+\) owns example.kv$`,
			`^server B \(:n1\.[0-9a-z]+\.\d+\) is standby 1 for example.kv$`,
			`^client: example.kv is served by :n1\.[0-9a-z]+\.\d+\n\[A\] ok\nclient: :n1\.[0-9a-z]+\.\d+ changed color=blue\n\[A\] blue\nA leaves\nserver B: the node says it owns example.kv now\nclient: :n1\.[0-9a-z]+\.\d+ left example.kv\nclient: example.kv is served by :n1\.[0-9a-z]+\.\d+\n\[B\] ok\nclient: :n1\.[0-9a-z]+\.\d+ changed color=green\n\[B\] green$`)
		wantLines(t, "pollmode", runExample(t, dir, "pollmode", append(args, "-count", "3")...),
			`^event \d+ from :n1\.[0-9a-z]+\.\d+ on example.ticks: tick 1\nevent \d+ from :n1\.[0-9a-z]+\.\d+ on example.ticks: tick 2\nevent \d+ from :n1\.[0-9a-z]+\.\d+ on example.ticks: tick 3\n$`)
	}
	wantLines(t, "httpembed", runExample(t, dir, "httpembed", "-socket", filepath.Join(t.TempDir(), "node.sock"), "-http", "127.0.0.1:0", "-once"),
		`^GET http://127.0.0.1:\d+/hello\?name=you: 200 OK hello, you \(greeting 1, from actor \S+\)$`)
}

// TestExamplePollmodeNodeGoes: the pollmode example, reading from a node
// in a child process, stops soon after that node goes (its Fd then stays
// readable for good: a loop that did not check Err would spin at 100%
// CPU forever), saying why, and without having burnt a core meanwhile.
func TestExamplePollmodeNodeGoes(t *testing.T) {
	dir := t.TempDir()
	if out, err := osexec.Command("go", "build", "-o", dir+"/", "../examples/pollmode").CombinedOutput(); err != nil {
		t.Fatal(&buildError{err, string(out)})
	}
	node, socket := nodeChild(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := osexec.CommandContext(ctx, filepath.Join(dir, "pollmode"), "-socket", socket, "-count", "1000000")
	cmd.Env = nodeEnv()
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGQUIT) }
	cmd.WaitDelay = 5 * time.Second
	out := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	checkFor(t, 10*time.Second, func() error {
		if !strings.Contains(out.String(), "tick 2") {
			return errors.New("no tick 2 yet")
		}
		return nil
	})
	node.cmd.Process.Signal(syscall.SIGKILL)
	gone := time.Now()
	var err error
	select {
	case err = <-exited:
	case <-time.After(10 * time.Second):
		cmd.Process.Kill()
		<-exited
		t.Fatalf("pollmode still runs 10s after its node was killed:\n%s", out)
	}
	t.Logf("pollmode exited %v after its node was killed", time.Since(gone))
	var ee *osexec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 {
		t.Fatalf("pollmode: %v, want exit status 1\n%s", err, out)
	}
	wantLines(t, "pollmode", out.String(), `^pollmode: the connection ended: .*node`)
	// The loop spun, if it did, only until it checked Err: far less
	// than the seconds a 100% loop would have used up by now.
	if used := cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime(); used > 2*time.Second {
		t.Errorf("pollmode used %v of CPU", used)
	}
	node.cmd.Wait()
}
