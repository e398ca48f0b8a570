package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/switchboard-ipc/switchboard"
)

const nodesHelp = `usage: switchboard nodes [--socket PATH] [--json] [--width N]

List the nodes of the node's cluster as the node sees them, one a line:
the node itself first ("this node"), then every node linked or linking,
and every address in its configuration (cluster.peers), listed by its
discovery (cluster.discovery) or learned from the others that is not
linked.

  NODE       the node's name ("?" for an address that never answered)
  RUN        its incarnation: the run in its addresses (":NODE.RUN.ID")
  ADDRESS    the address it advertises (host:port; "-" for this node)
  STATE      this node; up; linking (it answered, the link is coming
             up); down, and why the last link ended; refused, and why
             the node there refused this one (it is not tried again
             until it says hello)
  SENT       messages this node sent it on the current link
  DELIVERED  messages it sent this node, delivered here
  UNACKED    bytes sent and not yet acknowledged / the link's byte budget
  HEARD      how long ago it last sent anything (heartbeats included)

A node without [cluster] says so, and the command exits 0. --json prints
a record: this node's name and run, "federated", the cluster's name,
"discovery" (how other nodes are found beyond the peers, "" none),
"nodes_up", and "links" (snake_case field names; "discovered": the
discovery lists the address now).

Exit codes: 0 ok; 1 refused, or a node too old to report its cluster; 3 no node.

flags:
`

// nodesJSON is what `nodes --json` prints; its fields are stable.
type nodesJSON struct {
	Node        string     `json:"node"`
	Incarnation string     `json:"incarnation"`
	Federated   bool       `json:"federated"`
	Cluster     string     `json:"cluster"`
	Discovery   string     `json:"discovery"` // "" none: the peers only
	NodesUp     int        `json:"nodes_up"`
	Links       []linkJSON `json:"links"`
}

type linkJSON struct {
	Node         string `json:"node"` // "" for an address that never answered
	Incarnation  string `json:"incarnation"`
	Address      string `json:"address"`
	State        string `json:"state"`  // up, linking, down, refused
	Reason       string `json:"reason"` // refused: why; down: why the last link ended
	Configured   bool   `json:"configured"`
	Discovered   bool   `json:"discovered"` // listed by the discovery now
	Sent         uint64 `json:"sent"`
	Delivered    uint64 `json:"delivered"`
	UnackedBytes int64  `json:"unacked_bytes"`
	BudgetBytes  int64  `json:"budget_bytes"`
	LastHeard    string `json:"last_heard"` // RFC 3339, UTC; "" never
	// HeardSecondsAgo is null when the node was never heard.
	HeardSecondsAgo *float64 `json:"heard_seconds_ago"`
}

// clusterNodes asks the node for its cluster; a node that predates the
// command gets a clear word instead of "unknown command".
func clusterNodes(ctx context.Context, c *switchboard.Conn) (switchboard.ClusterInfo, error) {
	ci, err := c.ClusterNodes(ctx)
	if errors.Is(err, switchboard.ErrUnknownCommand) {
		return ci, errors.New("the node does not report its cluster (it predates the nodes command)")
	}
	return ci, err
}

func nodesOf(ci switchboard.ClusterInfo, now time.Time) nodesJSON {
	out := nodesJSON{Node: ci.Node, Incarnation: ci.Incarnation, Federated: ci.Federated, Cluster: ci.Cluster,
		Discovery: ci.Discovery, NodesUp: ci.Up(), Links: make([]linkJSON, 0, len(ci.Links))}
	for _, l := range ci.Links {
		j := linkJSON{Node: l.Node, Incarnation: l.Incarnation, Address: l.Address, State: l.State.String(), Reason: l.Reason,
			Configured: l.Configured, Discovered: l.Discovered, Sent: l.Sent, Delivered: l.Delivered, UnackedBytes: l.Unacked, BudgetBytes: l.Budget}
		if !l.LastHeard.IsZero() {
			j.LastHeard = l.LastHeard.UTC().Format(time.RFC3339Nano)
			ago := max(now.Sub(l.LastHeard), 0).Seconds()
			j.HeardSecondsAgo = &ago
		}
		out.Links = append(out.Links, j)
	}
	return out
}

func cmdNodes(ctx context.Context, std stdio, args []string) int {
	return listCommand(ctx, std, args, "nodes", nodesHelp, 0, nil, func(ctx context.Context, c *switchboard.Conn, _ []string) (any, *table, error) {
		ci, err := clusterNodes(ctx, c)
		if err != nil {
			return nil, nil, err
		}
		now := time.Now()
		out := nodesOf(ci, now)
		if !ci.Federated {
			return out, &table{note: fmt.Sprintf("node %s is not federated: its configuration has no [cluster] enabled", clean(ci.Node))}, nil
		}
		t := &table{cols: []column{{name: "NODE", min: 6}, {name: "RUN", drop: 5}, {name: "ADDRESS"}, {name: "STATE", min: 8},
			{name: "SENT", drop: 3}, {name: "DELIVERED", drop: 2}, {name: "UNACKED", drop: 4}, {name: "HEARD", drop: 1}}}
		// The node itself first, as a membership list shows the local
		// member: its name and run; its links are the lines below.
		t.add(clean(ci.Node), clean(ci.Incarnation), "-", "this node", "-", "-", "-", "-")
		for i, l := range out.Links {
			node, run, state, heard := l.Node, l.Incarnation, l.State, "-"
			if node == "" {
				node = "?"
			}
			if run == "" {
				run = "-"
			}
			if l.Reason != "" {
				state += ": " + l.Reason
			}
			if t := ci.Links[i].LastHeard; !t.IsZero() {
				heard = ageText(max(now.Sub(t), 0)) + " ago"
			}
			t.add(node, run, l.Address, state, fmt.Sprint(l.Sent), fmt.Sprint(l.Delivered),
				sizeText(uint64(l.UnackedBytes))+"/"+sizeText(uint64(l.BudgetBytes)), heard)
		}
		return out, t, nil
	})
}

// clusterStatusJSON is the cluster section of `status --json`.
type clusterStatusJSON struct {
	Name         string `json:"name"`
	Node         string `json:"node"`
	Incarnation  string `json:"incarnation"`
	NodesUp      int    `json:"nodes_up"`
	NodesKnown   int    `json:"nodes_known"`      // linked, linking, or addresses to link to
	Configured   int    `json:"nodes_configured"` // addresses in cluster.peers or listed by the discovery
	Discovery    string `json:"discovery"`        // how other nodes are found beyond the peers ("" the peers only)
	Discovered   int    `json:"nodes_discovered"` // addresses the discovery lists now
	Sent         uint64 `json:"sent"`             // messages, on the links up now
	Delivered    uint64 `json:"delivered"`
	UnackedBytes int64  `json:"unacked_bytes"`
}

// clusterStatus is the node's cluster in brief; nil for a node that is
// not federated, or too old to say.
func clusterStatus(ctx context.Context, c *switchboard.Conn) (*clusterStatusJSON, error) {
	ci, err := c.ClusterNodes(ctx)
	if errors.Is(err, switchboard.ErrUnknownCommand) || err == nil && !ci.Federated {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	s := &clusterStatusJSON{Name: ci.Cluster, Node: ci.Node, Incarnation: ci.Incarnation, NodesUp: ci.Up(), NodesKnown: len(ci.Links),
		Discovery: ci.Discovery}
	for _, l := range ci.Links {
		if l.Configured {
			s.Configured++
		}
		if l.Discovered {
			s.Discovered++
		}
		s.Sent += l.Sent
		s.Delivered += l.Delivered
		s.UnackedBytes += l.Unacked
	}
	return s, nil
}

// rows adds the cluster's lines to status's table.
func (s *clusterStatusJSON) rows(t *table) {
	name := s.Name
	if name == "" {
		name = "-"
	}
	t.add("cluster", fmt.Sprintf("%s (this node %s, run %s)", name, s.Node, s.Incarnation))
	t.add("nodes", fmt.Sprintf("%d of %d other nodes up, %d configured (switchboard nodes)", s.NodesUp, s.NodesKnown, s.Configured))
	if s.Discovery != "" {
		t.add("discovery", fmt.Sprintf("%s: %d listed", clean(s.Discovery), s.Discovered))
	}
	t.add("links", fmt.Sprintf("%d sent, %d delivered, %s unacknowledged", s.Sent, s.Delivered, sizeText(uint64(s.UnackedBytes))))
}
