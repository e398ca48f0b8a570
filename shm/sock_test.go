package shm

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func unixPair(t *testing.T) (a, b *os.File) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	return os.NewFile(uintptr(fds[0]), "a"), os.NewFile(uintptr(fds[1]), "b")
}

func TestSendRecvFds(t *testing.T) {
	ac, bc := connPair(t)
	seg, err := CreateSegment("pass", 4096)
	if err != nil {
		t.Fatal(err)
	}
	defer seg.Close()
	bell, err := NewDoorbell()
	if err != nil {
		t.Fatal(err)
	}
	defer bell.Close()
	if err := SendFds(ac, []byte("hello"), seg.Fd(), bell.Fd()); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 16)
	n, fds, err := RecvFds(bc, buf, 4)
	if err != nil || string(buf[:n]) != "hello" || len(fds) != 2 {
		t.Fatalf("got %q, %v, %v", buf[:n], fds, err)
	}
	for _, fd := range fds {
		if flags, _ := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); flags&unix.FD_CLOEXEC == 0 {
			t.Errorf("received fd %d is not close-on-exec", fd)
		}
	}
	peer, err := OpenSegment(fds[0])
	if err != nil {
		t.Fatal(err)
	}
	peer.Close()
	pb, err := DoorbellFromFd(fds[1])
	if err != nil {
		t.Fatal(err)
	}
	pb.Close()
	// A message without descriptors, then end of stream.
	if err := SendFds(ac, []byte("x")); err != nil {
		t.Fatal(err)
	}
	if n, fds, err := RecvFds(bc, buf, 4); err != nil || n != 1 || len(fds) != 0 {
		t.Fatalf("plain message: %d %v %v", n, fds, err)
	}
	ac.Close()
	if _, _, err := RecvFds(bc, buf, 4); err != io.EOF {
		t.Fatalf("after close: %v, want io.EOF", err)
	}
	if err := SendFds(ac, nil, 1); err == nil {
		t.Fatal("empty message sent")
	}
}

// TestRecvFdsClosesExtras checks that descriptors beyond the cap, and
// descriptors in truncated control data, are all closed.
func TestRecvFdsClosesExtras(t *testing.T) {
	for _, send := range []int{3, 8} { // 3: one over the cap; 8: truncated control data
		ac, bc := connPair(t)
		f, err := os.Open("/dev/null")
		if err != nil {
			t.Fatal(err)
		}
		fds := make([]int, send)
		for i := range fds {
			fds[i] = int(f.Fd())
		}
		before := openFds(t)
		if err := SendFds(ac, []byte("m"), fds...); err != nil {
			t.Fatal(err)
		}
		_, got, err := RecvFds(bc, make([]byte, 8), 2)
		if !errors.Is(err, ErrTooManyFds) || got != nil {
			t.Fatalf("sending %d: got %v, %v", send, got, err)
		}
		if after := openFds(t); after != before {
			t.Fatalf("sending %d: %d fds open before, %d after", send, before, after)
		}
		f.Close()
	}
}

func TestPeerCred(t *testing.T) {
	ac, _ := connPair(t)
	cred, err := PeerCred(ac)
	if err != nil {
		t.Fatal(err)
	}
	if cred.PID != int32(os.Getpid()) || cred.UID != uint32(os.Getuid()) || cred.GID != uint32(os.Getgid()) {
		t.Fatalf("cred %+v, want pid %d uid %d gid %d", cred, os.Getpid(), os.Getuid(), os.Getgid())
	}
}

func TestDoorbellFromFdRefusesOthers(t *testing.T) {
	a, b := unixPair(t)
	defer b.Close()
	fd, _ := unix.Dup(int(a.Fd()))
	a.Close()
	before := openFds(t)
	if _, err := DoorbellFromFd(fd); err == nil {
		t.Fatal("socket accepted as a doorbell")
	}
	fd2, _ := unix.Dup(int(b.Fd()))
	if _, err := RingerFromFd(fd2); err == nil {
		t.Fatal("socket accepted as a ringer")
	}
	if after := openFds(t); after != before-1 {
		t.Fatalf("refused fds not closed: %d before, %d after", before, after)
	}
}

func TestDuplexOpenRefuses(t *testing.T) {
	d, err := NewDuplex("refuse", 4096)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if _, err := OpenDuplex([]int{dupFd(t, d.Seg.Fd())}); err == nil {
		t.Fatal("duplex opened from one fd")
	}
	seg, err := CreateSegment("three", 4096, 4096, 4096)
	if err != nil {
		t.Fatal(err)
	}
	defer seg.Close()
	fds := d.Fds()
	fds[0] = seg.Fd()
	dup := make([]int, len(fds))
	for i, fd := range fds {
		dup[i] = dupFd(t, fd)
	}
	if _, err := OpenDuplex(dup); !errors.Is(err, ErrBadSegment) {
		t.Fatalf("3-ring segment accepted as a duplex: %v", err)
	}
}

func connPair(t *testing.T) (*net.UnixConn, *net.UnixConn) {
	t.Helper()
	a, b := unixPair(t)
	ac, bc := fileUnixConn(t, a), fileUnixConn(t, b)
	t.Cleanup(func() { ac.Close(); bc.Close() })
	return ac, bc
}

func fileUnixConn(t *testing.T, f *os.File) *net.UnixConn {
	t.Helper()
	c, err := net.FileConn(f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	return c.(*net.UnixConn)
}

// TestDoorbellFromFdNonblock: an eventfd that arrives blocking is made
// non-blocking (a wait parks in the netpoller, never in read(2)), and one
// that arrives non-blocking stays so; another anonymous descriptor (a
// timerfd, whose inode is the one eventfds share) is refused.
func TestDoorbellFromFdNonblock(t *testing.T) {
	for _, flags := range []int{unix.EFD_CLOEXEC, unix.EFD_CLOEXEC | unix.EFD_NONBLOCK} {
		fd, err := unix.Eventfd(0, flags)
		if err != nil {
			t.Fatal(err)
		}
		d, err := doorbellFromFd(fd)
		if err != nil {
			t.Fatal(err)
		}
		fl, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
		if err != nil || fl&unix.O_NONBLOCK == 0 {
			t.Fatalf("eventfd made with flags %#x: F_GETFL %#x, %v: not non-blocking", flags, fl, err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
		if err := d.Wait(ctx); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("wait on a silent doorbell: %v", err)
		}
		cancel()
		d.Close()
	}
	tfd, err := unix.TimerfdCreate(unix.CLOCK_MONOTONIC, unix.TFD_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := doorbellFromFd(tfd); err == nil {
		t.Fatal("timerfd accepted as a doorbell")
	}
	if _, err := unix.FcntlInt(uintptr(tfd), unix.F_GETFD, 0); err == nil {
		t.Fatal("refused timerfd left open")
	}
}
