// Package registry implements the node's registry actor: the one owner of
// the table of live connections (id, address, client name, credentials,
// actor PID). Being an actor, it needs no lock: every change and every
// query is a message, handled one at a time in arrival order.
//
// # Protocol
//
// The node sends Register when a connection's actor has started and
// Unregister when it has stopped. List answers with a snapshot of the
// table on the channel the message carries (a buffered channel of one:
// the registry never blocks on it). Lookup answers one entry the same way.
// The registry watches each registered actor and drops its entry on
// Terminated, so a connection whose actor stops without an Unregister
// does not linger.
package registry
