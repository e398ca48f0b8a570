package tests

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/switchboard-ipc/switchboard"
)

// Coming back by itself: a node restarted under clients dialled
// WithReconnect.

const (
	restartClients = 50
	restartBound   = 5 * time.Second // the bound, from the new node being ready
)

var quickReconnect = switchboard.WithReconnect(switchboard.ReconnectPolicy{Min: 5 * time.Millisecond, Max: 100 * time.Millisecond})

// restartNode SIGKILLs node and starts another on socket; it returns the
// new node and when it was first seen ready (a Dial succeeded).
func restartNode(t *testing.T, node *child, socket string) (*child, time.Time) {
	t.Helper()
	kill9(node)
	next := startRole(t, "node", []string{"SB_SOCKET=" + socket}, nil)
	deadline := time.Now().Add(lifeTimeout)
	for {
		c, err := switchboard.Dial(context.Background(), switchboard.WithSocket(socket))
		if err == nil {
			ready := time.Now()
			c.Close()
			return next, ready
		}
		if time.Now().After(deadline) {
			t.Fatalf("the new node never got ready: %v", err)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestReconnectNodeRestart50: the node is SIGKILLed under 50 clients
// dialled WithReconnect, each a member of its group and the owner of its
// name, and another node starts on the socket. Each is back within 5 s of
// the new node being ready: its group's publications reach it and its
// name's requests are answered by it. The time until all are verified is
// logged.
func TestReconnectNodeRestart50(t *testing.T) {
	node, socket := nodeChild(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*lifeTimeout)
	defer cancel()
	conns := make([]*switchboard.Conn, restartClients)
	for i := range conns {
		me := strconv.Itoa(i)
		conns[i] = dialT(t, socket, quickReconnect,
			switchboard.WithRequestHandler(func(ctx context.Context, r *switchboard.PeerRequest) ([]byte, error) {
				return []byte(me), nil
			}))
		if err := conns[i].Subscribe(ctx, "g"+me); err != nil {
			t.Fatal(err)
		}
		if primary, _, err := conns[i].Own(ctx, "n"+me); err != nil || !primary {
			t.Fatalf("own n%s: %v %v", me, primary, err)
		}
	}
	_, ready := restartNode(t, node, socket)
	checker := dialT(t, socket)

	var wg sync.WaitGroup
	took := make([]time.Duration, restartClients)
	errs := make(chan error, restartClients)
	for i, c := range conns {
		wg.Go(func() {
			me := strconv.Itoa(i)
			// Requested by name: answered by this client once it holds it.
			for {
				reply, err := checker.Request(ctx, "n"+me, nil)
				if err == nil {
					if string(reply) != me {
						errs <- fmt.Errorf("n%s answered by %q", me, reply)
						return
					}
					break
				}
				if !errors.Is(err, switchboard.ErrUndeliverable) || ctx.Err() != nil {
					errs <- fmt.Errorf("request n%s: %w", me, err)
					return
				}
				time.Sleep(time.Millisecond)
			}
			// Published to: delivered to this client once it is a member again.
			for {
				err := checker.Publish(ctx, "g"+me, []byte(me), switchboard.WantAnswer())
				if err == nil {
					break
				}
				if !errors.Is(err, switchboard.ErrUndeliverable) || ctx.Err() != nil {
					errs <- fmt.Errorf("publish to g%s: %w", me, err)
					return
				}
				time.Sleep(time.Millisecond)
			}
			for {
				e, err := c.RecvEvent(ctx)
				if err != nil {
					errs <- fmt.Errorf("client %s: %w", me, err)
					return
				}
				if e.Kind == switchboard.EventGroup && e.To == "g"+me && string(e.Payload) == me {
					break
				}
			}
			took[i] = time.Since(ready)
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	var all time.Duration
	for _, d := range took {
		all = max(all, d)
	}
	t.Logf("%d clients back, re-subscribed and holding their names %v after the new node was ready", restartClients, all)
	if all > restartBound {
		t.Fatalf("took %v, bound %v", all, restartBound)
	}
	for i, c := range conns {
		if c.Err() != nil {
			t.Fatalf("client %d: Err %v after a reconnection", i, c.Err())
		}
	}
}

// TestReconnectInFlight: when the node is SIGKILLed, a call and a peer
// request in flight fail with ErrNodeGone and are never replayed (the peer
// saw the request once); during the gap a call fails at once with
// ErrNodeGone, while one made WaitForReconnect succeeds once the new node
// is up.
func TestReconnectInFlight(t *testing.T) {
	transports(t, func(t *testing.T, tr switchboard.Transport) {
		node, socket := nodeChild(t)
		ctx, cancel := context.WithTimeout(context.Background(), 2*lifeTimeout)
		defer cancel()
		var mu sync.Mutex
		seen := map[string]int{}
		var started atomic.Int32
		server := dialT(t, socket, switchboard.WithTransport(tr), quickReconnect,
			switchboard.WithRequestHandler(func(ctx context.Context, r *switchboard.PeerRequest) ([]byte, error) {
				mu.Lock()
				seen[string(r.Payload)]++
				mu.Unlock()
				if string(r.Payload) == "in flight" {
					started.Add(1)
					<-ctx.Done() // the gap cancels it
					return nil, ctx.Err()
				}
				return r.Payload, nil
			}))
		if _, _, err := server.Own(ctx, "server"); err != nil {
			t.Fatal(err)
		}
		c := dialT(t, socket, switchboard.WithTransport(tr), quickReconnect)
		// The node serves one connection's calls in order: the slow one
		// gets a connection of its own, or it would hold up the request.
		slow := dialT(t, socket, switchboard.WithTransport(tr), quickReconnect)

		failed := make(chan error, 2)
		go func() {
			_, err := c.Request(switchboard.WaitForReconnect(ctx), "server", []byte("in flight"))
			failed <- err
		}()
		go func() {
			_, err := slow.Call(ctx, svcTest, cmdSlow, nil)
			failed <- err
		}()
		checkFor(t, lifeTimeout, func() error {
			if started.Load() == 0 || slow.FlowControl().InFlight == 0 {
				select {
				case err := <-failed:
					t.Fatalf("ended before the node went: %v", err)
				default:
				}
				return errors.New("not both in flight yet")
			}
			return nil
		})

		kill9(node)
		for range 2 {
			if err := <-failed; !errors.Is(err, switchboard.ErrNodeGone) {
				t.Fatalf("in flight when the node went: %v, want ErrNodeGone", err)
			}
		}
		waitKind(t, c, switchboard.EventDisconnected)
		began := time.Now()
		if _, err := c.Call(ctx, svcTest, cmdEcho, []byte("gap")); !errors.Is(err, switchboard.ErrNodeGone) {
			t.Fatalf("a call during the gap: %v, want ErrNodeGone", err)
		}
		if _, err := c.Request(ctx, "server", []byte("gap")); !errors.Is(err, switchboard.ErrNodeGone) {
			t.Fatalf("a request during the gap: %v, want ErrNodeGone", err)
		}
		t.Logf("calls during the gap failed in %v", time.Since(began))

		waited := make(chan error, 1)
		go func() {
			reply, err := c.Call(switchboard.WaitForReconnect(ctx), svcTest, cmdEcho, []byte("waited"))
			if err == nil && string(reply) != "waited" {
				err = fmt.Errorf("reply %q", reply)
			}
			waited <- err
		}()
		restartNode(t, node, socket)
		if err := <-waited; err != nil {
			t.Fatalf("the call that waited: %v", err)
		}
		waitKind(t, server, switchboard.EventReconnected)
		if reply, err := c.Request(ctx, "server", []byte("after")); err != nil || string(reply) != "after" {
			t.Fatalf("a request after: %q %v", reply, err)
		}
		mu.Lock()
		defer mu.Unlock()
		if seen["in flight"] != 1 || seen["gap"] != 0 || seen["after"] != 1 {
			t.Fatalf("the server saw %v: the request in flight once, the gap's never", seen)
		}
	})
}

// waitKind takes c's events up to one of kind.
func waitKind(t *testing.T, c *switchboard.Conn, kind switchboard.EventKind) switchboard.Event {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), lifeTimeout)
	defer cancel()
	for {
		e, err := c.RecvEvent(ctx)
		if err != nil {
			t.Fatalf("waiting for event kind %d: %v", kind, err)
		}
		if e.Kind == kind {
			return e
		}
	}
}
