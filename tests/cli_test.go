package tests

import (
	"encoding/json"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
)

// normalizeJSON replaces the values of the fields that change from run
// to run (pid, uid, times, paths, versions) with placeholders, keeping the
// output's own order and layout; it checks that the output is one JSON
// object and that each such field is there.
func normalizeJSON(t *testing.T, out string, volatile ...string) string {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal([]byte(out), &m); err != nil {
		t.Fatalf("not a JSON object: %v\n%s", err, out)
	}
	for _, k := range volatile {
		if _, ok := m[k]; !ok {
			t.Errorf("no field %q in\n%s", k, out)
		}
		re := regexp.MustCompile(`(?m)^(\s*"` + regexp.QuoteMeta(k) + `": )[^,\n]*(,?)$`)
		out = re.ReplaceAllString(out, "${1}\"<"+k+">\"${2}")
	}
	return out
}

// TestStatusInfoJSON: `status --json` and `info --json` print stable
// records (golden files, with pid, uid, times and paths normalized), and
// the human forms name the same things.
func TestStatusInfoJSON(t *testing.T) {
	d := startDaemon(t, daemonOpts{args: []string{"--name", "golden"}})
	sock := "--socket=" + d.socket

	r := runCLI(t, nil, "status", sock, "--json")
	if r.code != 0 {
		t.Fatalf("status --json: exit %d: %s", r.code, r.stderr)
	}
	golden(t, "status.json.golden", normalizeJSON(t, r.stdout, "pid", "uid", "started", "uptime_seconds", "socket", "version", "client_version"))

	r = runCLI(t, nil, "info", sock, "--json")
	if r.code != 0 {
		t.Fatalf("info --json: exit %d: %s", r.code, r.stderr)
	}
	golden(t, "info.json.golden", normalizeJSON(t, r.stdout, "pid", "uid", "started_unix_nano", "version"))

	r = runCLI(t, nil, "status", sock)
	for _, want := range []string{"node", "golden", "up", "connections  1 open", "calls"} {
		if r.code != 0 || !strings.Contains(r.stdout, want) {
			t.Fatalf("status: exit %d, no %q in\n%s%s", r.code, want, r.stdout, r.stderr)
		}
	}
	r = runCLI(t, nil, "info", sock)
	for _, want := range []string{"name", "golden", "version", "pid", "transport    shm"} {
		if r.code != 0 || !strings.Contains(r.stdout, want) {
			t.Fatalf("info: exit %d, no %q in\n%s%s", r.code, want, r.stdout, r.stderr)
		}
	}
}

// TestCLIHelpAndExitCodes: every command has --help on stdout with exit
// 0; bad usage exits 2; no node exits 3; a failed call exits 1.
func TestCLIHelpAndExitCodes(t *testing.T) {
	var names []string
	r := runCLI(t, nil, "help")
	if r.code != 0 || !strings.Contains(r.stdout, "commands:") {
		t.Fatalf("help: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	inList := false
	for _, line := range strings.Split(r.stdout, "\n") {
		switch {
		case line == "commands:":
			inList = true
		case inList && strings.HasPrefix(line, "  "):
			names = append(names, strings.Fields(line)[0])
		case inList:
			inList = false
		}
	}
	sort.Strings(names)
	if strings.Join(names, " ") != "bench call completion groups help info ls man members monitor names nodes publish reply request serve services status subscribe version" {
		t.Errorf("commands listed: %v", names)
	}
	for _, name := range names {
		r := runCLI(t, nil, name, "--help")
		if r.code != 0 || !strings.HasPrefix(r.stdout, "usage: switchboard ") || r.stderr != "" {
			t.Errorf("%s --help: exit %d, stdout %q, stderr %q", name, r.code, r.stdout, r.stderr)
		}
		noNodeProgram(t, name+" --help", r.stdout, names)
	}
	noNodeProgram(t, "help", r.stdout, names)
	missing := "--socket=" + filepath.Join(t.TempDir(), "none.sock")
	for _, tc := range []struct {
		args []string
		code int
	}{
		{nil, 2},
		{[]string{"frobnicate"}, 2},
		{[]string{"status", "--bogus"}, 2},
		{[]string{"status", "extra"}, 2},
		{[]string{"call", missing, "0xffff"}, 2},
		{[]string{"call", missing, "70000", "1"}, 2},
		{[]string{"status", missing}, 3},
		{[]string{"info", missing}, 3},
		{[]string{"nodes", missing}, 3},
		{[]string{"nodes", "extra"}, 2},
		{[]string{"call", missing, "0xffff", "1"}, 3},
		{[]string{"version"}, 0},
	} {
		if r := runCLI(t, nil, tc.args...); r.code != tc.code {
			t.Errorf("switchboard %s: exit %d, want %d\n%s", strings.Join(tc.args, " "), r.code, tc.code, r.stderr)
		}
	}
	d := startDaemon(t, daemonOpts{})
	if r := runCLI(t, nil, "call", "--socket", d.socket, "9", "1"); r.code != 1 || !strings.Contains(r.stderr, "no service 9") {
		t.Errorf("call to an unknown service: exit %d, stderr %q; want 1", r.code, r.stderr)
	}
	// Errors name the program switchboard, never node.
	for _, args := range [][]string{
		{"services", "--socket", d.socket, "0x1234"},
		{"reply", "--socket", d.socket, "--data", "@/nonexistent", "svc.x"},
		{"call", "--socket", d.socket, "9", "1"},
		{"request", "--socket", d.socket, "svc.nobody"},
		{"publish", "--socket", d.socket, "g", "@/nonexistent"},
		{"members", "--socket", d.socket},
		{"serve", "--bogus"},
	} {
		r := runCLI(t, nil, args...)
		if r.code == 0 || !strings.HasPrefix(r.stderr, "switchboard") {
			t.Errorf("switchboard %s: exit %d, stderr %q; want an error from switchboard", strings.Join(args, " "), r.code, r.stderr)
		}
		noNodeProgram(t, strings.Join(args, " "), r.stderr, names)
	}
	if r := runCLI(t, []string{"SWITCHBOARD_SOCKET=" + d.socket}, "call", "0xffff", "2", "via env"); r.code != 0 || r.stdout != "via env" {
		t.Errorf("call with $SWITCHBOARD_SOCKET: exit %d %q %s", r.code, r.stdout, r.stderr)
	}
}

// noNodeProgram fails t if text calls the program node: a line that
// starts "node " or "node:", or "node COMMAND" in a line or across a
// line break of prose. The program is switchboard; "node" is the bus's.
func noNodeProgram(t *testing.T, what, text string, commands []string) {
	t.Helper()
	lines := strings.Split(text, "\n")
	for i, line := range lines {
		if strings.HasPrefix(line, "node ") || strings.HasPrefix(line, "node:") {
			t.Errorf("%s: a line starts with node: %q", what, line)
		}
		words := strings.Fields(line)
		if i+1 < len(lines) && len(words) > 0 && words[len(words)-1] == "node" && !strings.HasPrefix(lines[i+1], " ") {
			words = append(words, strings.Fields(lines[i+1])...) // prose goes on on the next line
		}
		for j := 0; j+1 < len(words); j++ {
			if words[j] == "node" && slices.Contains(commands, strings.Trim(words[j+1], ".,;:)")) {
				t.Errorf("%s: says \"node %s\" for switchboard %s: %q", what, words[j+1], words[j+1], line)
			}
		}
	}
}
