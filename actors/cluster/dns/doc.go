// Package dns finds the nodes of a Switchboard cluster in DNS: a
// cluster.Discovery that resolves one name's IPv4 addresses (A records)
// every Interval and dials each at the cluster's port. It is how a cluster
// finds itself on Kubernetes without access to its API: a headless Service
// (clusterIP: None) over the nodes' pods has one A record per ready pod,
// NAME.NAMESPACE.svc.cluster.local, and the pods come and go with it;
// elsewhere, any name an operator or a DNS-based registry keeps up to date.
//
// DNS only says where the nodes are, as every Discovery: the link decides
// what is up. A node registers nothing (the orchestrator does, by
// publishing its address once it is ready). A name that does not exist
// (NXDOMAIN: a Service with no pod ready) lists no node; a lookup that
// fails otherwise (a timeout, a server failure) keeps what the last one
// found. IPv6 records are not used: protoactor remote cannot listen on an
// IPv6 address.
package dns
