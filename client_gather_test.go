package switchboard

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"testing"
)

// Sizes and cuts for the gathered-send tests. The node's request and
// response rings are 16 KiB (frames of at most 8,168 bytes) and its event
// rings 64 KiB (frames of 32,744): 20,000 bytes are chunked on the request
// and response rings, 50,000 on every ring, written at once, and a
// 100,000-byte event has to wait in the node's queue (where it is joined).
const (
	gatherRing      = 16 << 10
	gatherEventRing = 64 << 10
	gatherFrame     = gatherRing/2 - 24
)

var gatherSizes = []int{0, 1, 100, gatherFrame, gatherFrame + 1, 20000, 50000, 100000}

func join(parts [][]byte) []byte {
	out := []byte{}
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

// cuts returns ways to gather msg: whole, three parts among empty ones,
// cut around a frame's end, and in 20 parts (more than the stack arrays
// hold).
func cuts(msg []byte) map[string][][]byte {
	n := len(msg)
	out := map[string][][]byte{
		"one":   {msg},
		"empty": {nil, msg[:n/3], {}, msg[n/3 : 2*n/3], nil, msg[2*n/3:], {}},
	}
	for _, at := range []int{gatherFrame - 1, gatherFrame, gatherFrame + 1} {
		if at < n {
			out[fmt.Sprintf("at%d", at)] = [][]byte{msg[:at], msg[at:]}
		}
	}
	var many [][]byte
	for i := range 20 {
		many = append(many, msg[i*n/20:(i+1)*n/20])
	}
	out["many"] = many
	return out
}

func pattern(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7 + i/251)
	}
	return b
}

// gatherPath sends a payload one way: gathered (parts) or not (whole),
// and returns what the receiver saw.
type gatherPath struct {
	name   string
	whole  func(t *testing.T, msg []byte) []byte
	gather func(t *testing.T, parts [][]byte) []byte
}

// TestGatheredSendsMatchSingleBuffer sends every size, cut every way, on
// every send path, gathered and as one buffer, and checks that the
// receiver (the handler, the peer, the client) sees the same bytes.
func TestGatheredSendsMatchSingleBuffer(t *testing.T) {
	bothTransports(t, testGatheredSends)
}

func testGatheredSends(t *testing.T, tr Transport) {
	n := startNode(t, WithRings(gatherRing, gatherRing, gatherEventRing), WithMaxMessage(1<<20))
	const (
		svcSeen  = 20 // records what it was sent, replies with it
		svcReply = 21 // replies with nodeParts: gathered (cmd 1) or joined (cmd 2)
		svcEvent = 22 // sends nodeParts as an event: Request.SendEvent (cmd 1, 2) or Session.SendEvent (cmd 3, 4)
	)
	seen := make(chan []byte, 1)
	var mu sync.Mutex
	var nodeParts [][]byte
	parts := func() [][]byte { mu.Lock(); defer mu.Unlock(); return nodeParts }
	n.HandleFunc(svcSeen, func(ctx context.Context, r *Request) ([]byte, error) {
		seen <- append([]byte{}, r.Payload...)
		return nil, nil
	})
	n.Handle(svcReply, BuffersHandlerFunc(func(ctx context.Context, r *Request) (net.Buffers, error) {
		if r.Command == 2 {
			return net.Buffers{join(parts())}, nil
		}
		return parts(), nil
	}))
	n.HandleFunc(svcEvent, func(ctx context.Context, r *Request) ([]byte, error) {
		switch r.Command {
		case 1:
			r.SendEventBuffers(9, parts())
		case 2:
			r.SendEvent(9, join(parts()))
		case 3:
			r.Session.SendEventBuffers(9, parts())
		case 4:
			r.Session.SendEvent(9, join(parts()))
		}
		return nil, nil
	})
	peerSeen := make(chan []byte, 1)
	peer := dial(t, n, WithTransport(tr), WithRequestHandler(func(ctx context.Context, r *PeerRequest) ([]byte, error) {
		peerSeen <- r.Payload
		return nil, nil
	}))
	ctx := ctx5(t)
	if err := peer.Subscribe(ctx, "g"); err != nil {
		t.Fatal(err)
	}
	c := dial(t, n, WithTransport(tr))
	check := func(t *testing.T, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	got := func(ch chan []byte) []byte { return <-ch }
	event := func(t *testing.T, on *Conn) []byte {
		t.Helper()
		e := recv(t, on)
		return e.Payload
	}
	async := func(t *testing.T, a *AsyncCall) *AsyncCall {
		t.Helper()
		a = <-a.Done
		check(t, a.Err)
		return a
	}
	asNode := func(cmd uint16, svc uint16, ev bool) func(t *testing.T, p [][]byte) []byte {
		return func(t *testing.T, p [][]byte) []byte {
			mu.Lock()
			nodeParts = p
			mu.Unlock()
			reply, err := c.Call(ctx, svc, cmd, nil)
			check(t, err)
			if ev {
				return event(t, c)
			}
			return reply
		}
	}
	paths := []gatherPath{
		{"Call",
			func(t *testing.T, m []byte) []byte {
				_, err := c.Call(ctx, svcSeen, 1, m)
				check(t, err)
				return got(seen)
			},
			func(t *testing.T, p [][]byte) []byte {
				_, err := c.CallBuffers(ctx, svcSeen, 1, p)
				check(t, err)
				return got(seen)
			}},
		{"Send",
			func(t *testing.T, m []byte) []byte { check(t, c.Send(ctx, svcSeen, 1, m)); return got(seen) },
			func(t *testing.T, p [][]byte) []byte { check(t, c.SendBuffers(ctx, svcSeen, 1, p)); return got(seen) }},
		{"Go",
			func(t *testing.T, m []byte) []byte { async(t, c.Go(ctx, svcSeen, 1, m, nil)); return got(seen) },
			func(t *testing.T, p [][]byte) []byte {
				async(t, c.GoBuffers(ctx, svcSeen, 1, p, nil))
				return got(seen)
			}},
		{"SendTo",
			func(t *testing.T, m []byte) []byte { check(t, c.SendTo(ctx, peer.Address(), m)); return event(t, peer) },
			func(t *testing.T, p [][]byte) []byte {
				check(t, c.SendToBuffers(ctx, peer.Address(), p, WantAnswer()))
				return event(t, peer)
			}},
		{"Publish",
			func(t *testing.T, m []byte) []byte { check(t, c.Publish(ctx, "g", m)); return event(t, peer) },
			func(t *testing.T, p [][]byte) []byte { check(t, c.PublishBuffers(ctx, "g", p)); return event(t, peer) }},
		{"Request",
			func(t *testing.T, m []byte) []byte {
				_, err := c.Request(ctx, peer.Address(), m)
				check(t, err)
				return got(peerSeen)
			},
			func(t *testing.T, p [][]byte) []byte {
				_, err := c.RequestBuffers(ctx, peer.Address(), p)
				check(t, err)
				return got(peerSeen)
			}},
		{"GoRequest",
			func(t *testing.T, m []byte) []byte {
				async(t, c.GoRequest(ctx, peer.Address(), m, nil))
				return got(peerSeen)
			},
			func(t *testing.T, p [][]byte) []byte {
				async(t, c.GoRequestBuffers(ctx, peer.Address(), p, nil))
				return got(peerSeen)
			}},
		{"RequestGroup",
			func(t *testing.T, m []byte) []byte {
				_, err := c.RequestGroup(ctx, "g", m)
				check(t, err)
				return got(peerSeen)
			},
			func(t *testing.T, p [][]byte) []byte {
				_, err := c.RequestGroupBuffers(ctx, "g", p)
				check(t, err)
				return got(peerSeen)
			}},
		{"HandlerReply",
			func(t *testing.T, m []byte) []byte { return asNode(2, svcReply, false)(t, [][]byte{m}) },
			asNode(1, svcReply, false)},
		{"Request.SendEvent",
			func(t *testing.T, m []byte) []byte { return asNode(2, svcEvent, true)(t, [][]byte{m}) },
			asNode(1, svcEvent, true)},
		{"Node.SendEvent",
			func(t *testing.T, m []byte) []byte { check(t, n.SendEvent(c.ID(), 1, 9, m)); return event(t, c) },
			func(t *testing.T, p [][]byte) []byte {
				check(t, n.SendEventBuffers(c.ID(), 1, 9, p))
				return event(t, c)
			}},
		{"Session.SendEvent",
			func(t *testing.T, m []byte) []byte { return asNode(4, svcEvent, true)(t, [][]byte{m}) },
			asNode(3, svcEvent, true)},
	}
	for _, p := range paths {
		t.Run(p.name, func(t *testing.T) {
			for _, size := range gatherSizes {
				msg := pattern(size)
				if w := p.whole(t, msg); !bytes.Equal(w, msg) {
					t.Fatalf("size %d, one buffer: the receiver saw %d bytes, not the %d sent", size, len(w), len(msg))
				}
				for name, parts := range cuts(msg) {
					if g := p.gather(t, parts); !bytes.Equal(g, msg) {
						t.Fatalf("size %d, parts %s: the receiver saw %d bytes that differ from the %d joined", size, name, len(g), len(msg))
					}
				}
			}
		})
	}
}

// TestGatheredTooLarge: the limit is on the parts' total.
func TestGatheredTooLarge(t *testing.T) {
	n := startNode(t, WithMaxMessage(1000))
	echoService(n)
	c := dial(t, n)
	ctx := ctx5(t)
	half := make([]byte, 600)
	if _, err := c.CallBuffers(ctx, svcEcho, cmdEcho, net.Buffers{half, half}); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("CallBuffers of 1,200 bytes, limit 1,000: %v", err)
	}
	if err := c.PublishBuffers(ctx, "g", net.Buffers{half, half}); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("PublishBuffers of 1,200 bytes, limit 1,000: %v", err)
	}
	if out, err := c.CallBuffers(ctx, svcEcho, cmdEcho, net.Buffers{half, half[:400]}); err != nil || len(out) != 1000 {
		t.Fatalf("CallBuffers of 1,000 bytes: %d bytes, %v", len(out), err)
	}
}
