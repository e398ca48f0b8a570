package tests

import (
	"encoding/json"
	"strings"
	"testing"
)

// TestLogging: the node is quiet by default (warnings and errors only);
// --log-format json --log-level info writes one JSON object a line.
func TestLogging(t *testing.T) {
	quiet := startDaemon(t, daemonOpts{})
	if r := runCLI(t, nil, "call", "--socket", quiet.socket, "0xffff", "1"); r.code != 0 {
		t.Fatalf("ping: exit %d: %s", r.code, r.stderr)
	}
	if code := quiet.stop(t); code != 0 {
		t.Fatalf("exit code %d", code)
	}
	if log := quiet.log.String(); log != "" {
		t.Errorf("the node logged at its default level:\n%s", log)
	}

	d := startDaemon(t, daemonOpts{args: []string{"--log-format", "json", "--log-level", "info"}})
	d.waitLog(t, "node serving", 1)
	if code := d.stop(t); code != 0 {
		t.Fatalf("exit code %d", code)
	}
	lines := strings.Split(strings.TrimSpace(d.log.String()), "\n")
	msgs := map[string]bool{}
	for _, line := range lines {
		var rec struct{ Time, Level, Msg string }
		if err := json.Unmarshal([]byte(line), &rec); err != nil || rec.Time == "" || rec.Level == "" {
			t.Fatalf("not a slog JSON record: %q (%v)", line, err)
		}
		msgs[rec.Msg] = true
	}
	for _, want := range []string{"node serving", "node stopping", "node stopped"} {
		if !msgs[want] {
			t.Errorf("no %q record in\n%s", want, d.log.String())
		}
	}
}
