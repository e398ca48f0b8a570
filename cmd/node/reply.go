package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"time"

	"github.com/switchboard-ipc/switchboard"
)

const replyHelp = `usage: switchboard reply [--socket PATH] [--group] [--data DATA | --echo | --command CMD] [--count N] [--json] NAME|GROUP

Answer requests from peers (switchboard request, Conn.Request): own the
well-known name NAME, or with --group join GROUP (a group request,
RequestGroup, gets an answer from every member), and answer each
request with:

  --data DATA     a fixed payload: text, @FILE, or - (standard input, read once)
  --echo          the request's own payload (the default)
  --command CMD   what CMD (run by /bin/sh -c) writes to its standard output,
                  given the request on its standard input, and SWITCHBOARD_FROM
                  and SWITCHBOARD_TO in its environment; a command that fails
                  answers an error with its standard error (or its exit status)

Each request handled is printed on standard output, one a line:

  TIME  FROM -> TO  PAYLOAD  (answered N bytes | error: …)

or, with --json, as a JSON line: "time", "from", "to", "size", "payload"
(base64), "text" (if UTF-8), "reply_size", "error". "replying as …" on
standard error says it is ready. If the name has an owner already, this
command waits in its standby queue (it says so) and answers once it owns
the name. It runs until interrupted (Ctrl-C), or until it has answered N
requests with --count N. Requests are answered one at a time, in order;
--timeout bounds each --command run (default 5s).

  switchboard reply svc.greet --data "hello"    # terminal 1
  switchboard request svc.greet                 # terminal 2: prints hello

Exit codes: 0 interrupted, or N requests answered; 1 refused (the policy,
an invalid name); 2 bad arguments; 3 no node, or the node went away.

flags:
`

// replyJSON is one line of reply --json.
type replyJSON struct {
	Time string `json:"time"`
	From string `json:"from"`
	To   string `json:"to"`
	payloadJSON
	ReplySize int    `json:"reply_size"`
	Error     string `json:"error,omitempty"`
}

func cmdReply(ctx context.Context, std stdio, args []string) int {
	fs := newFlagSet("reply", replyHelp)
	var cf clientFlags
	cf.register(fs)
	group := fs.Bool("group", false, "join GROUP instead of owning NAME")
	data := fs.String("data", "", "answer every request with `DATA` (text, @FILE, or - for standard input)")
	echo := fs.Bool("echo", false, "answer every request with its own payload (the default)")
	command := fs.String("command", "", "answer with the output of `CMD` (sh -c), given the request on standard input")
	count := fs.Int("count", 0, "exit after answering `N` requests (0: run until interrupted)")
	asJSON := fs.Bool("json", false, "print JSON lines, one object a request")
	rest, code, ok := parseArgs(fs, args, std)
	if !ok {
		return code
	}
	dataSet := false
	fs.Visit(func(f *flag.Flag) { dataSet = dataSet || f.Name == "data" })
	modes := 0
	for _, on := range []bool{dataSet, *echo, *command != ""} {
		if on {
			modes++
		}
	}
	if len(rest) != 1 || *count < 0 || modes > 1 {
		fmt.Fprintln(std.stderr, "usage: switchboard reply [--group] [--data DATA | --echo | --command CMD] [--count N] NAME|GROUP   (switchboard reply --help)")
		return exitUsage
	}
	var fixed []byte
	if dataSet {
		var err error
		if fixed, err = readPayload(std, *data); err != nil {
			fmt.Fprintf(std.stderr, "node: %v\n", err)
			return exitUsage
		}
	}
	answer := func(ctx context.Context, e switchboard.Event) ([]byte, error) {
		switch {
		case dataSet:
			return fixed, nil
		case *command != "":
			return runReplyCommand(ctx, *command, cf.timeout, e)
		}
		return e.Payload, nil
	}
	c, code := cf.connect(ctx, std)
	if c == nil {
		return code
	}
	defer c.Close()
	target := rest[0]
	octx, cancel := context.WithTimeout(ctx, cf.timeout)
	what, standby := "replying as "+target, false
	if *group {
		what = "replying in group " + target
		if err := c.Subscribe(octx, target); err != nil {
			cancel()
			return failed(std, err)
		}
	} else {
		primary, pos, err := c.Own(octx, target)
		if err != nil {
			cancel()
			return failed(std, err)
		}
		if standby = !primary; standby {
			what = fmt.Sprintf("waiting for %s (standby %d; requests to it go to its owner)", target, pos)
		}
	}
	cancel()
	fmt.Fprintf(std.stderr, "%s (Ctrl-C to stop)\n", what)
	enc := json.NewEncoder(std.stdout)
	enc.SetEscapeHTML(false)
	// Requests come as events, answered by Event.Reply, which returns
	// once the answer is written: after the Nth, the command may close.
	// (WithRequestHandler answers after its function returns, on a
	// goroutine of the connection's, which Close could overtake.)
	for answered := 0; *count == 0 || answered < *count; {
		e, err := c.RecvEvent(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return exitOK
			}
			return failed(std, err)
		}
		if e.Kind == switchboard.EventNotice {
			if n, err := e.Notice(); err == nil && standby && n.Kind == switchboard.NoticeNameAcquired && n.Name == target {
				standby = false
				fmt.Fprintf(std.stderr, "replying as %s\n", target)
			}
			continue
		}
		if e.Kind != switchboard.EventRequest {
			continue
		}
		out, herr := answer(ctx, e)
		if err := e.Reply(out, herr); err != nil {
			return failed(std, err)
		}
		answered++
		if *asJSON {
			rj := replyJSON{Time: time.Now().Format(time.RFC3339Nano), From: e.From, To: e.To, payloadJSON: payloadOf(e.Payload), ReplySize: len(out)}
			if herr != nil {
				rj.Error, rj.ReplySize = herr.Error(), 0
			}
			enc.Encode(rj)
			continue
		}
		result := fmt.Sprintf("answered %d bytes", len(out))
		if herr != nil {
			result = "error: " + herr.Error()
		}
		fmt.Fprintf(std.stdout, "%s  %s -> %s  %s  (%s)\n", time.Now().Format("15:04:05.000"), e.From, e.To, payloadText(e.Payload), result)
	}
	return exitOK
}

// runReplyCommand runs cmd with the request on its standard input; its
// standard output is the answer.
func runReplyCommand(ctx context.Context, cmd string, timeout time.Duration, e switchboard.Event) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	x := exec.CommandContext(ctx, "/bin/sh", "-c", cmd)
	x.Stdin = bytes.NewReader(e.Payload)
	x.Env = append(os.Environ(), "SWITCHBOARD_FROM="+e.From, "SWITCHBOARD_TO="+e.To)
	var out, errb bytes.Buffer
	x.Stdout, x.Stderr = &out, &errb
	if err := x.Run(); err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("command timed out after %v", timeout)
		}
		if msg := strings.TrimSpace(errb.String()); msg != "" {
			return nil, errors.New(msg)
		}
		return nil, fmt.Errorf("command failed: %v", err)
	}
	return out.Bytes(), nil
}
