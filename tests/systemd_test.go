package tests

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
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
