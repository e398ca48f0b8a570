package tests

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/switchboard-ipc/switchboard"
)

// TestStuckHandlerReleasesKilledClient: a handler that ignores its context
// does not keep a killed client's connection. The node announces the end,
// closes the client's descriptors and gives back its shared memory while
// the handler still runs; the handler's result, when it comes, is counted
// late; and the node serves others all along.
func TestStuckHandlerReleasesKilledClient(t *testing.T) {
	transports(t, func(t *testing.T, tr switchboard.Transport) {
		leakCheck(t)
		node, socket := nodeChild(t)
		pid := node.cmd.Process.Pid
		watcher := dialT(t, socket)
		if err := watcher.Subscribe(context.Background(), switchboard.GroupConnections); err != nil {
			t.Fatal(err)
		}
		poolSettled(t, pid, socket)
		baseFds, err := fdsOf(pid) // the node's, and the watcher's connection
		if err != nil {
			t.Fatal(err)
		}
		baseMaps := memfdMaps(t, pid)
		var entered int
		stats := func() (stuck, late, conns int) {
			b, err := watcher.Call(context.Background(), svcTest, cmdStats, nil)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := fmt.Sscan(string(b), &stuck, &late, &conns, &entered); err != nil {
				t.Fatalf("stats %q: %v", b, err)
			}
			return
		}
		_, late0, _ := stats()
		entered0 := entered

		cl := startRole(t, "stuckcall", []string{"SB_SOCKET=" + socket, "SB_TRANSPORT=" + strconv.Itoa(int(tr))}, nil)
		var addr string
		checkFor(t, 5*time.Second, func() error {
			if _, a, ok := strings.Cut(strings.TrimSpace(cl.stdout.String()), "calling "); ok {
				addr = a
				return nil
			}
			return errors.New("client not calling yet")
		})
		checkFor(t, 5*time.Second, func() error {
			if stats(); entered == entered0 {
				return errors.New("the call has not reached the handler yet")
			}
			return nil
		})
		cl.cmd.Process.Kill()
		cl.cmd.Wait()

		// The end is announced although the handler has not returned.
		for {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			e, err := watcher.RecvEvent(ctx)
			cancel()
			if err != nil {
				t.Fatalf("no disconnected notice for %s: %v", addr, err)
			}
			if nt, err := e.Notice(); err == nil && nt.Kind == switchboard.NoticeDisconnected && nt.Member.Address == addr {
				break
			}
		}
		// Its descriptors and shared memory are given back meanwhile.
		checkFor(t, 5*time.Second, func() error {
			fds, err := fdsOf(pid)
			if err != nil {
				return err
			}
			// At most the baseline: the connection nodeChild checked with
			// may still have been closing its last descriptors then.
			if len(fds) > len(baseFds) {
				return fmt.Errorf("node fds %d, baseline %d", len(fds), len(baseFds))
			}
			if m := memfdMaps(t, pid); m > baseMaps {
				return fmt.Errorf("node maps %d memfd segments, baseline %d", m, baseMaps)
			}
			return nil
		})
		if stuck, _, conns := stats(); stuck != 1 || conns != 1 {
			t.Fatalf("stuck handlers %d, connections %d; want 1 handler still running and the watcher alone", stuck, conns)
		}
		// The node serves others while the handler is stuck.
		c := dialT(t, socket, switchboard.WithTransport(tr))
		if got, err := c.Call(context.Background(), svcTest, cmdEcho, []byte("x")); err != nil || string(got) != "x" {
			t.Fatalf("echo while a handler is stuck: %q %v", got, err)
		}
		// The handler returns at last: its result is discarded and counted.
		if _, err := c.Call(context.Background(), svcTest, cmdUnstick, nil); err != nil {
			t.Fatal(err)
		}
		checkFor(t, 5*time.Second, func() error {
			if stuck, late, _ := stats(); stuck != 0 || late != late0+1 {
				return fmt.Errorf("stuck %d late %d, want 0 and %d", stuck, late, late0+1)
			}
			return nil
		})
	})
}

// memfdMaps counts the shared memory segments process pid maps.
func memfdMaps(t *testing.T, pid int) int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/maps", pid))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, l := range strings.Split(string(b), "\n") {
		if strings.Contains(l, "memfd:") {
			n++
		}
	}
	return n
}
