package tests

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// notifySocket is a test's stand-in for systemd's notification socket: an
// abstract unixgram socket (NOTIFY_SOCKET=@…) whose datagrams it collects.
type notifySocket struct {
	name string
	conn *net.UnixConn
	msgs chan string
}

func listenNotify(t *testing.T) *notifySocket {
	t.Helper()
	name := fmt.Sprintf("@switchboard-test-%d-%d", os.Getpid(), time.Now().UnixNano())
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: name, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	n := &notifySocket{name: name, conn: c, msgs: make(chan string, 64)}
	done := make(chan struct{})
	go func() { // owned by the test: ends when the cleanup closes the socket
		defer close(done)
		buf := make([]byte, 4096)
		for {
			k, err := c.Read(buf)
			if err != nil {
				return
			}
			n.msgs <- string(buf[:k])
		}
	}()
	t.Cleanup(func() { c.Close(); <-done })
	return n
}

// next returns the next datagram, failing the test after 15s.
func (n *notifySocket) next(t *testing.T) string {
	t.Helper()
	select {
	case m := <-n.msgs:
		return m
	case <-time.After(15 * time.Second):
		t.Fatal("no sd_notify message within 15s")
		return ""
	}
}

// expect reads the next datagram and checks that it holds every line.
func (n *notifySocket) expect(t *testing.T, lines ...string) string {
	t.Helper()
	m := n.next(t)
	got := strings.Split(strings.TrimSuffix(m, "\n"), "\n")
	for _, want := range lines {
		found := false
		for _, g := range got {
			if g == want || (strings.HasSuffix(want, "=") && strings.HasPrefix(g, want)) {
				found = true
			}
		}
		if !found {
			t.Fatalf("sd_notify message %q lacks %q", m, want)
		}
	}
	return m
}

// TestSystemdSocketActivation: the node serves a listening socket passed
// as systemd passes it (fd 3, LISTEN_FDS=1, LISTEN_PID its pid), and tells
// an abstract NOTIFY_SOCKET READY=1 with a STATUS, RELOADING=1 and READY=1
// around SIGHUP, and STOPPING=1 on SIGTERM. The socket file is systemd's:
// the node leaves it in place.
func TestSystemdSocketActivation(t *testing.T) {
	path := filepath.Join(publicDir(t), "activated.sock")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false)
	f, err := ln.File()
	ln.Close() // the node gets the socket through f
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	notify := listenNotify(t)

	d := startDaemon(t, daemonOpts{activate: true, files: []*os.File{f}, env: []string{"NOTIFY_SOCKET=" + notify.name}, noWait: true})
	f.Close()
	ready := notify.expect(t, "READY=1", "STATUS=")
	if !strings.Contains(ready, path) {
		t.Errorf("STATUS does not name the activated socket %s: %q", path, ready)
	}
	r := runCLI(t, nil, "call", "--socket", path, "0xffff", "2", "activated")
	if r.code != 0 || r.stdout != "activated" {
		t.Fatalf("call on the activated socket: exit %d %q %s", r.code, r.stdout, r.stderr)
	}
	if _, err := os.Stat(d.socket); !os.IsNotExist(err) {
		t.Errorf("the node created its own socket %s beside the activated one: %v", d.socket, err)
	}

	d.signal(t, syscall.SIGHUP)
	notify.expect(t, "RELOADING=1", "MONOTONIC_USEC=")
	if m := notify.expect(t, "READY=1", "STATUS="); !strings.Contains(m, "configuration reloaded") {
		t.Errorf("STATUS after the reload does not say so: %q", m)
	}

	if code := d.stop(t); code != 0 {
		t.Fatalf("node exit code %d", code)
	}
	notify.expect(t, "STOPPING=1")
	if _, err := os.Stat(path); err != nil {
		t.Errorf("the activated socket's file is gone after the node stopped: %v", err)
	}
}

// TestSystemdListenPIDForAnother: sockets whose LISTEN_PID names another
// process are not the node's (sd_listen_fds semantics): it ignores them
// and creates its own socket.
func TestSystemdListenPIDForAnother(t *testing.T) {
	path := filepath.Join(publicDir(t), "other.sock")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	f, err := ln.File()
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	d := startDaemon(t, daemonOpts{files: []*os.File{f}, env: []string{"LISTEN_FDS=1", "LISTEN_PID=1"}})
	r := runCLI(t, nil, "call", "--socket", d.socket, "0xffff", "2", "own")
	if r.code != 0 || r.stdout != "own" {
		t.Fatalf("call on the node's own socket: exit %d %q %s", r.code, r.stdout, r.stderr)
	}
}

// pings reads the datagrams for d and returns when each WATCHDOG=1 came;
// it fails the test on any other message.
func (n *notifySocket) pings(t *testing.T, d time.Duration) []time.Time {
	t.Helper()
	var at []time.Time
	end := time.After(d)
	for {
		select {
		case m := <-n.msgs:
			if m != "WATCHDOG=1\n" {
				t.Fatalf("unexpected sd_notify message %q among the pings", m)
			}
			at = append(at, time.Now())
		case <-end:
			return at
		}
	}
}

// TestSystemdWatchdog: with WATCHDOG_USEC (and WATCHDOG_PID its own pid),
// the node sends WATCHDOG=1 every half of it, after READY=1, and none
// after STOPPING=1. The period is generous and the check is on the median
// gap and on pings continuing, not on each gap: under -race on a loaded
// machine one probe may take a while without the node being wedged.
func TestSystemdWatchdog(t *testing.T) {
	notify := listenNotify(t)
	const period = time.Second // WATCHDOG_USEC: pings every 500ms
	d := startDaemon(t, daemonOpts{env: []string{"NOTIFY_SOCKET=" + notify.name, fmt.Sprintf("WATCHDOG_USEC=%d", period.Microseconds())},
		args: []string{"--log-level", "info"}})
	notify.expect(t, "READY=1")
	at := notify.pings(t, 4*time.Second)
	if len(at) < 4 { // 8 expected
		t.Fatalf("%d pings in 4s, want about 8 (every %v)", len(at), period/2)
	}
	gaps := make([]time.Duration, 0, len(at)-1)
	for i := 1; i < len(at); i++ {
		gaps = append(gaps, at[i].Sub(at[i-1]))
	}
	slices.Sort(gaps)
	if med := gaps[len(gaps)/2]; med < period/4 || med > period*3/4 {
		t.Errorf("median gap between pings %v, want about %v (gaps %v)", med, period/2, gaps)
	}
	if last := time.Since(at[len(at)-1]); last > period {
		t.Errorf("no ping in the last %v", last)
	}
	if code := d.stop(t); code != 0 {
		t.Fatalf("node exit code %d", code)
	}
	for {
		m := notify.next(t)
		if strings.Contains(m, "STOPPING=1") {
			break
		}
		if m != "WATCHDOG=1\n" {
			t.Fatalf("unexpected message %q before STOPPING=1", m)
		}
	}
	select {
	case m := <-notify.msgs:
		t.Fatalf("message %q after STOPPING=1", m)
	case <-time.After(500 * time.Millisecond):
	}
}

// TestSystemdWatchdogNoNotifySocket: WATCHDOG_USEC without NOTIFY_SOCKET
// starts no watchdog (there is nothing to ping): no probe connects.
func TestSystemdWatchdogNoNotifySocket(t *testing.T) {
	d := startDaemon(t, daemonOpts{env: []string{"NOTIFY_SOCKET=", "WATCHDOG_USEC=200000"}, args: []string{"--log-level", "info"}})
	d.waitLog(t, "no watchdog", 1)
	time.Sleep(500 * time.Millisecond)
	r := runCLI(t, nil, "status", "--json", "--socket", d.socket)
	if r.code != 0 || !strings.Contains(r.stdout, `"calls": 1,`) { // the status call itself: no probe pinged
		t.Fatalf("status: exit %d, want the one call of status itself (a watchdog probe pings every 100ms):\n%s%s", r.code, r.stdout, r.stderr)
	}
	if strings.Contains(d.log.String(), "watchdog pinging") {
		t.Fatalf("the watchdog started without a notify socket:\n%s", d.log.String())
	}
}

// TestSystemdWatchdogForAnother: WATCHDOG_PID naming another process
// means no watchdog for this one.
func TestSystemdWatchdogForAnother(t *testing.T) {
	notify := listenNotify(t)
	startDaemon(t, daemonOpts{env: []string{"NOTIFY_SOCKET=" + notify.name, "WATCHDOG_USEC=200000", "WATCHDOG_PID=1"}})
	notify.expect(t, "READY=1")
	if at := notify.pings(t, time.Second); len(at) != 0 {
		t.Fatalf("%d pings for a watchdog meant for pid 1", len(at))
	}
}

// TestSystemdWatchdogAtLimit: a node whose handshake slots for its own
// uid are all taken (here by a client that never says Hello) refuses the
// probe with ErrLimitExceeded: that refusal is the accept loop and the
// handshake answering, so the node keeps pinging (a busy node is not a
// wedged one); freed, it takes the probe again. The decision for probes
// that fail or hang is unit-tested in cmd/node (TestProbeOnce).
func TestSystemdWatchdogAtLimit(t *testing.T) {
	notify := listenNotify(t)
	d := startDaemon(t, daemonOpts{env: []string{"NOTIFY_SOCKET=" + notify.name, "WATCHDOG_USEC=1000000"},
		args: []string{"--limits-privileged-handshakes", "1", "--limits-handshakes-per-uid", "1", "--handshake-timeout", "60s", "--log-level", "info"}})
	notify.expect(t, "READY=1")
	if at := notify.pings(t, 1500*time.Millisecond); len(at) < 1 {
		t.Fatalf("%d pings in 1.5s before the limit filled, want about 3", len(at))
	}
	hold, err := net.Dial("unix", d.socket) // takes the handshake slot, says nothing
	if err != nil {
		t.Fatal(err)
	}
	defer hold.Close()
	d.waitLog(t, "handshakes in progress", 1) // the probe was refused
	if at := notify.pings(t, 2500*time.Millisecond); len(at) < 2 {
		t.Fatalf("%d pings in 2.5s while the limit refuses the probe, want about 5", len(at))
	}
	if strings.Contains(d.log.String(), "not pinging systemd") {
		t.Fatalf("the watchdog took a refusal for a wedge:\n%s", d.log.String())
	}
	hold.Close()
	if at := notify.pings(t, 1500*time.Millisecond); len(at) < 1 {
		t.Fatalf("%d pings in 1.5s after the limit freed, want about 3", len(at))
	}
}
