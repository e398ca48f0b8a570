package tests

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/switchboard-ipc/switchboard"
	"golang.org/x/sys/unix"
)

// TestIdleConnectionMemory: a node holding many idle connections spends
// little memory and few descriptors on each. The node is the cmd/node
// daemon (built without the race detector, whose shadow memory would
// swamp the figure); its VmRSS is read before and after this process
// opens idleConns connections that then do nothing. The bound is twice
// the goal of 16 KiB, so that the garbage of the handshakes and the
// runtime's own rounding cannot make it flake; the figure is logged.
func TestIdleConnectionMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("opens 1000 connections")
	}
	const (
		idleConns  = 1000
		maxKiB     = 32 // per connection
		maxShmKiB  = 8  // per connection: the one page of control words, with room
		maxFds     = 4  // per connection, on the node
		fdsPerConn = 6  // on this side, with room to spare
	)
	raiseNoFile(t, idleConns*fdsPerConn+256)
	d := startDaemon(t, daemonOpts{})
	pid := d.cmd.Process.Pid
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	// A first connection warms up what every node sets up once.
	first, err := switchboard.Dial(ctx, switchboard.WithSocket(d.socket))
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	if _, err := first.Call(ctx, switchboard.SystemService, switchboard.SysPing, nil); err != nil {
		t.Fatal(err)
	}
	// The node keeps nodeSpares segments made ahead (its link pool): wait
	// until the pool is full, so that before and after both hold them.
	spares := func() error {
		if n := countMatching(fdsOrFatal(t, pid), "memfd:"); n != nodeSpares {
			return fmt.Errorf("the node holds %d segments, want its %d spares", n, nodeSpares)
		}
		return nil
	}
	checkFor(t, 30*time.Second, spares)
	time.Sleep(200 * time.Millisecond)
	before := memOf(t, pid)
	fds0 := len(fdsOrFatal(t, pid))

	conns := make([]*switchboard.Conn, 0, idleConns)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for range idleConns {
		c, err := switchboard.Dial(ctx, switchboard.WithSocket(d.socket))
		if err != nil {
			t.Fatalf("after %d connections: %v", len(conns), err)
		}
		conns = append(conns, c)
	}
	// Every connection is in the node's table and its handshake is over
	// (the segment's memfd is closed once the Welcome is out, and the pool
	// has made its spares again).
	checkFor(t, 30*time.Second, func() error {
		ni, err := first.NodeInfo(ctx)
		if err != nil {
			return err
		}
		if ni.Connections < idleConns+1 {
			return fmt.Errorf("the node counts %d connections, want %d", ni.Connections, idleConns+1)
		}
		return spares()
	})
	time.Sleep(200 * time.Millisecond)
	after := memOf(t, pid)
	fds := len(fdsOrFatal(t, pid)) - fds0

	per := func(k string) float64 { return float64(after[k]-before[k]) / idleConns }
	t.Logf("node (pid %d) with %d idle connections, per connection: VmRSS %.1f KiB (anonymous %.1f, shared memory %.1f, file %.1f), %.2f descriptors; VmRSS %d → %d KiB",
		pid, idleConns, per("VmRSS"), per("RssAnon"), per("RssShmem"), per("RssFile"), float64(fds)/idleConns, before["VmRSS"], after["VmRSS"])
	if kib := per("VmRSS"); kib > maxKiB {
		t.Errorf("the node spends %.1f KiB of memory per idle connection; want at most %d", kib, maxKiB)
	}
	// The segment's pages the node maps: an idle connection's rings keep
	// their control words in one page.
	if kib := per("RssShmem"); kib > maxShmKiB {
		t.Errorf("the node maps %.1f KiB of shared memory per idle connection; want at most %d", kib, maxShmKiB)
	}
	if f := float64(fds) / idleConns; f > maxFds {
		t.Errorf("the node holds %.2f descriptors per idle connection; want at most %d", f, maxFds)
	}
	// The connections still work.
	for _, c := range []*switchboard.Conn{conns[0], conns[idleConns-1]} {
		if _, err := c.Call(ctx, switchboard.SystemService, switchboard.SysPing, nil); err != nil {
			t.Fatalf("an idle connection: %v", err)
		}
	}
}

// memOf reads the memory lines of /proc/PID/status, in KiB.
func memOf(t *testing.T, pid int) map[string]int64 {
	t.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	m := map[string]int64{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok || !strings.HasSuffix(v, " kB") {
			continue
		}
		n, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(v, " kB")), 10, 64)
		if err == nil {
			m[k] = n
		}
	}
	if _, ok := m["VmRSS"]; !ok {
		t.Fatalf("no VmRSS in /proc/%d/status", pid)
	}
	return m
}

func fdsOrFatal(t *testing.T, pid int) []string {
	t.Helper()
	l, err := fdsOf(pid)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// raiseNoFile raises this process's soft descriptor limit to want, within
// its hard limit, restored when the test ends; it skips the test if the
// hard limit is below want.
func raiseNoFile(t *testing.T, want uint64) {
	t.Helper()
	var old unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &old); err != nil {
		t.Fatal(err)
	}
	if old.Cur >= want {
		return
	}
	if old.Max < want {
		t.Skipf("needs %d descriptors; the hard limit is %d", want, old.Max)
	}
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &unix.Rlimit{Cur: want, Max: old.Max}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Setrlimit(unix.RLIMIT_NOFILE, &old) })
}
