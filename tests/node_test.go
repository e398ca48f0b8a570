package tests

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/switchboard-ipc/switchboard"
)

// transports runs f once per transport, as subtests.
func transports(t *testing.T, f func(t *testing.T, tr switchboard.Transport)) {
	for _, tc := range []struct {
		name string
		tr   switchboard.Transport
	}{{"shm", switchboard.TransportSHM}, {"socket", switchboard.TransportSocket}} {
		t.Run(tc.name, func(t *testing.T) { f(t, tc.tr) })
	}
}

func dialT(t *testing.T, socket string, opts ...switchboard.DialOption) *switchboard.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := switchboard.Dial(ctx, append([]switchboard.DialOption{switchboard.WithSocket(socket)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// TestCallsAcrossProcesses: payloads from 0 bytes to the limit, errors of
// every kind, and 64 goroutines sharing one connection.
func TestCallsAcrossProcesses(t *testing.T) {
	transports(t, func(t *testing.T, tr switchboard.Transport) {
		leakCheck(t)
		_, socket := nodeChild(t)
		c := dialT(t, socket, switchboard.WithTransport(tr))
		ctx := context.Background()
		sizes := []int{0, 1, 63, 64, 4096, 64 << 10, 1 << 20, c.MaxMessage()}
		if testing.Short() {
			sizes = sizes[:len(sizes)-1]
		}
		for _, size := range sizes {
			p := make([]byte, size)
			for i := range p {
				p[i] = byte(i * 7)
			}
			got, err := c.Call(ctx, svcTest, cmdEcho, p)
			if err != nil || !bytes.Equal(got, p) {
				t.Fatalf("%d bytes: got %d bytes, %v", size, len(got), err)
			}
		}
		if _, err := c.Call(ctx, svcTest, cmdEcho, make([]byte, c.MaxMessage()+1)); !errors.Is(err, switchboard.ErrTooLarge) {
			t.Fatalf("one byte too large: %v", err)
		}
		for _, tc := range []struct {
			svc, cmd uint16
			want     error
		}{
			{99, 1, switchboard.ErrUnknownService},
			{svcTest, 99, switchboard.ErrUnknownCommand},
			{svcTest, cmdPanic, switchboard.ErrInternal},
			{svcTest, cmdFail, switchboard.ErrHandler},
		} {
			if _, err := c.Call(ctx, tc.svc, tc.cmd, nil); !errors.Is(err, tc.want) {
				t.Errorf("service %d command %d: %v, want %v", tc.svc, tc.cmd, err, tc.want)
			}
		}
		// The connection and the node survive the panic and the errors.
		var wg sync.WaitGroup
		errc := make(chan error, 64)
		for g := range 64 {
			wg.Go(func() {
				for i := range 100 {
					p := []byte(fmt.Sprintf("%d/%d", g, i))
					got, err := c.Call(ctx, svcTest, cmdEcho, p)
					if err != nil || !bytes.Equal(got, p) {
						errc <- fmt.Errorf("goroutine %d call %d: %q, %v", g, i, got, err)
						return
					}
				}
			})
		}
		wg.Wait()
		close(errc)
		for err := range errc {
			t.Fatal(err)
		}
		// Async sends are served in order with the calls around them.
		for i := range 100 {
			if err := c.Send(ctx, svcTest, cmdEcho, []byte(strconv.Itoa(i))); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := c.Call(ctx, svcTest, cmdEcho, nil); err != nil {
			t.Fatal(err)
		}
	})
}

// TestEventsAcrossProcesses: events arrive in order, each numbered.
func TestEventsAcrossProcesses(t *testing.T) {
	transports(t, func(t *testing.T, tr switchboard.Transport) {
		leakCheck(t)
		_, socket := nodeChild(t)
		c := dialT(t, socket, switchboard.WithTransport(tr))
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		const n = 20000
		if _, err := c.Call(ctx, svcTest, cmdEmit, []byte(strconv.Itoa(n))); err != nil {
			t.Fatal(err)
		}
		for i := range n {
			e, err := c.RecvEvent(ctx)
			if err != nil {
				t.Fatalf("event %d: %v", i, err)
			}
			if e.Command != uint16(i) || string(e.Payload) != strconv.Itoa(i) || e.Seq != uint64(i+1) || e.Dropped != 0 {
				t.Fatalf("event %d: %+v", i, e)
			}
		}
	})
}

// TestEventOverflowDropOldest: a client that does not read its events
// loses the oldest ones, and learns exactly how many.
func TestEventOverflowDropOldest(t *testing.T) {
	transports(t, func(t *testing.T, tr switchboard.Transport) {
		leakCheck(t)
		const queue = 16
		_, socket := nodeChild(t, "SB_EVENT_QUEUE="+strconv.Itoa(queue), "SB_EVENT_RING=4096")
		c := dialT(t, socket, switchboard.WithTransport(tr), switchboard.WithEventQueue(1))
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		const n = 1000
		if _, err := c.Call(ctx, svcTest, cmdEmit, []byte(strconv.Itoa(n))); err != nil {
			t.Fatal(err)
		}
		// A second call completes only after the node processed all the events.
		if _, err := c.Call(ctx, svcTest, cmdEcho, nil); err != nil {
			t.Fatal(err)
		}
		var got, dropped, last uint64
		for got+dropped < n {
			e, err := c.RecvEvent(ctx)
			if err != nil {
				t.Fatalf("after %d events and %d dropped: %v", got, dropped, err)
			}
			if e.Seq != last+1+e.Dropped {
				t.Fatalf("event seq %d after %d with %d dropped", e.Seq, last, e.Dropped)
			}
			if want := strconv.FormatUint(e.Seq-1, 10); string(e.Payload) != want {
				t.Fatalf("event %d carries %q", e.Seq, e.Payload)
			}
			last = e.Seq
			got++
			dropped += e.Dropped
		}
		if got+dropped != n || dropped == 0 {
			t.Fatalf("%d received + %d dropped, %d sent", got, dropped, n)
		}
		if fc := c.FlowControl(); fc.EventsDropped != dropped || fc.EventsTotal != got {
			t.Fatalf("flow control %+v, counted %d received %d dropped", fc, got, dropped)
		}
		t.Logf("%d events sent, %d received, %d dropped (queue %d, ring 4 KiB, client buffer 1)", n, got, dropped, queue)
	})
}

// TestEventOverflowDisconnect: with the disconnect policy, a client that
// does not read is evicted as a slow consumer and told so. Shared memory
// only: over the socket transport the client keeps reading the socket (the
// replies behind the events must flow) and drops what it cannot hold.
func TestEventOverflowDisconnect(t *testing.T) {
	func(t *testing.T, tr switchboard.Transport) {
		leakCheck(t)
		_, socket := nodeChild(t, "SB_EVENT_QUEUE=16", "SB_EVENT_RING=4096", "SB_OVERFLOW=disconnect")
		c := dialT(t, socket, switchboard.WithTransport(tr), switchboard.WithEventQueue(1))
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		c.Call(ctx, svcTest, cmdEmit, []byte("1000"))
		checkFor(t, 5*time.Second, func() error {
			_, err := c.Call(ctx, svcTest, cmdEcho, nil)
			if errors.Is(err, switchboard.ErrSlowConsumer) {
				return nil
			}
			return fmt.Errorf("call: %v, want ErrSlowConsumer", err)
		})
	}(t, switchboard.TransportSHM)
}

// TestClientKilledMidCall: the node frees a client killed with SIGKILL in
// the middle of a call within a second.
func TestClientKilledMidCall(t *testing.T) {
	transports(t, func(t *testing.T, tr switchboard.Transport) {
		leakCheck(t)
		node, socket := nodeChild(t)
		base, err := fdsOf(node.cmd.Process.Pid)
		if err != nil {
			t.Fatal(err)
		}
		cl := startRole(t, "slowcall", []string{"SB_SOCKET=" + socket, "SB_TRANSPORT=" + strconv.Itoa(int(tr))}, nil)
		checkFor(t, 5*time.Second, func() error {
			if !strings.Contains(cl.stdout.String(), "calling") {
				return errors.New("client not calling yet")
			}
			fds, _ := fdsOf(node.cmd.Process.Pid)
			if len(fds) <= len(base) {
				return errors.New("node has no descriptors for the client yet")
			}
			return nil
		})
		time.Sleep(20 * time.Millisecond) // let the call reach the handler
		killed := time.Now()
		cl.cmd.Process.Kill()
		cl.cmd.Wait()
		checkFor(t, time.Second, func() error {
			fds, err := fdsOf(node.cmd.Process.Pid)
			if err != nil {
				return err
			}
			// At most the baseline: the connection nodeChild checked with
			// may still have been closing its eventfds when it was taken.
			if len(fds) > len(base) {
				return fmt.Errorf("node fds: %d, baseline %d", len(fds), len(base))
			}
			return nil
		})
		t.Logf("node back to its %d fds %v after the kill", len(base), time.Since(killed))
		// And it still serves.
		c := dialT(t, socket, switchboard.WithTransport(tr))
		if _, err := c.Call(context.Background(), svcTest, cmdEcho, []byte("x")); err != nil {
			t.Fatal(err)
		}
	})
}

// TestNodeKilledMidCall: a call in flight fails with ErrNodeGone within a
// second of the node's SIGKILL, not at its deadline.
func TestNodeKilledMidCall(t *testing.T) {
	transports(t, func(t *testing.T, tr switchboard.Transport) {
		leakCheck(t)
		node, socket := nodeChild(t)
		c := dialT(t, socket, switchboard.WithTransport(tr))
		errc := make(chan error, 1)
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			_, err := c.Call(ctx, svcTest, cmdSlow, nil)
			errc <- err
		}()
		time.Sleep(50 * time.Millisecond)
		killed := time.Now()
		node.cmd.Process.Kill()
		select {
		case err := <-errc:
			if !errors.Is(err, switchboard.ErrNodeGone) {
				t.Fatalf("call: %v, want ErrNodeGone", err)
			}
			if d := time.Since(killed); d > time.Second {
				t.Fatalf("call failed %v after the kill", d)
			}
			t.Logf("call failed %v after the kill", time.Since(killed))
		case <-time.After(time.Second):
			t.Fatal("call still waiting a second after the node was killed")
		}
		node.cmd.Wait()
	})
}

// TestGracefulShutdown: SIGTERM makes the node tell its clients, fail the
// calls in flight with ErrNodeGone, and exit 0.
func TestGracefulShutdown(t *testing.T) {
	transports(t, func(t *testing.T, tr switchboard.Transport) {
		leakCheck(t)
		node, socket := nodeChild(t)
		c := dialT(t, socket, switchboard.WithTransport(tr))
		errc := make(chan error, 1)
		go func() {
			_, err := c.Call(context.Background(), svcTest, cmdSlow, nil)
			errc <- err
		}()
		time.Sleep(50 * time.Millisecond)
		node.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-errc:
			if !errors.Is(err, switchboard.ErrNodeGone) || !strings.Contains(err.Error(), "shutting down") {
				t.Fatalf("call: %v, want ErrNodeGone for a shutdown", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("call not failed by the shutdown")
		}
		if err := node.cmd.Wait(); err != nil {
			t.Fatalf("node exit: %v", err)
		}
		if _, err := os.Stat(socket); !os.IsNotExist(err) {
			t.Fatalf("socket left behind: %v", err)
		}
	})
}

// TestRefusedUID: a process of another uid is refused with a reason, and
// the node creates no shared memory for it.
func TestRefusedUID(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to run a client as another uid")
	}
	leakCheck(t)
	node, socket := nodeChild(t)
	os.Chmod(socket, 0o777)
	pid := node.cmd.Process.Pid
	base, _ := fdsOf(pid)
	// Watch the node's memfds while the refused client connects.
	stop := make(chan struct{})
	maxMemfd := make(chan int, 1)
	go func() {
		m := 0
		for {
			select {
			case <-stop:
				maxMemfd <- m
				return
			default:
			}
			fds, _ := fdsOf(pid)
			m = max(m, countMatching(fds, "memfd:"))
			time.Sleep(100 * time.Microsecond)
		}
	}()
	cl := startRole(t, "dial", []string{"SB_SOCKET=" + socket}, &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}})
	if err := cl.cmd.Wait(); err != nil {
		t.Fatalf("client: %v", err)
	}
	close(stop)
	out := cl.stdout.String()
	if !strings.HasPrefix(out, "refused:") || !strings.Contains(out, "uid 65534") {
		t.Fatalf("client said %q, want a refusal naming its uid", out)
	}
	if m := <-maxMemfd; m > countMatching(base, "memfd:") {
		t.Fatalf("node held %d memfds while refusing, %d before", m, countMatching(base, "memfd:"))
	}
}

// TestNodeNotAuthentic: a client that expects the node to run as another
// uid refuses it before sending anything.
func TestNodeNotAuthentic(t *testing.T) {
	leakCheck(t)
	_, socket := nodeChild(t)
	_, err := switchboard.Dial(context.Background(), switchboard.WithSocket(socket), switchboard.WithNodeUID(4242))
	if !errors.Is(err, switchboard.ErrNotAuthentic) {
		t.Fatalf("dial: %v, want ErrNotAuthentic", err)
	}
}

// TestNodeDaemon runs the real cmd/node binary: serve, then call its system
// service with the CLI.
func TestNodeDaemon(t *testing.T) {
	bin := buildNode(t)
	socket := publicDir(t) + "/node.sock"
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	serve := command(ctx, bin, "serve", "--socket", socket, "--log-level", "warn")
	stderr, _ := serve.StderrPipe()
	if err := serve.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		serve.Process.Signal(syscall.SIGTERM)
		if err := serve.Wait(); err != nil {
			t.Errorf("node serve exit: %v", err)
		}
	}()
	go io.Copy(io.Discard, bufio.NewReader(stderr))
	checkFor(t, 10*time.Second, func() error {
		_, err := os.Stat(socket)
		return err
	})
	out, err := command(ctx, bin, "call", "--socket", socket, "0xffff", "2", "hello node").Output()
	if err != nil || string(out) != "hello node" {
		t.Fatalf("node call: %q %v", out, err)
	}
	cmd := command(ctx, bin, "call", "--socket", socket, "5", "1")
	if err := cmd.Run(); cmd.ProcessState.ExitCode() != 1 {
		t.Fatalf("call to an unknown service: %v, want exit code 1", err)
	}
	cmd = command(ctx, bin, "call", "--socket", socket+".missing", "5", "1")
	if cmd.Run(); cmd.ProcessState.ExitCode() != 3 {
		t.Fatalf("call without a node: exit code %d, want 3", cmd.ProcessState.ExitCode())
	}
}
