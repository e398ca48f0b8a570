// Package linkpb holds the one protobuf message type that crosses the link
// between two Switchboard nodes, Envelope, generated from link.proto by
// gen.sh. WIRE.md §12 specifies it; package cluster sends and checks it.
package linkpb
