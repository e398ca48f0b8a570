// Package cluster links Switchboard nodes over protoactor-go remote: it is
// the real switchboard.Federation. Each node dials a static list of peers;
// a Hello exchange carries the cluster's name and secret, the node's name
// and its incarnation, and refuses a node without the secret, a second
// node of the same name or one of another cluster. On top of remote, which gives no delivery guarantee, the link
// adds what Switchboard promises: sequence numbers and cumulative
// acknowledgements (a gap, a duplicate or an acknowledgement that never
// comes is a dead link, never a silent hole), chunking (a message up to
// Config.MaxMessage crosses in ChunkSize pieces), a byte budget per link
// with an overflow policy, its own heartbeat (a hung node is declared down
// after Config.LinkTimeout, a killed one as soon as remote sees its stream
// break), fencing (a link declared down delivers nothing more from that
// session; the node links again as a new one, and the host resends its
// state), and TLS whenever the listen address is not loopback.
//
// Only cmd/node and programs that federate import this package: the root
// package never does, so a program that embeds a node or only dials does
// not link gRPC. ARCHITECTURE.md ("The link layer") describes the
// goroutines and locks; WIRE.md ("The link between nodes") the wire.
package cluster
