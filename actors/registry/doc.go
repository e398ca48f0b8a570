// Package registry is the node's one table of live connections, and the
// actor that announces what happens to them.
//
// # The table
//
// Registry.Add enters a connection when its handshake has started it, and
// Remove takes it out when it has ended; the node makes both under its own
// lock, so that a connection always leaves after it entered. Lookup (by
// id), Owner (by well-known name), Len and All read lock-free tables: the
// routing of bus frames uses them on every message.
//
// # The actor
//
// Everything else is a message to the registry's actor, handled one at a
// time in arrival order, so its state needs no lock: the groups each
// connection belongs to (groups report every change as a *group.Change),
// the well-known names with their standby queues (Own, Release), and the
// listings (List, ListNames answer on a buffered channel: the actor never
// blocks on it).
//
// # Notices
//
// The actor is the only source of the notices on the reserved groups
// (sys.connections, sys.groups, sys.names), and it sends them to the
// members itself, so an observer of several of them sees one order. A
// connection's arrival is announced before its client hears Welcome (Add's
// done channel). A disconnection is announced as: unsubscribed from each
// of its groups (sorted), each name it owned changing hands, then
// disconnected. A member's (un)subscription is answered only once it has
// been announced (the change's Done), so whatever the member does next
// comes after the notice.
package registry
