package conn

import (
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	pb "github.com/switchboard-ipc/switchboard/proto"
)

// TestOutboxAllocs: a publisher's pump delivering a batch of group
// messages allocates per destination, not per event: the events go out as
// one slice per member (one eventBatch message each), and one Delivery
// serves every member (SharedDelivery: 16 to an allocation). Before,
// each member's slice grew by doubling (65 allocations for this batch),
// and the router made a *Delivery per member and event besides (512 more).
func TestOutboxAllocs(t *testing.T) {
	if testing.Short() {
		t.Skip("allocation counts: not in -short")
	}
	const members, frames = 8, 64
	sys := actor.NewActorSystem(actor.WithLoggerFactory(func(*actor.ActorSystem) *slog.Logger { return slog.New(slog.DiscardHandler) }))
	t.Cleanup(sys.Shutdown)
	var got atomic.Int64 // events the members' actors received
	sink := sys.Root.Spawn(actor.PropsFromFunc(func(ac actor.Context) {
		if b, ok := ac.Message().(*eventBatch); ok {
			got.Add(int64(len(b.evs)))
		}
	}))
	dsts := make([]*Endpoint, members)
	for i := range dsts {
		dsts[i] = &Endpoint{sys: sys, pid: sink, mailboxLimit: 1 << 40, mailboxBytes: 1 << 50}
	}
	pub := &Endpoint{}
	body := make([]byte, 100)
	batch := func() {
		for range frames {
			ev := pub.SharedDelivery(Delivery{Service: pb.BusService, Command: pb.MsgGroup, Payload: body}) // as the router does
			for _, d := range dsts {
				pub.Deliver(d, ev)
			}
		}
		pub.flushOutbox()
	}
	batch()
	allocs := testing.AllocsPerRun(50, batch) // 51 batches: AllocsPerRun runs one first
	// One array of Deliveries per 16 publications; per member: its
	// slice, its eventBatch; the sink's run adds a few.
	if allocs > frames/16+3*members+8 {
		t.Errorf("%v allocations for %d events to %d members", allocs, frames*members, members)
	}
	t.Logf("%v allocations for %d events to %d members", allocs, frames*members, members)
	for deadline := time.Now().Add(10 * time.Second); got.Load() != 52*frames*members; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the members' actors got %d events of %d", got.Load(), 52*frames*members)
		}
	}
}
