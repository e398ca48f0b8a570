package switchboard

import (
	"context"
	"fmt"
	"time"

	pb "github.com/switchboard-ipc/switchboard/proto"
	gproto "google.golang.org/protobuf/proto"
)

// ClusterNodes asks the node's system service (SysNodes) for its view of
// its cluster: its name and incarnation, whether it is federated, the
// cluster's name and its links to the other nodes. A node without a
// federation answers with Federated false: that is not an error. A node
// that predates the command answers ErrUnknownCommand.
func (c *Conn) ClusterNodes(ctx context.Context) (ClusterInfo, error) {
	reply, err := c.Call(ctx, SystemService, SysNodes, nil)
	if err != nil {
		return ClusterInfo{}, err
	}
	return clusterInfoOf(reply)
}

// clusterInfoOf decodes a SysNodes reply (untrusted: the strings are
// the node's text, shown as they are only after escaping).
func clusterInfoOf(reply []byte) (ClusterInfo, error) {
	var m pb.ClusterNodes
	if err := gproto.Unmarshal(reply, &m); err != nil {
		return ClusterInfo{}, fmt.Errorf("%w: bad ClusterNodes: %w", ErrProtocol, err)
	}
	ci := ClusterInfo{Node: m.GetNode(), Incarnation: m.GetIncarnation(), Federated: m.GetFederated(), Cluster: m.GetCluster(),
		Discovery: m.GetDiscovery()}
	for _, l := range m.GetLinks() {
		ci.Links = append(ci.Links, linkInfoOf(l))
	}
	return ci, nil
}

// linkInfoOf is a LinkInfo from the wire; a state this client does not
// know (a newer node's) reads as LinkDown.
func linkInfoOf(m *pb.LinkInfo) LinkInfo {
	l := LinkInfo{Node: m.GetNode(), Incarnation: m.GetIncarnation(), Address: m.GetAddress(), State: LinkDown,
		Reason: m.GetReason(), Configured: m.GetConfigured(), Discovered: m.GetDiscovered(), Sent: m.GetSent(), Delivered: m.GetDelivered(),
		Unacked: m.GetUnackedBytes(), Budget: m.GetBudgetBytes()}
	if s := m.GetState(); s >= 0 && s <= pb.LinkState(LinkRefused) {
		l.State = LinkState(s)
	}
	if t := m.GetLastHeardUnixNano(); t != 0 {
		l.LastHeard = time.Unix(0, t)
	}
	return l
}
