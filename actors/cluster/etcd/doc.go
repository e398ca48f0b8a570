// Package etcd finds the nodes of a Switchboard cluster through etcd: a
// cluster.Discovery for clusters whose nodes come and go (autoscaled
// hosts, containers) and are not listed in each node's configuration.
//
// Each node keeps one key, PREFIX/CLUSTER/NODE/INCARNATION, whose value is
// the address the other nodes dial (its Config.Advertise), under a lease
// of TTL that the node keeps alive: a node that stops cleanly revokes it
// (its key goes at once), one that dies loses it after TTL. Every node
// watches PREFIX/CLUSTER/ and dials what it finds there. etcd only says
// where the nodes are: whether a node is up is the link's business (its
// own heartbeat, Config.LinkTimeout), and a node linked stays linked when
// etcd is unreachable or its key has gone. So etcd is no single point of
// failure for a cluster already linked: without it, only new nodes go
// unfound, until it is back (each node registers again then).
//
// protoactor-go has an etcd provider of its own, but it feeds protoactor's
// cluster membership, which Switchboard does not use (ARCHITECTURE.md, "The
// link layer"); this one feeds the link layer's list of addresses to dial.
package etcd
