package switchboard

import (
	"unicode/utf8"

	"github.com/switchboard-ipc/switchboard/actors/conn"
	"google.golang.org/protobuf/encoding/protowire"
)

// Publications are most of what crosses a link in a busy cluster: they
// are written and read here with protowire, with no message structs, in
// the bytes proto.Marshal writes for the same FedMessage (TestFedPublish-
// Wire and FuzzFedPublishWire hold the two to each other). Everything else
// takes proto.Marshal's and proto.Unmarshal's way.

// fedPublishField is FedMessage.publish's field number (fed.proto).
const fedPublishField = 7

// fedCopyMin is the size from which a payload crossing this node is not
// copied where it can be helped, nor cleared before it is copied: below
// it, one allocation and a short copy cost less than the second
// allocation the avoiding takes.
const fedCopyMin = 4096

// appendFedPublish appends the FedMessage{publish: {from, group,
// payload}} proto.Marshal would write.
func appendFedPublish(b []byte, from uint64, group string, payload []byte) []byte {
	inner := 0
	if from != 0 {
		inner += protowire.SizeTag(1) + protowire.SizeVarint(from)
	}
	if group != "" {
		inner += protowire.SizeTag(2) + protowire.SizeBytes(len(group))
	}
	if len(payload) > 0 {
		inner += protowire.SizeTag(3) + protowire.SizeBytes(len(payload))
	}
	if b == nil {
		size := protowire.SizeTag(fedPublishField) + protowire.SizeBytes(inner)
		if len(payload) >= fedCopyMin {
			// Room for the header only: the payload's append below then
			// allocates for both without clearing what it copies (make
			// would clear all of it first).
			size -= len(payload)
		}
		b = make([]byte, 0, size)
	}
	b = protowire.AppendTag(b, fedPublishField, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(inner))
	if from != 0 {
		b = protowire.AppendTag(b, 1, protowire.VarintType)
		b = protowire.AppendVarint(b, from)
	}
	if group != "" {
		b = protowire.AppendTag(b, 2, protowire.BytesType)
		b = protowire.AppendString(b, group)
	}
	if len(payload) > 0 {
		b = protowire.AppendTag(b, 3, protowire.BytesType)
		b = protowire.AppendVarint(b, uint64(len(payload)))
		b = append(b, payload...)
	}
	return b
}

// parseFedPublish reads msg as a FedMessage that holds a publication and
// nothing else, each field of it at most once; ok is false for anything
// else (another kind, unknown or repeated fields, a group that is not
// UTF-8, a malformed message), which proto.Unmarshal then reads or
// refuses. group and payload are msg's bytes, not copies.
func parseFedPublish(msg []byte) (from uint64, group []byte, payload []byte, ok bool) {
	num, typ, n := protowire.ConsumeTag(msg)
	if n < 0 || num != fedPublishField || typ != protowire.BytesType {
		return 0, nil, nil, false
	}
	inner, m := protowire.ConsumeBytes(msg[n:])
	if m < 0 || n+m != len(msg) {
		return 0, nil, nil, false
	}
	var seen uint8
	for len(inner) > 0 {
		num, typ, n := protowire.ConsumeTag(inner)
		if n < 0 {
			return 0, nil, nil, false
		}
		inner = inner[n:]
		switch {
		case num == 1 && typ == protowire.VarintType && seen&1 == 0:
			v, k := protowire.ConsumeVarint(inner)
			if k < 0 {
				return 0, nil, nil, false
			}
			from, inner, seen = v, inner[k:], seen|1
		case num == 2 && typ == protowire.BytesType && seen&2 == 0:
			v, k := protowire.ConsumeBytes(inner)
			if k < 0 || !utf8.Valid(v) {
				return 0, nil, nil, false
			}
			group, inner, seen = v, inner[k:], seen|2
		case num == 3 && typ == protowire.BytesType && seen&4 == 0:
			v, k := protowire.ConsumeBytes(inner)
			if k < 0 {
				return 0, nil, nil, false
			}
			payload, inner, seen = v, inner[k:], seen|4
		default:
			return 0, nil, nil, false
		}
	}
	return from, group, payload, true
}

// DeliverBatch takes the messages of one pass of node's link
// (FederationBatchHost): Deliver for each, except that the publications
// in a row are handed to their local members together, one batch per
// member, instead of one at a time.
func (fs *fedState) DeliverBatch(node string, msgs [][]byte) {
	var ob conn.Outbox
	var run fedPubRun // the lookups of a run of publications (publishRun)
	monitored := func() bool { p := fs.n.monitors.Load(); return p != nil && len(*p) > 0 }
	for _, msg := range msgs {
		if from, gv, payload, ok := parseFedPublish(msg); ok && !monitored() {
			g := run.g
			if !run.ok || string(gv) != g { // (compared without a copy)
				g = string(gv)
			}
			fs.publishGathered(&run, node, from, g, payload, &ob)
			if ob.Len() >= fedOutboxMax {
				ob.Flush()
			}
			continue
		}
		// Anything else may reach the same connections another way:
		// what is gathered goes first; and it may change what a run
		// looked up (the sender leaving, say): the run ends.
		ob.Flush()
		run = fedPubRun{}
		fs.Deliver(node, msg)
	}
	ob.Flush()
}

// fedOutboxMax bounds the deliveries gathered before they are handed over
// (a pass of the link may hold thousands of publications).
const fedOutboxMax = 1024

// publishGathered is Deliver's publication, gathered in ob: counted, and
// a panic (a bug of this node's, on another node's input) loses only this
// message, counted apart, as in Deliver.
func (fs *fedState) publishGathered(run *fedPubRun, node string, from uint64, group string, payload []byte, ob *conn.Outbox) {
	fs.received.Add(1)
	defer fs.recoverMessage(node)
	fs.publishRun(run, node, from, group, payload, ob)
}
