package tests

import (
	"bytes"
	"context"
	"encoding/binary"
	"net"
	"testing"
	"time"

	"github.com/switchboard-ipc/switchboard"
)

// TestGatheredAcrossProcesses: a payload sent in parts reaches a node in
// another process, and a peer in a third, byte for byte as the same bytes
// sent whole, on both transports and at sizes that are chunked.
func TestGatheredAcrossProcesses(t *testing.T) {
	transports(t, func(t *testing.T, tr switchboard.Transport) {
		_, socket := nodeChild(t)
		_, peer := startPeer(t, "peer", socket, "SB_MODE=echo")
		c := dialT(t, socket, switchboard.WithTransport(tr))
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		for _, size := range []int{0, 1, 100, 5000, 70000} {
			whole := make([]byte, size)
			for i := range whole {
				whole[i] = byte(i*7 + size)
			}
			for _, parts := range cuts(whole) {
				single, err := c.Call(ctx, svcTest, cmdEcho, whole)
				if err != nil {
					t.Fatal(err)
				}
				gathered, err := c.CallBuffers(ctx, svcTest, cmdEcho, parts)
				if err != nil || !bytes.Equal(gathered, whole) || !bytes.Equal(single, whole) {
					t.Fatalf("%d bytes in %d parts: CallBuffers %d bytes, Call %d bytes (%v)", size, len(parts), len(gathered), len(single), err)
				}
				r, err := c.RequestBuffers(ctx, peer, parts)
				if want := append([]byte(peer+":"), whole...); err != nil || !bytes.Equal(r, want) {
					t.Fatalf("%d bytes in %d parts: RequestBuffers got %d bytes (%v), want %d", size, len(parts), len(r), err, len(want))
				}
			}
		}
	})
}

// cuts returns ways to send b in parts: whole, with empty parts around,
// in three, and byte by byte at the front.
func cuts(b []byte) []net.Buffers {
	out := []net.Buffers{{b}, {nil, b, nil}}
	if len(b) >= 3 {
		third := len(b) / 3
		out = append(out, net.Buffers{b[:third], b[third : 2*third], b[2*third:]})
		out = append(out, net.Buffers{b[:1], b[1:2], b[2:]})
	}
	return out
}

// TestAsyncPipelineAcrossProcesses: one goroutine keeps hundreds of calls
// to a node in another process, and requests to a peer in a third, in
// flight at once, 10,000 of each; every one completes with its own reply.
func TestAsyncPipelineAcrossProcesses(t *testing.T) {
	_, socket := nodeChild(t)
	_, peer := startPeer(t, "peer", socket, "SB_MODE=echo")
	c := dialT(t, socket)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	const total, window = 10_000, 256
	done := make(chan *switchboard.AsyncCall, window)
	start := time.Now()
	sent, finished := 0, 0
	index := map[*switchboard.AsyncCall]uint64{} // which call each is
	for finished < 2*total {
		for sent < 2*total && sent-finished < window {
			p := binary.BigEndian.AppendUint64(nil, uint64(sent))
			if sent%2 == 0 {
				index[c.Go(ctx, svcTest, cmdEcho, p, done)] = uint64(sent)
			} else {
				index[c.GoRequest(ctx, peer, p, done)] = uint64(sent)
			}
			sent++
		}
		a := <-done
		finished++
		if a.Err != nil {
			t.Fatalf("call %d: %v", finished, a.Err)
		}
		reply := a.Reply
		if a.To != "" {
			if !bytes.HasPrefix(reply, []byte(peer+":")) {
				t.Fatalf("request answered %q", reply)
			}
			reply = reply[len(peer)+1:]
		}
		if len(reply) != 8 {
			t.Fatalf("reply %q", reply)
		}
		i, ok := index[a]
		if !ok {
			t.Fatal("a completion for no call, or a second one")
		}
		delete(index, a)
		if got := binary.BigEndian.Uint64(reply); got != i {
			t.Fatalf("call %d completed with the reply to call %d", i, got)
		}
	}
	t.Logf("%d calls and %d requests, %d in flight, in %v", total, total, window, time.Since(start))
	if fc := c.FlowControl(); fc.InFlight != 0 {
		t.Fatalf("%d calls still in flight", fc.InFlight)
	}
}
