package switchboard

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
)

// observed collects what the observers report.
type observed struct {
	mu    sync.Mutex
	calls []observedCall
	peers []observedCall
	gone  []ConnInfo
}

type observedCall struct {
	service uint16
	group   bool
	d       time.Duration
	code    Code
}

func (o *observed) options() []NodeOption {
	return []NodeOption{
		WithCallObserver(func(service uint16, d time.Duration, code Code) {
			o.mu.Lock()
			o.calls = append(o.calls, observedCall{service: service, d: d, code: code})
			o.mu.Unlock()
		}),
		WithPeerObserver(func(group bool, d time.Duration, code Code) {
			o.mu.Lock()
			o.peers = append(o.peers, observedCall{group: group, d: d, code: code})
			o.mu.Unlock()
		}),
		WithDisconnectObserver(func(ci ConnInfo) {
			o.mu.Lock()
			o.gone = append(o.gone, ci)
			o.mu.Unlock()
		}),
	}
}

func (o *observed) snapshot() (calls, peers []observedCall, gone []ConnInfo) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]observedCall(nil), o.calls...), append([]observedCall(nil), o.peers...), append([]ConnInfo(nil), o.gone...)
}

// TestObservers: the call observer hears of calls to functions and to
// actors, with their code and a duration that covers the handler, but not
// of calls to unknown services nor of sends; the peer observer hears of
// requests to a peer; the disconnect observer of each connection once,
// with its final counters, after it left the table.
func TestObservers(t *testing.T) {
	var o observed
	n := startNode(t, o.options()...)
	echoService(n)
	n.HandleFunc(8, func(ctx context.Context, r *Request) ([]byte, error) {
		time.Sleep(20 * time.Millisecond)
		return nil, nil
	})
	if _, err := n.HandleActor(9, actor.PropsFromProducer(func() actor.Actor { return echoActor{} })); err != nil {
		t.Fatal(err)
	}
	srv := dial(t, n, WithClientName("server"), WithRequestHandler(func(ctx context.Context, r *PeerRequest) ([]byte, error) {
		return r.Payload, nil
	}))
	c := dial(t, n, WithClientName("caller"))
	ctx := ctx5(t)
	if _, err := c.Call(ctx, svcEcho, cmdEcho, []byte("x")); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Call(ctx, svcEcho, cmdFail, nil); !errors.Is(err, ErrHandler) {
		t.Fatal(err)
	}
	if _, err := c.Call(ctx, 8, 1, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Call(ctx, 9, 1, []byte("a")); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Call(ctx, 4321, 1, nil); !errors.Is(err, ErrUnknownService) {
		t.Fatal(err)
	}
	if err := c.Send(ctx, svcEcho, cmdEcho, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Request(ctx, srv.Address(), []byte("p")); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Call(ctx, SystemService, SysPing, nil); err != nil { // after the send: the pump serves in order
		t.Fatal(err)
	}
	waitFor(t, func() bool { calls, _, _ := o.snapshot(); return len(calls) >= 5 })
	calls, peers, _ := o.snapshot()
	want := []struct {
		service uint16
		code    Code
	}{{svcEcho, CodeOK}, {svcEcho, CodeHandler}, {8, CodeOK}, {9, CodeOK}, {SystemService, CodeOK}}
	if len(calls) != len(want) {
		t.Fatalf("observed calls %+v, want %+v", calls, want)
	}
	for i, w := range want {
		if calls[i].service != w.service || calls[i].code != w.code || calls[i].d <= 0 {
			t.Errorf("call %d: %+v, want service %d code %v", i, calls[i], w.service, w.code)
		}
	}
	if calls[2].d < 20*time.Millisecond {
		t.Errorf("the slow handler's call took %v, want >= 20ms", calls[2].d)
	}
	if len(peers) != 1 || peers[0].group || peers[0].code != CodeOK || peers[0].d <= 0 {
		t.Errorf("observed peer requests %+v", peers)
	}

	c.Close()
	waitFor(t, func() bool { _, _, gone := o.snapshot(); return len(gone) == 1 })
	_, _, gone := o.snapshot()
	if g := gone[0]; g.Name != "caller" || g.Calls != 6 || g.Sends != 1 {
		t.Errorf("disconnected %+v, want caller with 6 calls and 1 send", g)
	}
	for _, ci := range n.Connections() {
		if ci.Name == "caller" {
			t.Errorf("the caller is still listed after its disconnect was observed")
		}
	}
}

// TestObserverActorCallDroppedAtDisconnect: a call still waiting for an
// actor handler when its client leaves is reported once, CodeCanceled,
// as a peer request cut by a disconnect is.
func TestObserverActorCallDroppedAtDisconnect(t *testing.T) {
	var o observed
	n := startNode(t, o.options()...)
	if _, err := n.HandleActor(9, actor.PropsFromProducer(func() actor.Actor { return panicActor{} })); err != nil {
		t.Fatal(err)
	}
	c := dial(t, n, WithClientName("leaver"))
	done := make(chan error, 1)
	go func() { _, err := c.Call(context.Background(), 9, 4, nil); done <- err }() // never answered
	waitFor(t, func() bool {
		for _, ci := range n.Connections() {
			if ci.Name == "leaver" && ci.ActorCalls == 1 {
				return true
			}
		}
		return false
	})
	c.Close()
	<-done
	waitFor(t, func() bool { _, _, gone := o.snapshot(); return len(gone) == 1 })
	calls, _, _ := o.snapshot()
	if len(calls) != 1 || calls[0].service != 9 || calls[0].code != CodeCanceled || calls[0].d <= 0 {
		t.Fatalf("observed calls %+v, want one call to 9, canceled", calls)
	}
}
