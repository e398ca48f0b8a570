package switchboard

import (
	"context"
	"testing"
	"time"

	pb "github.com/switchboard-ipc/switchboard/proto"
	"github.com/switchboard-ipc/switchboard/shm"
	gproto "google.golang.org/protobuf/proto"
)

// FuzzBusFrames sends arbitrary bus frames and bus operations, as a client
// could write them into its request ring, to a live node: whatever they
// are, the node answers or closes that connection, and goes on serving
// the others.
func FuzzBusFrames(f *testing.F) {
	n := startNode(f)
	probe := dial(f, n)
	addr := probe.Address() // ":n1.INCARNATION.1"
	sub, _ := gproto.Marshal(&pb.BusGroup{Group: "g"})
	name, _ := gproto.Marshal(&pb.BusName{Name: "n"})
	watch, _ := gproto.Marshal(&pb.BusWatch{Targets: []string{"g", addr}})
	for _, seed := range []struct {
		kind, flags, svc, cmd uint16
		aux                   uint32
		body                  []byte
	}{
		{pb.KindPeerSend, 0, 0, 0, 0, append([]byte{byte(len(addr))}, addr+"hello"...)},
		{pb.KindPeerSend, pb.FlagWantAnswer, 0, 0, 0, []byte("\x05:n1.9x")},
		{pb.KindPeerSend, pb.FlagWantAnswer, 0, 0, 0, append([]byte{byte(len(addr))}, addr[:len(addr)-1]+"9x"...)},
		{pb.KindPublish, pb.FlagEcho | pb.FlagWantAnswer, 0, 0, 0, []byte("\x01gpayload")},
		{pb.KindPeerCall, 0, 0, 0, 1000, []byte("\x01nq")},
		{pb.KindGroupCall, 0, 0, 0, 1000, []byte("\x01gq")},
		{pb.KindPeerReply, 0, 0, 0, 0, make([]byte, 20)},
		{pb.KindPeerSend, pb.FlagMore, 0, 0, 0, []byte("\xff")},
		{pb.KindCall, 0, pb.BusService, pb.BusSubscribe, 0, sub},
		{pb.KindCall, 0, pb.BusService, pb.BusSubscribeWithMembers, 0, sub},
		{pb.KindCall, 0, pb.BusService, pb.BusOwn, 0, name},
		{pb.KindCall, 0, pb.BusService, pb.BusRelease, 0, name},
		{pb.KindCall, 0, pb.BusService, pb.BusMonitor, 0, watch},
		{pb.KindCall, 0, pb.BusService, pb.BusConnections, 0, nil},
		{pb.KindCall, 0, pb.BusService, 99, 0, []byte{0xff, 0x01}},
	} {
		f.Add(seed.kind, seed.flags, seed.svc, seed.cmd, seed.aux, seed.body)
	}
	_ = probe.Subscribe(context.Background(), "g")
	_, _, _ = probe.Own(context.Background(), "n")
	var c *Conn
	f.Fuzz(func(t *testing.T, kind, flags, svc, cmd uint16, aux uint32, body []byte) {
		if c == nil || c.err() != nil {
			if c != nil {
				c.Close() // the node closed it: release this side too
			}
			var err error
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			c, err = Dial(ctx, WithSocket(n.SocketPath()), WithEventQueue(1<<20))
			cancel()
			if err != nil {
				t.Fatal(err)
			}
		}
		if len(body) > 1<<16 {
			body = body[:1<<16]
		}
		c.writeParts(context.Background(), shm.Header{Kind: kind, Flags: flags, Service: svc, Command: cmd, Aux: aux, ID: c.nextID.Add(1)}, nil, body)
		for {
			if _, ok := c.TryRecvEvent(); !ok {
				break
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if _, err := probe.Call(ctx, SystemService, SysPing, nil); err != nil {
			t.Fatalf("node stopped serving after kind %d flags %#x svc %d cmd %d aux %d body %q: %v", kind, flags, svc, cmd, aux, body, err)
		}
		for {
			if _, ok := probe.TryRecvEvent(); !ok {
				break
			}
		}
	})
}
