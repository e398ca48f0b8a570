// Command node is the Switchboard daemon and its command-line tool.
//
//	node serve                 run a node (configuration: --config FILE, SWITCHBOARD_*, flags)
//	node status                the node's version, uptime, connections and totals
//	node info                  every field of the node's NodeInfo
//	node ls                    the connections: address, client, credentials, traffic, ring fill, age
//	node groups                the groups and their member counts
//	node members GROUP         a group's members
//	node names                 the well-known names, owners and standbys
//	node call SVC CMD [DATA]   call a service and print the reply (DATA: text, @file, or - for stdin)
//	node publish GROUP [DATA]  publish to a group (--want-answer: fail if nobody took it)
//	node subscribe GROUP...    print what is published to the groups (--count N)
//	node request DEST [DATA]   send a request to a peer (address or name) and print the reply
//	node monitor [TARGET...]   a live tail of the bus's traffic (privileged)
//	node bench                 standard workloads against a running node, with a result table
//	node version               print the version
//
// Every client command takes --socket (default $SWITCHBOARD_SOCKET, else
// the default path) and --json where it prints a record. Exit codes: 0 ok,
// 1 the operation failed (a node error, a handler error, a refusal),
// 2 bad command line or configuration, 3 no node to talk to.
//
// Every node serves the built-in system service (0xFFFF): ping (1), echo
// (2) and info (3), so `node call 0xffff 2 hello` works against any node.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

// Exit codes.
const (
	exitOK      = 0
	exitFailure = 1 // the operation failed (node error, handler error, refusal)
	exitUsage   = 2 // bad command line or configuration
	exitUnavail = 3 // no node to talk to (or, for serve, cannot listen)
)

// stdio is where a command reads and writes.
type stdio struct {
	stdin          io.Reader
	stdout, stderr io.Writer
}

// A command is one subcommand: adding one is a function and a line in
// commands.
type command struct {
	name    string
	args    string // synopsis after the name
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
		{"call", "SVC CMD [DATA|@FILE|-]", "call a service and print its reply", cmdCall},
		{"publish", "GROUP [DATA|@FILE|-]", "publish a message to a group", cmdPublish},
		{"subscribe", "GROUP...", "print the messages published to groups (and sys.* notices)", cmdSubscribe},
		{"request", "ADDRESS|NAME [DATA|@FILE|-]", "send a request to a peer and print its reply", cmdRequest},
		{"monitor", "[GROUP|ADDRESS|NAME...]", "live tail of the bus's traffic (privileged)", cmdMonitor},
		{"reply", "NAME|GROUP", "answer peers' requests to a name or group", cmdReply},
		{"services", "[SVC]", "list the node's services: ids, names, descriptions, commands", cmdServices},
		{"bench", "[--duration D]", "measure standard workloads against a running node", cmdBench},
		{"version", "", "print this program's version", cmdVersion},
		{"help", "[COMMAND]", "show this help, or a command's", cmdHelp},
	}
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], stdio{os.Stdin, os.Stdout, os.Stderr})
	stop()
	os.Exit(code)
}

func usage(w io.Writer) {
	fmt.Fprint(w, "usage: node <command> [flags] [args]\n\nSwitchboard's node: the daemon (serve) and a tool to talk to a running one.\n\ncommands:\n")
	for _, c := range commands {
		fmt.Fprintf(w, "  %-38s %s\n", c.name+" "+c.args, c.summary)
	}
	fmt.Fprint(w, `
Client commands take --socket PATH (default: $SWITCHBOARD_SOCKET, else
/run/switchboard/node.sock as root, else $XDG_RUNTIME_DIR/switchboard/node.sock)
and, where they print a record or a listing, --json (stable snake_case
field names). Flags may come before or after the arguments.

Exit codes: 0 ok; 1 the operation failed (refused, undeliverable, the
peer gone, a handler error, a timeout); 2 bad command line or
configuration; 3 no node to talk to.

Run "node <command> --help" for a command's flags.
`)
}

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
	}
	for _, c := range commands {
		if c.name == name {
			return c.run(ctx, std, args)
		}
	}
	fmt.Fprintf(std.stderr, "node: unknown command %q\n\n", name)
	usage(std.stderr)
	return exitUsage
}

func cmdHelp(ctx context.Context, std stdio, args []string) int {
	if len(args) == 0 {
		usage(std.stdout)
		return exitOK
	}
	return run(ctx, []string{args[0], "--help"}, std)
}
