// Package pb is the wire engine both ends of a connection share: the frame
// kinds, flags, codes and bus constants (frame.go, code.go), control frames
// on the socket (control.go), chunking and reassembly of messages larger
// than a frame (chunk.go), the ring layouts of a connection (layout.go), and
// the protobuf messages of the handshake, the control channel and the bus
// operations (switchboard.proto; the generated code is switchboard.pb.go,
// regenerated with proto/gen.sh). WIRE.md at the repository's root
// specifies the bytes.
package pb
