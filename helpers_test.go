package switchboard

import (
	"context"
	"errors"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"golang.org/x/sys/unix"
)

// startNode runs a node on a fresh socket for the test and closes it after.
func startNode(t testing.TB, opts ...NodeOption) *Node {
	t.Helper()
	path := filepath.Join(t.TempDir(), "node.sock")
	n, err := NewNode(append([]NodeOption{WithSocket(path)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Listen(); err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- n.Serve(context.Background()) }()
	t.Cleanup(func() {
		if err := n.Close(); err != nil {
			t.Error(err)
		}
		if err := <-served; err != nil {
			t.Error(err)
		}
	})
	return n
}

func dial(t testing.TB, n *Node, opts ...DialOption) *Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := Dial(ctx, append([]DialOption{WithSocket(n.SocketPath())}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

const (
	svcEcho = 7
	cmdEcho = 1
	cmdFail = 2
	cmdBoom = 3
	cmdSlow = 4
)

func echoService(n *Node) {
	n.HandleFunc(svcEcho, func(ctx context.Context, r *Request) ([]byte, error) {
		switch r.Command {
		case cmdEcho:
			return append([]byte(nil), r.Payload...), nil
		case cmdFail:
			return nil, errors.New("you asked for it")
		case cmdBoom:
			panic("boom")
		case cmdSlow:
			<-ctx.Done()
			return nil, ctx.Err()
		}
		return nil, ErrUnknownCommand
	})
}

// bothTransports runs f over shared memory and over the socket.
func bothTransports(t *testing.T, f func(*testing.T, Transport)) {
	t.Run("shm", func(t *testing.T) { f(t, TransportSHM) })
	t.Run("socket", func(t *testing.T) { f(t, TransportSocket) })
}

func ctx5(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func recv(t *testing.T, c *Conn) Event {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	e, err := c.RecvEvent(ctx)
	if err != nil {
		t.Fatalf("%s: waiting for an event: %v", c.Address(), err)
	}
	return e
}

func noEvent(t *testing.T, c *Conn) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if e, err := c.RecvEvent(ctx); err == nil {
		t.Fatalf("%s: unexpected event %+v", c.Address(), e)
	}
}

func notices(t *testing.T, c *Conn, n int) []Notice {
	t.Helper()
	var out []Notice
	for range n {
		e := recv(t, c)
		nt, err := e.Notice()
		if err != nil {
			t.Fatalf("%+v: %v", e, err)
		}
		out = append(out, nt)
	}
	return out
}

func waitFor(t *testing.T, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in 5s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func contains(s, sub string) bool { return strings.Contains(s, sub) }

func readable(t *testing.T, fd int, timeoutMs int) bool {
	t.Helper()
	fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	n, err := unix.Poll(fds, timeoutMs)
	if err != nil {
		t.Fatal(err)
	}
	return n > 0
}

// quietActorSystem is an actor system that does not log (protoactor logs
// at info to stderr by default, which only clutters the tests' output).
func quietActorSystem() *actor.ActorSystem {
	return actor.NewActorSystem(actor.WithLoggerFactory(func(*actor.ActorSystem) *slog.Logger {
		return slog.New(slog.DiscardHandler)
	}))
}
