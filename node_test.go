package switchboard

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"
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

func TestCallInProcess(t *testing.T) { bothTransports(t, testCallInProcess) }

func testCallInProcess(t *testing.T, tr Transport) {
	n := startNode(t)
	echoService(n)
	c := dial(t, n, WithTransport(tr))
	ctx := context.Background()
	for _, size := range []int{0, 1, 100, 64 << 10, 1 << 20, 3<<20 + 7} {
		p := bytes.Repeat([]byte{byte(size)}, size)
		got, err := c.Call(ctx, svcEcho, cmdEcho, p)
		if err != nil || !bytes.Equal(got, p) {
			t.Fatalf("size %d: %d bytes, %v", size, len(got), err)
		}
	}
	if _, err := c.Call(ctx, 99, 1, nil); !errors.Is(err, ErrUnknownService) {
		t.Fatalf("unknown service: %v", err)
	}
	if _, err := c.Call(ctx, svcEcho, 77, nil); !errors.Is(err, ErrUnknownCommand) {
		t.Fatalf("unknown command: %v", err)
	}
	if _, err := c.Call(ctx, svcEcho, cmdFail, nil); !errors.Is(err, ErrHandler) || err.Error() != "switchboard: handler error: you asked for it" {
		t.Fatalf("handler error: %v", err)
	}
	if _, err := c.Call(ctx, svcEcho, cmdBoom, nil); !errors.Is(err, ErrInternal) {
		t.Fatalf("panic: %v", err)
	}
	if _, err := c.Call(ctx, svcEcho, cmdEcho, make([]byte, c.MaxMessage()+1)); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("too large: %v", err)
	}
	// The connection survives all of that.
	if got, err := c.Call(ctx, svcEcho, cmdEcho, []byte("still here")); err != nil || string(got) != "still here" {
		t.Fatalf("after errors: %q %v", got, err)
	}
	dctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if _, err := c.Call(dctx, svcEcho, cmdSlow, nil); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("deadline: %v", err)
	}
	if _, err := c.Call(ctx, SystemService, SysPing, nil); err != nil {
		t.Fatal(err)
	}
}

func TestConcurrentCalls(t *testing.T) { bothTransports(t, testConcurrentCalls) }

func testConcurrentCalls(t *testing.T, tr Transport) {
	n := startNode(t)
	echoService(n)
	c := dial(t, n, WithTransport(tr))
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for g := range 64 {
		wg.Go(func() {
			for i := range 200 {
				p := []byte(fmt.Sprintf("g%d-%d", g, i))
				got, err := c.Call(context.Background(), svcEcho, cmdEcho, p)
				if err != nil || !bytes.Equal(got, p) {
					errs <- fmt.Errorf("g%d call %d: %q %v", g, i, got, err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

func TestEventsInOrder(t *testing.T) { bothTransports(t, testEventsInOrder) }

func testEventsInOrder(t *testing.T, tr Transport) {
	n := startNode(t)
	var sess *Session
	ready := make(chan struct{})
	n.HandleFunc(svcEcho, func(ctx context.Context, r *Request) ([]byte, error) {
		sess = r.Session
		close(ready)
		return nil, nil
	})
	c := dial(t, n, WithTransport(tr))
	if _, err := c.Call(context.Background(), svcEcho, 1, nil); err != nil {
		t.Fatal(err)
	}
	<-ready
	const count = 5000
	for i := range count {
		if err := n.SendEvent(sess.ConnID(), svcEcho, uint16(i), []byte(fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for i := range count {
		e, err := c.RecvEvent(ctx)
		if err != nil {
			t.Fatalf("event %d: %v", i, err)
		}
		if e.Command != uint16(i) || string(e.Payload) != fmt.Sprint(i) || e.Dropped != 0 {
			t.Fatalf("event %d: %+v", i, e)
		}
	}
}

func TestNodeCloseFailsCalls(t *testing.T) { bothTransports(t, testNodeCloseFailsCalls) }

func testNodeCloseFailsCalls(t *testing.T, tr Transport) {
	n := startNode(t)
	echoService(n)
	c := dial(t, n, WithTransport(tr))
	errc := make(chan error, 1)
	go func() {
		_, err := c.Call(context.Background(), svcEcho, cmdSlow, nil)
		errc <- err
	}()
	time.Sleep(50 * time.Millisecond)
	start := time.Now()
	n.Close()
	select {
	case err := <-errc:
		if !errors.Is(err, ErrNodeGone) {
			t.Fatalf("in-flight call: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("in-flight call not failed by node shutdown")
	}
	t.Logf("in-flight call failed %v after Close", time.Since(start))
	if _, err := c.Call(context.Background(), svcEcho, cmdEcho, nil); !errors.Is(err, ErrNodeGone) {
		t.Fatalf("call after shutdown: %v", err)
	}
}

// bothTransports runs f over shared memory and over the socket.
func bothTransports(t *testing.T, f func(*testing.T, Transport)) {
	t.Run("shm", func(t *testing.T) { f(t, TransportSHM) })
	t.Run("socket", func(t *testing.T) { f(t, TransportSocket) })
}
