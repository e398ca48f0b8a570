package tests

import (
	"context"
	"errors"
	"log/slog"
	"path/filepath"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/switchboard-ipc/switchboard"
	"golang.org/x/sys/unix"
)

// The end of a node, as each delivery mode learns it, and the start of
// one: Dial before the node listens.

const (
	lifeEvents  = 3                // events each mode takes before the node goes
	lifeTimeout = 10 * time.Second // a failure, not a speed bound
)

// learned is one delivery mode's news of the end: when, and the error.
type learned struct {
	mode   string
	events int // events it took before
	at     time.Time
	err    error
}

// TestNodeKilledEveryMode: the node is SIGKILLed under a client of each
// delivery mode (event handler, event actor, poll fd in an epoll loop,
// RecvEvent); each takes the events sent before, then learns the end, as
// ErrNodeLost. The time each took is logged.
func TestNodeKilledEveryMode(t *testing.T) {
	transports(t, func(t *testing.T, tr switchboard.Transport) {
		node, socket := nodeChild(t)
		ended := make(chan learned, 4)
		took := make(chan string, 4)

		var handled atomic.Int32
		h := dialT(t, socket, switchboard.WithTransport(tr),
			switchboard.WithEventHandler(func(switchboard.Event) {
				if handled.Add(1) == lifeEvents {
					took <- "handler"
				}
			}),
			switchboard.WithDisconnectHandler(func(err error) {
				ended <- learned{"handler", int(handled.Load()), time.Now(), err}
			}))

		sys := actor.NewActorSystem(actor.WithLoggerFactory(func(*actor.ActorSystem) *slog.Logger { return slog.New(slog.DiscardHandler) }))
		defer sys.Shutdown()
		var acted int
		pid := sys.Root.Spawn(actor.PropsFromFunc(func(ac actor.Context) {
			switch m := ac.Message().(type) {
			case *switchboard.Event:
				if acted++; acted == lifeEvents {
					took <- "actor"
				}
			case *switchboard.Disconnected:
				ended <- learned{"actor", acted, time.Now(), m.Err}
			}
		}))
		a := dialT(t, socket, switchboard.WithTransport(tr), switchboard.WithEventActor(sys, pid))

		p := dialT(t, socket, switchboard.WithTransport(tr))
		epollDone := make(chan struct{})
		go func() {
			defer close(epollDone)
			l, err := epollUntilEnd(p, func() { took <- "poll" })
			if err != nil {
				t.Error(err)
				return
			}
			ended <- l
		}()

		r := dialT(t, socket, switchboard.WithTransport(tr))
		go func() {
			n := 0
			for {
				_, err := r.RecvEvent(context.Background())
				if err != nil {
					ended <- learned{"RecvEvent", n, time.Now(), err}
					return
				}
				if n++; n == lifeEvents {
					took <- "RecvEvent"
				}
			}
		}()

		for _, c := range []*switchboard.Conn{h, a, p, r} {
			if _, err := c.Call(context.Background(), svcTest, cmdEmit, []byte("3")); err != nil {
				t.Fatal(err)
			}
		}
		for range 4 {
			select {
			case <-took:
			case <-time.After(lifeTimeout):
				t.Fatal("the events did not arrive")
			}
		}

		killed := time.Now()
		node.cmd.Process.Kill()
		for range 4 {
			select {
			case l := <-ended:
				if !errors.Is(l.err, switchboard.ErrNodeLost) || !errors.Is(l.err, switchboard.ErrNodeGone) || errors.Is(l.err, switchboard.ErrNodeShutdown) {
					t.Errorf("%s: %v, want ErrNodeLost", l.mode, l.err)
				}
				if l.events != lifeEvents {
					t.Errorf("%s: took %d events before the end, want %d", l.mode, l.events, lifeEvents)
				}
				t.Logf("%s learned the node's end %v after the SIGKILL: %v", l.mode, l.at.Sub(killed), l.err)
			case <-time.After(lifeTimeout):
				t.Fatalf("a mode did not learn the node's end in %v", lifeTimeout)
			}
		}
		<-epollDone
		for _, c := range []*switchboard.Conn{h, a, p, r} {
			<-c.Done()
			if !errors.Is(c.Err(), switchboard.ErrNodeLost) {
				t.Errorf("Err: %v", c.Err())
			}
		}
		node.cmd.Wait()
	})
}

// epollUntilEnd runs an epoll loop on c's Fd, taking events with
// TryRecvEvent; took is called after lifeEvents of them. It returns when
// TryRecvEvent says false and Err is set.
func epollUntilEnd(c *switchboard.Conn, took func()) (learned, error) {
	ep, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return learned{}, err
	}
	defer unix.Close(ep)
	if err := unix.EpollCtl(ep, unix.EPOLL_CTL_ADD, c.Fd(), &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(c.Fd())}); err != nil {
		return learned{}, err
	}
	evs := make([]unix.EpollEvent, 1)
	n := 0
	for deadline := time.Now().Add(2 * lifeTimeout); time.Now().Before(deadline); {
		k, err := unix.EpollWait(ep, evs, 100)
		if errors.Is(err, unix.EINTR) || k == 0 {
			continue
		}
		if err != nil {
			return learned{}, err
		}
		for {
			_, ok := c.TryRecvEvent()
			if !ok {
				break
			}
			if n++; n == lifeEvents {
				took()
			}
		}
		if err := c.Err(); err != nil {
			return learned{"poll", n, time.Now(), err}, nil
		}
	}
	return learned{}, errors.New("poll: the epoll loop never saw the end")
}

// TestShutdownVsLost: a node that shuts down (SIGTERM) and one that is
// killed (SIGKILL) end their connections with different errors; both are
// ErrNodeGone.
func TestShutdownVsLost(t *testing.T) {
	for _, tc := range []struct {
		sig      syscall.Signal
		is, isnt error
	}{
		{syscall.SIGTERM, switchboard.ErrNodeShutdown, switchboard.ErrNodeLost},
		{syscall.SIGKILL, switchboard.ErrNodeLost, switchboard.ErrNodeShutdown},
	} {
		t.Run(tc.sig.String(), func(t *testing.T) {
			transports(t, func(t *testing.T, tr switchboard.Transport) {
				node, socket := nodeChild(t)
				c := dialT(t, socket, switchboard.WithTransport(tr))
				node.cmd.Process.Signal(tc.sig)
				select {
				case <-c.Done():
				case <-time.After(lifeTimeout):
					t.Fatal("Done not closed")
				}
				err := c.Err()
				if !errors.Is(err, tc.is) || errors.Is(err, tc.isnt) || !errors.Is(err, switchboard.ErrNodeGone) {
					t.Fatalf("Err %v, want %v (and ErrNodeGone), not %v", err, tc.is, tc.isnt)
				}
				if _, err := c.Call(context.Background(), svcTest, cmdEcho, nil); !errors.Is(err, tc.is) {
					t.Fatalf("call after the end: %v, want %v", err, tc.is)
				}
				node.cmd.Wait()
			})
		})
	}
}

// TestDialBeforeNode: a Dial before the node listens fails with
// ErrNodeNotReady; WithWaitForNode waits for it (bounded by ctx), and
// connects once a node started later listens.
func TestDialBeforeNode(t *testing.T) {
	socket := filepath.Join(publicDir(t), "later.sock")
	_, err := switchboard.Dial(context.Background(), switchboard.WithSocket(socket))
	if !errors.Is(err, switchboard.ErrNodeNotReady) || errors.Is(err, switchboard.ErrRefused) || errors.Is(err, switchboard.ErrNotAuthentic) {
		t.Fatalf("Dial before the node: %v, want ErrNodeNotReady", err)
	}
	short, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if _, err := switchboard.Dial(short, switchboard.WithSocket(socket), switchboard.WithWaitForNode()); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("waiting Dial bounded by ctx: %v, want context.DeadlineExceeded", err)
	}

	type result struct {
		c   *switchboard.Conn
		err error
		at  time.Time
	}
	dialed := make(chan result, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), lifeTimeout)
		defer cancel()
		c, err := switchboard.Dial(ctx, switchboard.WithSocket(socket), switchboard.WithWaitForNode())
		dialed <- result{c, err, time.Now()}
	}()
	time.Sleep(100 * time.Millisecond) // the Dial waits meanwhile
	started := time.Now()
	startRole(t, "node", []string{"SB_SOCKET=" + socket}, nil)
	var r result
	select {
	case r = <-dialed:
	case <-time.After(2 * lifeTimeout):
		t.Fatal("waiting Dial never returned")
	}
	if r.err != nil {
		t.Fatalf("waiting Dial: %v", r.err)
	}
	defer r.c.Close()
	t.Logf("waiting Dial connected %v after the node's process started", r.at.Sub(started))
	if _, err := r.c.Call(context.Background(), svcTest, cmdEcho, []byte("x")); err != nil {
		t.Fatal(err)
	}
}
