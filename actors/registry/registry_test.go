package registry

import (
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
)

func list(t *testing.T, sys *actor.ActorSystem, reg *actor.PID) []Entry {
	t.Helper()
	reply := make(chan []Entry, 1)
	sys.Root.Send(reg, &List{Reply: reply})
	select {
	case l := <-reply:
		return l
	case <-time.After(5 * time.Second):
		t.Fatal("registry did not answer")
		return nil
	}
}

func TestRegistry(t *testing.T) {
	sys := actor.NewActorSystem()
	reg := sys.Root.Spawn(actor.PropsFromProducer(New(Config{})))
	defer func() { sys.Root.StopFuture(reg).Wait() }() // not defer x.StopFuture(reg).Wait(): that stops it now
	idle := actor.PropsFromFunc(func(actor.Context) {})
	a, b := sys.Root.Spawn(idle), sys.Root.Spawn(idle)
	sys.Root.Send(reg, &Register{Entry: Entry{ID: 2, Address: "n1.c2", PID: b}})
	sys.Root.Send(reg, &Register{Entry: Entry{ID: 1, Address: "n1.c1", PID: a}})
	l := list(t, sys, reg)
	if len(l) != 2 || l[0].ID != 1 || l[1].Address != "n1.c2" {
		t.Fatalf("list %+v", l)
	}
	found := make(chan LookupResult, 1)
	sys.Root.Send(reg, &Lookup{ID: 2, Reply: found})
	if r := <-found; !r.OK || r.Entry.PID != b {
		t.Fatalf("lookup 2: %+v", r)
	}
	sys.Root.Send(reg, &Lookup{ID: 9, Reply: found})
	if r := <-found; r.OK {
		t.Fatalf("lookup 9 found %+v", r)
	}
	// Unregister removes; a stopped actor is dropped through Terminated.
	sys.Root.Send(reg, &Unregister{ID: 1})
	sys.Root.Send(reg, &Unregister{ID: 1}) // twice is harmless
	sys.Root.StopFuture(b).Wait()
	deadline := time.Now().Add(5 * time.Second)
	for len(list(t, sys, reg)) != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("entries left: %+v", list(t, sys, reg))
		}
		time.Sleep(time.Millisecond)
	}
	sys.Root.Stop(a)
}
