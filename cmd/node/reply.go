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
	"syscall"
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
                  answers an error with its standard error (or its exit status),
                  and so does one that runs longer than --timeout (it is killed,
                  with all it started) or whose output is over the node's
                  largest message; what it leaves running is killed once it exits

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
			fmt.Fprintf(std.stderr, "%s: %v\n", prog, err)
			return exitUsage
		}
	}
	c, code := cf.connect(ctx, std)
	if c == nil {
		return code
	}
	defer c.Close()
	if code, ok := fits(std, c, fixed); !ok {
		return code
	}
	answer := func(ctx context.Context, e switchboard.Event) ([]byte, error) {
		switch {
		case dataSet:
			return fixed, nil
		case *command != "":
			return runReplyCommand(ctx, *command, cf.timeout, c.MaxMessage(), e)
		}
		return e.Payload, nil
	}
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
		fmt.Fprintln(std.stdout, clean(fmt.Sprintf("%s  %s -> %s  %s  (%s)", time.Now().Format("15:04:05.000"), e.From, e.To, payloadText(e.Payload), result)))
	}
	return exitOK
}

// runReplyCommand runs cmd with the request on its standard input; its
// standard output, up to max bytes, is the answer. The command runs in a
// process group of its own, killed whole at the timeout (a child of the
// shell holding the output pipe cannot keep it waiting) and once the
// command is done (it leaves nothing running behind it).
func runReplyCommand(ctx context.Context, cmd string, timeout time.Duration, max int, e switchboard.Event) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	x := exec.CommandContext(ctx, "/bin/sh", "-c", cmd)
	x.Stdin = bytes.NewReader(e.Payload)
	x.Env = append(os.Environ(), "SWITCHBOARD_FROM="+e.From, "SWITCHBOARD_TO="+e.To)
	x.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	x.Cancel = func() error { return syscall.Kill(-x.Process.Pid, syscall.SIGKILL) }
	x.WaitDelay = time.Second // then the pipes are closed, whoever holds them
	out := &cappedBuffer{max: max, fail: true}
	errb := &cappedBuffer{max: 1024}
	x.Stdout, x.Stderr = out, errb
	err := x.Run()
	if x.Process != nil {
		syscall.Kill(-x.Process.Pid, syscall.SIGKILL) // what it left running
	}
	switch {
	case out.over:
		return nil, fmt.Errorf("the command's output is over %d bytes, the node's largest message", max)
	case ctx.Err() != nil:
		return nil, fmt.Errorf("command timed out after %v", timeout)
	case err != nil && !errors.Is(err, exec.ErrWaitDelay):
		if msg := strings.TrimSpace(errb.buf.String()); msg != "" {
			return nil, errors.New(msg)
		}
		return nil, fmt.Errorf("command failed: %v", err)
	}
	return out.buf.Bytes(), nil
}

// cappedBuffer keeps the first max bytes written to it. Past that it
// records that there was more, and fails the write if fail is set (so
// that the command's output pipe is closed) or drops the rest.
type cappedBuffer struct {
	buf  bytes.Buffer
	max  int
	fail bool
	over bool
}

var errOutputTooLarge = errors.New("output too large")

func (b *cappedBuffer) Write(p []byte) (int, error) {
	if room := b.max - b.buf.Len(); len(p) > room {
		b.over = true
		b.buf.Write(p[:max(room, 0)])
		if b.fail {
			return 0, errOutputTooLarge
		}
		return len(p), nil
	}
	return b.buf.Write(p)
}
