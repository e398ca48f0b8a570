package main

import (
	"context"
	"fmt"
	"strconv"
	"strings"
)

const servicesHelp = `usage: switchboard services [--socket PATH] [--json] [--width N] [SVC]

List the services the node serves (the system service's services
command), like busctl introspect: each service's id, the name and the
description its registration gave (Handle with WithName, WithDescription)
and how many commands it documents (WithCommand). With SVC (a number,
0x… allowed, or a service's name), list that service's commands instead.
The daemon serves the system service (0xffff) alone; a program that
embeds a node lists its own too.

  ID      NAME    COMMANDS  DESCRIPTION
  0xffff  system  5         the node's built-in service: ping, echo, info, services, nodes

On a terminal the table fits its width (long cells end in "…"); piped, or
with --width 0, it is complete. --json prints an array of records, every
service with its commands.

Exit codes: 0 ok; 1 the node failed the query, or has no such service;
2 bad arguments; 3 no node.

flags:
`

type commandJSON struct {
	ID          uint16 `json:"id"`
	Name        string `json:"name"`
	Description string `json:"description"`
}

type serviceJSON struct {
	ID          uint16        `json:"id"`
	Name        string        `json:"name"`
	Description string        `json:"description"`
	Actor       bool          `json:"actor"`
	Commands    []commandJSON `json:"commands"`
}

func cmdServices(ctx context.Context, std stdio, args []string) int {
	fs := newFlagSet("services", servicesHelp)
	var cf clientFlags
	cf.register(fs)
	asJSON := fs.Bool("json", false, "print JSON (stable field names)")
	var width widthFlag
	width.register(fs)
	rest, code, ok := parseArgs(fs, args, std)
	if !ok {
		return code
	}
	if len(rest) > 1 {
		fmt.Fprintln(std.stderr, "usage: switchboard services [SVC]   (switchboard services --help)")
		return exitUsage
	}
	c, code := cf.connect(ctx, std)
	if c == nil {
		return code
	}
	defer c.Close()
	cctx, cancel := context.WithTimeout(ctx, cf.timeout)
	defer cancel()
	ss, err := c.Services(cctx)
	if err != nil {
		return failed(std, err)
	}
	out := make([]serviceJSON, 0, len(ss))
	for _, s := range ss {
		sj := serviceJSON{ID: s.ID, Name: s.Name, Description: s.Description, Actor: s.Actor, Commands: []commandJSON{}}
		for _, cmd := range s.Commands {
			sj.Commands = append(sj.Commands, commandJSON{ID: cmd.ID, Name: cmd.Name, Description: cmd.Description})
		}
		out = append(out, sj)
	}
	if len(rest) == 1 {
		var one *serviceJSON
		id, err := parseID(rest[0])
		for i := range out {
			if (err == nil && out[i].ID == id) || (out[i].Name != "" && out[i].Name == rest[0]) {
				one = &out[i]
				break
			}
		}
		if one == nil {
			fmt.Fprintf(std.stderr, "%s: no service %s on this node\n", prog, rest[0])
			return exitFailure
		}
		if *asJSON {
			return printJSON(std, one)
		}
		t := &table{cols: []column{{name: "COMMAND"}, {name: "NAME", min: 8}, {name: "DESCRIPTION", min: 12}}}
		for _, cmd := range one.Commands {
			t.add(strconv.Itoa(int(cmd.ID)), dash(cmd.Name), dash(cmd.Description))
		}
		t.write(std.stdout, width.get(std))
		return exitOK
	}
	if *asJSON {
		return printJSON(std, out)
	}
	t := &table{cols: []column{{name: "ID"}, {name: "NAME", min: 8}, {name: "COMMANDS", drop: 1}, {name: "DESCRIPTION", min: 12}}}
	for _, s := range out {
		name := s.Name
		if s.Actor {
			name += " (actor)"
		}
		t.add(fmt.Sprintf("%#04x", s.ID), dash(strings.TrimSpace(name)), strconv.Itoa(len(s.Commands)), dash(s.Description))
	}
	t.write(std.stdout, width.get(std))
	return exitOK
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
