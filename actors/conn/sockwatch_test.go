package conn_test

import (
	"context"
	"runtime"
	"testing"
	"time"

	"github.com/switchboard-ipc/switchboard/actors/conn"
	"github.com/switchboard-ipc/switchboard/actors/conn/conntest"
	pb "github.com/switchboard-ipc/switchboard/proto"
	"github.com/switchboard-ipc/switchboard/shm"
	gproto "google.golang.org/protobuf/proto"
)

// TestSocketWatcher: connections whose sockets one SocketWatcher reads
// behave as those that read their own: a Cancel ends its call's context
// (even written in two pieces, apart), a goodbye then the end is a
// client that closed, an end alone a lost client, a frame that is not a
// control frame a violation; and they cost no goroutine for their
// sockets.
func TestSocketWatcher(t *testing.T) {
	w, err := conn.NewSocketWatcher()
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close() // before the endpoints' cleanups (deferred calls run first): forget copes
	sys := conntest.NewSystem(t)
	sp := conntest.NewSpawner(t, sys)
	started := make(chan context.Context, 1)
	host := func() *conntest.Host {
		return &conntest.Host{ServeFunc: func(ctx context.Context, e *conn.Endpoint, in *conn.Incoming) conn.Result {
			if in.Command == 1 {
				started <- ctx
				<-ctx.Done()
				return conn.Result{Code: pb.Code_CODE_CANCELED}
			}
			return conn.Result{Payload: in.Payload}
		}}
	}
	before := runtime.NumGoroutine()
	const idle = 50
	var clients []*conntest.Client
	for range idle {
		cl := conntest.Start(t, sys, sp, conn.Config{Host: host(), Watcher: w})
		cl.Call(0, 0, nil) // served: the pump is up
		clients = append(clients, cl)
	}
	// One goroutine per connection (its pump), not two.
	if n := runtime.NumGoroutine() - before; n > idle+idle/5 {
		t.Errorf("%d goroutines for %d connections", n, idle)
	}

	// A Cancel, written in two pieces with a pause, ends the call.
	cl := clients[0]
	cl.Write(shm.Header{Kind: pb.KindCall, Command: 1, ID: 42}, nil)
	var ctx context.Context
	select {
	case ctx = <-started:
	case <-time.After(conntest.Timeout):
		t.Fatal("the call was not served")
	}
	body, err := gproto.Marshal(&pb.Control{Msg: &pb.Control_Cancel{Cancel: &pb.Cancel{Id: 42}}})
	if err != nil {
		t.Fatal(err)
	}
	frame := shm.AppendFrame(nil, shm.Header{Kind: pb.KindControl}, body)
	if _, err := cl.Sock.Write(frame[:10]); err != nil {
		t.Fatal(err)
	}
	time.Sleep(20 * time.Millisecond)
	if ctx.Err() != nil {
		t.Fatal("half a Cancel frame canceled the call")
	}
	if _, err := cl.Sock.Write(frame[10:]); err != nil {
		t.Fatal(err)
	}
	select {
	case <-ctx.Done():
	case <-time.After(conntest.Timeout):
		t.Fatal("the Cancel did not end the call's context")
	}
	if r := cl.NextReply(conntest.Timeout); r.ID != 42 || pb.Code(r.Aux) != pb.Code_CODE_CANCELED {
		t.Fatalf("reply %d %v", r.ID, pb.Code(r.Aux))
	}

	// A goodbye, then the end: a client that closed.
	if err := pb.WriteControl(clients[1].Sock, &pb.Control{Msg: &pb.Control_ClientGoodbye{ClientGoodbye: &pb.ClientGoodbye{}}}, nil); err != nil {
		t.Fatal(err)
	}
	clients[1].Close()
	if why := clients[1].Wait(); why.Code != pb.Code_CODE_OK || why.Lost {
		t.Fatalf("after a goodbye: %+v", why)
	}
	// The end alone: a lost client.
	clients[2].Close()
	if why := clients[2].Wait(); why.Code != pb.Code_CODE_OK || !why.Lost {
		t.Fatalf("lost client: %+v", why)
	}
	// A frame that is not a control frame: a violation.
	if _, err := clients[3].Sock.Write(shm.AppendFrame(nil, shm.Header{Kind: pb.KindCall, ID: 1}, []byte("x"))); err != nil {
		t.Fatal(err)
	}
	if why := clients[3].Wait(); why.Code != pb.Code_CODE_PROTOCOL_VIOLATION {
		t.Fatalf("a call on the socket: %+v", why)
	}
	// The others still serve, and the node's end releases them.
	for _, cl := range clients[4:] {
		if r := cl.Call(0, 0, []byte("x")); string(r.Body) != "x" {
			t.Fatalf("call: %q", r.Body)
		}
	}
	clients[4].EP.Close(conn.Reason{Code: pb.Code_CODE_NODE_SHUTTING_DOWN, Text: "bye"})
	clients[4].Wait()
}
