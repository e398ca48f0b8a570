package tests

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

// Tests of what the CLI prints: tables at 80 columns on a (pretend)
// terminal and complete when piped (golden), JSON lines from subscribe
// and monitor, hex dumps, reply answering request, services.

// tty80 makes the CLI take its stdout for an 80-column terminal.
var tty80 = []string{"SWITCHBOARD_TTY=1", "COLUMNS=80"}

const longGroup = "chat.a-group-whose-name-is-far-too-long-to-fit-beside-its-member-count-on-a-terminal"

// TestCLITablesAt80Columns: on an 80-column terminal every table line
// fits, long cells ending in "…" (golden), and ls leaves out columns but
// keeps whole addresses; piped, the same tables are complete (golden).
func TestCLITablesAt80Columns(t *testing.T) {
	d := startDaemon(t, daemonOpts{args: []string{"--name", "golden"}})
	longName := "svc.a-well-known-name-long-enough-to-be-cut-on-a-terminal"
	_, a1 := startPeer(t, "peer", d.socket, "SB_GROUPS=chat,"+longGroup, "SB_NAME="+longName)
	_, a2 := startPeer(t, "peer", d.socket, "SB_GROUPS=chat", "SB_NAME="+longName)
	m := regexp.MustCompile(`^(:golden\.[0-9a-z]{12}\.)1$`).FindStringSubmatch(a1)
	if m == nil || a2 != m[1]+"2" {
		t.Fatalf("peer addresses %s, %s; the golden files expect :golden.INCARNATION.1 and .2", a1, a2)
	}
	sock := "--socket=" + d.socket
	for _, tc := range []struct {
		args   []string
		golden string
	}{
		{[]string{"groups"}, "groups"},
		{[]string{"names"}, "names"},
		{[]string{"services"}, "services"},
		{[]string{"services", "0xffff"}, "services-system"},
	} {
		for _, mode := range []struct {
			suffix string
			env    []string
		}{{".tty80.golden", tty80}, {".piped.golden", nil}} {
			r := runCLI(t, mode.env, append(tc.args, sock)...)
			if r.code != 0 {
				t.Fatalf("%v: exit %d: %s", tc.args, r.code, r.stderr)
			}
			if mode.env != nil {
				checkWidth(t, r.stdout, 80)
			}
			golden(t, tc.golden+mode.suffix, strings.ReplaceAll(r.stdout, m[1], ":golden.<incarnation>."))
		}
	}
	// --width overrides the terminal's width, and 0 means no limit.
	if r := runCLI(t, tty80, "groups", sock, "--width", "0"); !strings.Contains(r.stdout, longGroup+"  1") {
		t.Errorf("groups --width 0 on a terminal cut the group:\n%s", r.stdout)
	}
	if r := runCLI(t, nil, "groups", sock, "--width", "30"); r.code != 0 || !strings.Contains(r.stdout, "chat.a-group-whose-n…  1") {
		t.Errorf("groups --width 30:\n%s%s", r.stdout, r.stderr)
	}

	// ls: volatile columns, so no golden file; at 80 columns, every line
	// fits and the addresses are whole; piped, every column is there.
	r := runCLI(t, tty80, "ls", sock)
	checkWidth(t, r.stdout, 80)
	for _, want := range []string{"ADDRESS", "NAME", "PID", "GROUPS", "AGE", a1 + "   peer", a2 + "   peer"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("ls at 80 columns: no %q in\n%s", want, r.stdout)
		}
	}
	if !regexp.MustCompile(`  chat,[^ ]*…  `).MatchString(r.stdout) { // the long group list, ellipsized
		t.Errorf("ls at 80 columns: the groups not ellipsized in\n%s", r.stdout)
	}
	if strings.Contains(r.stdout, "GID") || strings.Contains(r.stdout, "NODE") {
		t.Errorf("ls at 80 columns kept GID or NODE (the address names the node):\n%s", r.stdout)
	}
	r = runCLI(t, nil, "ls", sock)
	header := strings.Fields(strings.SplitN(r.stdout, "\n", 2)[0])
	if strings.Join(header, " ") != "ADDRESS NODE NAME UID GID PID TRANSPORT GROUPS CALLS/SENDS EVENTS IN OUT DROPS FILL PENDING AGE" ||
		!strings.Contains(r.stdout, "chat,"+longGroup+" ["+longName+"]") || strings.Contains(r.stdout, "…") {
		t.Errorf("ls piped is not complete:\n%s", r.stdout)
	}
	// status and info too.
	for _, cmd := range []string{"status", "info"} {
		checkWidth(t, runCLI(t, []string{"SWITCHBOARD_TTY=1", "COLUMNS=40"}, cmd, sock).stdout, 40)
	}
}

// checkWidth fails the test if a line of out is wider than width.
func checkWidth(t *testing.T, out string, width int) {
	t.Helper()
	for _, line := range strings.Split(strings.TrimRight(out, "\n"), "\n") {
		if n := utf8.RuneCountInString(line); n > width {
			t.Errorf("line of %d characters, more than %d: %q", n, width, line)
		}
	}
}

// TestCLIServicesOfEmbeddedNode: services lists a program's own
// services, named and described (the tests' node role), with the system
// service; services SVC lists the commands, by name too.
func TestCLIServicesOfEmbeddedNode(t *testing.T) {
	_, socket := nodeChild(t)
	sock := "--socket=" + socket
	r := runCLI(t, nil, "services", sock)
	want := "ID      NAME    COMMANDS  DESCRIPTION\n" +
		"0x0007  test    3         the tests' service: echo, slow, panic, emit, fail, stuck, unstick, stats\n" +
		"0xffff  system  5         the node's built-in service: ping, echo, info, services, nodes\n"
	if r.code != 0 || r.stdout != want {
		t.Errorf("services: exit %d\n%s%s\nwant:\n%s", r.code, r.stdout, r.stderr, want)
	}
	for _, svc := range []string{"7", "test"} {
		r = runCLI(t, nil, "services", sock, svc)
		if r.code != 0 || r.stdout != "COMMAND  NAME  DESCRIPTION\n1        echo  the payload\n2        slow  waits for its context to end\n5        fail  an error\n" {
			t.Errorf("services %s: exit %d\n%s%s", svc, r.code, r.stdout, r.stderr)
		}
	}
	r = runCLI(t, nil, "services", sock, "--json")
	var list []struct {
		ID          uint16 `json:"id"`
		Name        string `json:"name"`
		Description string `json:"description"`
		Commands    []struct {
			ID   uint16 `json:"id"`
			Name string `json:"name"`
		} `json:"commands"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &list); err != nil || len(list) != 2 || list[0].Name != "test" || len(list[0].Commands) != 3 ||
		list[1].ID != 0xffff || list[1].Commands[3].Name != "services" {
		t.Errorf("services --json: %v %+v\n%s", err, list, r.stdout)
	}
	if r := runCLI(t, nil, "services", sock, "nosuch"); r.code != 1 {
		t.Errorf("services of an unknown service: exit %d, want 1", r.code)
	}
}

// TestCLIJSONLines: subscribe --json and monitor --json print one JSON
// object a line, which parse one by one: publications (text and binary,
// the bytes in base64), notices decoded, requests.
func TestCLIJSONLines(t *testing.T) {
	d := startDaemon(t, daemonOpts{})
	sock := "--socket=" + d.socket
	sub := startCLI(t, "subscribe", sock, "--json", "--count", "4", "chat", "sys.groups")
	sub.waitStderr(t, "subscribed to")
	mon := startCLI(t, "monitor", sock, "--json", "--count", "3")
	mon.waitStderr(t, "monitoring")
	bin := filepath.Join(t.TempDir(), "bin")
	if err := os.WriteFile(bin, []byte{0, 1, 2, 0xff}, 0o644); err != nil {
		t.Fatal(err)
	}
	startPeer(t, "peer", d.socket, "SB_MODE=echo", "SB_NAME=svc.echo", "SB_GROUPS=other")
	for _, payload := range []string{"hello, chat", "@" + bin} {
		if r := runCLI(t, nil, "publish", sock, "chat", payload); r.code != 0 {
			t.Fatalf("publish: exit %d: %s", r.code, r.stderr)
		}
	}
	if r := runCLI(t, nil, "request", sock, "svc.echo", "ping"); r.code != 0 {
		t.Fatalf("request: exit %d: %s", r.code, r.stderr)
	}
	type line struct {
		Time, Kind, From, To, Text string
		Size                       int
		Payload                    []byte
		Notice                     *struct{ Kind, Group, Address string }
	}
	parse := func(b *bgCLI, name string) []line {
		if code := b.wait(t); code != 0 {
			t.Fatalf("%s: exit %d: %s", name, code, b.stderr.String())
		}
		var out []line
		for _, s := range strings.Split(strings.TrimSuffix(b.stdout.String(), "\n"), "\n") {
			var l line
			if err := json.Unmarshal([]byte(s), &l); err != nil {
				t.Fatalf("%s: a line that is not JSON: %v\n%q", name, err, s)
			}
			if _, err := time.Parse(time.RFC3339Nano, l.Time); err != nil {
				t.Errorf("%s: time %q: %v", name, l.Time, err)
			}
			out = append(out, l)
		}
		return out
	}
	got := parse(sub, "subscribe")
	if len(got) != 4 {
		t.Fatalf("subscribe printed %d lines, want 4", len(got))
	}
	// Two notices, the command's own subscription to sys.groups and the
	// peer's to "other"; then the two publications.
	groups := map[string]bool{}
	for _, l := range got[:2] {
		if l.Kind != "notice" || l.Notice == nil || l.Notice.Kind != "subscribed" || l.To != "sys.groups" || !strings.Contains(l.Text, "subscribed to") {
			t.Errorf("a notice line: %+v", l)
		} else {
			groups[l.Notice.Group] = true
		}
	}
	if !groups["sys.groups"] || !groups["other"] {
		t.Errorf("notices of subscriptions to %v, want sys.groups and other", groups)
	}
	if l := got[2]; l.Kind != "publish" || l.To != "chat" || string(l.Payload) != "hello, chat" || l.Text != "hello, chat" || l.Size != 11 || !strings.HasPrefix(l.From, ":n1.") {
		t.Errorf("line 3: %+v", l)
	}
	if l := got[3]; l.Kind != "publish" || string(l.Payload) != "\x00\x01\x02\xff" || l.Text != "" || l.Size != 4 {
		t.Errorf("line 4: %+v", l)
	}
	got = parse(mon, "monitor")
	if len(got) != 3 || got[0].Kind != "publish" || got[1].Kind != "publish" || got[2].Kind != "request" || got[2].To != "svc.echo" || got[2].Text != "ping" {
		t.Errorf("monitor lines: %+v", got)
	}
}

// TestCLIReplyRequest: reply answers request between two CLI processes,
// with a fixed payload, by echoing, and by running a command (whose
// failure is the requester's error); in a group it answers RequestGroup;
// --count ends it.
func TestCLIReplyRequest(t *testing.T) {
	d := startDaemon(t, daemonOpts{})
	sock := "--socket=" + d.socket
	fixed := startCLI(t, "reply", sock, "svc.greet", "--data", "hello", "--count", "2")
	fixed.waitStderr(t, "replying as svc.greet")
	for _, q := range []string{"first", "second"} {
		if r := runCLI(t, nil, "request", sock, "svc.greet", q); r.code != 0 || r.stdout != "hello" {
			t.Errorf("request svc.greet %s: exit %d %q %s", q, r.code, r.stdout, r.stderr)
		}
	}
	if code := fixed.wait(t); code != 0 {
		t.Fatalf("reply --count 2: exit %d: %s", code, fixed.stderr.String())
	}
	if !regexp.MustCompile(`^\S+  :n1\.\w+\.\d+ -> svc.greet  first  \(answered 5 bytes\)\n\S+  :n1\.\w+\.\d+ -> svc.greet  second  \(answered 5 bytes\)\n$`).MatchString(fixed.stdout.String()) {
		t.Errorf("reply printed:\n%s", fixed.stdout.String())
	}

	echo := startCLI(t, "reply", sock, "--json", "--count", "1", "svc.echo")
	echo.waitStderr(t, "replying as")
	if r := runCLI(t, nil, "request", sock, "svc.echo", "say it back"); r.code != 0 || r.stdout != "say it back" {
		t.Errorf("request to an echoing reply: exit %d %q %s", r.code, r.stdout, r.stderr)
	}
	echo.wait(t)
	var rec struct {
		From, To, Text string
		ReplySize      int `json:"reply_size"`
	}
	if err := json.Unmarshal([]byte(echo.stdout.String()), &rec); err != nil || rec.To != "svc.echo" || rec.Text != "say it back" || rec.ReplySize != 11 {
		t.Errorf("reply --json: %v %+v %q", err, rec, echo.stdout.String())
	}

	cmd := startCLI(t, "reply", sock, "svc.upper", "--count", "2", "--command", `[ "$(cat)" = fail ] && { echo "no, $SWITCHBOARD_TO" >&2; exit 3; }; echo "$SWITCHBOARD_TO" | tr a-z A-Z`)
	cmd.waitStderr(t, "replying as")
	if r := runCLI(t, nil, "request", sock, "svc.upper", "x"); r.code != 0 || r.stdout != "SVC.UPPER\n" {
		t.Errorf("request to reply --command: exit %d %q %s", r.code, r.stdout, r.stderr)
	}
	if r := runCLI(t, nil, "request", sock, "svc.upper", "fail"); r.code != 1 || !strings.Contains(r.stderr, "no, svc.upper") {
		t.Errorf("request to a failing reply --command: exit %d %q %q", r.code, r.stdout, r.stderr)
	}
	if code := cmd.wait(t); code != 0 || !strings.Contains(cmd.stdout.String(), "(error: no, svc.upper)") {
		t.Errorf("reply --command: exit %d\n%s%s", code, cmd.stdout.String(), cmd.stderr.String())
	}

	grp := startCLI(t, "reply", sock, "--group", "workers", "--data", "done", "--count", "1")
	grp.waitStderr(t, "replying in group workers")
	c := dialT(t, d.socket)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := c.RequestGroup(ctx, "workers", []byte("job"))
	if err != nil || len(res) != 1 || string(res[0].Payload) != "done" || res[0].Err != nil {
		t.Errorf("RequestGroup to reply --group: %v %+v", err, res)
	}
	if code := grp.wait(t); code != 0 {
		t.Errorf("reply --group: exit %d: %s", code, grp.stderr.String())
	}
	for _, args := range [][]string{{"reply"}, {"reply", "a", "b"}, {"reply", "--echo", "--data", "x", "n"}, {"reply", "--count", "-1", "n"}, {"reply", "--data", "@/nonexistent", "n"}} {
		if r := runCLI(t, nil, append(args, sock)...); r.code != 2 {
			t.Errorf("%v: exit %d, want 2", args, r.code)
		}
	}
}

// TestCLIHexDump: call and request print a binary reply as a hex dump on
// a (pretend) terminal, text as text, and the raw bytes when piped;
// --output and --json choose.
func TestCLIHexDump(t *testing.T) {
	d := startDaemon(t, daemonOpts{})
	sock := "--socket=" + d.socket
	payload := []byte("binary\x00\x01\x02\xfe\xff and some more text to wrap")
	bin := filepath.Join(t.TempDir(), "bin")
	if err := os.WriteFile(bin, payload, 0o644); err != nil {
		t.Fatal(err)
	}
	dump := hex.Dump(payload)
	if !strings.HasPrefix(dump, "00000000  62 69 6e 61 72 79 00 01  02 fe ff 20 61 6e 64 20  |binary..... and |\n") {
		t.Fatalf("hex.Dump is not hexdump -C's format: %q", dump)
	}
	for _, tc := range []struct {
		env  []string
		args []string
		want string
	}{
		{[]string{"SWITCHBOARD_TTY=1"}, nil, dump},
		{nil, nil, string(payload)},
		{nil, []string{"--output", "hex"}, dump},
		{[]string{"SWITCHBOARD_TTY=1"}, []string{"--output", "raw"}, string(payload)},
		{nil, []string{"--output", "text"}, `binary\x00\x01\x02\xfe\xff and some more text to wrap` + "\n"},
	} {
		r := runCLI(t, tc.env, append([]string{"call", sock, "0xffff", "2", "@" + bin}, tc.args...)...)
		if r.code != 0 || r.stdout != tc.want {
			t.Errorf("call %v %v: exit %d %s\n%q\nwant\n%q", tc.env, tc.args, r.code, r.stderr, r.stdout, tc.want)
		}
	}
	if r := runCLI(t, []string{"SWITCHBOARD_TTY=1"}, "call", sock, "0xffff", "2", "some text"); r.stdout != "some text\n" {
		t.Errorf("text on a terminal: %q", r.stdout)
	}
	if r := runCLI(t, nil, "call", sock, "0xffff", "2", "@"+bin, "--json"); r.code != 0 ||
		!strings.Contains(r.stdout, `"payload": "`+"YmluYXJ5AAEC/v8gYW5kIHNvbWUgbW9yZSB0ZXh0IHRvIHdyYXA="+`"`) || strings.Contains(r.stdout, `"text"`) {
		t.Errorf("call --json: %s", r.stdout)
	}
	startCLI(t, "reply", sock, "svc.bin", "--data", "@"+bin).waitStderr(t, "replying as")
	if r := runCLI(t, []string{"SWITCHBOARD_TTY=1"}, "request", sock, "svc.bin"); r.code != 0 || r.stdout != dump {
		t.Errorf("request on a terminal: exit %d %q %s", r.code, r.stdout, r.stderr)
	}
	if r := runCLI(t, nil, "request", sock, "svc.bin"); r.stdout != string(payload) {
		t.Errorf("request piped: %q", r.stdout)
	}
	if r := runCLI(t, nil, "call", sock, "0xffff", "2", "--output", "bogus"); r.code != 2 {
		t.Errorf("--output bogus: exit %d, want 2", r.code)
	}
}

// TestCLIReplyCommandBounded: a reply --command that outlives --timeout
// answers an error within about that time and leaves nothing running,
// not even what the shell started (a sleep holding the output pipe); one
// whose output is over the node's largest message answers an error and
// says so, without reading it all (cat /dev/zero).
func TestCLIReplyCommandBounded(t *testing.T) {
	d := startDaemon(t, daemonOpts{args: []string{"--max-message", "1024"}})
	sock := "--socket=" + d.socket
	slow := startCLI(t, "reply", sock, "svc.slow", "--count", "1", "--timeout", "1s", "--command", "sleep 30.123; echo x")
	slow.waitStderr(t, "replying as svc.slow")
	start := time.Now()
	r := runCLI(t, nil, "request", sock, "--timeout", "20s", "svc.slow")
	if took := time.Since(start); r.code != 1 || !strings.Contains(r.stderr, "timed out after 1s") || took > 5*time.Second {
		t.Errorf("request to a reply --command outliving --timeout: exit %d after %v, %q %q", r.code, took, r.stdout, r.stderr)
	}
	if code := slow.wait(t); code != 0 || !strings.Contains(slow.stdout.String(), "(error: command timed out after 1s)") {
		t.Errorf("reply: exit %d\n%s%s", code, slow.stdout.String(), slow.stderr.String())
	}
	checkFor(t, 5*time.Second, func() error {
		procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
		for _, p := range procs {
			if b, err := os.ReadFile(p); err == nil && strings.Contains(string(b), "30.123") {
				return fmt.Errorf("%s still runs: %q", p, b)
			}
		}
		return nil
	})

	big := startCLI(t, "reply", sock, "svc.big", "--count", "2", "--timeout", "10s", "--command", "cat /dev/zero")
	big.waitStderr(t, "replying as svc.big")
	start = time.Now()
	if r := runCLI(t, nil, "request", sock, "--timeout", "20s", "svc.big"); r.code != 1 || !strings.Contains(r.stderr, "over 1024 bytes") || time.Since(start) > 5*time.Second {
		t.Errorf("request to a reply --command writing without end: exit %d after %v, %q", r.code, time.Since(start), r.stderr)
	}
	// The reply says what it answered once it has answered: the request
	// may return first.
	checkFor(t, 10*time.Second, func() error {
		if out := big.stdout.String(); !strings.Contains(out, "(error: the command's output is over 1024 bytes") {
			return fmt.Errorf("reply printed %q", out)
		}
		return nil
	})
	big.cmd.Process.Kill()
	<-big.done
	if out := big.stdout.String(); strings.Contains(out, "answered") {
		t.Errorf("reply printed %q", out)
	}
	// At the limit, the output is the answer.
	fits := startCLI(t, "reply", sock, "svc.fits", "--count", "1", "--command", "head -c 1024 /dev/zero")
	fits.waitStderr(t, "replying as svc.fits")
	if r := runCLI(t, nil, "request", sock, "svc.fits"); r.code != 0 || len(r.stdout) != 1024 {
		t.Errorf("request for 1024 bytes: exit %d, %d bytes, %s", r.code, len(r.stdout), r.stderr)
	}
	if code := fits.wait(t); code != 0 || !strings.Contains(fits.stdout.String(), "answered 1024 bytes") {
		t.Errorf("reply: exit %d %q", code, fits.stdout.String())
	}
}
