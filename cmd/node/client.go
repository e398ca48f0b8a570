package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/switchboard-ipc/switchboard"
)

// clientFlags are the flags of every command that talks to a node.
type clientFlags struct {
	socket  string
	timeout time.Duration
}

func (f *clientFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.socket, "socket", switchboard.DefaultSocketPath(), "the node's Unix socket `path`")
	f.timeout = 5 * time.Second
	fs.Var((*positiveDuration)(&f.timeout), "timeout", "how long to wait for the node (a `duration`)")
}

// positiveDuration is a flag.Value for a duration that must be > 0: a
// timeout of 0 or less would fail every operation at once.
type positiveDuration time.Duration

func (d *positiveDuration) String() string {
	if d == nil {
		return "0s"
	}
	return time.Duration(*d).String()
}

func (d *positiveDuration) Set(s string) error {
	v, err := time.ParseDuration(s)
	switch {
	case err != nil:
		return errors.New("parse error")
	case v <= 0:
		return errors.New("must be positive")
	}
	*d = positiveDuration(v)
	return nil
}

// nodeInfo asks the node's system service for its NodeInfo.
func (f *clientFlags) nodeInfo(ctx context.Context, std stdio) (*switchboard.NodeInfo, int) {
	c, code := f.connect(ctx, std)
	if c == nil {
		return nil, code
	}
	defer c.Close()
	cctx, cancel := context.WithTimeout(ctx, f.timeout)
	defer cancel()
	ni, err := c.NodeInfo(cctx)
	if err != nil {
		return nil, failed(std, err)
	}
	return &ni, exitOK
}

const callHelp = `usage: switchboard call [--socket PATH] [--timeout D] [--output MODE | --json] SVC CMD [DATA | @FILE | -]

Call command CMD of service SVC (numbers from 0 to 65535; 0x… allowed) and
write the reply to standard output. DATA is the request payload as text;
@FILE reads it from a file, - from standard input. The built-in system
service 0xffff answers ping (1), echo (2), info (3), services (4) and
nodes (5); see
switchboard services for what a node serves:

  switchboard call 0xffff 2 hello

On a terminal a reply that is text is printed as text (with a final
newline), any other as a hex dump (like hexdump -C); piped, the reply is
written as it is, byte for byte. --output raw|hex|text|auto chooses;
--json prints {"size", "payload" (base64), "text" (if UTF-8)}.

Exit codes: 0 the reply was written; 1 the call failed (the error, as
the node or the handler said it, goes to standard error); 2 bad
arguments; 3 no node, or the node went away.

flags:
`

func cmdCall(ctx context.Context, std stdio, args []string) int {
	fs := newFlagSet("call", callHelp)
	var cf clientFlags
	cf.register(fs)
	var out outputFlag
	out.register(fs)
	asJSON := fs.Bool("json", false, "print the reply as JSON")
	args, code, ok := parseArgs(fs, args, std)
	if !ok {
		return code
	}
	if !out.valid() {
		fmt.Fprintf(std.stderr, "switchboard call: --output is raw, hex, text or auto, not %q\n", out.mode)
		return exitUsage
	}
	if len(args) < 2 || len(args) > 3 {
		fmt.Fprintln(std.stderr, "usage: switchboard call SVC CMD [DATA | @FILE | -]   (switchboard call --help)")
		return exitUsage
	}
	svc, err1 := parseID(args[0])
	cmd, err2 := parseID(args[1])
	if err := errors.Join(err1, err2); err != nil {
		fmt.Fprintf(std.stderr, "switchboard: service and command are numbers from 0 to 65535: %v\n", err)
		return exitUsage
	}
	var payload []byte
	if len(args) == 3 {
		var err error
		if payload, err = readPayload(std, args[2]); err != nil {
			fmt.Fprintf(std.stderr, "switchboard: %v\n", err)
			return exitUsage
		}
	}
	c, code := cf.connect(ctx, std)
	if c == nil {
		return code
	}
	defer c.Close()
	if code, ok := fits(std, c, payload); !ok {
		return code
	}
	cctx, cancel := context.WithTimeout(ctx, cf.timeout)
	defer cancel()
	reply, err := c.Call(cctx, svc, cmd, payload)
	if err != nil {
		return failed(std, err)
	}
	if *asJSON {
		return printJSON(std, payloadOf(reply))
	}
	writePayload(std, reply, out.mode)
	return exitOK
}

func parseID(s string) (uint16, error) {
	v, err := strconv.ParseUint(s, 0, 16)
	return uint16(v), err
}

func isTerminal(f *os.File) bool {
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

const infoHelp = `usage: switchboard info [--socket PATH] [--json] [--width N]

Show every field the node reports about itself (the system service's info
command): name, version, pid, uid, start time, connections, calls, events.
--json prints the NodeInfo message as JSON (protobuf field names). On a
terminal, values too long for its width end in "…" (--width N).

Exit codes: 0 ok; 1 the node answered with an error; 3 no node, or
the node went away.

flags:
`

func cmdInfo(ctx context.Context, std stdio, args []string) int {
	fs := newFlagSet("info", infoHelp)
	var cf clientFlags
	cf.register(fs)
	asJSON := fs.Bool("json", false, "print JSON")
	var width widthFlag
	width.register(fs)
	if code, ok := parseFlags(fs, args, std); !ok {
		return code
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(std.stderr, "switchboard info: unexpected argument %q\n", fs.Arg(0))
		return exitUsage
	}
	ni, code := cf.nodeInfo(ctx, std)
	if ni == nil {
		return code
	}
	if *asJSON {
		out, err := json.Marshal(infoOf(ni))
		if err != nil {
			fmt.Fprintf(std.stderr, "switchboard: %v\n", err)
			return exitFailure
		}
		return writeJSON(std, out)
	}
	t := keyValues()
	t.add("name", ni.Name)
	t.add("version", ni.Version)
	t.add("pid", fmt.Sprint(ni.PID))
	t.add("uid", fmt.Sprint(ni.UID))
	t.add("started", ni.Started.Format(time.RFC3339))
	t.add("connections", fmt.Sprint(ni.Connections))
	t.add("calls", fmt.Sprint(ni.Calls))
	t.add("events", fmt.Sprint(ni.Events))
	t.add("transport", ni.Transport.String())
	t.write(std.stdout, width.get(std))
	return exitOK
}

// keyValues is a table of a record's fields, one a line.
func keyValues() *table {
	return &table{cols: []column{{name: "FIELD"}, {name: "VALUE", min: 10}}, noHeader: true}
}

// infoJSON is `info --json`: NodeInfo's fields as the protocol names them
// (64-bit numbers as strings, as protobuf's JSON mapping writes them).
type infoJSON struct {
	Name             string `json:"name"`
	Version          string `json:"version"`
	PID              int32  `json:"pid"`
	UID              uint32 `json:"uid"`
	StartedUnixNano  int64  `json:"started_unix_nano,string"`
	Connections      uint32 `json:"connections"`
	Calls            uint64 `json:"calls,string"`
	Events           uint64 `json:"events,string"`
	TransportDefault string `json:"transport_default"`
}

func infoOf(ni *switchboard.NodeInfo) infoJSON {
	return infoJSON{Name: ni.Name, Version: ni.Version, PID: ni.PID, UID: ni.UID, StartedUnixNano: ni.Started.UnixNano(),
		Connections: ni.Connections, Calls: ni.Calls, Events: ni.Events, TransportDefault: "TRANSPORT_" + strings.ToUpper(ni.Transport.String())}
}

// writeJSON re-indents JSON (protojson's spacing is deliberately
// unstable) and prints it with a final newline.
func writeJSON(std stdio, raw []byte) int {
	var buf bytes.Buffer
	if err := json.Indent(&buf, compactJSON(raw), "", "  "); err != nil {
		fmt.Fprintf(std.stderr, "switchboard: %v\n", err)
		return exitFailure
	}
	buf.WriteByte('\n')
	std.stdout.Write(buf.Bytes())
	return exitOK
}

func compactJSON(raw []byte) []byte {
	var buf bytes.Buffer
	if json.Compact(&buf, raw) != nil {
		return raw
	}
	return buf.Bytes()
}

const statusHelp = `usage: switchboard status [--socket PATH] [--json] [--width N]

Show a running node's state: its name and version, how long it has been
up, how many connections are open (this command's own included), and the
totals of calls and events since it started; on a node of a cluster, the
cluster's name, this node's run, how many of the other nodes are up
(switchboard nodes lists them) and the totals of its links.

Exit codes: 0 the node answered; 1 it answered with an error or refused
this client; 3 no node at the socket. On a terminal, values too long for
its width end in "…" (--width N); --json prints a record.

flags:
`

// statusJSON is what `status --json` prints; its fields are stable.
type statusJSON struct {
	Name          string  `json:"name"`
	Version       string  `json:"version"`
	ClientVersion string  `json:"client_version"`
	Socket        string  `json:"socket"`
	PID           int32   `json:"pid"`
	UID           uint32  `json:"uid"`
	Started       string  `json:"started"` // RFC 3339, UTC
	UptimeSeconds float64 `json:"uptime_seconds"`
	Connections   uint32  `json:"connections"`
	Calls         uint64  `json:"calls"`
	Events        uint64  `json:"events"`
	// Cluster is null for a node without [cluster] (or too old to say).
	Cluster *clusterStatusJSON `json:"cluster"`
}

func cmdStatus(ctx context.Context, std stdio, args []string) int {
	fs := newFlagSet("status", statusHelp)
	var cf clientFlags
	cf.register(fs)
	asJSON := fs.Bool("json", false, "print JSON")
	var width widthFlag
	width.register(fs)
	if code, ok := parseFlags(fs, args, std); !ok {
		return code
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(std.stderr, "switchboard status: unexpected argument %q\n", fs.Arg(0))
		return exitUsage
	}
	c, code := cf.connect(ctx, std)
	if c == nil {
		return code
	}
	defer c.Close()
	cctx, cancel := context.WithTimeout(ctx, cf.timeout)
	defer cancel()
	ni, err := c.NodeInfo(cctx)
	if err != nil {
		return failed(std, err)
	}
	cl, err := clusterStatus(cctx, c)
	if err != nil {
		return failed(std, err)
	}
	started := ni.Started
	uptime := time.Since(started)
	st := statusJSON{
		Name: ni.Name, Version: ni.Version, ClientVersion: switchboard.Version, Socket: cf.socket,
		PID: ni.PID, UID: ni.UID, Started: started.UTC().Format(time.RFC3339Nano),
		UptimeSeconds: uptime.Seconds(), Connections: ni.Connections, Calls: ni.Calls, Events: ni.Events, Cluster: cl,
	}
	if *asJSON {
		out, err := json.MarshalIndent(st, "", "  ")
		if err != nil {
			fmt.Fprintf(std.stderr, "switchboard: %v\n", err)
			return exitFailure
		}
		std.stdout.Write(append(out, '\n'))
		return exitOK
	}
	t := keyValues()
	t.add("node", fmt.Sprintf("%s, switchboard %s (this tool: %s)", st.Name, st.Version, st.ClientVersion))
	t.add("socket", st.Socket)
	t.add("process", fmt.Sprintf("pid %d, uid %d", st.PID, st.UID))
	t.add("up", fmt.Sprintf("%s (since %s)", uptime.Round(time.Second), started.Format(time.DateTime)))
	t.add("connections", fmt.Sprintf("%d open (this one included)", st.Connections))
	t.add("calls", fmt.Sprint(st.Calls))
	t.add("events", fmt.Sprint(st.Events))
	if cl != nil {
		cl.rows(t)
	}
	t.write(std.stdout, width.get(std))
	return exitOK
}
