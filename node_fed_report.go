package switchboard

import (
	"cmp"
	"slices"
	"strings"

	pb "github.com/switchboard-ipc/switchboard/proto"
)

// What a node says about its cluster (SysNodes): its Federation's word on
// the links when the Federation is a FederationReporter, else the nodes
// up as the node heard of them.

// ClusterNodes reports this node, its cluster and its links to the other
// nodes; Federated is false for a node without WithFederation.
func (n *Node) ClusterNodes() ClusterInfo {
	name, inc, _ := strings.Cut(strings.TrimPrefix(n.addrPrefix, ":"), ".")
	ci := ClusterInfo{Node: name, Incarnation: strings.TrimSuffix(inc, ".")}
	fs := n.fed
	if fs == nil {
		return ci
	}
	ci.Federated = true
	if r, ok := fs.f.(FederationReporter); ok {
		ci.Cluster = r.ClusterName()
		ci.Links = slices.Clone(r.Links())
		if d, ok := r.(DiscoveryReporter); ok {
			ci.Discovery = d.DiscoveryName()
		}
	} else {
		fs.mu.RLock()
		for _, p := range fs.sortedPeers() {
			ci.Links = append(ci.Links, LinkInfo{Node: p.name, Incarnation: p.inc, State: LinkUp})
		}
		fs.mu.RUnlock()
	}
	sortLinks(ci.Links)
	return ci
}

// sortLinks orders links by node name, the unknown ones last, then by
// address.
func sortLinks(ls []LinkInfo) {
	slices.SortStableFunc(ls, func(a, b LinkInfo) int {
		if (a.Node == "") != (b.Node == "") {
			if a.Node == "" {
				return 1
			}
			return -1
		}
		return cmp.Or(strings.Compare(a.Node, b.Node), strings.Compare(a.Address, b.Address))
	})
}

// clusterProto is ClusterInfo on the wire (WIRE.md §6.3).
func clusterProto(ci ClusterInfo) *pb.ClusterNodes {
	m := &pb.ClusterNodes{Node: ci.Node, Incarnation: ci.Incarnation, Federated: ci.Federated, Cluster: ci.Cluster, Discovery: ci.Discovery}
	for _, l := range ci.Links {
		var heard int64
		if !l.LastHeard.IsZero() {
			heard = l.LastHeard.UnixNano()
		}
		m.Links = append(m.Links, &pb.LinkInfo{Node: l.Node, Incarnation: l.Incarnation, Address: l.Address,
			State: pb.LinkState(l.State), Reason: l.Reason, Configured: l.Configured, Discovered: l.Discovered, Sent: l.Sent, Delivered: l.Delivered,
			UnackedBytes: l.Unacked, BudgetBytes: l.Budget, LastHeardUnixNano: heard})
	}
	return m
}
