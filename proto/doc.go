// Package pb holds the protobuf messages of Switchboard's node protocol: the
// handshake (Hello, Welcome, Refused), control messages and error codes. The
// generated code is switchboard.pb.go; regenerate it with proto/gen.sh.
package pb
