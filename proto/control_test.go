package pb

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/switchboard-ipc/switchboard/shm"
	"golang.org/x/sys/unix"
	gproto "google.golang.org/protobuf/proto"
)

// socketPair returns the two ends of a connected Unix stream socket, each
// with a read deadline so that a read the code should not make fails the
// test instead of hanging it.
func socketPair(t *testing.T) (a, b *net.UnixConn) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	conn := func(fd int, name string) *net.UnixConn {
		f := os.NewFile(uintptr(fd), name)
		c, err := net.FileConn(f)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(5 * time.Second))
		return c.(*net.UnixConn)
	}
	a, b = conn(fds[0], "a"), conn(fds[1], "b")
	t.Cleanup(func() {
		a.Close()
		b.Close()
	})
	return a, b
}

// openFdCount returns the number of descriptors this process has open.
func openFdCount(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// rawHeader returns a frame header announcing a body of n bytes.
func rawHeader(kind uint16, n uint32) []byte {
	b := shm.AppendFrame(nil, shm.Header{Kind: kind})
	binary.LittleEndian.PutUint32(b, n)
	return b
}

func write(t *testing.T, c *net.UnixConn, b []byte) {
	t.Helper()
	if _, err := c.Write(b); err != nil {
		t.Fatal(err)
	}
}

// expectNext reads len(want) bytes from c and checks they are want: the
// bytes that follow what the code under test should have read.
func expectNext(t *testing.T, c *net.UnixConn, want []byte) {
	t.Helper()
	got := make([]byte, len(want))
	if _, err := io.ReadFull(c, got); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("next bytes %q, %v; want %q", got, err, want)
	}
}

var (
	testHello   = controlSeeds[1]
	testWelcome = controlSeeds[2]
)

func TestControlRoundTrip(t *testing.T) {
	a, b := socketPair(t)
	// Every seed message, back to back, then bytes that are not a frame:
	// each read takes one frame and no byte more.
	for _, m := range controlSeeds {
		if err := WriteControl(a, m, nil); err != nil {
			t.Fatal(err)
		}
	}
	write(t, a, []byte("tail"))
	for i, want := range controlSeeds {
		got, err := ReadControl(b)
		if err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		if !gproto.Equal(got, want) {
			t.Fatalf("message %d: got %v, want %v", i, got, want)
		}
	}
	expectNext(t, b, []byte("tail"))
	// The same with ReadControlFds, for frames without descriptors.
	for _, m := range controlSeeds {
		if err := WriteControl(a, m, nil); err != nil {
			t.Fatal(err)
		}
	}
	write(t, a, []byte("tail"))
	for i, want := range controlSeeds {
		got, fds, err := ReadControlFds(b, 4)
		if err != nil || len(fds) != 0 {
			t.Fatalf("message %d: %d fds, %v", i, len(fds), err)
		}
		if !gproto.Equal(got, want) {
			t.Fatalf("message %d: got %v, want %v", i, got, want)
		}
	}
	expectNext(t, b, []byte("tail"))
}

// TestControlFds sends a Welcome with both ends of a pipe attached and
// checks that they arrive as working descriptors of the same pipe.
func TestControlFds(t *testing.T) {
	a, b := socketPair(t)
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	if err := WriteControl(a, testWelcome, []int{int(r.Fd()), int(w.Fd())}); err != nil {
		t.Fatal(err)
	}
	if err := WriteControl(a, testHello, nil); err != nil {
		t.Fatal(err)
	}
	m, fds, err := ReadControlFds(b, 4)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		for _, fd := range fds {
			unix.Close(fd)
		}
	}()
	if !gproto.Equal(m, testWelcome) {
		t.Fatalf("got %v, want the Welcome", m)
	}
	if len(fds) != 2 {
		t.Fatalf("%d descriptors, want 2", len(fds))
	}
	for i, orig := range []*os.File{r, w} {
		var got, want unix.Stat_t
		if err := unix.Fstat(fds[i], &got); err != nil {
			t.Fatalf("received fd %d: %v", i, err)
		}
		if err := unix.Fstat(int(orig.Fd()), &want); err != nil {
			t.Fatal(err)
		}
		if got.Ino != want.Ino || got.Dev != want.Dev {
			t.Fatalf("received fd %d is not the pipe end sent", i)
		}
		if flags, _ := unix.FcntlInt(uintptr(fds[i]), unix.F_GETFD, 0); flags&unix.FD_CLOEXEC == 0 {
			t.Errorf("received fd %d is not close-on-exec", i)
		}
	}
	if _, err := unix.Write(fds[1], []byte("ping")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4)
	if _, err := io.ReadFull(r, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("through the received write end: %q, %v", buf, err)
	}
	// The frame after it is intact.
	if m, err := ReadControl(b); err != nil || !gproto.Equal(m, testHello) {
		t.Fatalf("next frame: %v, %v", m, err)
	}
}

func TestDecodeControl(t *testing.T) {
	hello, err := gproto.Marshal(testHello)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		f    shm.Frame
		ok   bool
	}{
		{"hello", shm.Frame{Header: shm.Header{Kind: KindControl}, Body: hello}, true},
		{"empty", shm.Frame{Header: shm.Header{Kind: KindControl}}, true},
		{"call kind", shm.Frame{Header: shm.Header{Kind: KindCall}, Body: hello}, false},
		{"reply kind", shm.Frame{Header: shm.Header{Kind: KindReply}}, false},
		{"kind 0", shm.Frame{Body: hello}, false},
		{"truncated message", shm.Frame{Header: shm.Header{Kind: KindControl}, Body: hello[:len(hello)-1]}, false},
		{"not protobuf", shm.Frame{Header: shm.Header{Kind: KindControl}, Body: []byte{0xff, 0xff, 0xff}}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := DecodeControl(tt.f)
			if tt.ok != (err == nil) || tt.ok != (m != nil) {
				t.Fatalf("got %v, %v; want ok %v", m, err, tt.ok)
			}
			if tt.ok && len(tt.f.Body) > 0 && !gproto.Equal(m, testHello) {
				t.Fatalf("got %v", m)
			}
		})
	}
}

// TestReadControlRefuses: frames that are not control frames, or announce
// too large a body, fail; a refused header's body is not read, and the
// descriptors that came with it are closed.
func TestReadControlRefuses(t *testing.T) {
	hello, err := gproto.Marshal(testHello)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		frame   []byte
		corrupt bool // refused from its header: errors.Is ErrCorrupt, body not read
	}{
		{"call frame", shm.AppendFrame(nil, shm.Header{Kind: KindCall}, hello), false},
		{"control frame, not protobuf", shm.AppendFrame(nil, shm.Header{Kind: KindControl}, []byte{0xff, 0xff}), false},
		{"body over MaxControl", rawHeader(KindControl, MaxControl+1), true},
		{"body of 4 GiB", rawHeader(KindControl, 1<<32-1), true},
		{"kind 0", rawHeader(0, 10), true},
		{"pad kind", rawHeader(shm.KindPad, 10), true},
	}
	for _, tt := range tests {
		for _, withFds := range []bool{false, true} {
			name := tt.name
			if withFds {
				name += "/fds"
			}
			t.Run(name, func(t *testing.T) {
				a, b := socketPair(t)
				before := openFdCount(t)
				if withFds {
					r, w, err := os.Pipe()
					if err != nil {
						t.Fatal(err)
					}
					if err := shm.SendFds(a, tt.frame, int(r.Fd()), int(w.Fd())); err != nil {
						t.Fatal(err)
					}
					r.Close()
					w.Close()
				} else {
					write(t, a, tt.frame)
				}
				write(t, a, []byte("next"))
				var m *Control
				var err error
				if withFds {
					var fds []int
					m, fds, err = ReadControlFds(b, 4)
					if fds != nil {
						t.Errorf("descriptors %v returned with an error", fds)
					}
				} else {
					m, err = ReadControl(b)
				}
				if err == nil || m != nil {
					t.Fatalf("got %v, %v; want an error", m, err)
				}
				if tt.corrupt && !errors.Is(err, shm.ErrCorrupt) {
					t.Fatalf("error %v does not match ErrCorrupt", err)
				}
				// A refused header's body is not read, a read one is
				// read whole: what follows the frame is still there.
				expectNext(t, b, []byte("next"))
				if after := openFdCount(t); after != before {
					t.Fatalf("%d descriptors open before, %d after", before, after)
				}
			})
		}
	}
}

// TestReadControlMaxSize: a control body of exactly MaxControl bytes is
// read.
func TestReadControlMaxSize(t *testing.T) {
	a, b := socketPair(t)
	m := &Control{Msg: &Control_Hello{Hello: &Hello{ClientName: strings.Repeat("x", MaxControl-4)}}}
	for gproto.Size(m) > MaxControl {
		h := m.GetHello()
		h.ClientName = h.ClientName[1:]
	}
	if n := gproto.Size(m); n != MaxControl {
		t.Fatalf("test message of %d bytes, want %d", n, MaxControl)
	}
	errc := make(chan error, 1)
	go func() { errc <- WriteControl(a, m, nil) }() // larger than the socket buffer may hold
	got, err := ReadControl(b)
	if err != nil || !gproto.Equal(got, m) {
		t.Fatalf("largest control message: %v", err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
}

// TestReadControlEOF: a closed socket reads as io.EOF; a frame cut short
// fails.
func TestReadControlEOF(t *testing.T) {
	hello := shm.AppendFrame(nil, shm.Header{Kind: KindControl}, []byte("\x0a\x02\x08\x01"))
	tests := []struct {
		name string
		sent []byte
		eof  bool // the error must be io.EOF: nothing of a frame was sent; else io.ErrUnexpectedEOF
	}{
		{"nothing", nil, true},
		{"half a header", hello[:10], false},
		{"a header without its body", hello[:shm.HeaderSize], false},
		{"half a body", hello[:len(hello)-4], false},
	}
	for _, tt := range tests {
		for _, fds := range []bool{false, true} {
			name := tt.name
			if fds {
				name += "/fds"
			}
			t.Run(name, func(t *testing.T) {
				a, b := socketPair(t)
				if len(tt.sent) > 0 {
					write(t, a, tt.sent)
				}
				a.Close()
				var m *Control
				var err error
				if fds {
					m, _, err = ReadControlFds(b, 4)
				} else {
					m, err = ReadControl(b)
				}
				if m != nil || err == nil {
					t.Fatalf("got %v, %v", m, err)
				}
				if tt.eof && !errors.Is(err, io.EOF) {
					t.Fatalf("error %v, want io.EOF", err)
				}
				if !tt.eof && !errors.Is(err, io.ErrUnexpectedEOF) {
					t.Fatalf("error %v, want io.ErrUnexpectedEOF", err)
				}
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() {
					t.Fatalf("read timed out: %v", err)
				}
			})
		}
	}
}
