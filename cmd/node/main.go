// Command node is the Switchboard daemon and its command-line tool.
//
//	node serve                 run a node (socket: --socket, $SWITCHBOARD_SOCKET, or the default)
//	node call SVC CMD [DATA]   call a service and print the reply (DATA: text, @file, or - for stdin)
//	node info                  print the node's NodeInfo
//	node version               print the version
//
// Every node serves the built-in system service (0xFFFF): ping (1), echo
// (2) and info (3), so `node call 0xffff 2 hello` works against any node.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/switchboard-ipc/switchboard"
	pb "github.com/switchboard-ipc/switchboard/proto"
	"google.golang.org/protobuf/encoding/protojson"
	gproto "google.golang.org/protobuf/proto"
)

// Exit codes.
const (
	exitOK      = 0
	exitFailure = 1 // the operation failed (node error, handler error)
	exitUsage   = 2 // bad command line
	exitUnavail = 3 // no node to talk to
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

func usage(w io.Writer) {
	fmt.Fprint(w, `usage: node <command> [flags] [args]

commands:
  serve                 run a node
  call SVC CMD [DATA]   call service SVC, command CMD (numbers, 0x… allowed);
                        DATA is text, @file, or - for stdin; the reply goes to stdout
  info                  show the node's name, version, pid, uptime and counters
  version               show this program's version

Every command takes --socket PATH (default: $SWITCHBOARD_SOCKET, else
/run/switchboard/node.sock as root, else $XDG_RUNTIME_DIR/switchboard/node.sock).
Run "node <command> -h" for a command's flags.
`)
}

func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		usage(stderr)
		return exitUsage
	}
	cmd, args := args[0], args[1:]
	fs := flag.NewFlagSet(cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	socket := fs.String("socket", switchboard.DefaultSocketPath(), "the node's Unix socket")
	switch cmd {
	case "serve":
		name := fs.String("name", "n1", "node name (addresses are NAME.cID)")
		level := fs.String("log-level", "info", "log level: debug, info, warn, error")
		if fs.Parse(args) != nil {
			return exitUsage
		}
		return serve(ctx, *socket, *name, *level, stderr)
	case "call":
		timeout := fs.Duration("timeout", 5*time.Second, "how long to wait for the reply")
		if fs.Parse(args) != nil {
			return exitUsage
		}
		return call(ctx, *socket, *timeout, fs.Args(), stdin, stdout, stderr)
	case "info":
		if fs.Parse(args) != nil {
			return exitUsage
		}
		return info(ctx, *socket, stdout, stderr)
	case "version":
		fmt.Fprintln(stdout, "switchboard node", switchboard.Version)
		return exitOK
	case "help", "-h", "--help":
		usage(stdout)
		return exitOK
	}
	fmt.Fprintf(stderr, "node: unknown command %q\n", cmd)
	usage(stderr)
	return exitUsage
}

func serve(ctx context.Context, socket, name, level string, stderr io.Writer) int {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		fmt.Fprintf(stderr, "node: --log-level: %v\n", err)
		return exitUsage
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: lv}))
	n, err := switchboard.NewNode(switchboard.WithSocketPath(socket), switchboard.WithNodeName(name), switchboard.WithLogger(log))
	if err != nil {
		log.Error("configuration", slog.String("error", err.Error()))
		return exitUsage
	}
	if err := n.Listen(); err != nil {
		log.Error("cannot listen", slog.String("error", err.Error()))
		n.Close()
		return exitUnavail
	}
	log.Info("node serving", slog.String("socket", socket), slog.String("name", name), slog.Int("pid", os.Getpid()))
	if err := n.Serve(ctx); err != nil {
		log.Error("serve", slog.String("error", err.Error()))
		return exitFailure
	}
	log.Info("node stopped")
	return exitOK
}

func dial(ctx context.Context, socket string, stderr io.Writer) (*switchboard.Conn, int) {
	dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	c, err := switchboard.Dial(dctx, switchboard.WithSocket(socket), switchboard.WithClientName("node-cli"))
	if err != nil {
		fmt.Fprintf(stderr, "node: %v\n", err)
		return nil, exitUnavail
	}
	return c, exitOK
}

func parseID(s string) (uint16, error) {
	v, err := strconv.ParseUint(s, 0, 16)
	return uint16(v), err
}

func call(ctx context.Context, socket string, timeout time.Duration, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) < 2 || len(args) > 3 {
		fmt.Fprintln(stderr, "usage: node call SVC CMD [DATA | @file | -]")
		return exitUsage
	}
	svc, err1 := parseID(args[0])
	cmd, err2 := parseID(args[1])
	if err := errors.Join(err1, err2); err != nil {
		fmt.Fprintf(stderr, "node: service and command are numbers from 0 to 65535: %v\n", err)
		return exitUsage
	}
	var payload []byte
	if len(args) == 3 {
		var err error
		switch d := args[2]; {
		case d == "-":
			payload, err = io.ReadAll(stdin)
		case len(d) > 0 && d[0] == '@':
			payload, err = os.ReadFile(d[1:])
		default:
			payload = []byte(d)
		}
		if err != nil {
			fmt.Fprintf(stderr, "node: %v\n", err)
			return exitUsage
		}
	}
	c, code := dial(ctx, socket, stderr)
	if c == nil {
		return code
	}
	defer c.Close()
	cctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	reply, err := c.Call(cctx, svc, cmd, payload)
	if err != nil {
		fmt.Fprintf(stderr, "node: %v\n", err)
		return exitFailure
	}
	stdout.Write(reply)
	if len(reply) > 0 && reply[len(reply)-1] != '\n' {
		if f, ok := stdout.(*os.File); ok && isTerminal(f) {
			fmt.Fprintln(stdout)
		}
	}
	return exitOK
}

func isTerminal(f *os.File) bool {
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

func info(ctx context.Context, socket string, stdout, stderr io.Writer) int {
	c, code := dial(ctx, socket, stderr)
	if c == nil {
		return code
	}
	defer c.Close()
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	reply, err := c.Call(cctx, switchboard.SystemService, switchboard.SysInfo, nil)
	if err != nil {
		fmt.Fprintf(stderr, "node: %v\n", err)
		return exitFailure
	}
	var ni pb.NodeInfo
	if err := gproto.Unmarshal(reply, &ni); err != nil {
		fmt.Fprintf(stderr, "node: bad NodeInfo: %v\n", err)
		return exitFailure
	}
	out, _ := protojson.MarshalOptions{Multiline: true, UseProtoNames: true}.Marshal(&ni)
	fmt.Fprintln(stdout, string(out))
	return exitOK
}
