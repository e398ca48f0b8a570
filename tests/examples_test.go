package tests

import (
	"context"
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
			`^\[A\] ok\n\[A\] blue\nA leaves\nserver B: the node says it owns example.kv now\n\[B\] ok\n\[B\] green$`)
		wantLines(t, "pollmode", runExample(t, dir, "pollmode", append(args, "-count", "3")...),
			`^event \d+ from :n1\.[0-9a-z]+\.\d+ on example.ticks: tick 1\nevent \d+ from :n1\.[0-9a-z]+\.\d+ on example.ticks: tick 2\nevent \d+ from :n1\.[0-9a-z]+\.\d+ on example.ticks: tick 3\n$`)
	}
	wantLines(t, "httpembed", runExample(t, dir, "httpembed", "-socket", filepath.Join(t.TempDir(), "node.sock"), "-http", "127.0.0.1:0", "-once"),
		`^GET http://127.0.0.1:\d+/hello\?name=you: 200 OK hello, you \(greeting 1, from actor \S+\)$`)
}
