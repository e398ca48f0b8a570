package conn_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"testing"
	"time"

	"github.com/switchboard-ipc/switchboard/actors/conn"
	"github.com/switchboard-ipc/switchboard/actors/conn/conntest"
	pb "github.com/switchboard-ipc/switchboard/proto"
	"github.com/switchboard-ipc/switchboard/shm"
)

// start starts one endpoint, on an actor system of its own, with cfg (no
// Host: an echoing conntest.Host).
func start(t *testing.T, cfg conn.Config) *conntest.Client {
	sys := conntest.NewSystem(t)
	return conntest.Start(t, sys, conntest.NewSpawner(t, sys), cfg)
}

func u64(n uint64) []byte { return binary.LittleEndian.AppendUint64(nil, n) }

func TestCallIsServedAndAnswered(t *testing.T) {
	cl := start(t, conn.Config{})
	for i := range 3 {
		payload := []byte(fmt.Sprintf("hello %d", i))
		r := cl.Call(7, 9, payload)
		if r.Kind != pb.KindReply || pb.Code(r.Aux) != pb.Code_CODE_OK || !bytes.Equal(r.Body, payload) {
			t.Fatalf("call %d: reply kind %d code %v body %q, want a CODE_OK reply %q", i, r.Kind, pb.Code(r.Aux), r.Body, payload)
		}
	}
	if n := cl.EP.Stats().Calls.Load(); n != 3 {
		t.Errorf("Stats.Calls = %d, want 3", n)
	}
}

func TestPendingCallCompletedLater(t *testing.T) {
	type pending struct {
		id  uint64
		ctx context.Context
	}
	started := make(chan pending, 1)
	host := &conntest.Host{ServeFunc: func(ctx context.Context, e *conn.Endpoint, in *conn.Incoming) conn.Result {
		if in.Command == 1 {
			started <- pending{in.ID, ctx}
			return conn.Result{Pending: true}
		}
		return conn.Result{Payload: []byte("now")}
	}}
	cl := start(t, conn.Config{Host: host})
	cl.Write(shm.Header{Kind: pb.KindCall, Command: 1, ID: 100}, []byte("later please"))
	var p pending
	select {
	case p = <-started:
	case <-time.After(conntest.Timeout):
		t.Fatal("the pending call was not served")
	}
	if p.id != 100 {
		t.Fatalf("Serve saw id %d, want 100", p.id)
	}
	// The connection keeps serving while the call is pending, and the
	// pending call is not answered meanwhile.
	if r := cl.Call(0, 2, nil); string(r.Body) != "now" {
		t.Fatalf("call during a pending one: %q", r.Body)
	}
	if p.ctx.Err() != nil {
		t.Fatal("a pending call's context ended before its completion")
	}
	cl.EP.Complete(100, conn.Result{Payload: []byte("done")})
	r := cl.NextReply(conntest.Timeout)
	if r.ID != 100 || pb.Code(r.Aux) != pb.Code_CODE_OK || string(r.Body) != "done" {
		t.Fatalf("completion: reply id %d code %v body %q, want 100 CODE_OK \"done\"", r.ID, pb.Code(r.Aux), r.Body)
	}
	if p.ctx.Err() == nil {
		t.Error("the call's context still live after its completion was written")
	}
	cl.EP.Complete(101, conn.Result{Code: pb.Code_CODE_HANDLER_ERROR, Payload: []byte("nope")})
	if r := cl.NextReply(conntest.Timeout); r.ID != 101 || pb.Code(r.Aux) != pb.Code_CODE_HANDLER_ERROR || string(r.Body) != "nope" {
		t.Fatalf("error completion: reply id %d code %v body %q", r.ID, pb.Code(r.Aux), r.Body)
	}
}

func TestHandlerPanicAnswersInternal(t *testing.T) {
	host := &conntest.Host{ServeFunc: func(ctx context.Context, e *conn.Endpoint, in *conn.Incoming) conn.Result {
		if in.Command == 1 {
			panic("handler bug")
		}
		return conn.Result{Payload: in.Payload}
	}}
	cl := start(t, conn.Config{Host: host})
	r := cl.Call(0, 1, []byte("boom"))
	if pb.Code(r.Aux) != pb.Code_CODE_INTERNAL {
		t.Fatalf("panicking handler: code %v, want CODE_INTERNAL", pb.Code(r.Aux))
	}
	if r := cl.Call(0, 2, []byte("still there")); pb.Code(r.Aux) != pb.Code_CODE_OK || string(r.Body) != "still there" {
		t.Fatalf("call after a panic: code %v body %q", pb.Code(r.Aux), r.Body)
	}
	if n := cl.EP.Stats().Panics.Load(); n != 1 {
		t.Errorf("Stats.Panics = %d, want 1", n)
	}
	select {
	case <-cl.EP.Done():
		t.Fatal("a handler panic ended the connection")
	default:
	}
}

func TestChunkedCallReachesServeWhole(t *testing.T) {
	type seen struct {
		owned bool
		body  []byte
	}
	got := make(chan seen, 1)
	host := &conntest.Host{ServeFunc: func(ctx context.Context, e *conn.Endpoint, in *conn.Incoming) conn.Result {
		got <- seen{in.Owned, in.Payload} // kept: allowed only because it is Owned
		return conn.Result{Payload: in.Payload}
	}}
	cl := start(t, conn.Config{Host: host})
	big := make([]byte, 3*cl.Req.MaxBody()+123)
	for i := range big {
		big[i] = byte(i * 7)
	}
	r := cl.Call(3, 4, big)
	s := <-got
	if !s.owned || !bytes.Equal(s.body, big) {
		t.Fatalf("Serve saw Owned=%v and %d bytes (equal: %v), want the whole %d-byte message, owned",
			s.owned, len(s.body), bytes.Equal(s.body, big), len(big))
	}
	if !bytes.Equal(r.Body, big) {
		t.Fatalf("chunked reply: %d bytes, want the %d echoed", len(r.Body), len(big))
	}
}

func TestWrongFrameKindIsAViolation(t *testing.T) {
	for _, kind := range []uint16{pb.KindControl, pb.KindReply, pb.KindEvent, pb.KindPeerReply + 1, 0xFFF0} {
		t.Run(fmt.Sprint(kind), func(t *testing.T) {
			cl := start(t, conn.Config{})
			cl.Write(shm.Header{Kind: kind, ID: 1}, []byte("x"))
			why := cl.Wait()
			if why.Code != pb.Code_CODE_PROTOCOL_VIOLATION || why.Disconnect() != pb.DisconnectReason_DISCONNECT_VIOLATION {
				t.Fatalf("Closed with %+v, want CODE_PROTOCOL_VIOLATION", why)
			}
			if g := cl.Goodbye(); g.GetCode() != pb.Code_CODE_PROTOCOL_VIOLATION {
				t.Errorf("client told %v, want CODE_PROTOCOL_VIOLATION", g.GetCode())
			}
			if n := len(cl.Host.Reasons()); n != 1 {
				t.Errorf("Closed called %d times", n)
			}
			if n := cl.EP.Stats().Violations.Load(); n != 1 {
				t.Errorf("Stats.Violations = %d, want 1", n)
			}
		})
	}
}

func TestEventsInOrderWithSequenceNumbers(t *testing.T) {
	cl := start(t, conn.Config{})
	big := bytes.Repeat([]byte("0123456789abcdef"), 10<<10) // larger than the event ring: chunked
	payloads := [][]byte{[]byte("one"), []byte("two"), big, []byte("four"), nil}
	for i, p := range payloads {
		cl.EP.SendEvent(5, uint16(10+i), p)
	}
	for i, p := range payloads {
		e := cl.NextEvent(conntest.Timeout)
		if e.Kind != pb.KindEvent || e.ID != uint64(i+1) || e.Aux != 0 || e.Service != 5 || e.Command != uint16(10+i) {
			t.Fatalf("event %d: kind %d id %d aux %d %d/%d, want id %d, no drop, 5/%d", i, e.Kind, e.ID, e.Aux, e.Service, e.Command, i+1, 10+i)
		}
		if !bytes.Equal(e.Body, p) {
			t.Fatalf("event %d: %d bytes, want %d", i, len(e.Body), len(p))
		}
	}
	cl.NoEvent(20 * time.Millisecond)
}

func TestSlowReaderDropsOldestWithExactGap(t *testing.T) {
	const queue, extra = 8, 5
	cl := start(t, conn.Config{EventQueue: queue, Overflow: conn.DropOldest})
	// The client reads nothing until all are handled: the ring fills with
	// the first events, the queue keeps the newest, and the rest drop.
	// 8-byte events stay far below the mailbox's bounds, so every drop is
	// the queue's, oldest first.
	ringFits := cl.EP.RingBytes()[2] / shm.FrameSize(8)
	n := uint64(ringFits + queue + extra)
	for i := range n {
		cl.EP.SendEvent(1, 1, u64(i+1))
	}
	cl.EP.Complete(7, conn.Result{}) // handled after every event: a barrier
	if r := cl.NextReply(conntest.Timeout); r.ID != 7 {
		t.Fatalf("barrier reply id %d", r.ID)
	}
	var dropped, gapAt uint64
	var read int
	for next := uint64(1); next <= n; next++ {
		e := cl.NextEvent(conntest.Timeout)
		if e.Aux > 0 {
			if gapAt != 0 {
				t.Fatalf("a second gap at id %d", e.ID)
			}
			gapAt, dropped = e.ID, uint64(e.Aux)
			next += dropped
		}
		if e.ID != next || binary.LittleEndian.Uint64(e.Body) != next {
			t.Fatalf("event %d read: id %d (aux %d) carrying event %d, want %d", read, e.ID, e.Aux, binary.LittleEndian.Uint64(e.Body), next)
		}
		read++
	}
	cl.NoEvent(20 * time.Millisecond)
	kept := read - ringFits
	if gapAt != uint64(ringFits)+1+dropped || kept != queue || dropped != n-uint64(read) {
		t.Fatalf("%d events: %d read, %d dropped before id %d; want the ring's %d, a gap, then the queue's %d newest",
			n, read, dropped, gapAt, ringFits, queue)
	}
	if d := cl.EP.Stats().EventsDropped.Load(); d != dropped {
		t.Errorf("Stats.EventsDropped = %d, the client saw %d", d, dropped)
	}
	cl.EP.SendEvent(1, 1, u64(n+1)) // the gap is reported once
	if e := cl.NextEvent(conntest.Timeout); e.ID != n+1 || e.Aux != 0 {
		t.Fatalf("event after the gap: id %d aux %d, want %d aux 0", e.ID, e.Aux, n+1)
	}
}

func TestClientSocketClosedEndsAsLost(t *testing.T) {
	cl := start(t, conn.Config{})
	cl.Call(0, 0, nil)
	cl.Close()
	rs := cl.Host.Reasons()
	if len(rs) != 1 {
		t.Fatalf("Closed called %d times, want once", len(rs))
	}
	if rs[0].Code != pb.Code_CODE_OK || !rs[0].Lost || rs[0].Disconnect() != pb.DisconnectReason_DISCONNECT_LOST {
		t.Fatalf("Closed with %+v, want a lost client", rs[0])
	}
	if cl.EP.Why() != rs[0] || cl.EP.Context().Err() == nil {
		t.Errorf("Why() = %+v, context err %v", cl.EP.Why(), cl.EP.Context().Err())
	}
}

func TestClientGoodbyeEndsAsClosed(t *testing.T) {
	cl := start(t, conn.Config{})
	if err := pb.WriteControl(cl.Sock, &pb.Control{Msg: &pb.Control_ClientGoodbye{ClientGoodbye: &pb.ClientGoodbye{}}}, nil); err != nil {
		t.Fatal(err)
	}
	cl.Close()
	if why := cl.Wait(); why.Code != pb.Code_CODE_OK || why.Lost || why.Disconnect() != pb.DisconnectReason_DISCONNECT_CLOSED {
		t.Fatalf("Closed with %+v, want a client that closed", why)
	}
}

func TestNodeCloseTellsTheClient(t *testing.T) {
	cl := start(t, conn.Config{})
	why := conn.Reason{Code: pb.Code_CODE_NODE_SHUTTING_DOWN, Text: "bye"}
	cl.EP.Close(why)
	if g := cl.Goodbye(); g.GetCode() != why.Code || g.GetReason() != why.Text {
		t.Fatalf("Goodbye %v, want %+v", g, why)
	}
	if got := cl.Wait(); got != why {
		t.Fatalf("Closed with %+v, want %+v", got, why)
	}
}

// TestChunkedReplyToAClientThatStopsReading: a reply larger than the
// response ring waits for room chunk by chunk; when its client stops
// reading and the connection is closed, the pump gives up the rest of the
// reply and the endpoint is released.
func TestChunkedReplyToAClientThatStopsReading(t *testing.T) {
	cl := start(t, conn.Config{Host: &conntest.Host{ServeFunc: func(ctx context.Context, e *conn.Endpoint, in *conn.Incoming) conn.Result {
		return conn.Result{Payload: make([]byte, 4*e.RingBytes()[1])}
	}}})
	cl.Write(shm.Header{Kind: pb.KindCall, Service: 1, Command: 1, ID: 1}, nil)
	deadline := time.Now().Add(conntest.Timeout)
	for { // once a chunk is in the ring, the pump waits for room for the next
		if _, resp, _, _ := cl.EP.Fill(); resp > 0 && cl.EP.Stats().Replies.Load() == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the call was never served")
		}
		time.Sleep(time.Millisecond)
	}
	cl.EP.Close(conn.Reason{Code: pb.Code_CODE_NODE_SHUTTING_DOWN, Text: "closing"})
	if why := cl.Wait(); why.Code != pb.Code_CODE_NODE_SHUTTING_DOWN {
		t.Fatalf("ended with %+v", why)
	}
}

// TestMessageLimitOnTheNode: the node holds what a client sends to the
// negotiated maximum, whatever the client checked itself: a chunked call
// of MaxMessage+1 bytes breaks the protocol, a bus frame of the maximum
// payload plus its destination is routed, and one byte more of payload
// breaks the protocol too.
func TestMessageLimitOnTheNode(t *testing.T) {
	const max = 100 << 10 // larger than a 64 KiB ring's frame: chunked
	dest := []byte{5, 'g', 'r', 'o', 'u', 'p'}
	for _, tc := range []struct {
		name   string
		h      shm.Header
		body   []byte
		broken bool
	}{
		{"call of the maximum", shm.Header{Kind: pb.KindCall, ID: 1}, make([]byte, max), false},
		{"call of one byte more", shm.Header{Kind: pb.KindCall, ID: 1}, make([]byte, max+1), true},
		{"publication of the maximum", shm.Header{Kind: pb.KindPublish, ID: 1}, append(dest, make([]byte, max)...), false},
		{"publication of one byte more", shm.Header{Kind: pb.KindPublish, ID: 1}, append(dest, make([]byte, max+1)...), true},
		{"peer reply of the maximum", shm.Header{Kind: pb.KindPeerReply, ID: 1}, make([]byte, pb.ReplyHandleSize+max), false},
		{"peer reply of one byte more", shm.Header{Kind: pb.KindPeerReply, ID: 1}, make([]byte, pb.ReplyHandleSize+max+1), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			host := &conntest.Host{}
			cl := start(t, conn.Config{MaxMessage: max, Host: host})
			cl.Write(tc.h, tc.body)
			if tc.broken {
				if why := cl.Wait(); why.Code != pb.Code_CODE_PROTOCOL_VIOLATION {
					t.Fatalf("ended with %+v, want a protocol violation", why)
				}
				return
			}
			// The endpoint still serves: a call after it is answered.
			if r := cl.Call(1, 1, []byte("after")); pb.Code(r.Aux) != pb.Code_CODE_OK {
				t.Fatalf("the call after it: code %v", pb.Code(r.Aux))
			}
			if tc.h.Kind == pb.KindPublish {
				if fs := host.BusFrames(); len(fs) != 1 || len(fs[0].Body) != len(tc.body) {
					t.Fatalf("routed %d frames, want the publication whole", len(fs))
				}
			}
		})
	}
}

// A client that reuses the id of a call still in flight breaks the
// protocol: the second call could otherwise take the first one's place in
// the node's tables (and leak it).
func TestDuplicateCallIDIsAViolation(t *testing.T) {
	host := &conntest.Host{ServeFunc: func(ctx context.Context, e *conn.Endpoint, in *conn.Incoming) conn.Result {
		return conn.Result{Pending: true} // never completed
	}}
	cl := start(t, conn.Config{Host: host})
	cl.Write(shm.Header{Kind: pb.KindCall, Command: 1, ID: 7}, nil)
	cl.Write(shm.Header{Kind: pb.KindCall, Command: 1, ID: 7}, nil)
	if g := cl.Goodbye(); g.GetCode() != pb.Code_CODE_PROTOCOL_VIOLATION {
		t.Fatalf("goodbye %v, want CODE_PROTOCOL_VIOLATION", g)
	}
	if why := cl.Wait(); why.Code != pb.Code_CODE_PROTOCOL_VIOLATION {
		t.Fatalf("ended with %+v", why)
	}
}
