package switchboard

import (
	"context"
	"errors"
	"io"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	pb "github.com/switchboard-ipc/switchboard/proto"
	"github.com/switchboard-ipc/switchboard/shm"
)

// TestGarbageHandshake: a client that sends garbage, or nothing, is
// dropped; the node keeps serving the others.
func TestGarbageHandshake(t *testing.T) {
	n := startNode(t, WithHandshakeTimeout(200*time.Millisecond))
	for _, junk := range [][]byte{
		[]byte("GET / HTTP/1.1\r\n\r\n"),
		make([]byte, 24),
		shm.AppendFrame(nil, shm.Header{Kind: pb.KindControl}, []byte{0xff, 0xff, 0xff}),
		shm.AppendFrame(nil, shm.Header{Kind: pb.KindCall}, nil),
		nil, // silence: the handshake timeout ends it
	} {
		c, err := net.Dial("unix", n.SocketPath())
		if err != nil {
			t.Fatal(err)
		}
		c.Write(junk)
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, err = io.ReadAll(c)
		c.Close()
		if err != nil {
			t.Fatalf("junk %q: node did not close the connection: %v", junk, err)
		}
	}
	c := dial(t, n)
	if _, err := c.Call(context.Background(), SystemService, SysPing, nil); err != nil {
		t.Fatal(err)
	}
}

// TestVersionMismatch: a client speaking another protocol version is
// refused with a reason saying so.
func TestVersionMismatch(t *testing.T) {
	n := startNode(t)
	c, err := net.Dial("unix", n.SocketPath())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	uc := c.(*net.UnixConn)
	if err := pb.WriteControl(uc, &pb.Control{Msg: &pb.Control_Hello{Hello: &pb.Hello{ProtocolVersion: 99}}}, nil); err != nil {
		t.Fatal(err)
	}
	m, err := pb.ReadControl(uc)
	if err != nil {
		t.Fatal(err)
	}
	r := m.GetRefused()
	if r == nil || !errors.Is(codeError(r.GetCode(), r.GetReason()), ErrVersionMismatch) || !strings.Contains(r.GetReason(), "99") {
		t.Fatalf("got %v, want a version-mismatch refusal naming version 99", m)
	}
}

// TestRingRequestsClamped: the node's ring sizes are defaults, not
// ceilings; a client asking for more than WithMaxRing gets the maximum,
// and works.
func TestRingRequestsClamped(t *testing.T) {
	for _, tc := range []struct {
		opts []NodeOption
		want int
	}{
		{nil, 4 << 20},
		{[]NodeOption{WithMaxRing(1 << 20)}, 1 << 20},
	} {
		n := startNode(t, tc.opts...)
		echoService(n)
		c := dial(t, n, WithRings(1<<30, 1<<30, 1<<30))
		if _, err := c.Call(ctx5(t), svcEcho, 1, []byte("x")); err != nil {
			t.Fatal(err)
		}
		var got [3]int
		for _, ci := range n.Connections() {
			if ci.Address == c.Address() {
				got = ci.RingBytes
			}
		}
		if got != [3]int{tc.want, tc.want, tc.want} {
			t.Errorf("asked for 1 GiB rings, got %v; want %d each", got, tc.want)
		}
	}
	if _, err := NewNode(WithMaxRing(3 << 20)); err == nil {
		t.Error("WithMaxRing took a size that is not a power of two")
	}
}

// TestUIDLimits: past its connection limit, or its limit of handshakes in
// progress, a uid is refused with ErrLimitExceeded, and served again once
// it has fewer. (In-process the client is root: the privileged limits.)
func TestUIDLimits(t *testing.T) {
	n := startNode(t, WithPrivilegedLimits(3, 1), WithHandshakeTimeout(10*time.Second))
	ctx := ctx5(t)
	var held []*Conn
	for range 3 {
		held = append(held, dial(t, n))
	}
	if _, err := Dial(ctx, WithSocket(n.SocketPath())); !errors.Is(err, ErrLimitExceeded) {
		t.Fatalf("a fourth connection: %v, want ErrLimitExceeded", err)
	}
	held[0].Close()
	waitFor(t, func() bool {
		c, err := Dial(ctx, WithSocket(n.SocketPath()))
		if err == nil {
			held[0] = c
		}
		return err == nil
	})
	for _, c := range held {
		c.Close()
	}
	// A handshake in progress (a client that never says Hello) takes the
	// one handshake allowed: the next client is refused at once.
	raw, err := net.Dial("unix", n.SocketPath())
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool {
		c, err := Dial(ctx, WithSocket(n.SocketPath()))
		if err == nil {
			c.Close() // before the node took up raw's handshake: it must not hold a slot
		}
		return errors.Is(err, ErrLimitExceeded)
	})
	raw.Close()
	waitFor(t, func() bool {
		c, err := Dial(ctx, WithSocket(n.SocketPath()))
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	if got := n.Stats().Refusals[ActionConnect]; got < 2 {
		t.Errorf("connect refusals counted: %d, want at least 2", got)
	}
}

// TestIncarnations: nodes started in the same millisecond, in this
// process, get different incarnations; each is the start in base 36 and
// 4 random characters, all of them digits and lower-case letters.
func TestIncarnations(t *testing.T) {
	start := time.Now()
	seen := map[string]bool{}
	for range 100 {
		inc := newIncarnation(start)
		if seen[inc] {
			t.Fatalf("incarnation %s twice", inc)
		}
		seen[inc] = true
		ms, err := strconv.ParseInt(inc[:len(inc)-4], 36, 64)
		if err != nil || ms < start.UnixMilli() || ms > start.UnixMilli()+1000 {
			t.Fatalf("incarnation %s: time part %d (%v), want from %d", inc, ms, err, start.UnixMilli())
		}
		if strings.Trim(inc, "0123456789abcdefghijklmnopqrstuvwxyz") != "" || len(inc) != 12 {
			t.Fatalf("incarnation %q: want 12 characters of [0-9a-z]", inc)
		}
	}
	// Two nodes at once: their first connections have the same id, and
	// different addresses.
	a, b := dial(t, startNode(t)), dial(t, startNode(t))
	if a.ID() != b.ID() || a.Address() == b.Address() {
		t.Fatalf("first connections of two nodes: %d %s, %d %s", a.ID(), a.Address(), b.ID(), b.Address())
	}
}

// TestAddressOfEarlierRun: after a node is replaced by another on the
// same socket, the first run's addresses find nobody, though the new
// run's connections have the same ids.
func TestAddressOfEarlierRun(t *testing.T) {
	path := filepath.Join(t.TempDir(), "node.sock")
	run := func() (*Node, func()) {
		n, err := NewNode(WithSocket(path))
		if err != nil {
			t.Fatal(err)
		}
		if err := n.Listen(); err != nil {
			t.Fatal(err)
		}
		served := make(chan error, 1)
		go func() { served <- n.Serve(context.Background()) }()
		return n, func() {
			n.Close()
			if err := <-served; err != nil {
				t.Error(err)
			}
		}
	}
	n1, stop1 := run()
	old := dial(t, n1)
	oldAddr := old.Address()
	old.Close()
	stop1()
	n2, stop2 := run()
	defer stop2()
	c := dial(t, n2)
	ctx := ctx5(t)
	if c.ID() != old.ID() || c.Address() == oldAddr {
		t.Fatalf("first run's %d %s, second run's %d %s: want the same id, another address", old.ID(), oldAddr, c.ID(), c.Address())
	}
	if err := c.SendTo(ctx, oldAddr, []byte("x"), WantAnswer()); !errors.Is(err, ErrUndeliverable) {
		t.Fatalf("send to the first run's address: %v, want undeliverable", err)
	}
	if _, err := c.Request(ctx, oldAddr, nil); !errors.Is(err, ErrUndeliverable) {
		t.Fatalf("request to the first run's address: %v, want undeliverable", err)
	}
	if err := c.SendTo(ctx, c.Address(), []byte("self"), WantAnswer()); err != nil {
		t.Fatal(err)
	}
	if e := recv(t, c); e.Kind != EventMessage || string(e.Payload) != "self" {
		t.Fatalf("got %+v, want only the message to its own address", e)
	}
}
