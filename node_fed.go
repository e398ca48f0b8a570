package switchboard

import (
	"errors"
	"strings"
)

// Federation: the contract between a node and the links that join it to
// the other nodes of a cluster. The root package knows nothing of how the
// links are made (package actors/cluster makes them over protoactor-go
// remote, and only cmd/node and programs that federate import it); it
// hands a Federation opaque messages for a named node and takes the other
// nodes' messages, comings and goings through the FederationHost it gives
// Start. Node names are the names nodes are given (WithName); an
// incarnation (the one in the node's addresses, ":NAME.INCARNATION.ID")
// tells two runs of one name apart.

// FederationOverhead is the most the envelope of a message to another
// node adds to its payload (a request's ids, deadline and destination: a
// name or an address). A Federation must carry messages of the node's
// largest message (WithMaxMessage) plus this; cmd/node sizes its links so.
const FederationOverhead = 1024

// Federation carries this node's messages to the other nodes of its
// cluster.
type Federation interface {
	// Start begins linking this node (named self, in its incarnation) to
	// the others; the node calls it once, before it serves clients, and
	// host's methods are called from then until Close returns.
	Start(self string, incarnation string, host FederationHost) error
	// Send queues msg for node and owns msg from then on. What Send
	// accepts is delivered once, in Send's order per destination, or the
	// link is declared down (host.NodeDown): never a silent gap. An error
	// means msg will not be delivered: the node is not up, or the link's
	// byte budget is spent. Send must not wait for a goroutine that is
	// calling the host's NodeUp (which waits for the node to send its
	// state).
	Send(node string, msg []byte) error
	// Close ends every link and waits for the goroutines that call host;
	// it is idempotent.
	Close() error
}

// FederationReporter is what a Federation may also implement to say how
// its links stand: the node's SysNodes command (Conn.ClusterNodes,
// `switchboard nodes`) reports it. Without it the node reports the nodes
// up as it heard of them (NodeUp), with no link figures.
type FederationReporter interface {
	// ClusterName returns the name of the cluster the Federation joins.
	ClusterName() string
	// Links describes every link: the nodes linked or linking, and the
	// addresses configured or learned that are not linked. It is called
	// from any goroutine, and must not call the host.
	Links() []LinkInfo
}

// DiscoveryReporter is implemented by a FederationReporter that can say
// how it finds other nodes beyond its configured peers (ClusterInfo's
// Discovery).
type DiscoveryReporter interface {
	// DiscoveryName describes the discovery in use in a few words (its
	// kind and where it looks), "" for none. Called from any goroutine.
	DiscoveryName() string
}

// FederationHost is the node's side of a Federation.
type FederationHost interface {
	// NodeUp: a link to node, in this incarnation, is up; its messages
	// follow. A node comes up again only after its NodeDown: in a new
	// incarnation (it restarted), or in the same one (its link was cut
	// or reset, and linked again): either way, as a node new to the host.
	// It returns once this node's state went out to node (its traffic
	// may follow).
	NodeUp(node string, incarnation string)
	// NodeDown: the link to node's incarnation is gone (the node was
	// killed, hung, cut off, fenced, or its link lost a message); nothing
	// more from that incarnation is delivered.
	NodeDown(node string, incarnation string, reason string)
	// Deliver hands over one message from node, which the host owns from
	// then on, in node's Send order, one call at a time per node. It
	// should not block: the link's budget backs up behind it.
	Deliver(node string, msg []byte)
}

// FederationBatchHost is a FederationHost that takes the messages a link
// delivers in one pass at once: in order, as Deliver would take them one
// by one, which lets the host hand them on in batches. A Federation whose
// host has it calls DeliverBatch instead of Deliver. The host owns the
// messages, not the slice, which is the Federation's again on return.
type FederationBatchHost interface {
	FederationHost
	DeliverBatch(node string, msgs [][]byte)
}

// CheckNodeName reports whether s is a node name or incarnation the nodes
// of a cluster take from each other: 1 to 64 printable ASCII bytes,
// without '.' or ':'. A Federation refuses any other (a node named
// otherwise cannot federate), so that every link it brings up is one the
// host accepts.
func CheckNodeName(s string) error {
	if len(s) == 0 || len(s) > 64 || strings.ContainsAny(s, ".:") {
		return errors.New("bad node name: 1 to 64 printable ASCII bytes, without '.', ':' or spaces")
	}
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] > '~' {
			return errors.New("bad node name: 1 to 64 printable ASCII bytes, without '.', ':' or spaces")
		}
	}
	return nil
}
