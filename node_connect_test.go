package switchboard

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/switchboard-ipc/switchboard/actors/group"
	"golang.org/x/sys/unix"
)

// stallRegistry keeps the registry's actor busy until the returned func
// is called: it runs a group change whose answer blocks.
func stallRegistry(t *testing.T, n *Node, anyConn *Conn) (resume func()) {
	t.Helper()
	release, stalled := make(chan struct{}), make(chan struct{})
	n.sys.Root.Send(n.reg.PID(), &group.Change{Conn: n.reg.Lookup(anyConn.ID()), Group: "test.stall",
		Done: func() { close(stalled); <-release }})
	<-stalled
	var once sync.Once
	resume = func() { once.Do(func() { close(release) }) }
	t.Cleanup(resume)
	return resume
}

// TestConnectDoesNotWaitForRegistry: a handshake does not wait for the
// registry to announce the connection, yet nothing the client does comes
// before its "connected" notice: its first publication waits in the node
// until the announcement is out.
func TestConnectDoesNotWaitForRegistry(t *testing.T) {
	n := startNode(t, WithHandshakeTimeout(time.Minute))
	ctx := context.Background()
	obs := dial(t, n)
	for _, g := range []string{GroupConnections, "g"} {
		if err := obs.Subscribe(ctx, g); err != nil {
			t.Fatal(err)
		}
	}
	resume := stallRegistry(t, n, obs)
	dialed := make(chan *Conn, 1)
	go func() {
		dctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
		c, err := Dial(dctx, WithSocket(n.SocketPath()))
		if err != nil {
			t.Error(err)
		}
		dialed <- c
	}()
	var b *Conn
	select {
	case b = <-dialed:
	case <-time.After(10 * time.Second):
		t.Fatal("Dial waited for the stalled registry")
	}
	if b == nil {
		return
	}
	defer b.Close()
	if err := b.Publish(ctx, "g", []byte("first")); err != nil {
		t.Fatal(err)
	}
	noEvent(t, obs) // neither the notice (stalled) nor the message (held for it)
	resume()
	e := recv(t, obs)
	if nt, err := e.Notice(); err != nil || nt.Kind != NoticeConnected || nt.Member.Address != b.Address() {
		t.Fatalf("first event %+v (%v), want %s's connected notice", e, err, b.Address())
	}
	e = recv(t, obs)
	if e.Kind != EventGroup || e.From != b.Address() || string(e.Payload) != "first" {
		t.Fatalf("second event %+v, want %s's publication", e, b.Address())
	}
}

// TestConnSpawnerStopsFailed: a connection's actor, spawned without the
// root actor, is still supervised: one that panics is stopped (its
// connection ends), not restarted, and the node goes on.
func TestConnSpawnerStopsFailed(t *testing.T) {
	n := startNode(t)
	stopped, restarted := make(chan struct{}), make(chan struct{}, 1)
	pid, err := connSpawner{n}.SpawnChild(actor.PropsFromFunc(func(ac actor.Context) {
		switch ac.Message().(type) {
		case string:
			panic("boom")
		case *actor.Restarting:
			restarted <- struct{}{}
		case *actor.Stopped:
			close(stopped)
		}
	}), "conn-test")
	if err != nil {
		t.Fatal(err)
	}
	n.sys.Root.Send(pid, "boom")
	select {
	case <-stopped:
	case <-restarted:
		t.Fatal("a failed connection actor was restarted")
	case <-time.After(5 * time.Second):
		t.Fatal("a failed connection actor was not stopped")
	}
	if _, err := dial(t, n).Call(context.Background(), SystemService, SysPing, nil); err != nil {
		t.Fatal(err)
	}
}

// TestConnectedNoticeFirst: under concurrent connects, an observer of
// sys.connections and of a group hears each client's connected notice
// before its first publication.
func TestConnectedNoticeFirst(t *testing.T) {
	n := startNode(t)
	ctx := context.Background()
	obs := dial(t, n, WithEventQueue(4096))
	for _, g := range []string{GroupConnections, "g"} {
		if err := obs.Subscribe(ctx, g); err != nil {
			t.Fatal(err)
		}
	}
	const workers, each = 6, 20
	var wg sync.WaitGroup
	defer wg.Wait() // a failure below still lets the workers finish first
	for range workers {
		wg.Go(func() {
			for range each {
				c, err := Dial(ctx, WithSocket(n.SocketPath()))
				if err != nil {
					t.Error(err)
					return
				}
				if err := c.Publish(ctx, "g", []byte(c.Address())); err != nil {
					t.Error(err)
				}
				c.Close()
			}
		})
	}
	connected := map[string]bool{}
	for msgs := 0; msgs < workers*each; {
		e := recv(t, obs)
		switch e.Kind {
		case EventNotice:
			if nt, err := e.Notice(); err == nil && nt.Kind == NoticeConnected {
				connected[nt.Member.Address] = true
			}
		case EventGroup:
			if !connected[e.From] {
				t.Fatalf("message from %s before its connected notice", e.From)
			}
			msgs++
		}
	}
}

// TestConnectSegmentsNeverShared: every connection gets a segment no
// other connection had, although the node makes them ahead: a client
// that left may still map its own and write into it.
func TestConnectSegmentsNeverShared(t *testing.T) {
	n := startNode(t)
	seen := map[uint64]int{}
	for i := range 300 {
		c := dial(t, n)
		var st unix.Stat_t
		if err := unix.Fstat(c.link.Seg.Fd(), &st); err != nil {
			t.Fatal(err)
		}
		if j, ok := seen[st.Ino]; ok {
			t.Fatalf("connection %d got the segment of connection %d", i, j)
		}
		seen[st.Ino] = i
		c.Close()
	}
	if st := n.links.Stats(); st.Taken == 0 {
		t.Fatalf("no connection took a segment made ahead: %+v", st)
	}
}

// TestConnectCycleLeavesNothing: a client that connects and disconnects
// many times leaves the process (node and client alike) with the
// descriptors and shared mappings it had before.
func TestConnectCycleLeavesNothing(t *testing.T) {
	n := startNode(t)
	cycles := 1000
	if testing.Short() {
		cycles = 100
	}
	settled := func() error {
		if n.reg.Len() != 0 {
			return fmt.Errorf("%d connections still registered", n.reg.Len())
		}
		if s := n.Stats().SpareSegments; s != spareLinks {
			return fmt.Errorf("%d spare segments, want %d", s, spareLinks)
		}
		return nil
	}
	if s := n.Stats().SpareSegments; s != 0 {
		t.Fatalf("%d spare segments before any connection, want none", s)
	}
	// The pool starts with the first connection; its own segment is
	// unmapped when its pump lets go, after it leaves the registry: the
	// baseline is taken once it is gone, leaving the spares, one mapping
	// each.
	mapsBefore := selfMemfdMaps(t)
	dial(t, n).Close()
	settleWithin(t, 5*time.Second, func() error {
		if err := settled(); err != nil {
			return err
		}
		if maps := selfMemfdMaps(t); maps != mapsBefore+spareLinks {
			return fmt.Errorf("%d memfd mappings, want %d before the first connection and its %d spares", maps, mapsBefore, spareLinks)
		}
		return nil
	})
	fds0, maps0 := selfFds(t), selfMemfdMaps(t)
	for range cycles {
		c, err := Dial(context.Background(), WithSocket(n.SocketPath()))
		if err != nil {
			t.Fatal(err)
		}
		c.Close()
	}
	settleWithin(t, 5*time.Second, func() error {
		if err := settled(); err != nil {
			return err
		}
		if fds, maps := selfFds(t), selfMemfdMaps(t); fds != fds0 || maps != maps0 {
			return fmt.Errorf("%d descriptors and %d memfd mappings after %d connects, %d and %d before", fds, maps, cycles, fds0, maps0)
		}
		return nil
	})
}

func selfFds(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

func selfMemfdMaps(t *testing.T) int {
	t.Helper()
	b, err := os.ReadFile("/proc/self/maps")
	if err != nil {
		t.Fatal(err)
	}
	return strings.Count(string(b), "/memfd:")
}

// settleWithin polls f until it returns nil, failing with its last error
// after d.
func settleWithin(t *testing.T, d time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal(err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
