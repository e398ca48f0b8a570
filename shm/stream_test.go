package shm

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"slices"
	"sync"
	"testing"
	"testing/iotest"
	"time"

	"golang.org/x/sys/unix"
)

// streamFrames returns frames of the given body sizes, each with its own
// header and body contents, and their encoding as one stream.
func streamFrames(sizes ...int) ([]Frame, []byte) {
	pattern := testPattern()
	for _, n := range sizes {
		for len(pattern) < n+1024 {
			pattern = append(pattern, pattern...)
		}
	}
	var frames []Frame
	var stream []byte
	for i, n := range sizes {
		off := (i * 131) % 1024
		f := Frame{
			Header: Header{Kind: uint16(1 + i%7), Flags: uint16(i), Service: 0xFFFE, Command: uint16(n), Aux: uint32(i * 3), ID: uint64(i)<<40 | uint64(n)},
			Body:   pattern[off : off+n],
		}
		frames = append(frames, f)
		stream = AppendFrame(stream, f.Header, f.Body)
	}
	return frames, stream
}

// randomReader returns the bytes of r in reads of random sizes, zero
// included, from a fixed seed.
type randomReader struct {
	r   io.Reader
	rng *rand.Rand
	max int
}

func (rr *randomReader) Read(p []byte) (int, error) {
	n := rr.rng.IntN(rr.max + 1)
	if n == 0 {
		return 0, nil
	}
	return rr.r.Read(p[:min(n, len(p))])
}

// streamReaders are the ways a stream arrives: a byte at a time, in random
// pieces, with the end of stream on the last data, all at once. Reading
// a byte at a time is for frames of a few KiB at most: Next compacts its
// buffer before each read, a no-op copy of the partial frame onto itself
// that the race detector checks byte by byte.
var streamReaders = []struct {
	name     string
	wrap     func(io.Reader) io.Reader
	bytewise bool
}{
	{"all at once", func(r io.Reader) io.Reader { return r }, false},
	{"one byte at a time", iotest.OneByteReader, true},
	{"halves", iotest.HalfReader, false},
	{"EOF with the data", iotest.DataErrReader, false},
	{"random pieces", func(r io.Reader) io.Reader {
		return &randomReader{r: r, rng: rand.New(rand.NewPCG(1, 2)), max: 3000}
	}, false},
	{"random large pieces", func(r io.Reader) io.Reader {
		return &randomReader{r: r, rng: rand.New(rand.NewPCG(3, 4)), max: 200 << 10}
	}, false},
}

// bytewiseMax is the largest frame body read a byte at a time.
const bytewiseMax = 4 << 10

// readAll reads frames from fr until an error, copying them.
func readAll(t *testing.T, fr *FrameReader, limit int) ([]Frame, error) {
	t.Helper()
	var got []Frame
	for range limit {
		f, err := fr.Next()
		if err != nil {
			return got, err
		}
		got = append(got, Frame{Header: f.Header, Body: bytes.Clone(f.Body)})
	}
	t.Fatalf("more than %d frames", limit)
	return nil, nil
}

func checkFrames(t *testing.T, got, want []Frame) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%d frames, want %d", len(got), len(want))
	}
	for i := range want {
		if got[i].Header != want[i].Header || !bytes.Equal(got[i].Body, want[i].Body) {
			t.Fatalf("frame %d: %+v (%d bytes), want %+v (%d bytes)", i, got[i].Header, len(got[i].Body), want[i].Header, len(want[i].Body))
		}
	}
}

func TestFrameReader(t *testing.T) {
	tests := []struct {
		name    string
		maxBody int
		sizes   []int
	}{
		{"none", 100, nil},
		{"empty bodies", 0, []int{0, 0, 0}},
		{"small", 1000, []int{0, 1, 7, 8, 9, 100, 1000, 3, 999}},
		{"many", 100, manySizes(1000, 100)},
		{"frames of exactly the buffer", 64 << 10, []int{64<<10 - HeaderSize, 5, 64<<10 - HeaderSize}},
		{"frames just over the buffer", 100 << 10, []int{64<<10 - HeaderSize + 1, 64<<10 - HeaderSize + 8, 64<<10 - HeaderSize + 9, 1}},
		{"a buffer's worth before a large frame", 128 << 10, []int{64<<10 - 2*HeaderSize - 8, 1, 128 << 10, 3}},
		{"large frames", 300 << 10, []int{10, 200 << 10, 10, 300 << 10, 300 << 10, 0, 70 << 10, 5}},
		{"small limit", 10, []int{10, 0, 10, 9}},
	}
	for _, tt := range tests {
		frames, stream := streamFrames(tt.sizes...)
		for _, rd := range streamReaders {
			if rd.bytewise && slices.Max(append([]int{0}, tt.sizes...)) > bytewiseMax {
				continue
			}
			t.Run(tt.name+"/"+rd.name, func(t *testing.T) {
				fr := NewFrameReader(rd.wrap(bytes.NewReader(stream)), tt.maxBody)
				got, err := readAll(t, fr, len(frames)+1)
				if err != io.EOF {
					t.Fatalf("after %d frames: %v, want io.EOF", len(got), err)
				}
				checkFrames(t, got, frames)
				if _, err := fr.Next(); err != io.EOF {
					t.Fatalf("Next after the end: %v", err)
				}
				// The buffer grows only for a frame larger than it, and
				// then to room for the largest allowed (twice that
				// leaves room for append's rounding).
				largest := FrameSize(slices.Max(append([]int{0}, tt.sizes...)))
				switch limit := 2 * max(128<<10, FrameSize(tt.maxBody)); {
				case largest <= 64<<10 && cap(fr.buf) != 64<<10:
					t.Fatalf("buffer of %d bytes after frames of %d at most", cap(fr.buf), largest)
				case cap(fr.buf) > limit:
					t.Fatalf("buffer of %d bytes after frames of %d at most, limit %d", cap(fr.buf), largest, tt.maxBody)
				}
			})
		}
	}
}

// manySizes returns n body sizes up to max, from a fixed seed.
func manySizes(n, max int) []int {
	rng := rand.New(rand.NewPCG(5, 6))
	s := make([]int, n)
	for i := range s {
		s[i] = rng.IntN(max + 1)
	}
	return s
}

// TestFrameReaderView: a frame's body is a view of the reader's buffer,
// valid until the next call, that cannot be appended into.
func TestFrameReaderView(t *testing.T) {
	frames, stream := streamFrames(10, 20)
	fr := NewFrameReader(bytes.NewReader(stream), 100)
	f, err := fr.Next()
	if err != nil || !bytes.Equal(f.Body, frames[0].Body) {
		t.Fatalf("first frame: %v", err)
	}
	if cap(f.Body) != len(f.Body) {
		t.Fatalf("body of %d bytes has capacity %d: appending would overwrite the next frame", len(f.Body), cap(f.Body))
	}
}

func TestFrameReaderRefuses(t *testing.T) {
	_, good := streamFrames(5, 6)
	tests := []struct {
		name   string
		stream []byte
		frames int // good frames before the bad one
	}{
		{"body over the limit", rawFrameHeader(1, 101), 0},
		{"body of 4 GiB", rawFrameHeader(1, 1<<32-1), 0},
		{"kind 0", rawFrameHeader(0, 0), 0},
		{"pad kind", rawFrameHeader(KindPad, 8), 0},
		{"after good frames", append(bytes.Clone(good), rawFrameHeader(2, 101)...), 2},
		{"over the limit with its body", AppendFrame(nil, Header{Kind: 1}, make([]byte, 101)), 0},
	}
	for _, tt := range tests {
		for _, rd := range streamReaders {
			t.Run(tt.name+"/"+rd.name, func(t *testing.T) {
				// The header alone must be refused: no read waits for
				// the body it announces.
				fr := NewFrameReader(rd.wrap(bytes.NewReader(tt.stream)), 100)
				got, err := readAll(t, fr, tt.frames+1)
				var fe *FrameError
				if !errors.Is(err, ErrCorrupt) || !errors.As(err, &fe) {
					t.Fatalf("after %d frames: %v, want a *FrameError", len(got), err)
				}
				if len(got) != tt.frames {
					t.Fatalf("%d frames before the error, want %d", len(got), tt.frames)
				}
			})
		}
	}
}

// rawFrameHeader returns a frame header announcing n body bytes, without
// the body.
func rawFrameHeader(kind uint16, n uint32) []byte {
	b := make([]byte, HeaderSize)
	putHeader(b, Header{Kind: kind}, n)
	return b
}

// TestFrameReaderTruncated: a stream that ends gives, after the whole
// frames before its end, io.EOF if it ended between frames, else
// io.ErrUnexpectedEOF.
func TestFrameReaderTruncated(t *testing.T) {
	frames, stream := streamFrames(10, 100, 70000)
	cuts := []int{0, 1, HeaderSize - 1, HeaderSize, HeaderSize + 1, 40, 40 + HeaderSize + 3, 40 + 128 - 1, 40 + 128, len(stream) - 70000, len(stream) - 1}
	for _, cut := range cuts {
		whole, wantErr := 0, io.ErrUnexpectedEOF
		for n, off := 0, 0; n < len(frames); n++ {
			off += FrameSize(len(frames[n].Body))
			if off <= cut {
				whole++
			}
		}
		if sum := frameBytes(frames[:whole]); sum == cut {
			wantErr = io.EOF
		}
		for _, rd := range streamReaders {
			if rd.bytewise && cut > 40+128+bytewiseMax {
				continue
			}
			t.Run(fmt.Sprint(cut, "/", rd.name), func(t *testing.T) {
				fr := NewFrameReader(rd.wrap(bytes.NewReader(stream[:cut])), 100000)
				got, err := readAll(t, fr, len(frames)+1)
				if err != wantErr {
					t.Fatalf("error %v, want %v", err, wantErr)
				}
				checkFrames(t, got, frames[:whole])
			})
		}
	}
	// Another read error is returned as it is.
	boom := errors.New("boom")
	fr := NewFrameReader(io.MultiReader(bytes.NewReader(stream[:50]), iotest.ErrReader(boom)), 1000)
	got, err := readAll(t, fr, 10)
	if err != boom || len(got) != 1 {
		t.Fatalf("%d frames, %v; want 1 and the read error", len(got), err)
	}
}

// FuzzFrameReader reads arbitrary bytes, delivered in fuzzed pieces, with
// a fuzzed limit: the frames must be those DecodeFrame finds in the whole
// input, in order, none over the limit, and the error the one the rest of
// the input deserves.
func FuzzFrameReader(f *testing.F) {
	_, good := streamFrames(0, 1, 100, 8, 300)
	f.Add(good, uint64(0), uint32(300))
	f.Add(good, uint64(1), uint32(299))
	f.Add(good[:len(good)-5], uint64(7), uint32(1000))
	f.Add(append(bytes.Clone(good), rawFrameHeader(3, 5000)...), uint64(3), uint32(1000))
	f.Add(rawFrameHeader(KindPad, 0), uint64(0), uint32(0))
	f.Add([]byte{}, uint64(0), uint32(0))
	_, big := streamFrames(70000, 3)
	f.Add(big, uint64(4000), uint32(70000))
	f.Fuzz(func(t *testing.T, data []byte, seed uint64, maxBody uint32) {
		max := int(maxBody % (1 << 20))
		r := &randomReader{r: bytes.NewReader(data), rng: rand.New(rand.NewPCG(seed, seed)), max: 1 + int(seed%4096)}
		fr := NewFrameReader(r, max)
		off := 0
		for range len(data)/HeaderSize + 2 {
			got, err := fr.Next()
			want, size, werr := DecodeFrame(data[off:], max)
			if err != nil {
				switch {
				case err == io.EOF:
					if off != len(data) {
						t.Fatalf("io.EOF at %d of %d bytes", off, len(data))
					}
				case err == io.ErrUnexpectedEOF:
					if werr != ErrIncomplete || off == len(data) {
						t.Fatalf("io.ErrUnexpectedEOF at %d of %d where DecodeFrame gives %v", off, len(data), werr)
					}
				case errors.Is(err, ErrCorrupt):
					if !errors.Is(werr, ErrCorrupt) {
						t.Fatalf("%v at %d where DecodeFrame gives %v", err, off, werr)
					}
				default:
					t.Fatalf("unexpected error %v", err)
				}
				return
			}
			if len(got.Body) > max {
				t.Fatalf("body of %d bytes over the limit %d", len(got.Body), max)
			}
			if werr != nil || got.Header != want.Header || !bytes.Equal(got.Body, want.Body) {
				t.Fatalf("frame at %d: %+v (%d bytes); DecodeFrame gives %+v (%d bytes), %v", off, got.Header, len(got.Body), want.Header, len(want.Body), werr)
			}
			off += size
		}
		t.Fatalf("more frames than the input holds")
	})
}

// newStreamLink returns the reading side of local rings of the given
// capacities (the bridge's), one producer per ring for the other side, and
// the doorbell SendFrames sleeps on: the data doorbell of every ring. Each
// producer has a space doorbell of its own, so that they may wait at once.
func newStreamLink(t *testing.T, capacities ...int) (cons []*Consumer, prods []*Producer, bell *Doorbell, l *Link) {
	t.Helper()
	specs := make([]RingSpec, len(capacities))
	for i, c := range capacities {
		specs[i] = RingSpec{Capacity: c, DataBell: 0, SpaceBell: 1 + i}
	}
	creator, peer, err := NewLocalLink(specs, WithSpin(0))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		creator.Close()
		peer.Close()
	})
	for i := range capacities {
		cons = append(cons, creator.Consumer(i))
		prods = append(prods, peer.Producer(i))
	}
	return cons, prods, creator.Bell(0), creator
}

// lockChecker is a writer that fails the test's check when its mutex is
// not held during a Write.
type lockChecker struct {
	w        io.Writer
	mu       *sync.Mutex
	unlocked chan struct{}
}

func (lc *lockChecker) Close() error { return lc.w.(io.Closer).Close() }

func (lc *lockChecker) Write(b []byte) (int, error) {
	if lc.mu.TryLock() {
		lc.mu.Unlock()
		select {
		case lc.unlocked <- struct{}{}:
		default:
		}
	}
	return lc.w.Write(b)
}

// runSendFrames starts SendFrames in a goroutine and returns a function
// that waits for its result, failing the test after 5 s. When the test
// ends, the goroutine is stopped (the doorbell closed, and w too if it is
// an io.Closer, in case it is stuck writing) and waited for.
func runSendFrames(t *testing.T, w io.Writer, mu *sync.Mutex, bell *Doorbell, cons ...*Consumer) func() error {
	t.Helper()
	done := make(chan error, 1)
	var wg sync.WaitGroup
	wg.Go(func() { done <- SendFrames(w, mu, bell, cons...) })
	t.Cleanup(func() {
		bell.Close()
		if c, ok := w.(io.Closer); ok {
			c.Close()
		}
		wg.Wait()
	})
	return func() error {
		t.Helper()
		select {
		case err := <-done:
			return err
		case <-time.After(5 * time.Second):
			t.Fatal("SendFrames did not return")
			return nil
		}
	}
}

// TestSendFrames streams frames written to two rings through SendFrames
// and a socket, while another goroutine writes control frames to the same
// socket under the same mutex, and reads them all back in order.
func TestSendFrames(t *testing.T) {
	cons, prods, bell, l := newStreamLink(t, 4096, 1024)
	a, b := connPair(t)
	var mu sync.Mutex
	lc := &lockChecker{w: a, mu: &mu, unlocked: make(chan struct{}, 1)}
	wait := runSendFrames(t, lc, &mu, bell, cons...)

	const n = 2000
	const controls = 50
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	pattern := testPattern()
	body := func(ring, i int) []byte {
		size := (i * 37) % (prods[ring].MaxBody() + 1)
		off := (i + ring*500) % 997
		return pattern[off : off+size]
	}
	var wg sync.WaitGroup
	errc := make(chan error, 3)
	for ring, p := range prods {
		wg.Go(func() {
			for i := range n {
				if err := p.Write(ctx, Header{Kind: 2, Service: uint16(ring), ID: uint64(i)}, body(ring, i)); err != nil {
					errc <- fmt.Errorf("ring %d, frame %d: %w", ring, i, err)
					return
				}
			}
		})
	}
	wg.Go(func() {
		for i := range controls {
			mu.Lock()
			_, err := a.Write(AppendFrame(nil, Header{Kind: 9, ID: uint64(i)}, []byte("control")))
			mu.Unlock()
			if err != nil {
				errc <- err
				return
			}
		}
	})

	fr := NewFrameReader(b, 4096)
	next := make([]int, len(prods))
	nctl := 0
	b.SetReadDeadline(time.Now().Add(5 * time.Second))
	for next[0] < n || next[1] < n || nctl < controls {
		f, err := fr.Next()
		if err != nil {
			t.Fatalf("after %v frames and %d control frames: %v", next, nctl, err)
		}
		if f.Kind == 9 {
			if f.ID != uint64(nctl) || string(f.Body) != "control" {
				t.Fatalf("control frame %d: %+v %q", nctl, f.Header, f.Body)
			}
			nctl++
			continue
		}
		ring := int(f.Service)
		if f.Kind != 2 || ring >= len(prods) || f.ID != uint64(next[ring]) || !bytes.Equal(f.Body, body(ring, next[ring])) {
			t.Fatalf("frame %+v (%d bytes), want ring %d's frame %d", f.Header, len(f.Body), ring, next[min(ring, 1)])
		}
		next[ring]++
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Fatal(err)
	}
	select {
	case <-lc.unlocked:
		t.Fatal("SendFrames wrote without holding the mutex")
	default:
	}
	// Closing the doorbell ends it.
	l.Shutdown()
	if err := wait(); err != nil {
		t.Fatalf("after the doorbell closed: %v", err)
	}
}

// recorder is a writer that keeps what it was given and each write's size,
// and tells when it holds want bytes.
type recorder struct {
	mu    sync.Mutex
	buf   []byte
	sizes []int
	want  int
	full  chan struct{}
}

func (r *recorder) Write(b []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.buf = append(r.buf, b...)
	r.sizes = append(r.sizes, len(b))
	if len(r.buf) >= r.want && r.full != nil {
		close(r.full)
		r.full = nil
	}
	return len(b), nil
}

// TestSendFramesBatches: frames waiting in the ring go out in batches of
// about 256 KiB, byte for byte as AppendFrame encodes them.
func TestSendFramesBatches(t *testing.T) {
	cons, prods, bell, l := newStreamLink(t, 1<<20)
	var want []byte
	for i := range 1000 {
		body := bytes.Repeat([]byte{byte(i)}, 600+i%7)
		if err := prods[0].TryWrite(Header{Kind: 3, ID: uint64(i)}, body); err != nil {
			t.Fatal(i, err)
		}
		want = AppendFrame(want, Header{Kind: 3, ID: uint64(i)}, body)
	}
	rec := &recorder{want: len(want), full: make(chan struct{})}
	full := rec.full
	wait := runSendFrames(t, rec, nil, bell, cons...)
	select {
	case <-full:
	case <-time.After(5 * time.Second):
		t.Fatal("frames not all sent")
	}
	l.Shutdown()
	if err := wait(); err != nil {
		t.Fatal(err)
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if !bytes.Equal(rec.buf, want) {
		t.Fatalf("sent %d bytes differ from the %d bytes of the frames", len(rec.buf), len(want))
	}
	if len(rec.sizes) < 3 {
		t.Fatalf("%d bytes in %d writes, want batches of 256 KiB", len(want), len(rec.sizes))
	}
	for i, n := range rec.sizes {
		if n > 256<<10+FrameSize(prods[0].MaxBody()) {
			t.Fatalf("write %d of %d bytes", i, n)
		}
	}
}

// failWriter fails every write after the first ok of them.
type failWriter struct {
	mu    sync.Mutex
	ok    int
	calls int
	err   error
}

func (w *failWriter) Write(b []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.calls++
	if w.calls > w.ok {
		return 0, w.err
	}
	return len(b), nil
}

// TestSendFramesWriteError: a failed write ends SendFrames with its error,
// whether the frame was there when it started or came while it slept.
func TestSendFramesWriteError(t *testing.T) {
	boom := errors.New("boom")
	for _, early := range []bool{true, false} {
		t.Run(fmt.Sprint("frame first=", early), func(t *testing.T) {
			cons, prods, bell, _ := newStreamLink(t, 1024)
			if early {
				if err := prods[0].TryWrite(Header{Kind: 1}, []byte("x")); err != nil {
					t.Fatal(err)
				}
			}
			w := &failWriter{err: boom}
			wait := runSendFrames(t, w, nil, bell, cons...)
			if !early {
				if err := prods[0].TryWrite(Header{Kind: 1}, []byte("x")); err != nil {
					t.Fatal(err)
				}
			}
			if err := wait(); err != boom {
				t.Fatalf("SendFrames: %v, want the write's error", err)
			}
		})
	}
	// After a write that succeeded and a sleep.
	cons, prods, bell, _ := newStreamLink(t, 1024)
	w := &failWriter{ok: 1, err: boom}
	var mu sync.Mutex
	wait := runSendFrames(t, w, &mu, bell, cons...)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for i := range 2 {
		if err := prods[0].Write(ctx, Header{Kind: 1, ID: uint64(i)}, []byte("x")); err != nil {
			t.Fatal(err)
		}
		// Wait until SendFrames took the frame before writing the next
		// (the second one's write fails: it is never released).
		for i == 0 && prods[0].Fill() != 0 {
			select {
			case <-ctx.Done():
				t.Fatal("frame not taken")
			case <-time.After(100 * time.Microsecond):
			}
		}
	}
	if err := wait(); err != boom {
		t.Fatalf("SendFrames: %v, want the write's error", err)
	}
	if !mu.TryLock() {
		t.Fatal("mutex left locked after a failed write")
	}
}

// TestSendFramesClosed: SendFrames returns nil once its doorbell is
// closed, whether it was asleep or the doorbell was closed before it
// started.
func TestSendFramesClosed(t *testing.T) {
	cons, _, bell, _ := newStreamLink(t, 1024)
	w := &failWriter{err: errors.New("nothing to write")}
	wait := runSendFrames(t, w, nil, bell, cons...)
	bell.Close()
	if err := wait(); err != nil {
		t.Fatalf("after Close: %v", err)
	}

	cons, _, bell, l := newStreamLink(t, 1024)
	l.Shutdown()
	wait = runSendFrames(t, w, nil, bell, cons...)
	if err := wait(); err != nil {
		t.Fatalf("started after Close: %v", err)
	}
}

// TestSendFramesBrokenRing: a ring that breaks its rules ends SendFrames
// with the ring's error, instead of a loop that finds the ring ready and
// nothing to send.
func TestSendFramesBrokenRing(t *testing.T) {
	cons, prods, bell, _ := newStreamLink(t, 1024)
	if err := prods[0].TryWrite(Header{Kind: 1, ID: 1}, []byte("x")); err != nil {
		t.Fatal(err)
	}
	cons[0].r.data[offKind], cons[0].r.data[offKind+1] = 0, 0 // kind 0: no frame is
	var w bytes.Buffer
	err := runSendFrames(t, &w, nil, bell, cons...)()
	if !errors.Is(err, ErrCorrupt) || w.Len() != 0 {
		t.Fatalf("SendFrames on a broken ring: %v, %d bytes written; want ErrCorrupt and nothing", err, w.Len())
	}
}

// frameBytes is the length of frames in a stream.
func frameBytes(frames []Frame) int {
	n := 0
	for _, f := range frames {
		n += FrameSize(len(f.Body))
	}
	return n
}

// TestSocketFrameReader: a socket reader returns the same frames as
// NewFrameReader, whatever pieces they arrive in (halves of frames, frames
// larger than its buffer), and holds no buffer between frames: an idle
// connection costs none.
func TestSocketFrameReader(t *testing.T) {
	frames, stream := streamFrames(append([]int{0, 5, 64<<10 - HeaderSize, 100 << 10, 7}, manySizes(200, 300)...)...)
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	f := os.NewFile(uintptr(fds[0]), "reader")
	c, err := net.FileConn(f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	w := os.NewFile(uintptr(fds[1]), "writer")
	fr, err := NewSocketFrameReader(c.(*net.UnixConn), 128<<10)
	if err != nil {
		t.Fatal(err)
	}
	// Written in pieces that cut frames, with pauses in which the reader
	// waits with the bytes of a frame in part read.
	go func() {
		defer w.Close()
		for rest := stream; len(rest) > 0; {
			n := min(len(rest), 1000+len(rest)%7919)
			if _, err := w.Write(rest[:n]); err != nil {
				return
			}
			rest = rest[n:]
			time.Sleep(100 * time.Microsecond)
		}
	}()
	var got []Frame
	for {
		fm, err := fr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("after %d frames: %v", len(got), err)
		}
		got = append(got, Frame{Header: fm.Header, Body: bytes.Clone(fm.Body)})
	}
	checkFrames(t, got, frames)
	if fr.buf != nil || fr.pooled != nil {
		t.Fatalf("a reader at the end of its stream holds a buffer of %d bytes", cap(fr.buf))
	}
}

// cutWriter writes the first n bytes it is given, then fails.
type cutWriter struct {
	n   int
	err error
}

func (w *cutWriter) Write(b []byte) (int, error) {
	if len(b) <= w.n {
		w.n -= len(b)
		return len(b), nil
	}
	n := w.n
	w.n = 0
	return n, w.err
}

// TestSendFramesCutWrite: a write that fails partway hands over exactly
// the frames it wrote whole: those are released (their producer counts
// them taken), the cut frame and the ones after it are not.
func TestSendFramesCutWrite(t *testing.T) {
	boom := errors.New("boom")
	body := []byte("0123456789")
	size := FrameSize(len(body))
	for _, tc := range []struct {
		name   string
		cut    int // bytes written before the failure
		r0, r1 int // frames of each ring handed over
	}{
		{"none", 0, 0, 0},
		{"inside the first", size / 2, 0, 0},
		{"after three", 3 * size, 3, 0},
		{"inside the fourth", 3*size + 7, 3, 0},
		{"across rings", 6*size + 1, 5, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cons, prods, bell, _ := newStreamLink(t, 4096, 4096)
			for i := range 5 {
				if err := prods[0].TryWrite(Header{Kind: 1, ID: uint64(i)}, body); err != nil {
					t.Fatal(err)
				}
			}
			for i := range 3 {
				if err := prods[1].TryWrite(Header{Kind: 2, ID: uint64(i)}, body); err != nil {
					t.Fatal(err)
				}
			}
			wait := runSendFrames(t, &cutWriter{n: tc.cut, err: boom}, nil, bell, cons...)
			if err := wait(); err != boom {
				t.Fatalf("SendFrames: %v, want the write's error", err)
			}
			if got := prods[0].Fill(); got != (5-tc.r0)*size {
				t.Errorf("ring 0: %d bytes not taken, want %d (%d frames handed over)", got, (5-tc.r0)*size, tc.r0)
			}
			if got := prods[1].Fill(); got != (3-tc.r1)*size {
				t.Errorf("ring 1: %d bytes not taken, want %d (%d frames handed over)", got, (3-tc.r1)*size, tc.r1)
			}
		})
	}
}
