package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"regexp"
	"strings"
)

// Shell completion and the manual page (manpage.go) are generated from
// the command table: the commands and their synopses from commands, each
// command's flags and help from the flag set it parses (flagsOf). Nothing
// here lists a command or a flag by hand.

// cmdDoc is what the generators know of one command.
type cmdDoc struct {
	command
	hasFlags bool   // the command parses its flags with parseFlags or parseArgs
	usage    string // the first line of its --help
	flags    []flagDoc
	help     string   // the --help text between the usage line and "flags:"
	pos      []argDoc // the positional arguments of the synopsis
}

// flagDoc is one flag, as its flag set defines it.
type flagDoc struct {
	name  string
	arg   string // the value's name ("file", "duration"); "" for a boolean flag
	usage string
	def   string // the default, "" when it is the zero value
}

// file reports whether the flag's value is a file name.
func (f flagDoc) file() bool { return f.arg == "file" || f.arg == "path" }

// argDoc is one positional argument of a synopsis.
type argDoc struct {
	name     string   // as written: GROUP, DATA|@FILE|-
	optional bool     // [X]
	repeated bool     // X...
	choices  []string // literal words (bash|zsh|fish), or the command names for COMMAND
}

// describe returns what the generators need of every command, in the
// table's order.
func describe() []cmdDoc {
	docs := make([]cmdDoc, 0, len(commands))
	for _, c := range commands {
		docs = append(docs, describeCommand(c))
	}
	return docs
}

// describeCommand runs c with --help under stdio.describe, which makes
// parseFlags hand over the command's flag set instead of parsing: the
// flags listed are the ones the command parses. The context is already
// cancelled, so that a command that parsed no flags could do nothing. A
// command without a flag set (help) has no flags.
func describeCommand(c command) cmdDoc {
	d := cmdDoc{command: c, pos: parseSynopsis(c.args)}
	var fs *flag.FlagSet
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	c.run(ctx, stdio{stdin: strings.NewReader(""), stdout: io.Discard, stderr: io.Discard,
		describe: func(f *flag.FlagSet) { fs = f }}, []string{"--help"})
	if fs == nil {
		return d
	}
	d.hasFlags = true
	fs.VisitAll(func(f *flag.Flag) {
		arg, usage := flag.UnquoteUsage(f)
		fd := flagDoc{name: f.Name, arg: arg, usage: usage}
		if f.DefValue != "" && f.DefValue != "0" && f.DefValue != "false" {
			fd.def = f.DefValue
		}
		if def, ok := documentedDefaults[f.Name]; ok {
			fd.def = def
		}
		d.flags = append(d.flags, fd)
	})
	var buf bytes.Buffer
	out := fs.Output()
	fs.SetOutput(&buf)
	fs.Usage()
	fs.SetOutput(out)
	text := buf.String()
	d.usage, _, _ = strings.Cut(text, "\n")
	if i := strings.LastIndex(text, "\nflags:\n"); i >= 0 {
		text = text[:i]
	}
	if strings.HasPrefix(text, "usage:") { // the synopsis comes from the table
		if i := strings.Index(text, "\n\n"); i >= 0 {
			text = text[i+2:]
		} else {
			text = ""
		}
	}
	d.help = strings.TrimSpace(text)
	return d
}

// documentedDefaults are the defaults, by flag name, that a flag set
// computes from the environment it runs in (DefaultSocketPath for
// --socket, $SWITCHBOARD_CONFIG for serve's --config): the generated man
// page and completions say what the default is, not what it was for
// whoever generated them. "" leaves the default out (the usage says it).
var documentedDefaults = map[string]string{
	"socket": "$SWITCHBOARD_SOCKET, else /run/switchboard/node.sock as root, else $XDG_RUNTIME_DIR/switchboard/node.sock " +
		"(without XDG_RUNTIME_DIR, switchboard-UID/node.sock in the temp directory)",
	"config": "",
}

// parseSynopsis splits a synopsis ("SVC CMD [DATA|@FILE|-]") into its
// positional arguments; a bracketed flag ("[--config FILE]") is not one.
func parseSynopsis(s string) []argDoc {
	var args []argDoc
	for _, tok := range synopsisTokens(s) {
		a := argDoc{name: tok}
		if strings.HasPrefix(tok, "[") && strings.HasSuffix(tok, "]") {
			a.optional, a.name = true, tok[1:len(tok)-1]
		}
		if strings.HasPrefix(a.name, "-") {
			continue
		}
		if n, ok := strings.CutSuffix(a.name, "..."); ok {
			a.repeated, a.name = true, n
		}
		switch words := strings.Split(a.name, "|"); {
		case a.name == "COMMAND":
			for _, c := range commands {
				a.choices = append(a.choices, c.name)
			}
		case allWords(words):
			a.choices = words
		}
		args = append(args, a)
	}
	return args
}

// synopsisTokens splits s at spaces outside brackets.
func synopsisTokens(s string) []string {
	var toks []string
	depth, start := 0, -1
	for i, r := range s + " " {
		switch {
		case r == '[':
			depth++
		case r == ']':
			depth--
		case r == ' ' && depth == 0:
			if start >= 0 {
				toks = append(toks, s[start:i])
			}
			start = -1
			continue
		}
		if start < 0 {
			start = i
		}
	}
	return toks
}

var word = regexp.MustCompile(`^[a-z][a-z0-9-]*$`)

func allWords(ws []string) bool {
	for _, w := range ws {
		if !word.MatchString(w) {
			return false
		}
	}
	return len(ws) > 0
}

const completionHelp = `usage: ` + prog + ` completion bash|zsh|fish

Print a completion script for the shell: the commands, each command's
flags (file names after --config), the words some arguments take, and
file names after @ for payloads (bash). It is generated from the command
table, so it always matches this binary. Install it with one of:

  ` + prog + ` completion bash > /etc/bash_completion.d/` + prog + `
  ` + prog + ` completion zsh > "${fpath[1]}/_` + prog + `"
  ` + prog + ` completion fish > ~/.config/fish/completions/` + prog + `.fish

or load it into the running shell: source <(` + prog + ` completion bash).

flags:
`

func cmdCompletion(ctx context.Context, std stdio, args []string) int {
	fs := newFlagSet("completion", completionHelp)
	rest, code, ok := parseArgs(fs, args, std)
	if !ok {
		return code
	}
	if len(rest) != 1 {
		fmt.Fprintf(std.stderr, "usage: %s completion bash|zsh|fish   (%s completion --help)\n", prog, prog)
		return exitUsage
	}
	gen := map[string]func(io.Writer, []cmdDoc){"bash": bashCompletion, "zsh": zshCompletion, "fish": fishCompletion}[rest[0]]
	if gen == nil {
		fmt.Fprintf(std.stderr, "%s completion: no completion for %q: bash, zsh or fish\n", prog, rest[0])
		return exitUsage
	}
	gen(std.stdout, describe())
	return exitOK
}

// The scripts quote nothing that comes from the table but descriptions:
// command names, flag names and choices are plain words (word), which
// the tests check.

func bashCompletion(w io.Writer, docs []cmdDoc) {
	fn := "_" + strings.ReplaceAll(prog, "-", "_")
	fmt.Fprintf(w, `# bash completion for %[1]s, generated by "%[1]s completion bash" from its command table.
# Install: %[1]s completion bash > /etc/bash_completion.d/%[1]s, or source <(%[1]s completion bash).
%[2]s() {
	local cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD-1]}
	COMPREPLY=()
	if ((COMP_CWORD == 1)); then
		COMPREPLY=($(compgen -W '%[3]s --help --version' -- "$cur"))
		return 0
	fi
	local flags= valued= files= words=
	case ${COMP_WORDS[1]} in
`, prog, fn, strings.Join(commandNames(docs), " "))
	for _, d := range docs {
		var flags, valued, files, words []string
		for _, f := range d.flags {
			flags = append(flags, "--"+f.name)
			if f.arg != "" {
				valued = append(valued, "--"+f.name)
			}
			if f.file() {
				files = append(files, "--"+f.name)
			}
		}
		flags = append(flags, "--help")
		for _, a := range d.pos {
			words = append(words, a.choices...)
		}
		fmt.Fprintf(w, "\t%s)\n\t\tflags='%s'\n", d.name, strings.Join(flags, " "))
		if len(valued) > 0 {
			fmt.Fprintf(w, "\t\tvalued='%s'\n", strings.Join(valued, " "))
		}
		if len(files) > 0 {
			fmt.Fprintf(w, "\t\tfiles='%s'\n", strings.Join(files, " "))
		}
		if len(words) > 0 {
			fmt.Fprintf(w, "\t\twords='%s'\n", strings.Join(words, " "))
		}
		fmt.Fprint(w, "\t\t;;\n")
	}
	fmt.Fprintf(w, `	*) return 0 ;;
	esac
	if [[ " $files " == *" $prev "* ]]; then
		COMPREPLY=($(compgen -f -- "$cur"))
	elif [[ " $valued " == *" $prev "* ]]; then
		return 0 # the flag's value
	elif [[ $cur == -* ]]; then
		COMPREPLY=($(compgen -W "$flags" -- "$cur"))
	elif [[ $cur == @* ]]; then
		COMPREPLY=($(compgen -f -P @ -- "${cur#@}"))
	else
		COMPREPLY=($(compgen -W "$words" -- "$cur"))
	fi
	return 0
}
complete -F %s %s
`, fn, prog)
}

func zshCompletion(w io.Writer, docs []cmdDoc) {
	fn := "_" + strings.ReplaceAll(prog, "-", "_")
	fmt.Fprintf(w, `#compdef %[1]s
# zsh completion for %[1]s, generated by "%[1]s completion zsh" from its command table.
# Install: %[1]s completion zsh > "${fpath[1]}/_%[1]s", or source <(%[1]s completion zsh).
%[2]s() {
	local -a commands
	commands=(
`, prog, fn)
	for _, d := range docs {
		fmt.Fprintf(w, "\t\t%s\n", zshQuote(d.name+":"+strings.ReplaceAll(d.summary, ":", `\:`)))
	}
	fmt.Fprintf(w, `		'--help:show the help'
		'--version:print the version'
	)
	if ((CURRENT == 2)); then
		_describe -t commands '%s command' commands
		return
	fi
	local cmd=$words[2]
	shift words
	((CURRENT--))
	case $cmd in
`, prog)
	for _, d := range docs {
		fmt.Fprintf(w, "\t(%s)\n\t\t_arguments -s", d.name)
		for _, f := range d.flags {
			desc := zshDesc(f.usage)
			switch {
			case f.arg == "":
				fmt.Fprintf(w, " \\\n\t\t\t%s", zshQuote("--"+f.name+"["+desc+"]"))
			case f.file():
				fmt.Fprintf(w, " \\\n\t\t\t%s", zshQuote("--"+f.name+"=["+desc+"]:"+f.arg+":_files"))
			default:
				fmt.Fprintf(w, " \\\n\t\t\t%s", zshQuote("--"+f.name+"=["+desc+"]:"+f.arg+": "))
			}
		}
		fmt.Fprintf(w, " \\\n\t\t\t%s", zshQuote("--help[show the help]"))
		for i, a := range d.pos {
			pos := fmt.Sprint(i + 1)
			if a.repeated {
				pos = "*"
			}
			if a.optional && !a.repeated { // "*::" would mean something else
				pos += ":"
			}
			action := " "
			if len(a.choices) > 0 {
				action = "(" + strings.Join(a.choices, " ") + ")"
			}
			fmt.Fprintf(w, " \\\n\t\t\t%s", zshQuote(pos+":"+zshDesc(strings.ToLower(a.name))+":"+action))
		}
		fmt.Fprint(w, "\n\t\t;;\n")
	}
	fmt.Fprintf(w, `	esac
}
if [[ $funcstack[1] == %[1]s ]]; then
	%[1]s "$@"
else
	compdef %[1]s %[2]s
fi
`, fn, prog)
}

// zshDesc escapes what _arguments reads in a description.
func zshDesc(s string) string {
	return strings.NewReplacer(`\`, `\\`, "[", `\[`, "]", `\]`, ":", `\:`).Replace(s)
}

// zshQuote single-quotes s for zsh (and for fish's -d, which takes the
// same quoting but for backslashes).
func zshQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

func fishQuote(s string) string {
	return "'" + strings.NewReplacer(`\`, `\\`, "'", `\'`).Replace(s) + "'"
}

func fishCompletion(w io.Writer, docs []cmdDoc) {
	fmt.Fprintf(w, `# fish completion for %[1]s, generated by "%[1]s completion fish" from its command table.
# Install: %[1]s completion fish > ~/.config/fish/completions/%[1]s.fish
complete -c %[1]s -f
complete -c %[1]s -n __fish_use_subcommand -l help -d 'show the help'
complete -c %[1]s -n __fish_use_subcommand -l version -d 'print the version'
`, prog)
	for _, d := range docs {
		fmt.Fprintf(w, "complete -c %s -n __fish_use_subcommand -a %s -d %s\n", prog, d.name, fishQuote(d.summary))
	}
	for _, d := range docs {
		cond := fishQuote("__fish_seen_subcommand_from " + d.name)
		for _, f := range d.flags {
			opt := ""
			switch {
			case f.file():
				opt = " -r -F"
			case f.arg != "":
				opt = " -x"
			}
			fmt.Fprintf(w, "complete -c %s -n %s -l %s%s -d %s\n", prog, cond, f.name, opt, fishQuote(f.usage))
		}
		fmt.Fprintf(w, "complete -c %s -n %s -l help -d 'show the help'\n", prog, cond)
		var words []string
		for _, a := range d.pos {
			words = append(words, a.choices...)
		}
		if len(words) > 0 {
			fmt.Fprintf(w, "complete -c %s -n %s -a %s\n", prog, cond, fishQuote(strings.Join(words, " ")))
		}
	}
}

func commandNames(docs []cmdDoc) []string {
	names := make([]string, len(docs))
	for i, d := range docs {
		names[i] = d.name
	}
	return names
}
