package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"strings"
	"time"

	"github.com/switchboard-ipc/switchboard"
)

const publishHelp = `usage: switchboard publish [--socket PATH] [--want-answer] [--json] GROUP [DATA | @FILE | -]

Publish a message to every member of GROUP (this command is not one).
DATA is the payload as text; @FILE reads it from a file, - from standard
input; without it the message is empty. Try it with a subscriber running:

  switchboard subscribe chat            # terminal 1
  switchboard publish chat "hello"      # terminal 2

The command waits for the node to take the message, so a refusal is
reported. Publishing to a group nobody is in succeeds and reaches no one,
unless --want-answer: then the command fails (exit 1) if the group had
no member to deliver to.

--json prints {"group", "size", "delivered"}: delivered is false when
the group had nobody in it.

Exit codes: 0 published; 1 refused (policy, a reserved sys.* group) or,
with --want-answer, undeliverable; 2 bad arguments; 3 no node.

flags:
`

func cmdPublish(ctx context.Context, std stdio, args []string) int {
	fs := newFlagSet("publish", publishHelp)
	var cf clientFlags
	cf.register(fs)
	wantAnswer := fs.Bool("want-answer", false, "wait for the node to deliver the message; fail if nobody took it")
	asJSON := fs.Bool("json", false, "print what happened as JSON")
	rest, payload, code, ok := destAndPayload(fs, args, std, "switchboard publish GROUP [DATA | @FILE | -]   (switchboard publish --help)")
	if !ok {
		return code
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
	// The node always answers, so that a refusal is seen (and the message
	// has left before Close); an empty group fails only if asked to.
	err := c.Publish(cctx, rest[0], payload, switchboard.WantAnswer())
	if err != nil && (*wantAnswer || !errors.Is(err, switchboard.ErrUndeliverable)) {
		return failed(std, err)
	}
	if *asJSON {
		return printJSON(std, struct {
			Group     string `json:"group"`
			Size      int    `json:"size"`
			Delivered bool   `json:"delivered"`
		}{rest[0], len(payload), err == nil})
	}
	return exitOK
}

const requestHelp = `usage: switchboard request [--socket PATH] [--timeout D] [--output MODE | --json] ADDRESS|NAME [DATA | @FILE | -]

Send a request to a peer, by its address (":n1.mx2z3pcd1ldw.4", see switchboard ls) or by a
well-known name it owns (see switchboard names), and write its reply to standard
output. DATA is the payload as text; @FILE reads it from a file, - from
standard input. --timeout bounds the wait for the reply (default 5s).
The reply is printed as by switchboard call: on a terminal text as text, binary
as a hex dump; piped, the raw bytes; --output raw|hex|text|auto chooses,
--json prints {"size", "payload" (base64), "text" (if UTF-8)}. See
switchboard reply for answering requests from the command line.

Exit codes: 0 the reply was written; 1 the request failed: nobody at that
address or name (undeliverable), the peer left before replying, the peer
answered with an error, the policy refused, or the time ran out; 2 bad
arguments; 3 no node.

flags:
`

func cmdRequest(ctx context.Context, std stdio, args []string) int {
	fs := newFlagSet("request", requestHelp)
	var cf clientFlags
	cf.register(fs)
	var out outputFlag
	out.register(fs)
	asJSON := fs.Bool("json", false, "print the reply as JSON")
	rest, payload, code, ok := destAndPayload(fs, args, std, "switchboard request ADDRESS|NAME [DATA | @FILE | -]   (switchboard request --help)")
	if !ok {
		return code
	}
	if !out.valid() {
		fmt.Fprintf(std.stderr, "switchboard request: --output is raw, hex, text or auto, not %q\n", out.mode)
		return exitUsage
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
	reply, err := c.Request(cctx, rest[0], payload)
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			err = fmt.Errorf("no reply from %s within %v", rest[0], cf.timeout)
		}
		return failed(std, err)
	}
	if *asJSON {
		return printJSON(std, payloadOf(reply))
	}
	writePayload(std, reply, out.mode)
	return exitOK
}

const subscribeHelp = `usage: switchboard subscribe [--socket PATH] [--count N] [--json] GROUP...

Join the groups and print every message published to them, one a line:

  TIME  FROM  GROUP  PAYLOAD

FROM is the sender's address; PAYLOAD is the text if it is printable,
else "hex:…" and its length. The reserved groups carry the node's notices,
printed decoded (FROM is "node"):

  sys.connections   clients connecting and disconnecting
  sys.groups        subscriptions to any group
  sys.names         well-known names changing owner

Messages sent straight to this command's address are printed too. When
the node had to drop messages because this command did not read them in
time, a line "subscribe: N messages lost" says so. It runs until
interrupted (Ctrl-C), or until it has printed N lines with --count N.
"subscribed to …" on standard error says it is listening.

--json prints JSON lines, one object a message: "time" (RFC 3339),
"kind" (send: to this command's address; publish; request; notice;
lost: "lost" messages were dropped), "from", "to", "size", "payload"
(base64), "text" (if UTF-8), and for a notice "notice" (its fields) and
"text" (the line above).

Exit codes: 0 interrupted, or N lines printed; 1 refused (policy); 2 no
GROUP; 3 no node, or the node went away.

flags:
`

func cmdSubscribe(ctx context.Context, std stdio, args []string) int {
	fs := newFlagSet("subscribe", subscribeHelp)
	var cf clientFlags
	cf.register(fs)
	count := fs.Int("count", 0, "exit after printing `N` messages (0: run until interrupted)")
	asJSON := fs.Bool("json", false, "print JSON lines, one object a message")
	rest, code, ok := parseArgs(fs, args, std)
	if !ok {
		return code
	}
	if len(rest) == 0 || *count < 0 {
		fmt.Fprintln(std.stderr, "usage: switchboard subscribe [--count N] GROUP...   (switchboard subscribe --help)")
		return exitUsage
	}
	c, code := cf.connect(ctx, std)
	if c == nil {
		return code
	}
	defer c.Close()
	for _, g := range rest {
		sctx, cancel := context.WithTimeout(ctx, cf.timeout)
		err := c.Subscribe(sctx, g)
		cancel()
		if err != nil {
			return failed(std, err)
		}
	}
	fmt.Fprintf(std.stderr, "subscribed to %s (Ctrl-C to stop)\n", strings.Join(rest, ", "))
	return tail(ctx, std, c, "subscribe", *count, *asJSON)
}

const monitorHelp = `usage: switchboard monitor [--socket PATH] [--count N] [--json] [GROUP|ADDRESS|NAME...]

Print a copy of the bus's traffic as it happens, one line per message:

  TIME  KIND  FROM -> TO  PAYLOAD

KIND is send (a direct message), publish, or request (to a peer, or to a
group when TO is a group). With arguments, only the traffic from or to those addresses, names and groups;
without, everything. Replies are not shown.

Monitoring is privileged: the node's policy ([policy.bus] monitor) says
who may. A monitor never slows the bus: when this command cannot keep up,
the node drops copies for it, and a line "monitor: N messages lost" says
how many. It runs until interrupted (Ctrl-C), or until it has printed N
messages with --count N. "monitoring …" on standard error says it is on.
--json prints JSON lines, as switchboard subscribe does ("kind": send, publish,
request, lost).

Exit codes: 0 interrupted, or N lines printed; 1 refused (policy); 3 no
node, or the node went away.

flags:
`

func cmdMonitor(ctx context.Context, std stdio, args []string) int {
	fs := newFlagSet("monitor", monitorHelp)
	var cf clientFlags
	cf.register(fs)
	count := fs.Int("count", 0, "exit after printing `N` messages (0: run until interrupted)")
	asJSON := fs.Bool("json", false, "print JSON lines, one object a message")
	rest, code, ok := parseArgs(fs, args, std)
	if !ok {
		return code
	}
	if *count < 0 {
		fmt.Fprintln(std.stderr, "switchboard monitor: --count must not be negative")
		return exitUsage
	}
	c, code := cf.connect(ctx, std)
	if c == nil {
		return code
	}
	defer c.Close()
	mctx, cancel := context.WithTimeout(ctx, cf.timeout)
	err := c.Monitor(mctx, rest...)
	cancel()
	if err != nil {
		return failed(std, err)
	}
	what := "all traffic"
	if len(rest) > 0 {
		what = "traffic of " + strings.Join(rest, ", ")
	}
	fmt.Fprintf(std.stderr, "monitoring %s (Ctrl-C to stop)\n", what)
	return tail(ctx, std, c, "monitor", *count, *asJSON)
}

// tail prints c's events until ctx ends or count lines are printed (as
// JSON lines if asJSON).
func tail(ctx context.Context, std stdio, c *switchboard.Conn, cmd string, count int, asJSON bool) int {
	enc := json.NewEncoder(std.stdout)
	enc.SetEscapeHTML(false)
	printed := 0
	for count == 0 || printed < count {
		e, err := c.RecvEvent(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return exitOK
			}
			return failed(std, err)
		}
		if e.Kind == switchboard.EventRequest {
			e.Reply(nil, fmt.Errorf("switchboard %s does not answer requests", cmd))
		}
		if asJSON {
			if e.Dropped > 0 {
				enc.Encode(eventJSON{Time: time.Now().Format(time.RFC3339Nano), Kind: "lost", Lost: e.Dropped})
			}
			if ej, ok := eventRecord(e); ok {
				enc.Encode(ej)
				printed++
			}
			continue
		}
		if e.Dropped > 0 {
			fmt.Fprintf(std.stdout, "%s: %d messages lost\n", cmd, e.Dropped)
		}
		if line := eventLine(e); line != "" {
			fmt.Fprintln(std.stdout, clean(line))
			printed++
		}
	}
	return exitOK
}

// eventLine is one received event as subscribe and monitor print it.
func eventLine(e switchboard.Event) string {
	now := time.Now().Format("15:04:05.000")
	from := e.From
	if from == "" {
		from = "node"
	}
	switch e.Kind {
	case switchboard.EventGroup, switchboard.EventMessage:
		return fmt.Sprintf("%s  %s  %s  %s", now, from, e.To, payloadText(e.Payload))
	case switchboard.EventRequest:
		return fmt.Sprintf("%s  %s  %s  request (refused): %s", now, from, e.To, payloadText(e.Payload))
	case switchboard.EventNotice:
		n, err := e.Notice()
		if err != nil {
			return fmt.Sprintf("%s  node  %s  bad notice: %v", now, e.To, err)
		}
		return fmt.Sprintf("%s  node  %s  %s", now, e.To, noticeText(n))
	case switchboard.EventMonitor:
		kind := map[switchboard.EventKind]string{switchboard.EventMessage: "send", switchboard.EventGroup: "publish",
			switchboard.EventRequest: "request"}[e.Monitored]
		if kind == "" {
			kind = "message"
		}
		return fmt.Sprintf("%s  %-7s  %s -> %s  %s", now, kind, from, e.To, payloadText(e.Payload))
	case switchboard.EventService:
		return fmt.Sprintf("%s  node  service %d event %d  %s", now, e.Service, e.Command, payloadText(e.Payload))
	}
	return ""
}

// eventJSON is one line of subscribe --json and monitor --json.
type eventJSON struct {
	Time   string      `json:"time"`
	Kind   string      `json:"kind"`
	From   string      `json:"from,omitempty"`
	To     string      `json:"to,omitempty"`
	Lost   uint64      `json:"lost,omitempty"`
	Notice *noticeJSON `json:"notice,omitempty"`
	*payloadJSON
}

type noticeJSON struct {
	Kind       string `json:"kind"` // connected, disconnected, subscribed, unsubscribed, name_owner_changed, name_acquired, name_lost
	Address    string `json:"address,omitempty"`
	ClientName string `json:"client_name,omitempty"`
	PID        int32  `json:"pid,omitempty"`
	UID        uint32 `json:"uid"`
	Group      string `json:"group,omitempty"`
	Name       string `json:"name,omitempty"`
	OldOwner   string `json:"old_owner,omitempty"`
	NewOwner   string `json:"new_owner,omitempty"`
	Reason     string `json:"reason,omitempty"`
}

// kindNames are the kinds of messages as subscribe and monitor name them.
var kindNames = map[switchboard.EventKind]string{switchboard.EventMessage: "send", switchboard.EventGroup: "publish",
	switchboard.EventRequest: "request"}

// eventRecord is an event as a JSON line; false for one not printed.
func eventRecord(e switchboard.Event) (eventJSON, bool) {
	ej := eventJSON{Time: time.Now().Format(time.RFC3339Nano), From: e.From, To: e.To}
	if ej.From == "" {
		ej.From = "node"
	}
	pj := payloadOf(e.Payload)
	switch e.Kind {
	case switchboard.EventGroup, switchboard.EventMessage, switchboard.EventRequest:
		ej.Kind, ej.payloadJSON = kindNames[e.Kind], &pj
	case switchboard.EventMonitor:
		ej.Kind, ej.payloadJSON = kindNames[e.Monitored], &pj
		if ej.Kind == "" {
			ej.Kind = "message"
		}
	case switchboard.EventNotice:
		n, err := e.Notice()
		if err != nil {
			return ej, false
		}
		ej.Kind = "notice"
		ej.Notice = &noticeJSON{Kind: strings.ToLower(strings.TrimPrefix(n.Kind.String(), "NOTICE_")), Address: n.Member.Address,
			ClientName: n.Member.ClientName, PID: n.Member.Cred.PID, UID: n.Member.Cred.UID, Group: n.Group, Name: n.Name,
			OldOwner: n.OldOwner, NewOwner: n.NewOwner}
		if n.Reason != 0 {
			ej.Notice.Reason = strings.ToLower(strings.TrimPrefix(n.Reason.String(), "DISCONNECT_"))
		}
		ej.payloadJSON = &payloadJSON{Size: len(e.Payload), Payload: e.Payload, Text: noticeText(n)}
	case switchboard.EventService:
		ej.Kind, ej.To, ej.payloadJSON = "service", fmt.Sprintf("%d/%d", e.Service, e.Command), &pj
	default:
		return ej, false
	}
	return ej, true
}

func noticeText(n switchboard.Notice) string {
	who := n.Member.Address
	if n.Member.ClientName != "" {
		who += " (" + n.Member.ClientName + ")"
	}
	reason := strings.ToLower(strings.TrimPrefix(n.Reason.String(), "DISCONNECT_"))
	owner := func(a string) string {
		if a == "" {
			return "nobody"
		}
		return a
	}
	switch n.Kind {
	case switchboard.NoticeConnected:
		return fmt.Sprintf("connected %s pid %d uid %d", who, n.Member.Cred.PID, n.Member.Cred.UID)
	case switchboard.NoticeDisconnected:
		return fmt.Sprintf("disconnected %s: %s", who, reason)
	case switchboard.NoticeSubscribed:
		return fmt.Sprintf("%s subscribed to %s", who, n.Group)
	case switchboard.NoticeUnsubscribed:
		if n.Reason != 0 {
			return fmt.Sprintf("%s unsubscribed from %s: %s", who, n.Group, reason)
		}
		return fmt.Sprintf("%s unsubscribed from %s", who, n.Group)
	case switchboard.NoticeNameOwnerChanged:
		return fmt.Sprintf("name %s: owner %s -> %s", n.Name, owner(n.OldOwner), owner(n.NewOwner))
	case switchboard.NoticeNameAcquired:
		return "acquired name " + n.Name
	case switchboard.NoticeNameLost:
		return "lost name " + n.Name
	}
	return fmt.Sprintf("%v %s %s", n.Kind, who, n.Detail)
}

// destAndPayload parses the arguments of publish and request: a
// destination, then an optional payload (text, @FILE or - for standard
// input). ok false means the command exits with code.
func destAndPayload(fs *flag.FlagSet, args []string, std stdio, usage string) (rest []string, payload []byte, code int, ok bool) {
	rest, code, ok = parseArgs(fs, args, std)
	if !ok {
		return nil, nil, code, false
	}
	if len(rest) < 1 || len(rest) > 2 {
		fmt.Fprintln(std.stderr, "usage: "+usage)
		return nil, nil, exitUsage, false
	}
	if len(rest) == 2 {
		var err error
		if payload, err = readPayload(std, rest[1]); err != nil {
			fmt.Fprintf(std.stderr, "switchboard: %v\n", err)
			return nil, nil, exitUsage, false
		}
	}
	return rest, payload, 0, true
}
