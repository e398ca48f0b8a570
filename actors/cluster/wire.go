package cluster

import (
	"errors"
	"fmt"

	"github.com/switchboard-ipc/switchboard"
	"github.com/switchboard-ipc/switchboard/actors/cluster/linkpb"
	"google.golang.org/protobuf/encoding/protowire"
)

// What crosses a link is untrusted: these bound what a peer may say.
const (
	protoVersion = 1
	maxName      = 64  // node and cluster names, incarnations
	maxAddress   = 255 // HOST:PORT
	maxReason    = 256 // a Bye's reason
)

// Bye codes (linkpb.Bye.code).
const (
	byeLeaving   = 1 // the node is closing its links
	byeFenced    = 2 // the receiver's session was declared down: link again as a new session
	byeDuplicate = 3 // another node of that name is linked
	byeCluster   = 4 // the receiver is of another cluster
	byeProtocol  = 5 // the receiver broke the link protocol
	byeBudget    = 6 // the receiver's budget is larger than the sender's
	byeSecret    = 7 // the receiver's Hello lacks the cluster's secret
)

// refusal reports whether a Bye code refuses the receiver outright: it
// must not dial the sender again until the sender comes back as a new
// session. (Code 2 is not one: the receiver Hellos again, from a new
// session.)
func refusal(code uint32) bool {
	switch code {
	case byeDuplicate, byeCluster, byeBudget, byeSecret:
		return true
	}
	return false
}

// checkHello bounds a Hello's fields.
func checkHello(h *linkpb.Hello) error {
	switch {
	case h.Version != protoVersion:
		return fmt.Errorf("link protocol version %d, want %d", h.Version, protoVersion)
	case len(h.Cluster) == 0 || len(h.Cluster) > maxName:
		return errors.New("cluster name empty or too long")
	case switchboard.CheckNodeName(h.Node) != nil:
		return errors.New("node name: not 1 to 64 printable ASCII bytes without '.' or ':'")
	case switchboard.CheckNodeName(h.Incarnation) != nil:
		return errors.New("incarnation: not 1 to 64 printable ASCII bytes without '.' or ':'")
	}
	return checkAddr(h.Address)
}

// reassembler checks the Data envelopes of one link, in order, and joins
// their chunks into messages. A peer that breaks the rules (a sequence
// gap or duplicate, a chunk out of place, sizes that do not add up, more
// than max bytes) gets an error, and its link is closed; memory stays
// bounded by max however it lies.
type reassembler struct {
	max    int64  // the largest message
	next   uint64 // the sequence number wanted next
	buf    []byte // the message being joined (nil between messages)
	index  uint32 // the chunk wanted next in buf
	count  uint32 // buf's message's chunks
	size   uint64 // buf's message's size
	joined uint64 // bytes in buf
}

func newReassembler(max int64) *reassembler {
	return &reassembler{max: max, next: 1}
}

// add takes the next Data envelope. It returns a whole message when d
// completes one (msg is d's bytes, not a copy, for a one-chunk message).
func (r *reassembler) add(d *linkpb.Data) (msg []byte, done bool, err error) {
	if d.Seq != r.next {
		return nil, false, fmt.Errorf("sequence gap: want %d, got %d", r.next, d.Seq)
	}
	r.next++
	if d.Size > uint64(r.max) {
		return nil, false, fmt.Errorf("message of %d bytes, past the %d limit", d.Size, r.max)
	}
	if want := uint32(chunks(int64(d.Size))); d.Count != want {
		return nil, false, fmt.Errorf("message of %d bytes in %d chunks, want %d", d.Size, d.Count, want)
	}
	if len(d.Bytes) > ChunkSize || (d.Index+1 < d.Count && len(d.Bytes) != ChunkSize) {
		return nil, false, fmt.Errorf("chunk %d of %d holds %d bytes", d.Index, d.Count, len(d.Bytes))
	}
	if r.buf == nil {
		if d.Index != 0 {
			return nil, false, fmt.Errorf("message starts at chunk %d", d.Index)
		}
		if d.Count == 1 {
			if uint64(len(d.Bytes)) != d.Size {
				return nil, false, fmt.Errorf("message of %d bytes carries %d", d.Size, len(d.Bytes))
			}
			return d.Bytes, true, nil
		}
		r.buf = make([]byte, 0, d.Size)
		r.count, r.size, r.index, r.joined = d.Count, d.Size, 0, 0
	} else if d.Index != r.index || d.Count != r.count || d.Size != r.size {
		return nil, false, fmt.Errorf("chunk %d/%d of %d bytes inside chunk %d/%d of %d", d.Index, d.Count, d.Size, r.index, r.count, r.size)
	}
	r.joined += uint64(len(d.Bytes))
	if r.joined > r.size {
		return nil, false, fmt.Errorf("chunks add up to more than %d bytes", r.size)
	}
	r.buf = append(r.buf, d.Bytes...)
	r.index++
	if r.index < r.count {
		return nil, false, nil
	}
	if r.joined != r.size {
		return nil, false, fmt.Errorf("chunks add up to %d bytes, want %d", r.joined, r.size)
	}
	msg, r.buf = r.buf, nil
	return msg, true, nil
}

// packMax is the largest message a Batch packs (Batch.packed); larger
// ones travel as Data.
const packMax = 1 << 10

// unpack walks a Batch's packed messages, the first numbered first: each
// a varint length, then that many bytes, at most packMax; at most
// batchChunks of them (what a sender packs in one Batch). fn gets each in
// turn, a slice of packed (not a copy); an error from fn ends the walk.
// Packed bytes that do not parse, a message over packMax or one too many
// are an error (the link ends): nothing past them is taken.
func unpack(first uint64, packed []byte, fn func(seq uint64, msg []byte) error) error {
	if first == 0 {
		return errors.New("packed messages numbered from 0")
	}
	for seq := first; len(packed) > 0; seq++ {
		if seq-first == batchChunks {
			return fmt.Errorf("more than %d packed messages in a batch", batchChunks)
		}
		msg, n := protowire.ConsumeBytes(packed)
		if n < 0 {
			return fmt.Errorf("packed message %d does not parse", seq)
		}
		if len(msg) > packMax {
			return fmt.Errorf("packed message %d of %d bytes, past %d", seq, len(msg), packMax)
		}
		if err := fn(seq, msg[:len(msg):len(msg)]); err != nil {
			return err
		}
		packed = packed[n:]
	}
	return nil
}
