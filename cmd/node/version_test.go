package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"io"
	"log/slog"
	"os"
	"runtime"
	"runtime/debug"
	"strings"
	"testing"
)

func TestVersionText(t *testing.T) {
	goLine := "go: go1.99.0 " + runtime.GOOS + "/" + runtime.GOARCH
	for _, tc := range []struct {
		name string
		bi   *debug.BuildInfo
		want []string
	}{
		{"no build info", nil, []string{"commit: unknown", "go: " + runtime.Version()}},
		{"go run", &debug.BuildInfo{GoVersion: "go1.99.0", Main: debug.Module{Version: "(devel)"}},
			[]string{"commit: unknown", goLine}},
		{"checkout", &debug.BuildInfo{GoVersion: "go1.99.0", Settings: []debug.BuildSetting{
			{Key: "vcs.revision", Value: "0123abcd"}, {Key: "vcs.time", Value: "2026-01-02T03:04:05Z"}, {Key: "vcs.modified", Value: "false"}}},
			[]string{"commit: 0123abcd (2026-01-02T03:04:05Z)\n", goLine}},
		{"modified", &debug.BuildInfo{GoVersion: "go1.99.0", Settings: []debug.BuildSetting{
			{Key: "vcs.revision", Value: "0123abcd"}, {Key: "vcs.modified", Value: "true"}}},
			[]string{"commit: 0123abcd (modified)\n"}},
		{"go install @version", &debug.BuildInfo{GoVersion: "go1.99.0", Main: debug.Module{Version: "v1.2.3"}},
			[]string{"(module v1.2.3)", "commit: unknown"}},
	} {
		got := versionText(tc.bi)
		if !strings.HasPrefix(got, prog+" ") || strings.Count(got, "\n") != 3 {
			t.Errorf("%s: %q: want three lines, the first %q", tc.name, got, prog+" VERSION")
		}
		for _, w := range tc.want {
			if !strings.Contains(got, w) {
				t.Errorf("%s: %q has no %q", tc.name, got, w)
			}
		}
	}
}

// TestVersionFlag: --version and version print the same.
func TestVersionFlag(t *testing.T) {
	var a, b bytes.Buffer
	if run(t.Context(), []string{"--version"}, stdio{stdout: &a, stderr: io.Discard}) != exitOK ||
		run(t.Context(), []string{"version"}, stdio{stdout: &b, stderr: io.Discard}) != exitOK {
		t.Fatal("exit code")
	}
	if a.String() != b.String() || !strings.Contains(a.String(), "commit: ") {
		t.Errorf("--version %q, version %q", a.String(), b.String())
	}
}

func TestFlagError(t *testing.T) {
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Duration("timeout", 0, "")
	fs.Bool("json", false, "")
	for args, want := range map[string]string{
		"--bogus":        "unknown flag --bogus",
		"--timeout=xyz":  `invalid value "xyz" for flag --timeout: parse error`,
		"--timeout":      "flag needs an argument: --timeout",
		"--json=maybe":   `invalid boolean value "maybe" for --json: parse error`,
		"---x":           "bad flag syntax: ---x",
		"--time-out=1ms": "unknown flag --time-out",
	} {
		err := fs.Parse([]string{args})
		if err == nil || errors.Is(err, flag.ErrHelp) {
			t.Fatalf("%s: %v", args, err)
		}
		if got := flagError(err); got != want {
			t.Errorf("%s: %q, want %q", args, got, want)
		}
	}
}

// TestAnnounceServing: serve prints where it listens only to a person at
// a terminal whose text log would not say it.
func TestAnnounceServing(t *testing.T) {
	for _, tc := range []struct {
		tty    bool
		format string
		level  slog.Level
		want   bool
	}{
		{true, "text", slog.LevelWarn, true},
		{true, "text", slog.LevelError, true},
		{true, "text", slog.LevelInfo, false}, // the info log line says it
		{true, "text", slog.LevelDebug, false},
		{true, "json", slog.LevelWarn, false}, // JSON lines stay JSON lines
		{false, "text", slog.LevelWarn, false},
	} {
		if got := announceServing(tc.tty, tc.format, tc.level); got != tc.want {
			t.Errorf("announceServing(%v, %s, %v) = %v", tc.tty, tc.format, tc.level, got)
		}
	}
}

func TestIsTTY(t *testing.T) {
	if isTTY(&bytes.Buffer{}) {
		t.Error("a buffer is a terminal")
	}
	null, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer null.Close()
	if isTTY(null) {
		t.Error("/dev/null (a character device) is a terminal")
	}
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	if isTTY(w) {
		t.Error("a pipe is a terminal")
	}
	ptmx, err := os.OpenFile("/dev/ptmx", os.O_RDWR, 0)
	if err != nil {
		t.Skipf("no pseudo-terminal to check the positive case: %v", err)
	}
	defer ptmx.Close()
	if !isTTY(ptmx) {
		t.Error("a pseudo-terminal is not a terminal")
	}
}

// TestVersionJSON: version --json carries the same facts as the text.
func TestVersionJSON(t *testing.T) {
	v := versionOf(&debug.BuildInfo{GoVersion: "go1.99.0", Settings: []debug.BuildSetting{
		{Key: "vcs.revision", Value: "0123abcd"}, {Key: "vcs.time", Value: "2026-01-02T03:04:05Z"}, {Key: "vcs.modified", Value: "true"}}})
	if v.Program != prog || v.Commit != "0123abcd" || v.CommitTime != "2026-01-02T03:04:05Z" || !v.Modified || v.Go != "go1.99.0" {
		t.Fatalf("%+v", v)
	}
	var out, errb strings.Builder
	if code := cmdVersion(t.Context(), stdio{stdout: &out, stderr: &errb}, []string{"--json"}); code != exitOK {
		t.Fatalf("version --json: exit %d: %s", code, errb.String())
	}
	var got buildVersion
	if err := json.Unmarshal([]byte(out.String()), &got); err != nil || got.Program != prog || got.Version == "" || got.Go == "" {
		t.Fatalf("version --json printed %q: %+v %v", out.String(), got, err)
	}
}
