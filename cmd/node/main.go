// Command node is Switchboard's daemon and its command-line tool. Build
// and install it as switchboard (go build -o switchboard ./cmd/node):
// "node" is Node.js's name, and `pidof node` or `pkill node` would hit it.
//
//	switchboard serve                 run a node (configuration: --config FILE, SWITCHBOARD_*, flags)
//	switchboard status                the node's version, uptime, connections and totals
//	switchboard info                  every field of the node's NodeInfo
//	switchboard ls                    the connections: address, client, credentials, traffic, ring fill, age
//	switchboard groups                the groups and their member counts
//	switchboard members GROUP         a group's members
//	switchboard names                 the well-known names, owners and standbys
//	switchboard call SVC CMD [DATA]   call a service and print the reply (DATA: text, @file, or - for stdin)
//	switchboard publish GROUP [DATA]  publish to a group (--want-answer: fail if nobody took it)
//	switchboard subscribe GROUP...    print what is published to the groups (--count N)
//	switchboard request DEST [DATA]   send a request to a peer (address or name) and print the reply
//	switchboard monitor [TARGET...]   a live tail of the bus's traffic (privileged)
//	switchboard bench                 standard workloads against a running node, with a result table
//	switchboard version               print the version, commit and Go version (also --version)
//	switchboard completion SHELL      a completion script for bash, zsh or fish
//	switchboard man                   the manual page, as roff
//
// Every client command takes --socket (default $SWITCHBOARD_SOCKET, else
// the default path) and --json where it prints a record. Exit codes: 0 ok,
// 1 the operation failed (a node error, a handler error, a refusal),
// 2 bad command line or configuration, 3 no node to talk to.
//
// Every node serves the built-in system service (0xFFFF): ping (1), echo
// (2) and info (3), so `switchboard call 0xffff 2 hello` works against any
// node.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
)

// Exit codes.
const (
	exitOK      = 0
	exitFailure = 1 // the operation failed (node error, handler error, refusal)
	exitUsage   = 2 // bad command line or configuration
	exitUnavail = 3 // no node to talk to (or, for serve, cannot listen)
)

// prog is the name the program is installed and run as, and the one its
// help, errors, completion scripts and manual page use. It is not
// os.Args[0]: `go run ./cmd/node` runs a temporary binary called node,
// and text meant to be copied must name the installed command.
const prog = "switchboard"

// stdio is where a command reads and writes.
type stdio struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	// describe, when set, is given the command's flag set by parseFlags
	// instead of parsing: flagsOf uses it to list a command's flags (for
	// completion and the manual) from the flag set that parses them.
	describe func(*flag.FlagSet)
}

// A command is one subcommand: adding one is a function and a line in
// commands. The table is the one source of the usage, the completion
// scripts and the manual page; each command's flags are the ones its
// flag set defines (see flagsOf).
type command struct {
	name    string
	args    string // synopsis after the name; WORD|WORD lists literal choices, COMMAND a command's name
	summary string
	run     func(ctx context.Context, std stdio, args []string) int
}

// commands is the command table; usage lists it in this order.
var commands []command

func init() {
	commands = []command{
		{"serve", "[--config FILE]", "run a node", cmdServe},
		{"status", "", "version, uptime, connections and totals of a running node", cmdStatus},
		{"info", "", "every field the node reports about itself", cmdInfo},
		{"ls", "", "list the connections: who, transport, groups, traffic, fill", cmdLs},
		{"groups", "", "list the groups and their member counts", cmdGroups},
		{"members", "GROUP", "list a group's members", cmdMembers},
		{"names", "", "list the well-known names, their owners and standbys", cmdNames},
		{"nodes", "", "list the cluster's other nodes: state, address, link figures", cmdNodes},
		{"call", "SVC CMD [DATA|@FILE|-]", "call a service and print its reply", cmdCall},
		{"publish", "GROUP [DATA|@FILE|-]", "publish a message to a group", cmdPublish},
		{"subscribe", "GROUP...", "print the messages published to groups (and sys.* notices)", cmdSubscribe},
		{"request", "ADDRESS|NAME [DATA|@FILE|-]", "send a request to a peer and print its reply", cmdRequest},
		{"monitor", "[GROUP|ADDRESS|NAME...]", "live tail of the bus's traffic (privileged)", cmdMonitor},
		{"reply", "NAME|GROUP", "answer peers' requests to a name or group", cmdReply},
		{"services", "[SVC]", "list the node's services: ids, names, descriptions, commands", cmdServices},
		{"bench", "[--duration D]", "measure standard workloads against a running node", cmdBench},
		{"version", "", "print this program's version, commit and Go version", cmdVersion},
		{"completion", "bash|zsh|fish", "print a shell completion script", cmdCompletion},
		{"man", "", "print the manual page (roff: man -l <(" + prog + " man))", cmdMan},
		{"help", "[COMMAND]", "show this help, or a command's", cmdHelp},
	}
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], stdio{stdin: os.Stdin, stdout: os.Stdout, stderr: os.Stderr})
	stop()
	os.Exit(code)
}

func usage(w io.Writer) {
	fmt.Fprintf(w, "usage: %s <command> [flags] [args]\n       %s --version\n\n%s\n\ncommands:\n", prog, prog, description)
	for _, c := range commands {
		fmt.Fprintf(w, "  %-38s %s\n", c.name+" "+c.args, c.summary)
	}
	fmt.Fprint(w, "\n"+usageNotes+"\n")
}

// description is what the program is, in a line.
const description = "Switchboard's node: the daemon (serve) and a tool to talk to a running one."

// usageNotes follow the command list in the usage and the manual page.
const usageNotes = `
Client commands take --socket PATH (default: $SWITCHBOARD_SOCKET, else
/run/switchboard/node.sock as root, else $XDG_RUNTIME_DIR/switchboard/node.sock)
and, where they print a record or a listing, --json (stable snake_case
field names). Flags may come before or after the arguments.

Exit codes: 0 ok; 1 the operation failed (refused, undeliverable, the
peer gone, a handler error, a timeout); 2 bad command line or
configuration; 3 no node to talk to.

Run "` + prog + ` <command> --help" for a command's flags.`

func run(ctx context.Context, args []string, std stdio) int {
	if len(args) == 0 {
		usage(std.stderr)
		return exitUsage
	}
	name, args := args[0], args[1:]
	switch name {
	case "-h", "-help", "--help":
		usage(std.stdout)
		return exitOK
	case "-version", "--version":
		return cmdVersion(ctx, std, args)
	}
	if c, ok := lookup(name); ok {
		return c.run(ctx, std, args)
	}
	if strings.HasPrefix(name, "-") {
		fmt.Fprintf(std.stderr, "%s: unknown flag %s before the command (%s help lists the commands)\n", prog, name, prog)
	} else {
		fmt.Fprintf(std.stderr, "%s: unknown command %q (%s help lists the commands)\n", prog, name, prog)
	}
	return exitUsage
}

func lookup(name string) (command, bool) {
	for _, c := range commands {
		if c.name == name {
			return c, true
		}
	}
	return command{}, false
}

func cmdHelp(ctx context.Context, std stdio, args []string) int {
	if len(args) == 0 {
		usage(std.stdout)
		return exitOK
	}
	switch args[0] {
	case "-h", "-help", "--help":
		usage(std.stdout)
		return exitOK
	}
	if len(args) > 1 {
		fmt.Fprintf(std.stderr, "%s help: unexpected argument %q\n", prog, args[1])
		return exitUsage
	}
	if _, ok := lookup(args[0]); !ok {
		fmt.Fprintf(std.stderr, "%s help: unknown command %q (%s help lists the commands)\n", prog, args[0], prog)
		return exitUsage
	}
	return run(ctx, []string{args[0], "--help"}, std)
}
