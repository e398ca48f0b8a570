package switchboard

import (
	"context"
	"errors"
	"fmt"
	"testing"
)

// owns waits until every node's registry gives name's owner as addr.
func owns(t *testing.T, name, addr string, ns ...*Node) {
	t.Helper()
	waitFor(t, func() bool {
		for _, n := range ns {
			if a := n.reg.RemoteOwner(name); a != addr {
				if o := n.reg.Owner(name); o == nil || o.Address() != addr {
					return false
				}
			}
		}
		return true
	})
}

// acquired waits for c's NAME_ACQUIRED notice of name.
func acquired(t *testing.T, c *Conn, name string) {
	t.Helper()
	for {
		e := recv(t, c)
		if nt, err := e.Notice(); err == nil && nt.Kind == NoticeNameAcquired && nt.Name == name {
			return
		}
	}
}

// TestFedNames: a name claimed on three nodes has one owner and one
// standby queue across them; a request by name from any node reaches the
// owner; the owner's end hands the name to the next standby, and so does
// the loss of the owner's node.
func TestFedNames(t *testing.T) {
	cl := newFakeCluster()
	n1 := startFedNode(t, cl, "n1")
	n2 := startFedNode(t, cl, "n2")
	n3 := startFedNode(t, cl, "n3")
	waitMesh(t, n1, n2, n3)
	ctx := ctx5(t)
	serve := func(tag string) DialOption {
		return WithRequestHandler(func(ctx context.Context, r *PeerRequest) ([]byte, error) { return []byte(tag), nil })
	}
	o1 := dial(t, n1, serve("o1"))
	o2 := dial(t, n2, serve("o2"))
	o3 := dial(t, n3, serve("o3"))
	caller := dial(t, n3)
	for _, c := range []*Conn{o2, o3} {
		for _, n := range []*Node{n1, n2, n3} {
			if c.Address()[:4] != n.addrPrefix[:4] {
				knows(t, n, c.Address())
			}
		}
	}
	for _, n := range []*Node{n2, n3} {
		knows(t, n, o1.Address())
	}
	for i, c := range []*Conn{o1, o2, o3} {
		primary, pos, err := c.Own(ctx, "svc")
		if err != nil || primary != (i == 0) || pos != i {
			t.Fatalf("own %d: primary %v position %d %v", i, primary, pos, err)
		}
	}
	owns(t, "svc", o1.Address(), n1, n2, n3)
	if r, err := caller.Request(ctx, "svc", nil); err != nil || string(r) != "o1" {
		t.Fatalf("request by name: %q %v", r, err)
	}
	names, err := caller.Names(ctx)
	if err != nil || len(names) != 1 || names[0].Owner != o1.Address() || len(names[0].Standby) != 2 {
		t.Fatalf("names seen from n3: %+v %v", names, err)
	}
	// The owner leaves: the next standby, on n2, has it.
	o1.Close()
	acquired(t, o2, "svc")
	owns(t, "svc", o2.Address(), n2, n3)
	if r, err := caller.Request(ctx, "svc", nil); err != nil || string(r) != "o2" {
		t.Fatalf("request by name after the owner left: %q %v", r, err)
	}
	// The owner's node is lost: the last standby, on n3, has it.
	cl.down("n2", "cut off")
	acquired(t, o3, "svc")
	owns(t, "svc", o3.Address(), n1, n3)
	if r, err := caller.Request(ctx, "svc", nil); err != nil || string(r) != "o3" {
		t.Fatalf("request by name after the owner's node was lost: %q %v", r, err)
	}
}

// TestFedNamesPartition: in a partition each side keeps or elects an
// owner (available); when it heals, the owner with the smallest address
// keeps the name, the other hears it lost, and a request by name from
// either side reaches the one owner.
func TestFedNamesPartition(t *testing.T) {
	cl := newFakeCluster()
	n1 := startFedNode(t, cl, "n1")
	n2 := startFedNode(t, cl, "n2")
	waitMesh(t, n1, n2)
	ctx := ctx5(t)
	serve := func(tag string) DialOption {
		return WithRequestHandler(func(ctx context.Context, r *PeerRequest) ([]byte, error) { return []byte(tag), nil })
	}
	a := dial(t, n1, serve("a"))
	b := dial(t, n2, serve("b"))
	knows(t, n1, b.Address())
	knows(t, n2, a.Address())
	// A name n2 arbitrates, whose owner in n2's half (b) has the larger
	// address: the merge, not the arbiter's side, must decide.
	svc := ""
	for i := 0; svc == ""; i++ {
		if name := fmt.Sprint("svc", i); n1.fed.arbiterOf(name) == "n2" {
			svc = name
		}
	}
	if primary, _, err := a.Own(ctx, svc); err != nil || !primary {
		t.Fatalf("a: %v %v", primary, err)
	}
	owns(t, svc, a.Address(), n1, n2)
	if primary, pos, err := b.Own(ctx, svc); err != nil || primary || pos != 1 {
		t.Fatalf("b: %v %d %v", primary, pos, err)
	}
	f2 := cl.node("n2")
	cl.down("n2", "partition")
	acquired(t, b, svc) // n2 alone: b owns it there
	owns(t, svc, a.Address(), n1)
	owns(t, svc, b.Address(), n2)
	cl.heal(f2)
	waitMesh(t, n1, n2)
	winner, loser := a, b
	if b.Address() < a.Address() {
		winner, loser = b, a
	}
	owns(t, svc, winner.Address(), n1, n2)
	for {
		e := recv(t, loser)
		if nt, err := e.Notice(); err == nil && nt.Kind == NoticeNameLost && nt.Name == svc {
			break
		}
	}
	for _, c := range []*Conn{a, b} {
		r, err := c.Request(ctx, svc, nil)
		if c == winner {
			// Its own name: a request to itself.
			if err != nil && !errors.Is(err, ErrUndeliverable) {
				t.Fatalf("%s: %v", c.Address(), err)
			}
			continue
		}
		want := "a"
		if winner == b {
			want = "b"
		}
		if err != nil || string(r) != want {
			t.Fatalf("request by name from %s after the heal: %q %v", c.Address(), r, err)
		}
	}
}
