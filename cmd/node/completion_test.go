package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// TestDescribeCommands: every command but help hands its flag set over
// (so completion and the manual list the flags it parses), its help
// starts with its own usage line under the program's name, and the
// flags of the commands that have some are found.
func TestDescribeCommands(t *testing.T) {
	docs := describe()
	if len(docs) != len(commands) {
		t.Fatalf("%d docs for %d commands", len(docs), len(commands))
	}
	for _, d := range docs {
		if d.name == "help" {
			continue
		}
		if !d.hasFlags {
			t.Errorf("%s: no flag set reached parseFlags under --help", d.name)
			continue
		}
		if !strings.HasPrefix(d.usage, "usage: "+prog+" "+d.name) {
			t.Errorf("%s: help starts %q, want \"usage: %s %s\"", d.name, d.usage, prog, d.name)
		}
		if d.help == "" {
			t.Errorf("%s: no help text", d.name)
		}
		for _, f := range d.flags {
			if !word.MatchString(f.name) {
				t.Errorf("%s: flag %q is not a plain word: the scripts would need quoting", d.name, f.name)
			}
		}
		for _, a := range d.pos {
			for _, c := range a.choices {
				if !word.MatchString(c) {
					t.Errorf("%s: choice %q is not a plain word", d.name, c)
				}
			}
		}
	}
	find := func(name string) cmdDoc {
		i := slices.IndexFunc(docs, func(d cmdDoc) bool { return d.name == name })
		if i < 0 {
			t.Fatalf("no command %s", name)
		}
		return docs[i]
	}
	flagNames := func(d cmdDoc) []string {
		var names []string
		for _, f := range d.flags {
			names = append(names, f.name)
		}
		return names
	}
	for cmd, want := range map[string][]string{
		"status":    {"json", "socket", "timeout"},
		"serve":     {"config", "print-config", "log-level", "events-queue-limit", "socket"},
		"subscribe": {"count", "socket"},
	} {
		got := flagNames(find(cmd))
		for _, w := range want {
			if !slices.Contains(got, w) {
				t.Errorf("%s: flags %v, no %s", cmd, got, w)
			}
		}
	}
	if got := find("completion").pos; len(got) != 1 || strings.Join(got[0].choices, " ") != "bash zsh fish" {
		t.Errorf("completion's argument: %+v", got)
	}
	if got := find("help").pos; len(got) != 1 || !got[0].optional || len(got[0].choices) != len(commands) {
		t.Errorf("help's argument: %+v", got)
	}
	if got := find("serve").pos; len(got) != 0 {
		t.Errorf("serve's synopsis has only flags, got arguments %+v", got)
	}
	if got := find("monitor").pos; len(got) != 1 || !got[0].optional || !got[0].repeated || got[0].name != "GROUP|ADDRESS|NAME" {
		t.Errorf("monitor's argument: %+v", got)
	}
}

func generate(t *testing.T, shell string) string {
	t.Helper()
	var out, errb bytes.Buffer
	if code := run(t.Context(), []string{"completion", shell}, stdio{stdout: &out, stderr: &errb}); code != exitOK || errb.Len() > 0 {
		t.Fatalf("completion %s: exit %d: %s", shell, code, errb.String())
	}
	return out.String()
}

// TestCompletionScripts: each script names every command and every flag
// of every command, and its shell finds no syntax error in it (bash -n;
// zsh -n and fish -n where those shells are installed).
func TestCompletionScripts(t *testing.T) {
	docs := describe()
	for _, shell := range []string{"bash", "zsh", "fish"} {
		t.Run(shell, func(t *testing.T) {
			script := generate(t, shell)
			for _, d := range docs {
				if !strings.Contains(script, d.name) {
					t.Errorf("no command %s", d.name)
				}
				for _, f := range d.flags {
					if !strings.Contains(script, f.name) {
						t.Errorf("%s: no flag %s", d.name, f.name)
					}
				}
			}
			path := filepath.Join(t.TempDir(), "completion."+shell)
			if err := os.WriteFile(path, []byte(script), 0o644); err != nil {
				t.Fatal(err)
			}
			sh, err := exec.LookPath(shell)
			if err != nil {
				t.Skipf("%s is not installed: syntax not checked", shell)
			}
			if out, err := exec.Command(sh, "-n", path).CombinedOutput(); err != nil {
				t.Fatalf("%s -n: %v\n%s", shell, err, out)
			}
		})
	}
}

// TestBashCompletionCompletes runs the bash script's function as bash
// would on a partial command line.
func TestBashCompletionCompletes(t *testing.T) {
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Skip("bash is not installed")
	}
	dir := t.TempDir()
	script := filepath.Join(dir, "switchboard.bash")
	if err := os.WriteFile(script, []byte(generate(t, "bash")), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "payload.bin"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		words []string // the last is the word being completed
		want  string
	}{
		{[]string{"ser"}, "serve services"},
		{[]string{"serv"}, "serve services"},
		{[]string{"re"}, "request reply"}, // the command table's order
		{[]string{"--v"}, "--version"},
		{[]string{"m"}, "members monitor man"},
		{[]string{"status", "--j"}, "--json"},
		{[]string{"subscribe", "--c"}, "--count"},
		{[]string{"serve", "--print"}, "--print-config"},
		{[]string{"completion", ""}, "bash zsh fish"},
		{[]string{"help", "st"}, "status"},
		{[]string{"serve", "--config", "pay"}, "payload.bin"},
		{[]string{"serve", "--log-level", ""}, ""},
		{[]string{"call", "0xffff", "2", "@pay"}, "@payload.bin"},
		{[]string{"frobnicate", ""}, ""},
	} {
		words := append([]string{prog}, tc.words...)
		quoted := make([]string, len(words))
		for i, w := range words {
			quoted[i] = "'" + w + "'"
		}
		cmd := exec.Command(bash, "-c", `source "$1"; COMP_WORDS=(`+strings.Join(quoted, " ")+`); COMP_CWORD=$((${#COMP_WORDS[@]}-1)); _switchboard; echo "${COMPREPLY[*]}"`, "bash", script)
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		if got := strings.TrimSpace(string(out)); err != nil || got != tc.want {
			t.Errorf("%s<TAB>: %q (%v), want %q", strings.Join(words, " "), got, err, tc.want)
		}
	}
}

// TestManPage: the manual page is well-formed roff (the macros of
// man(7) only, no stray request, ASCII) with every command and flag;
// where man and groff are installed, it renders, and groff has no
// warning about it.
func TestManPage(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run(t.Context(), []string{"man"}, stdio{stdout: &out, stderr: &errb}); code != exitOK || errb.Len() > 0 {
		t.Fatalf("man: exit %d: %s", code, errb.String())
	}
	page := out.String()
	lines := strings.Split(strings.TrimSuffix(page, "\n"), "\n")
	if !strings.HasPrefix(lines[0], `.\"`) || !strings.HasPrefix(lines[1], ".TH SWITCHBOARD 1 ") {
		t.Errorf("starts %q, %q; want a comment, then .TH", lines[0], lines[1])
	}
	macros := regexp.MustCompile(`^\.(TH|SH|SS|PP|TP|B|BI|BR|I|RI|br|nf|fi|RS|RE)( |$)`)
	sections := map[string]bool{}
	for i, l := range lines {
		if strings.HasPrefix(l, ".") || strings.HasPrefix(l, "'") {
			if !macros.MatchString(l) && !strings.HasPrefix(l, `.\"`) {
				t.Errorf("line %d: %q is not a man(7) macro", i+1, l)
			}
			if name, ok := strings.CutPrefix(l, ".SH "); ok {
				sections[name] = true
			}
		}
		for _, b := range []byte(l) {
			if b > 127 {
				t.Errorf("line %d: non-ASCII byte in %q", i+1, l)
				break
			}
		}
		if strings.Count(l, `\`) != strings.Count(l, `\-`)+strings.Count(l, `\e`)+strings.Count(l, `\&`)+strings.Count(l, `\[u`)+strings.Count(l, `\"`) {
			t.Errorf("line %d: unknown escape in %q", i+1, l)
		}
	}
	for _, s := range []string{"NAME", "SYNOPSIS", "DESCRIPTION", "COMMANDS", "ENVIRONMENT"} {
		if !sections[s] {
			t.Errorf("no section %s", s)
		}
	}
	for _, d := range describe() {
		if !strings.Contains(page, `.SS "`+prog+" "+d.name) {
			t.Errorf("no .SS for %s", d.name)
		}
		for _, f := range d.flags {
			if !strings.Contains(page, `\-\-`+roffText(f.name)) {
				t.Errorf("%s: no flag %s", d.name, f.name)
			}
		}
	}
	path := filepath.Join(t.TempDir(), prog+".1")
	if err := os.WriteFile(path, out.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	if groff, err := exec.LookPath("groff"); err == nil {
		out, err := exec.Command(groff, "-man", "-Tutf8", "-ww", "-z", path).CombinedOutput()
		if err != nil || len(out) > 0 {
			t.Errorf("groff -ww: %v\n%s", err, out)
		}
	} else {
		t.Log("groff is not installed: no warnings checked")
	}
	man, err := exec.LookPath("man")
	if err != nil {
		t.Skip("man is not installed: the page is not rendered")
	}
	cmd := exec.Command(man, "-l", path)
	cmd.Env = append(os.Environ(), "MANWIDTH=80", "MANPAGER=cat", "PAGER=cat")
	rendered, err := cmd.Output()
	if err != nil {
		t.Fatalf("man -l: %v", err)
	}
	text := string(rendered)
	for _, want := range []string{"SWITCHBOARD(1)", prog + " serve [--config FILE]", "--print-config", prog + " call 0xffff 2 hello", "SWITCHBOARD_SOCKET"} {
		if !strings.Contains(text, want) {
			t.Errorf("man -l output has no %q", want)
		}
	}
}

func TestParseSynopsis(t *testing.T) {
	for in, want := range map[string]string{
		"":                            "",
		"SVC CMD [DATA|@FILE|-]":      "SVC CMD DATA|@FILE|-?",
		"[--config FILE]":             "",
		"GROUP...":                    "GROUP*",
		"[GROUP|ADDRESS|NAME...]":     "GROUP|ADDRESS|NAME?*",
		"bash|zsh|fish":               "bash|zsh|fish(3)",
		"[--duration D] [COMMAND]":    fmt.Sprintf("COMMAND?(%d)", len(commands)),
		"ADDRESS|NAME [DATA|@FILE|-]": "ADDRESS|NAME DATA|@FILE|-?",
	} {
		var got []string
		for _, a := range parseSynopsis(in) {
			s := a.name
			if a.optional {
				s += "?"
			}
			if a.repeated {
				s += "*"
			}
			if len(a.choices) > 0 {
				s += fmt.Sprintf("(%d)", len(a.choices))
			}
			got = append(got, s)
		}
		if strings.Join(got, " ") != want {
			t.Errorf("parseSynopsis(%q) = %q, want %q", in, strings.Join(got, " "), want)
		}
	}
}

// TestGeneratedDocsIgnoreEnvironment: the man page and the completions
// give the documented defaults, not the generator's environment (its
// $SWITCHBOARD_SOCKET, $SWITCHBOARD_CONFIG, $XDG_RUNTIME_DIR).
func TestGeneratedDocsIgnoreEnvironment(t *testing.T) {
	t.Setenv("SWITCHBOARD_SOCKET", "/tmp/xgensocket")
	t.Setenv("SWITCHBOARD_CONFIG", "/tmp/xgenconfig.toml")
	t.Setenv("XDG_RUNTIME_DIR", "/tmp/xgenxdg")
	for _, args := range [][]string{{"man"}, {"completion", "bash"}, {"completion", "zsh"}, {"completion", "fish"}} {
		var out, errb bytes.Buffer
		if code := run(t.Context(), args, stdio{stdout: &out, stderr: &errb}); code != exitOK || errb.Len() > 0 {
			t.Fatalf("%v: exit %d: %s", args, code, errb.String())
		}
		if strings.Contains(out.String(), "xgen") {
			t.Errorf("%v shows the generator's environment:\n%s", args, grepLines(out.String(), "xgen"))
		}
		if args[0] == "man" && !strings.Contains(out.String(), `$SWITCHBOARD_SOCKET, else /run/switchboard/node.sock as root`) {
			t.Errorf("man: --socket's documented default is missing")
		}
	}
}

func grepLines(s, sub string) string {
	var b strings.Builder
	for l := range strings.SplitSeq(s, "\n") {
		if strings.Contains(l, sub) {
			b.WriteString(l + "\n")
		}
	}
	return b.String()
}
