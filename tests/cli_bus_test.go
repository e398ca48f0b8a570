package tests

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/switchboard-ipc/switchboard"
)

// Tests of the bus commands of cmd/node: the listings' --json (golden),
// publish and subscribe between two CLI processes, request to a name a
// peer serves, monitor (and its losses), and the exit codes.

// normalizeJSONAll is normalizeJSON for any JSON value: it replaces the
// values of the volatile keys at any depth, checking each occurs.
func normalizeJSONAll(t *testing.T, out string, volatile ...string) string {
	t.Helper()
	var v any
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, out)
	}
	for _, k := range volatile {
		re := regexp.MustCompile(`(?m)^(\s*"` + regexp.QuoteMeta(k) + `": )[^,\n\[{]*(,?)$`)
		if !re.MatchString(out) {
			t.Errorf("no field %q in\n%s", k, out)
		}
		out = re.ReplaceAllString(out, "${1}\"<"+k+">\"${2}")
	}
	return out
}

// bgCLI is a node command running in the background.
type bgCLI struct {
	cmd            *exec.Cmd
	stdout, stderr *syncBuffer
	done           chan struct{}
}

// startCLI starts the node binary with args; cleanup kills it if it is
// still running and always waits for it.
func startCLI(t *testing.T, args ...string) *bgCLI {
	t.Helper()
	b := &bgCLI{stdout: &syncBuffer{}, stderr: &syncBuffer{}, done: make(chan struct{})}
	b.cmd = exec.Command(buildNode(t), args...)
	b.cmd.Env = nodeEnv()
	b.cmd.Stdout, b.cmd.Stderr = b.stdout, b.stderr
	b.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := b.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { b.cmd.Wait(); close(b.done) }()
	t.Cleanup(func() {
		b.cmd.Process.Signal(syscall.SIGCONT) // in case a test stopped it
		b.cmd.Process.Kill()
		<-b.done
	})
	return b
}

// wait waits for the command to exit and returns its exit code.
func (b *bgCLI) wait(t *testing.T) int {
	t.Helper()
	select {
	case <-b.done:
	case <-time.After(20 * time.Second):
		t.Fatalf("node %s still running after 20s\nstdout:\n%s\nstderr:\n%s", strings.Join(b.cmd.Args[1:], " "),
			b.stdout.String(), b.stderr.String())
	}
	return b.cmd.ProcessState.ExitCode()
}

// waitStderr waits until the command has written s to standard error.
func (b *bgCLI) waitStderr(t *testing.T, s string) {
	t.Helper()
	checkFor(t, 15*time.Second, func() error {
		if !strings.Contains(b.stderr.String(), s) {
			return fmt.Errorf("no %q on stderr yet: %q", s, b.stderr.String())
		}
		return nil
	})
}

// TestCLIListingsJSON: ls, groups, members and names print stable JSON
// (golden files; pids, credentials, times, byte counts and the node run's
// incarnation in addresses normalized) and readable tables, for a node
// with two peers: both in "chat", one in "news" too, the first owning
// svc.golden and the second its standby.
func TestCLIListingsJSON(t *testing.T) {
	d := startDaemon(t, daemonOpts{args: []string{"--name", "golden"}})
	_, a1 := startPeer(t, "peer", d.socket, "SB_GROUPS=chat,news", "SB_NAME=svc.golden")
	_, a2 := startPeer(t, "peer", d.socket, "SB_GROUPS=chat", "SB_NAME=svc.golden")
	m := regexp.MustCompile(`^(:golden\.[0-9a-z]{12}\.)1$`).FindStringSubmatch(a1)
	if m == nil || a2 != m[1]+"2" {
		t.Fatalf("peer addresses %s, %s; the golden files expect :golden.INCARNATION.1 and .2", a1, a2)
	}
	run := m[1] // ":golden.INCARNATION."
	sock := "--socket=" + d.socket
	for _, tc := range []struct {
		args     []string
		golden   string
		volatile []string
		table    []string // in the human form
	}{
		{[]string{"ls"}, "ls.json.golden", []string{"pid", "uid", "gid", "since", "age_seconds", "bytes_in", "bytes_out", "request_fill", "response_fill", "event_fill"},
			[]string{"ADDRESS", a1 + "  golden  peer", "chat,news [svc.golden]", "switchboard"}},
		{[]string{"groups"}, "groups.json.golden", nil, []string{"GROUP", "chat   2", "news   1"}},
		{[]string{"members", "chat"}, "members.json.golden", []string{"pid", "uid", "gid"}, []string{"ADDRESS", a1 + "  peer", a2 + "  peer"}},
		{[]string{"names"}, "names.json.golden", nil, []string{"NAME", "svc.golden  " + a1 + "  " + a2}},
	} {
		r := runCLI(t, nil, append(tc.args, sock, "--json")...)
		if r.code != 0 {
			t.Fatalf("%v --json: exit %d: %s", tc.args, r.code, r.stderr)
		}
		out := strings.ReplaceAll(r.stdout, run, ":golden.<incarnation>.")
		golden(t, tc.golden, normalizeJSONAll(t, out, tc.volatile...))
		r = runCLI(t, nil, append(tc.args, sock)...)
		for _, want := range tc.table {
			if r.code != 0 || !strings.Contains(r.stdout, want) {
				t.Errorf("%v: exit %d, no %q in\n%s%s", tc.args, r.code, want, r.stdout, r.stderr)
			}
		}
	}
	// An unknown group has no members: an empty list, not an error.
	if r := runCLI(t, nil, "members", "nobody.here", sock, "--json"); r.code != 0 || strings.TrimSpace(r.stdout) != "[]" {
		t.Errorf("members of an unknown group: exit %d %q %s", r.code, r.stdout, r.stderr)
	}
}

// TestCLIPublishSubscribe: `subscribe --count 3` in one process prints
// the three messages `publish` sends from others (text, a file, binary),
// then exits 0; --want-answer fails with 1 once nobody is subscribed.
func TestCLIPublishSubscribe(t *testing.T) {
	d := startDaemon(t, daemonOpts{})
	sock := "--socket=" + d.socket
	sub := startCLI(t, "subscribe", sock, "--count", "3", "chat")
	sub.waitStderr(t, "subscribed to chat")
	file := filepath.Join(t.TempDir(), "msg")
	if err := os.WriteFile(file, []byte("from a file"), 0o644); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(t.TempDir(), "bin")
	if err := os.WriteFile(bin, []byte{0, 1, 2, 0xff}, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, payload := range []string{"hello, chat", "@" + file, "@" + bin} {
		if r := runCLI(t, nil, "publish", "chat", payload, sock, "--want-answer"); r.code != 0 {
			t.Fatalf("publish %s: exit %d: %s", payload, r.code, r.stderr)
		}
	}
	if code := sub.wait(t); code != 0 {
		t.Fatalf("subscribe: exit %d: %s", code, sub.stderr.String())
	}
	got := strings.Split(strings.TrimSpace(sub.stdout.String()), "\n")
	want := []string{"  chat  hello, chat", "  chat  from a file", "  chat  hex:000102ff (4 bytes)"}
	if len(got) != 3 {
		t.Fatalf("subscribe printed %d lines:\n%s", len(got), sub.stdout.String())
	}
	for i, w := range want {
		if !strings.HasSuffix(got[i], w) || !strings.Contains(got[i], ":n1.") {
			t.Errorf("line %d: %q, want the sender's address and a suffix %q", i, got[i], w)
		}
	}
	if r := runCLI(t, nil, "publish", sock, "--want-answer", "chat", "again"); r.code != 1 || !strings.Contains(r.stderr, "undeliverable") {
		t.Errorf("publish --want-answer to an empty group: exit %d, stderr %q; want 1", r.code, r.stderr)
	}
	if r := runCLI(t, nil, "publish", sock, "chat", "into the void"); r.code != 0 {
		t.Errorf("publish to an empty group: exit %d, stderr %q; want 0", r.code, r.stderr)
	}
	// Notices on a reserved group come decoded.
	sub = startCLI(t, "subscribe", sock, "--count", "2", switchboard.GroupConnections)
	sub.waitStderr(t, "subscribed to")
	runCLI(t, nil, "groups", sock)
	if code := sub.wait(t); code != 0 {
		t.Fatalf("subscribe sys.connections: exit %d: %s", code, sub.stderr.String())
	}
	out := sub.stdout.String()
	if !regexp.MustCompile(`node  sys.connections  connected :n1\.[0-9a-z]+\.\d+ \(switchboard\) pid \d+ uid \d+\n.*node  sys.connections  disconnected :n1\.[0-9a-z]+\.\d+ \(switchboard\): closed\n$`).MatchString(out) {
		t.Errorf("sys.connections notices:\n%s", out)
	}
}

// TestCLIRequest: `request` reaches a peer by its well-known name and by
// its address and prints the reply; nobody there, a peer that does not
// answer in time, and a peer that leaves all exit 1.
func TestCLIRequest(t *testing.T) {
	d := startDaemon(t, daemonOpts{})
	sock := "--socket=" + d.socket
	_, addr := startPeer(t, "peer", d.socket, "SB_MODE=echo", "SB_NAME=svc.echo")
	for _, to := range []string{"svc.echo", addr} {
		r := runCLI(t, nil, "request", sock, to, "ping")
		if r.code != 0 || r.stdout != addr+":ping" {
			t.Errorf("request %s: exit %d, stdout %q, stderr %q", to, r.code, r.stdout, r.stderr)
		}
	}
	if r := runCLI(t, nil, "request", sock, "svc.nobody", "x"); r.code != 1 || !strings.Contains(r.stderr, "undeliverable") {
		t.Errorf("request to an unowned name: exit %d, stderr %q; want 1", r.code, r.stderr)
	}
	hang, _ := startPeer(t, "peer", d.socket, "SB_MODE=hang", "SB_NAME=svc.hang")
	if r := runCLI(t, nil, "request", sock, "--timeout", "300ms", "svc.hang", "x"); r.code != 1 || !strings.Contains(r.stderr, "no reply from svc.hang within 300ms") {
		t.Errorf("request to a peer that does not answer: exit %d, stderr %q; want 1", r.code, r.stderr)
	}
	// Requests are served one at a time: a second hanging peer for this one.
	hang, _ = startPeer(t, "peer", d.socket, "SB_MODE=hang", "SB_NAME=svc.hang2")
	req := startCLI(t, "request", sock, "--timeout", "30s", "svc.hang2", "y")
	checkFor(t, 10*time.Second, func() error {
		if !strings.Contains(hang.stdout.String(), "request") {
			return fmt.Errorf("request not delivered yet")
		}
		return nil
	})
	kill9(hang)
	if code := req.wait(t); code != 1 || !strings.Contains(req.stderr.String(), "gone") {
		t.Errorf("request to a peer that died: exit %d, stderr %q; want 1", code, req.stderr.String())
	}
}

// TestCLIMonitor: monitor prints a line per message between other
// clients (publications, requests), only its targets' when given some;
// and when it cannot keep up, "monitor: N messages lost".
func TestCLIMonitor(t *testing.T) {
	d := startDaemon(t, daemonOpts{config: "[events]\nqueue_limit = 8\n[rings]\nevent = 1024\n"})
	sock := "--socket=" + d.socket
	all := startCLI(t, "monitor", sock, "--count", "2")
	some := startCLI(t, "monitor", sock, "--count", "1", "svc.echo")
	all.waitStderr(t, "monitoring all traffic")
	some.waitStderr(t, "monitoring traffic of svc.echo")
	startPeer(t, "peer", d.socket, "SB_MODE=echo", "SB_NAME=svc.echo", "SB_GROUPS=chat")
	if r := runCLI(t, nil, "publish", sock, "chat", "seen by one"); r.code != 0 {
		t.Fatalf("publish: exit %d: %s", r.code, r.stderr)
	}
	if r := runCLI(t, nil, "request", sock, "svc.echo", "seen by both"); r.code != 0 {
		t.Fatalf("request: exit %d: %s", r.code, r.stderr)
	}
	if code := all.wait(t); code != 0 {
		t.Fatalf("monitor: exit %d: %s", code, all.stderr.String())
	}
	if code := some.wait(t); code != 0 {
		t.Fatalf("monitor svc.echo: exit %d: %s", code, some.stderr.String())
	}
	if !regexp.MustCompile(`^\S+  publish  :n1\.[0-9a-z]+\.\d+ -> chat  seen by one\n\S+  request  :n1\.[0-9a-z]+\.\d+ -> svc.echo  seen by both\n$`).MatchString(all.stdout.String()) {
		t.Errorf("monitor printed:\n%s", all.stdout.String())
	}
	if !regexp.MustCompile(`^\S+  request  :n1\.[0-9a-z]+\.\d+ -> svc.echo  seen by both\n$`).MatchString(some.stdout.String()) {
		t.Errorf("monitor svc.echo printed:\n%s", some.stdout.String())
	}

	// A stopped monitor loses copies, and says so; the publisher is not slowed.
	slow := startCLI(t, "monitor", sock)
	slow.waitStderr(t, "monitoring")
	slow.cmd.Process.Signal(syscall.SIGSTOP)
	c := dialT(t, d.socket)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	const n = 2000
	start := time.Now()
	for i := range n {
		if err := c.Publish(ctx, "chat", []byte(fmt.Sprintf("flood %d", i))); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("%d publications with a stopped monitor in %v", n, time.Since(start))
	slow.cmd.Process.Signal(syscall.SIGCONT)
	// The gap is told with the next message the monitor gets after it.
	lost := regexp.MustCompile(`(?m)^monitor: \d+ messages lost$`)
	for i := 0; !lost.MatchString(slow.stdout.String()); i++ {
		if i == 500 {
			t.Fatalf("a monitor that fell behind printed no loss line:\n%s", slow.stdout.String())
		}
		if err := c.Publish(ctx, "chat", []byte(fmt.Sprintf("after %d", i))); err != nil {
			t.Fatal(err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	slow.cmd.Process.Signal(syscall.SIGTERM)
	if code := slow.wait(t); code != 0 {
		t.Fatalf("slow monitor: exit %d: %s", code, slow.stderr.String())
	}
}

// TestCLIBusExitCodes: 1 for refused (policy on publish, subscribe,
// list, monitor) and undeliverable; 2 for bad usage; 3 with no node.
func TestCLIBusExitCodes(t *testing.T) {
	missing := "--socket=" + filepath.Join(t.TempDir(), "none.sock")
	for _, args := range [][]string{
		{"ls"}, {"groups"}, {"members", "g"}, {"names"}, {"publish", "g", "x"}, {"subscribe", "g"},
		{"request", "svc.x"}, {"monitor"}, {"bench", "--duration", "10ms"},
	} {
		if r := runCLI(t, nil, append(args, missing)...); r.code != 3 || strings.Count(r.stderr, "switchboard: ") != 1 {
			t.Errorf("node %s with no node: exit %d, want 3, and one prefix\n%s", strings.Join(args, " "), r.code, r.stderr)
		}
	}
	for _, args := range [][]string{
		{"members"}, {"members", "a", "b"}, {"publish"}, {"subscribe"}, {"request"}, {"ls", "x"},
		{"subscribe", "--count", "-1", "g"}, {"publish", "g", "@/nonexistent/file"}, {"bench", "--duration", "0"},
	} {
		if r := runCLI(t, nil, append(args, missing)...); r.code != 2 {
			t.Errorf("node %s: exit %d, want 2\n%s", strings.Join(args, " "), r.code, r.stderr)
		}
	}
	d := startDaemon(t, daemonOpts{config: `
[policy.bus]
list = { uids = [4242] }
monitor = { uids = [4242] }
[[policy.group]]
group = "secret"
publish = { uids = [4242] }
subscribe = { uids = [4242] }
`})
	sock := "--socket=" + d.socket
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"publish", "secret", "x"}, "may not publish"},
		{[]string{"subscribe", "secret"}, "may not subscribe"},
		{[]string{"ls"}, "may not list"},
		{[]string{"groups"}, "may not list"},
		{[]string{"names"}, "may not list"},
		{[]string{"monitor"}, "may not monitor"},
		{[]string{"publish", "sys.groups", "x"}, "refused"},
		{[]string{"publish", "--want-answer", "empty", "x"}, "undeliverable"},
		{[]string{"request", "svc.none", "x"}, "undeliverable"},
		{[]string{"request", ":n1.999", "x"}, "undeliverable"},
	} {
		r := runCLI(t, nil, append(tc.args, sock)...)
		if r.code != 1 || !strings.Contains(r.stderr, tc.want) || strings.Count(r.stderr, "switchboard: ") != 1 {
			t.Errorf("node %s: exit %d, stderr %q; want 1 and %q, said once after one prefix", strings.Join(tc.args, " "), r.code, r.stderr, tc.want)
		}
	}
	// A node that shuts down under a subscriber: said once, plainly.
	sub := startCLI(t, "subscribe", "g", sock)
	sub.waitStderr(t, "subscribed to g")
	d.stop(t)
	if code := sub.wait(t); code != 3 || !strings.HasSuffix(sub.stderr.String(), "(Ctrl-C to stop)\nswitchboard: node shutting down\n") {
		t.Errorf("subscribe when the node shut down: exit %d, stderr %q; want 3 and \"switchboard: node shutting down\"", code, sub.stderr.String())
	}
}

// TestCLIBench: bench runs its four workloads briefly and prints a table
// (and, with --json, a record per workload).
func TestCLIBench(t *testing.T) {
	d := startDaemon(t, daemonOpts{})
	r := runCLI(t, nil, "bench", "--socket", d.socket, "--duration", "100ms", "--subscribers", "2", "--json")
	if r.code != 0 {
		t.Fatalf("bench: exit %d: %s", r.code, r.stderr)
	}
	var rows []map[string]any
	if err := json.Unmarshal([]byte(r.stdout), &rows); err != nil || len(rows) != 4 {
		t.Fatalf("bench --json: %v\n%s", err, r.stdout)
	}
	for _, row := range rows {
		if ops, _ := row["ops"].(float64); ops <= 0 {
			t.Errorf("workload %v did nothing: %v", row["workload"], row)
		}
	}
	if !strings.Contains(r.stderr, "bench: fan-out 64 B to 2") {
		t.Errorf("no progress on stderr: %q", r.stderr)
	}
	r = runCLI(t, nil, "bench", "--socket", d.socket, "--duration", "50ms")
	if r.code != 0 || !strings.Contains(r.stdout, "WORKLOAD") || !strings.Contains(r.stdout, "request 64 B") {
		t.Errorf("bench: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
}

// TestCLINoTerminalEscapes: what clients chose (a client name with an
// escape sequence, a bell and a line end in it) is printed by ls, members
// and subscribe with its control characters escaped: nothing a client
// says can drive the operator's terminal or forge a line.
func TestCLINoTerminalEscapes(t *testing.T) {
	d := startDaemon(t, daemonOpts{})
	sock := "--socket=" + d.socket
	const evil = "\x1b]0;pwn\x07evil\nname\u009b2J\u202e"
	sub := startCLI(t, "subscribe", sock, "--count", "1", "sys.connections")
	sub.waitStderr(t, "subscribed to")
	c := dialT(t, d.socket, switchboard.WithClientName(evil))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.Subscribe(ctx, "chat"); err != nil {
		t.Fatal(err)
	}
	if code := sub.wait(t); code != 0 {
		t.Fatalf("subscribe: exit %d: %s", code, sub.stderr.String())
	}
	outputs := map[string]string{"subscribe sys.connections": sub.stdout.String()}
	for _, args := range [][]string{{"ls"}, {"members", "chat"}} {
		for _, env := range [][]string{nil, tty80} {
			r := runCLI(t, env, append(args, sock)...)
			if r.code != 0 {
				t.Fatalf("%v: exit %d: %s", args, r.code, r.stderr)
			}
			outputs[fmt.Sprint(args, env)] = r.stdout
		}
	}
	for what, out := range outputs {
		// On an 80-column terminal ls cuts the name to what its other
		// columns leave (the AGE column's width varies): the escaped
		// start of it is what must show.
		if !strings.Contains(out, `\x1b]0;pwn\aevil\nname`) && !strings.Contains(out, `\x1b]0;`) {
			t.Errorf("%s: no escaped client name in\n%s", what, out)
		}
		for _, line := range strings.Split(strings.TrimSuffix(out, "\n"), "\n") {
			for _, r := range line {
				if !unicode.IsPrint(r) || r == utf8.RuneError {
					t.Errorf("%s: control character %U in %q", what, r, line)
					break
				}
			}
		}
	}
}

// TestCLINodeGoneMidCall: call exits 3, not 1, when the node goes away
// while the call waits for its reply.
func TestCLINodeGoneMidCall(t *testing.T) {
	node, socket := nodeChild(t)
	call := startCLI(t, "call", "--socket", socket, "--timeout", "20s", fmt.Sprint(svcTest), fmt.Sprint(cmdSlow))
	checkFor(t, 10*time.Second, func() error { // the call's connection is there
		r := runCLI(t, nil, "ls", "--socket", socket, "--json")
		if strings.Count(r.stdout, `"client_name": "switchboard"`) < 2 {
			return fmt.Errorf("no call yet: %s", r.stdout)
		}
		return nil
	})
	time.Sleep(200 * time.Millisecond) // for the call to be sent
	node.cmd.Process.Kill()
	if code := call.wait(t); code != 3 {
		t.Errorf("call when the node went away: exit %d, want 3: %s", code, call.stderr.String())
	}
}
