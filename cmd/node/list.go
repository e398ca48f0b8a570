package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"strings"
	"time"

	"github.com/switchboard-ipc/switchboard"
)

// The records the listings print with --json. Their field names are
// stable: scripts may rely on them. Lists are never null.

type connJSON struct {
	Address      string   `json:"address"`
	Node         string   `json:"node"` // the node it is connected to
	ClientName   string   `json:"client_name"`
	UID          uint32   `json:"uid"`
	GID          uint32   `json:"gid"`
	PID          int32    `json:"pid"`
	Transport    string   `json:"transport"`
	Groups       []string `json:"groups"`
	Names        []string `json:"names"`
	Calls        uint64   `json:"calls"` // requests to switchboard services
	Sends        uint64   `json:"sends"` // bus messages sent (direct, published, requests)
	Events       uint64   `json:"events"`
	Dropped      uint64   `json:"dropped"`
	BytesIn      uint64   `json:"bytes_in"`
	BytesOut     uint64   `json:"bytes_out"`
	Pending      int      `json:"pending"`
	RequestFill  int      `json:"request_fill"` // bytes waiting in each ring
	ResponseFill int      `json:"response_fill"`
	EventFill    int      `json:"event_fill"`
	EventsQueued int      `json:"events_queued"` // events queued in the node behind the event ring
	Since        string   `json:"since"`         // RFC 3339, UTC
	AgeSeconds   float64  `json:"age_seconds"`
}

type memberJSON struct {
	Address    string `json:"address"`
	ClientName string `json:"client_name"`
	UID        uint32 `json:"uid"`
	GID        uint32 `json:"gid"`
	PID        int32  `json:"pid"`
}

type groupJSON struct {
	Name    string `json:"name"`
	Members int    `json:"members"`
}

type nameJSON struct {
	Name    string   `json:"name"`
	Owner   string   `json:"owner"`
	Standby []string `json:"standby"`
}

func printJSON(std stdio, v any) int {
	out, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		fmt.Fprintf(std.stderr, "switchboard: %v\n", err)
		return exitFailure
	}
	std.stdout.Write(append(out, '\n'))
	return exitOK
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// listCommand runs a listing: parse flags (the common ones, and those
// flags registers, if not nil), dial, list, print.
func listCommand(ctx context.Context, std stdio, args []string, name, help string, nargs int, flags func(*flag.FlagSet),
	list func(ctx context.Context, c *switchboard.Conn, args []string) (any, *table, error)) int {
	fs := newFlagSet(name, help)
	var cf clientFlags
	cf.register(fs)
	if flags != nil {
		flags(fs)
	}
	asJSON := fs.Bool("json", false, "print JSON (stable field names)")
	var width widthFlag
	width.register(fs)
	rest, code, ok := parseArgs(fs, args, std)
	if !ok {
		return code
	}
	if len(rest) != nargs {
		fmt.Fprintf(std.stderr, "switchboard %s: want %d argument(s), have %d   (switchboard %s --help)\n", name, nargs, len(rest), name)
		return exitUsage
	}
	c, code := cf.connect(ctx, std)
	if c == nil {
		return code
	}
	defer c.Close()
	cctx, cancel := context.WithTimeout(ctx, cf.timeout)
	defer cancel()
	v, table, err := list(cctx, c, rest)
	if err != nil {
		return failed(std, err)
	}
	if *asJSON {
		return printJSON(std, v)
	}
	table.write(std.stdout, width.get(std))
	return exitOK
}

const lsHelp = `usage: switchboard ls [--socket PATH] [--json] [--width N] [--local]

List the bus's connections, this command's own included, one a line: the
node's own, then (on a node of a cluster) those on the other nodes that
it knows of, by node (--local leaves them out):

  ADDRESS    the connection's bus address (":NODE.RUN.ID"): send to it, request it
  NODE       the node it is connected to
  NAME       the name the client gave when it connected
  UID GID PID  the client process, as the kernel of its node reported it
  TRANSPORT  shm (shared-memory rings) or socket; remote for another node's
  GROUPS     groups it is subscribed to, and (in brackets) names it owns
  CALLS/SENDS  calls to switchboard services / bus messages it sent
  EVENTS     events delivered to it
  IN OUT     bytes it sent and received
  DROPS      events dropped because it did not read them in time
  FILL       bytes waiting in its request/response/event rings, +events queued in the node
  PENDING    its requests to peers waiting for a reply
  AGE        how long it has been connected

Another node's connections have no figures here ("-"; 0 with --json):
ask that node (switchboard ls on it). On a terminal the table fits its
width (--width N, $COLUMNS, else the terminal's): long names and groups
end in "…" (addresses are never cut), and if that is not enough the
least useful columns are left out, GID first, then NODE, UID, IN, OUT,
TRANSPORT, FILL, CALLS/SENDS, EVENTS, DROPS, PENDING. Piped, or with
--width 0, every column is there in full. --json prints an array of
records (snake_case field names).

Exit codes: 0 ok; 1 refused (the policy's list rule); 3 no node.

flags:
`

// addressNode is the node name in an address (":NODE.RUN.ID"; node names
// have no '.').
func addressNode(addr string) string {
	node, _, _ := strings.Cut(strings.TrimPrefix(addr, ":"), ".")
	return node
}

func cmdLs(ctx context.Context, std stdio, args []string) int {
	var local bool
	flags := func(fs *flag.FlagSet) {
		fs.BoolVar(&local, "local", false, "list only this node's connections, not those on the other nodes of its cluster")
	}
	return listCommand(ctx, std, args, "ls", lsHelp, 0, flags, func(ctx context.Context, c *switchboard.Conn, _ []string) (any, *table, error) {
		conns, err := c.Connections(ctx)
		if err != nil {
			return nil, nil, err
		}
		now := time.Now()
		out := make([]connJSON, 0, len(conns))
		var kept []switchboard.ConnInfo
		for _, ci := range conns {
			node := ci.Cred.Node
			if node == "" {
				node = addressNode(ci.Address)
			} else if local {
				continue
			}
			kept = append(kept, ci)
			out = append(out, connJSON{Address: ci.Address, Node: node, ClientName: ci.Name, UID: ci.Cred.UID, GID: ci.Cred.GID, PID: ci.Cred.PID,
				Transport: ci.Transport, Groups: nonNil(ci.Groups), Names: nonNil(ci.Names),
				Calls: ci.Calls, Sends: ci.Sends, Events: ci.Events, Dropped: ci.Dropped, BytesIn: ci.BytesIn, BytesOut: ci.BytesOut,
				Pending: ci.Pending, RequestFill: ci.RequestFill, ResponseFill: ci.ResponseFill, EventFill: ci.EventFill,
				EventsQueued: ci.EventsQueued, Since: ci.Since.UTC().Format(time.RFC3339Nano), AgeSeconds: now.Sub(ci.Since).Seconds()})
		}
		t := &table{cols: []column{{name: "ADDRESS"}, {name: "NODE", min: 4, drop: 10}, {name: "NAME", min: 6}, {name: "UID", drop: 9}, {name: "GID", drop: 11},
			{name: "PID"}, {name: "TRANSPORT", drop: 6}, {name: "GROUPS", min: 8}, {name: "CALLS/SENDS", drop: 4}, {name: "EVENTS", drop: 3},
			{name: "IN", drop: 8}, {name: "OUT", drop: 7}, {name: "DROPS", drop: 2}, {name: "FILL", drop: 5}, {name: "PENDING", drop: 1}, {name: "AGE"}}}
		for i, r := range out {
			groups := strings.Join(r.Groups, ",")
			if len(r.Names) > 0 {
				groups = strings.TrimPrefix(groups+" ["+strings.Join(r.Names, ",")+"]", " ")
			}
			if groups == "" {
				groups = "-"
			}
			name := r.ClientName
			if name == "" {
				name = "-"
			}
			if kept[i].Cred.Node != "" { // another node's: no figures here
				t.add(r.Address, r.Node, name, fmt.Sprint(r.UID), fmt.Sprint(r.GID), fmt.Sprint(r.PID), r.Transport, groups,
					"-", "-", "-", "-", "-", "-", "-", "-")
				continue
			}
			t.add(r.Address, r.Node, name, fmt.Sprint(r.UID), fmt.Sprint(r.GID), fmt.Sprint(r.PID), r.Transport, groups,
				fmt.Sprintf("%d/%d", r.Calls, r.Sends), fmt.Sprint(r.Events), sizeText(r.BytesIn), sizeText(r.BytesOut), fmt.Sprint(r.Dropped),
				fmt.Sprintf("%s/%s/%s+%d", sizeText(uint64(r.RequestFill)), sizeText(uint64(r.ResponseFill)), sizeText(uint64(r.EventFill)), r.EventsQueued),
				fmt.Sprint(r.Pending), ageText(now.Sub(kept[i].Since)))
		}
		return out, t, nil
	})
}

func sizeText(n uint64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1fG", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1fM", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1fK", float64(n)/(1<<10))
	}
	return fmt.Sprint(n)
}

func ageText(d time.Duration) string {
	switch {
	case d < time.Minute:
		return d.Round(100 * time.Millisecond).String()
	case d < time.Hour:
		return d.Round(time.Second).String()
	}
	return d.Round(time.Minute).String()
}

const groupsHelp = `usage: switchboard groups [--socket PATH] [--json] [--width N]

List the groups that have members, with how many. The reserved groups
sys.connections, sys.groups and sys.names carry the node's notices; they
show up here once someone subscribes to them.

Exit codes: 0 ok; 1 refused; 3 no node.

flags:
`

func cmdGroups(ctx context.Context, std stdio, args []string) int {
	return listCommand(ctx, std, args, "groups", groupsHelp, 0, nil, func(ctx context.Context, c *switchboard.Conn, _ []string) (any, *table, error) {
		gs, err := c.Groups(ctx)
		if err != nil {
			return nil, nil, err
		}
		out := make([]groupJSON, 0, len(gs))
		for _, g := range gs {
			out = append(out, groupJSON{Name: g.Name, Members: g.Members})
		}
		t := &table{cols: []column{{name: "GROUP", min: 12}, {name: "MEMBERS"}}}
		for _, g := range out {
			t.add(g.Name, fmt.Sprint(g.Members))
		}
		return out, t, nil
	})
}

const membersHelp = `usage: switchboard members [--socket PATH] [--json] [--width N] GROUP

List the members of GROUP: their addresses, client names and processes.
An unknown or empty group has no members (that is not an error).

Exit codes: 0 ok; 1 refused; 2 no GROUP; 3 no node.

flags:
`

func cmdMembers(ctx context.Context, std stdio, args []string) int {
	return listCommand(ctx, std, args, "members", membersHelp, 1, nil, func(ctx context.Context, c *switchboard.Conn, args []string) (any, *table, error) {
		ms, err := c.Members(ctx, args[0])
		if err != nil {
			return nil, nil, err
		}
		out := make([]memberJSON, 0, len(ms))
		for _, m := range ms {
			out = append(out, memberJSON{Address: m.Address, ClientName: m.ClientName, UID: m.Cred.UID, GID: m.Cred.GID, PID: m.Cred.PID})
		}
		t := &table{cols: []column{{name: "ADDRESS"}, {name: "NAME", min: 6}, {name: "UID", drop: 2}, {name: "GID", drop: 3}, {name: "PID", drop: 1}}}
		for _, m := range out {
			t.add(m.Address, m.ClientName, fmt.Sprint(m.UID), fmt.Sprint(m.GID), fmt.Sprint(m.PID))
		}
		return out, t, nil
	})
}

const namesHelp = `usage: switchboard names [--socket PATH] [--json] [--width N]

List the well-known names that have an owner: the owner's address and the
standby owners queued behind it, in the order they would take over.

Exit codes: 0 ok; 1 refused; 3 no node.

flags:
`

func cmdNames(ctx context.Context, std stdio, args []string) int {
	return listCommand(ctx, std, args, "names", namesHelp, 0, nil, func(ctx context.Context, c *switchboard.Conn, _ []string) (any, *table, error) {
		ns, err := c.Names(ctx)
		if err != nil {
			return nil, nil, err
		}
		out := make([]nameJSON, 0, len(ns))
		for _, n := range ns {
			out = append(out, nameJSON{Name: n.Name, Owner: n.Owner, Standby: nonNil(n.Standby)})
		}
		t := &table{cols: []column{{name: "NAME", min: 12}, {name: "OWNER"}, {name: "STANDBY", min: 8}}}
		for _, n := range out {
			standby := strings.Join(n.Standby, ",")
			if standby == "" {
				standby = "-"
			}
			t.add(n.Name, n.Owner, standby)
		}
		return out, t, nil
	})
}
