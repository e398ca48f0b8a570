package tests

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/switchboard-ipc/switchboard"
	"golang.org/x/sys/unix"
)

// nameLog collects one name client's events as lines.
type nameLog struct {
	mu    sync.Mutex
	lines []string
}

func (l *nameLog) add(e switchboard.NameEvent) {
	l.mu.Lock()
	defer l.mu.Unlock()
	switch e.Kind {
	case switchboard.NameOwner:
		l.lines = append(l.lines, "owner "+e.Owner)
	case switchboard.NameOwnerGone:
		l.lines = append(l.lines, "gone "+e.Owner)
	case switchboard.NameNotification:
		l.lines = append(l.lines, "note "+string(e.Payload))
	}
}

func (l *nameLog) get() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.lines...)
}

// TestNameClientHandover: the name client across an owner handover, in
// each of its three modes (callbacks, a poll loop on its Fd, Next), each
// on a Conn of its own. Owner A serves svc.greet with standby B; each
// answer is published to svc.greet.events first. The clients see A, get
// A's answers and notifications; A is killed with SIGKILL, and they see A
// gone, then B, and get B's answers and notifications.
func TestNameClientHandover(t *testing.T) {
	_, socket := nodeChild(t)
	env := []string{"SB_MODE=echo", "SB_NAME=svc.greet", "SB_NOTIFY=svc.greet.events"}
	a, addrA := startPeer(t, "peer", socket, env...)
	_, addrB := startPeer(t, "peer", socket, env...)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	opts := switchboard.NameClientOptions{Notifications: "svc.greet.events"}
	logs := map[string]*nameLog{"callbacks": {}, "poll": {}, "sync": {}}

	cbOpts := opts
	cbOpts.OnOwner = func(addr string) {
		logs["callbacks"].add(switchboard.NameEvent{Kind: switchboard.NameOwner, Owner: addr})
	}
	cbOpts.OnOwnerGone = func(old string) {
		logs["callbacks"].add(switchboard.NameEvent{Kind: switchboard.NameOwnerGone, Owner: old})
	}
	cbOpts.OnNotification = logs["callbacks"].add
	cb, err := switchboard.NewNameClient(ctx, dialT(t, socket), "svc.greet", cbOpts)
	if err != nil {
		t.Fatal(err)
	}
	defer cb.Close()

	poll, err := switchboard.NewNameClient(ctx, dialT(t, socket), "svc.greet", opts)
	if err != nil {
		t.Fatal(err)
	}
	defer poll.Close()
	stopPoll := make(chan struct{})
	var loops sync.WaitGroup
	loops.Go(func() { // a poll loop of the application's own
		ep, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
		if err != nil {
			t.Error(err)
			return
		}
		defer unix.Close(ep)
		if err := unix.EpollCtl(ep, unix.EPOLL_CTL_ADD, poll.Fd(), &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(poll.Fd())}); err != nil {
			t.Error(err)
			return
		}
		evs := make([]unix.EpollEvent, 1)
		for {
			select {
			case <-stopPoll:
				return
			default:
			}
			if n, _ := unix.EpollWait(ep, evs, 50); n > 0 {
				for e, ok := poll.TryNext(); ok; e, ok = poll.TryNext() {
					logs["poll"].add(e)
				}
			}
		}
	})

	syncNC, err := switchboard.NewNameClient(ctx, dialT(t, socket), "svc.greet", opts)
	if err != nil {
		t.Fatal(err)
	}
	defer syncNC.Close()
	loops.Go(func() {
		for {
			e, err := syncNC.Next(ctx)
			if err != nil {
				return
			}
			logs["sync"].add(e)
		}
	})
	defer func() { close(stopPoll); cancel(); loops.Wait() }()

	expect := func(want []string) {
		t.Helper()
		checkFor(t, 10*time.Second, func() error {
			for mode, l := range logs {
				if got := l.get(); strings.Join(got, "\n") != strings.Join(want, "\n") {
					return fmt.Errorf("%s: %q, want %q", mode, got, want)
				}
			}
			return nil
		})
	}
	want := []string{"owner " + addrA}
	expect(want)
	for _, nc := range []*switchboard.NameClient{cb, poll, syncNC} {
		if nc.Owner() != addrA {
			t.Fatalf("Owner %q, want %s", nc.Owner(), addrA)
		}
	}
	if r, err := syncNC.Request(ctx, []byte("one")); err != nil || string(r) != addrA+":one" {
		t.Fatalf("request to A: %q %v", r, err)
	}
	want = append(want, "note "+addrA+":one")
	expect(want)

	killed := time.Now()
	kill9(a)
	want = append(want, "gone "+addrA, "owner "+addrB)
	expect(want)
	t.Logf("handover seen by all three %v after SIGKILL", time.Since(killed))
	done := make(chan *switchboard.AsyncCall, 1)
	cb.Go(ctx, []byte("two"), done)
	if ac := <-done; ac.Err != nil || string(ac.Reply) != addrB+":two" {
		t.Fatalf("request to B: %q %v", ac.Reply, ac.Err)
	}
	want = append(want, "note "+addrB+":two")
	expect(want)
	if poll.Owner() != addrB {
		t.Fatalf("Owner %q, want %s", poll.Owner(), addrB)
	}
}
