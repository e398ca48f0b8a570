package linkpb

import "github.com/asynkron/protoactor-go/remote"

// An Envelope is its own in-process and on-the-wire form for protoactor
// remote's writer and reader (remote.RootSerializable and
// remote.RootSerialized): the writer asks what it is about to send for
// its wire form on its own goroutine, as it takes it, which lets the link
// hand the writer a token that becomes an Envelope of everything queued
// by then (package cluster's sendToken).

// Serialize returns e.
func (e *Envelope) Serialize() (remote.RootSerialized, error) { return e, nil }

// Deserialize returns e.
func (e *Envelope) Deserialize() (remote.RootSerializable, error) { return e, nil }
