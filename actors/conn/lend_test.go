package conn_test

import (
	"bytes"
	"encoding/binary"
	"sync/atomic"
	"testing"
	"time"

	"github.com/switchboard-ipc/switchboard/actors/conn"
	"github.com/switchboard-ipc/switchboard/actors/conn/conntest"
	pb "github.com/switchboard-ipc/switchboard/proto"
	"github.com/switchboard-ipc/switchboard/shm"
)

// A pump asleep lends its state: events sent with SendEventsNow are
// written by the sender, in order, and the client reads them as any.
func TestSendEventsNowWritesInPlace(t *testing.T) {
	cl := start(t, conn.Config{})
	for i := range 50 {
		cl.EP.SendEventsNow([]*conn.Delivery{{Service: 5, Command: 9, Payload: []byte{byte(i)}}})
		e := cl.NextEvent(conntest.Timeout)
		if e.ID != uint64(i+1) || e.Aux != 0 || e.Service != 5 || e.Command != 9 || !bytes.Equal(e.Body, []byte{byte(i)}) {
			t.Fatalf("event %d: id %d aux %d %d/%d %q", i, e.ID, e.Aux, e.Service, e.Command, e.Body)
		}
		time.Sleep(time.Millisecond) // the client's read of it leaves the pump asleep
	}
	if n := cl.EP.Stats().InPlace.Load(); n == 0 {
		t.Fatal("no event was written in place: the sleeping pump lent nothing")
	}
	cl.NoEvent(20 * time.Millisecond)
}

// Events in the mailbox go first: a SendEventsNow after a SendEvents
// never overtakes it, whoever writes them, while the pump serves calls
// at the same time (the race detector watches the loan).
func TestSendEventsNowKeepsOrder(t *testing.T) {
	cl := start(t, conn.Config{EventQueue: 8192})
	const n = 4000
	go func() {
		for i := range n {
			d := []*conn.Delivery{{Service: 5, Command: 9, Payload: binary.LittleEndian.AppendUint32(nil, uint32(i))}}
			if i%3 == 0 {
				cl.EP.SendEvents(d)
			} else {
				cl.EP.SendEventsNow(d)
			}
			if i%50 == 0 {
				time.Sleep(100 * time.Microsecond) // now and then the pump sleeps
			}
		}
	}()
	for i := range n {
		e := cl.NextEvent(conntest.Timeout)
		if got := binary.LittleEndian.Uint32(e.Body); got != uint32(i) || e.Aux != 0 {
			t.Fatalf("event %d: got %d (drops %d)", i, got, e.Aux)
		}
		if i%10 == 0 {
			if r := cl.Call(1, 2, []byte("echo")); string(r.Body) != "echo" {
				t.Fatalf("call: %q", r.Body)
			}
		}
	}
	if cl.EP.Stats().InPlace.Load() == 0 {
		t.Fatal("no event was written in place")
	}
}

// remoteHost routes every bus frame as a request to one peer on another
// node (a fakeRemote), whose asks it hands the test.
type remoteHost struct {
	conntest.Host
	asked chan uint64
}

func (h *remoteHost) Route(e *conn.Endpoint, f conn.BusFrame) {
	e.StartRequestRemote(f.ID, 0, false, nil, []conn.Remote{fakeRemote{h.asked}}, f.Body)
}

type fakeRemote struct{ asked chan uint64 }

func (fakeRemote) Key() uint64                                        { return 1<<63 | 1 }
func (fakeRemote) Address() string                                    { return ":n2.1" }
func (r fakeRemote) Ask(_ *conn.Endpoint, call uint64, _ uint32) bool { r.asked <- call; return true }
func (fakeRemote) Forget(*conn.Endpoint, uint64, pb.Code)             {}

// A remote peer's answer, posted with PostResultNow to a caller whose
// pump sleeps, is written as the reply by the poster.
func TestPostResultNowWritesInPlace(t *testing.T) {
	h := &remoteHost{asked: make(chan uint64, 1)}
	cl := start(t, conn.Config{Host: h})
	for i := range 5 {
		id := uint64(100 + i)
		cl.Write(shm.Header{Kind: pb.KindPeerCall, ID: id}, []byte("\x01gquestion"))
		var call uint64
		select {
		case call = <-h.asked:
		case <-time.After(conntest.Timeout):
			t.Fatal("the request was not asked")
		}
		time.Sleep(5 * time.Millisecond) // the pump goes to sleep
		cl.EP.PostResultNow(&conn.PeerResult{CallID: call, From: 1<<63 | 1, Payload: []byte("answer")})
		r := cl.NextReply(conntest.Timeout)
		if r.ID != id || r.Aux != uint32(pb.Code_CODE_OK) || string(r.Body) != "answer" {
			t.Fatalf("reply %d: id %d code %d %q", i, r.ID, r.Aux, r.Body)
		}
	}
	if n := cl.EP.Stats().InPlace.Load(); n == 0 {
		t.Fatal("no answer was written in place: the sleeping pump lent nothing")
	}
	// An answer nobody waits for any more is not written: it is late.
	cl.EP.PostResultNow(&conn.PeerResult{CallID: 100, From: 1<<63 | 1, Payload: []byte("again")})
	cl.NoReply(20 * time.Millisecond)
	if n := cl.EP.Stats().LateReplies.Load(); n != 1 {
		t.Fatalf("late replies %d, want 1", n)
	}
}

// With a peer observer, whose hook runs on the pump, answers go through
// the mailbox: the hook sees each call once, and nothing is in place.
func TestPostResultNowLeavesObservedCallsToThePump(t *testing.T) {
	h := &remoteHost{asked: make(chan uint64, 1)}
	var observed atomic.Int32
	cl := start(t, conn.Config{Host: h, ObservePeer: func(group bool, d time.Duration, code pb.Code) { observed.Add(1) }})
	cl.Write(shm.Header{Kind: pb.KindPeerCall, ID: 7}, []byte("\x01gquestion"))
	var call uint64
	select {
	case call = <-h.asked:
	case <-time.After(conntest.Timeout):
		t.Fatal("the request was not asked")
	}
	time.Sleep(5 * time.Millisecond)
	cl.EP.PostResultNow(&conn.PeerResult{CallID: call, From: 1<<63 | 1, Payload: []byte("answer")})
	if r := cl.NextReply(conntest.Timeout); r.ID != 7 || string(r.Body) != "answer" {
		t.Fatalf("reply: id %d %q", r.ID, r.Body)
	}
	if n := cl.EP.Stats().InPlace.Load(); n != 0 {
		t.Fatalf("%d answers written in place with an observer", n)
	}
	if n := observed.Load(); n != 1 {
		t.Fatalf("observer called %d times, want 1", n)
	}
}

// A message posted by a third goroutine never lets one sender's later
// event overtake its earlier one: events that cannot be written in place
// (larger than a frame) go through the mailbox, and a SendEventsNow after
// them waits behind them, while another goroutine posts to the same
// mailbox all along.
func TestSendEventsNowBehindAThirdPoster(t *testing.T) {
	cl := start(t, conn.Config{EventQueue: 8192, EventBytes: 16 << 20})
	stop := make(chan struct{})
	others := make(chan int, 1)
	go func() { // the third poster
		k := 0
		for {
			select {
			case <-stop:
				others <- k
				return
			default:
			}
			cl.EP.SendEvent(6, 1, nil)
			k++
			if k%4 == 0 {
				time.Sleep(20 * time.Microsecond)
			}
		}
	}()
	const n = 1500
	defer close(stop)                 // (closed once: below, or on a failure)
	big := make([]byte, 80<<10)       // more than the 64 KiB event ring's frame
	credit := make(chan struct{}, 16) // at most 16 of them unread: none dropped
	for range cap(credit) {
		credit <- struct{}{}
	}
	go func() {
		for i := range n {
			select {
			case <-credit:
			case <-stop:
				return
			}
			p := binary.LittleEndian.AppendUint32(nil, uint32(i))
			if i%2 == 0 {
				p = append(p, big...)
			}
			cl.EP.SendEventsNow([]*conn.Delivery{{Service: 5, Command: 9, Payload: p}})
		}
	}()
	next, seen := 0, 0
	for next < n {
		e := cl.NextEvent(conntest.Timeout)
		if e.Service == 6 {
			seen++
			continue
		}
		if got := int(binary.LittleEndian.Uint32(e.Body)); got != next {
			t.Fatalf("event %d came when %d was due (drops reported: %d)", got, next, e.Aux)
		}
		next++
		credit <- struct{}{}
	}
	stop <- struct{}{} // the third poster stops and says how many it sent
	if k := <-others; seen == 0 || k == 0 {
		t.Fatalf("the third poster sent %d, %d came first", k, seen)
	}
}
