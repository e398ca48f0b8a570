// Package registry implements the node's registry actor: the one owner of
// the table of live connections (id, address, client name, credentials,
// actor PID), of the groups each belongs to, and of the well-known names
// with their standby queues. Being an actor, it needs no lock: every
// change and every query is a message, handled one at a time in arrival
// order.
//
// # Protocol
//
// The node sends Register when a connection's actor has started (and
// waits for it, so that the connection's arrival is announced before its
// client can do anything) and Unregister, with the reason, when it has
// stopped. Group actors report every membership change (Changed); Own and
// Release ask for names. List, ListNames and Lookup answer on the channel
// the message carries (a buffered channel of one: the registry never
// blocks on it).
//
// # Notices
//
// The registry is the only source of the notices on the reserved groups
// (sys.connections, sys.groups, sys.names), so an observer of several of
// them sees one order. A disconnection is announced as: unsubscribed from
// each of its groups (sorted), each name it owned changing hands, then
// disconnected. A member's (un)subscription is answered only once it has
// been announced, so whatever the member does next comes after the notice.
package registry
