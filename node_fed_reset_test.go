package switchboard

import (
	"sync"
	"testing"

	pb "github.com/switchboard-ipc/switchboard/proto"
)

// TestFedControlKinds: the control messages are told from the traffic
// whose loss its sender hears of, by their encoding.
func TestFedControlKinds(t *testing.T) {
	for _, c := range []struct {
		m       *pb.FedMessage
		control bool
	}{
		{&pb.FedMessage{Body: &pb.FedMessage_State{State: &pb.FedState{}}}, true},
		{&pb.FedMessage{Body: &pb.FedMessage_ConnUp{ConnUp: &pb.FedConn{Id: 1}}}, true},
		{&pb.FedMessage{Body: &pb.FedMessage_ConnDown{ConnDown: &pb.FedConnDown{Id: 1}}}, true},
		{&pb.FedMessage{Body: &pb.FedMessage_Join{Join: &pb.FedMembership{Id: 1, Group: "g"}}}, true},
		{&pb.FedMessage{Body: &pb.FedMessage_Leave{Leave: &pb.FedMembership{Id: 1, Group: "g"}}}, true},
		{&pb.FedMessage{Body: &pb.FedMessage_Reply{Reply: &pb.FedReply{Rid: 1}}}, true},
		{&pb.FedMessage{Body: &pb.FedMessage_Cancel{Cancel: &pb.FedCancel{Rid: 1}}}, true},
		{&pb.FedMessage{Body: &pb.FedMessage_Claims{Claims: &pb.FedClaims{Name: "n"}}}, true},
		{&pb.FedMessage{Body: &pb.FedMessage_NameOwner{NameOwner: &pb.FedNameOwner{Name: "n"}}}, true},
		{&pb.FedMessage{Body: &pb.FedMessage_Direct{Direct: &pb.FedDirect{From: 1, To: 2, Payload: []byte("x")}}}, false},
		{&pb.FedMessage{Body: &pb.FedMessage_Publish{Publish: &pb.FedPublish{From: 1, Group: "g"}}}, false},
		{&pb.FedMessage{Body: &pb.FedMessage_Request{Request: &pb.FedRequest{Rid: 1}}}, false},
	} {
		if got := fedControl(encode(c.m)); got != c.control {
			t.Errorf("%T: control %v, want %v", c.m.Body, got, c.control)
		}
	}
}

// refusingFed is a fake Federation whose link refuses the first message
// refuse picks (as a spent budget would), and which resets a session as
// cluster.Federation does: the node is cut off, then linked again in the
// same incarnation.
type refusingFed struct {
	*fakeFed
	refuse func([]byte) bool
	mu     sync.Mutex
	done   bool
	resets []string
	wg     sync.WaitGroup
}

func (f *refusingFed) Send(node string, msg []byte) error {
	f.mu.Lock()
	refused := !f.done && f.refuse(msg)
	f.done = f.done || refused
	f.mu.Unlock()
	if refused {
		return errNotUp
	}
	return f.fakeFed.Send(node, msg)
}

func (f *refusingFed) Reset(node, reason string) {
	f.mu.Lock()
	f.resets = append(f.resets, node)
	f.mu.Unlock()
	f.wg.Add(1)
	go func() { // Reset is called under the host's lock
		defer f.wg.Done()
		f.cl.down(f.self, reason)
		f.cl.heal(f.fakeFed)
	}()
}

func (f *refusingFed) resetsSoFar() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.resets...)
}

// TestFedResetOnRefusedControl: when the link refuses a control message
// (a join), the node resets the session, and the other node learns the
// membership from the state resent to the new session; a refused
// publication resets nothing.
func TestFedResetOnRefusedControl(t *testing.T) {
	cl := newFakeCluster()
	const join, publish = 4, 7
	var kind byte = join
	var kmu sync.Mutex
	f1 := &refusingFed{fakeFed: cl.fed(), refuse: func(msg []byte) bool {
		kmu.Lock()
		defer kmu.Unlock()
		return len(msg) > 0 && msg[0]>>3 == kind
	}}
	t.Cleanup(f1.wg.Wait) // after the nodes close (cleanups run last first)
	n1 := startFedNode(t, cl, "n1", WithFederation(f1))
	n2 := startFedNode(t, cl, "n2")
	waitMesh(t, n1, n2)
	ctx := ctx5(t)
	a := dial(t, n1)
	knows(t, n2, a.Address())
	if err := a.Subscribe(ctx, "g"); err != nil {
		t.Fatal(err)
	}
	knows(t, n2, a.Address(), "g") // from the state the new session carried
	if r := f1.resetsSoFar(); len(r) != 1 || r[0] != "n2" {
		t.Fatalf("resets: %v, want one of n2", r)
	}
	waitMesh(t, n1, n2)

	// A publication refused: its sender is told; no reset.
	b := dial(t, n2)
	if err := b.Subscribe(ctx, "h"); err != nil {
		t.Fatal(err)
	}
	knows(t, n1, b.Address(), "h")
	f1.mu.Lock()
	f1.done = false
	f1.mu.Unlock()
	kmu.Lock()
	kind = publish
	kmu.Unlock()
	a.Publish(ctx, "h", []byte("x"))
	waitFor(t, func() bool {
		f1.mu.Lock()
		defer f1.mu.Unlock()
		return f1.done
	})
	if r := f1.resetsSoFar(); len(r) != 1 {
		t.Fatalf("a refused publication reset the link: resets %v", r)
	}
}
