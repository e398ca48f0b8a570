package switchboard

import (
	"context"
	"encoding/binary"
	"testing"
	"time"

	pb "github.com/switchboard-ipc/switchboard/proto"
	"github.com/switchboard-ipc/switchboard/shm"
)

// fuzzConn is a Conn with just enough to serve a direct channel's frames:
// requests and messages become events in its queue; a channel it ends is
// reported on a local request ring.
func fuzzConn(t testing.TB) *Conn {
	req, err := shm.NewProducer(shm.AlignedBuffer(shm.RingRegionSize(1 << 16)))
	if err != nil {
		t.Fatal(err)
	}
	c := &Conn{o: dialOptions{eventQueue: 1 << 20}, maxMsg: 1 << 16, pending: map[uint64]*call{}, gone: make(chan struct{}),
		ewake: make(chan struct{}, 1), rqwake: make(chan struct{}, 1), peerCtx: true, req: req, pollFd: -1}
	c.life, c.lifeCancel = context.WithCancelCause(context.Background())
	c.initDirect(uint32(pb.Feature_FEATURE_DIRECT_PEERS))
	return c
}

// hostileRing lays data out as a ring a peer wrote: the first 8 bytes are
// the head it published, the rest the ring's data.
func hostileRing(data []byte) []byte {
	const capacity = 4096
	region := shm.AlignedBuffer(shm.RingRegionSize(capacity))
	if len(data) >= 8 {
		binary.LittleEndian.PutUint64(region, binary.LittleEndian.Uint64(data)%(2*capacity))
		copy(region[shm.RingRegionSize(0):], data[8:])
	}
	return region
}

// FuzzDirectRing: whatever a peer writes into a direct channel's ring,
// neither end crashes, and a channel that does not decode is ended and
// counted.
func FuzzDirectRing(f *testing.F) {
	frame := func(h shm.Header, body string) []byte {
		b := binary.LittleEndian.AppendUint64(nil, uint64(shm.FrameSize(len(body))))
		return append(b, shm.AppendFrame(nil, h, []byte(body))...)
	}
	f.Add(frame(shm.Header{Kind: pb.KindPeerCall, ID: 1, Aux: 1000}, "hello"))
	f.Add(frame(shm.Header{Kind: pb.KindPeerSend, ID: 2}, "msg"))
	f.Add(frame(shm.Header{Kind: pb.KindReply, ID: 1}, "re"))
	f.Add(frame(shm.Header{Kind: pb.KindDirectCancel, ID: 1, Aux: 8}, ""))
	f.Add(frame(shm.Header{Kind: pb.KindPeerCall, Flags: 1, ID: 3}, "chunk"))
	f.Add(frame(shm.Header{Kind: 99}, "junk"))
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f, 1, 2, 3})
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, caller := range []bool{false, true} {
			c := fuzzConn(t)
			cons, err := shm.NewConsumer(hostileRing(data))
			if err != nil {
				continue // refused at the door
			}
			ch := &dchan{id: 1, peer: ":n.x.2", caller: caller, cons: cons, pending: map[uint64]time.Time{1: {}},
				started: make(chan struct{}), quiet: make(chan struct{}), reasm: pb.Reassembly{MaxInFlight: 4, MaxSize: 1 << 16}}
			ch.ctx, ch.cancel = context.WithCancel(c.life)
			close(ch.started)
			c.dir.byID[1] = ch
			c.pending[1] = callPool.Get().(*call)
			before := c.dir.corrupt.Load()
			var ok bool
			if caller {
				ok = c.directReplies(ch)
			} else {
				c.evmu.Lock()
				ok, _ = c.directDrain(ch, false, false)
				c.evmu.Unlock()
			}
			if !ok && (c.dir.corrupt.Load() != before+1 || ch.ctx.Err() == nil) {
				t.Fatalf("a broken channel was not ended and counted (caller %v)", caller)
			}
			for c.ehead < len(c.equeue) { // what was served is well formed
				e := c.equeue[c.ehead]
				c.ehead++
				if e.From != ch.peer {
					t.Fatalf("an event from %q", e.From)
				}
			}
			ch.cancel()
			c.lifeCancel(nil)
		}
	})
}

// TestDirectHostilePeer: a caller that writes garbage into the channel
// loses the channel (counted at the responder), and the responder goes on
// serving, routed.
func TestDirectHostilePeer(t *testing.T) {
	n := startNode(t)
	srv, cl := directPair(t, n, nil)
	goDirect(t, cl, srv)
	cl.dir.mu.Lock()
	ch := cl.dir.out[srv.Address()]
	cl.dir.mu.Unlock()
	ch.wmu.Lock()
	if err := ch.prod.Write(context.Background(), shm.Header{Kind: 77, ID: 5}, []byte("garbage")); err != nil {
		t.Fatal(err)
	}
	ch.wmu.Unlock()
	waitFor(t, func() bool { return srv.DirectStats().Corrupt == 1 && cl.DirectStats().Open == 0 })
	ctx := ctx5(t)
	other := dial(t, n)
	if r, err := other.Request(ctx, srv.Address(), []byte("x")); err != nil || string(r) != "re:x" {
		t.Fatalf("the responder stopped serving: %q %v", r, err)
	}
	if r, err := cl.Request(ctx, srv.Address(), []byte("y")); err != nil || string(r) != "re:y" {
		t.Fatalf("the caller cannot reach it again: %q %v", r, err)
	}
}
