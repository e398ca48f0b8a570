// Package group holds the bus's groups: one actor per group, created on
// first use and stopped when its last member leaves, which owns the
// group's membership. Publishers do not go through the actor: they read
// the member list it publishes (a copy-on-write snapshot), so a
// publication goes from the publisher's pump straight to the members'
// connection actors, and its recipients are the members at one instant.
package group
