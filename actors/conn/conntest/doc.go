// Package conntest runs the node's connection actors in tests without a
// node and without processes: Start gives a real *conn.Endpoint whose
// rings are a local link and whose control socket is a socketpair, and a
// Client that plays the other end. A test writes calls into the request
// ring and reads replies and events (notices included) from the response
// and event rings, with every wait bounded, so that actor tests are
// scripted: messages in, notices and replies out.
//
// NewSpawner supplies the supervising root actor that the node would (a
// conn.Spawner for endpoints, groups and the registry) and reports when a
// child stops; Host is a conn.Host that echoes calls and records what the
// connection tells its node.
package conntest
