package shm

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Cross-process tests re-execute the test binary as a child (the os/exec
// helper pattern). The child finds its role in SHM_TEST_CHILD, its end of a
// socketpair at fd 3, and its parameters and descriptors in the first
// message on that socket. It exits when the socket closes, so a dead parent
// leaves no child behind.

const childEnv = "SHM_TEST_CHILD"

func TestMain(m *testing.M) {
	if role := os.Getenv(childEnv); role != "" {
		os.Exit(childMain(role))
	}
	os.Exit(m.Run())
}

// childParams travel as JSON in the setup message.
type childParams struct {
	Spin    time.Duration
	N       int   // frames to exchange
	Size    int   // payload size for fixed-size roles
	CPUs    []int // pin the child to these CPUs
	Capture bool  // role uses the socket for data: do not treat it as the parent-death pipe
	Copy    bool  // sink: copy each body out instead of only viewing it
}

// Frame kinds used by the test protocols.
const (
	kindData uint16 = 1
	kindStop uint16 = 2
	kindAck  uint16 = 3
)

type child struct {
	cmd  *exec.Cmd
	sock *net.UnixConn
}

func socketpair(t testing.TB) (*net.UnixConn, *os.File) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	pf := os.NewFile(uintptr(fds[0]), "parent")
	c, err := net.FileConn(pf)
	pf.Close()
	if err != nil {
		t.Fatal(err)
	}
	return c.(*net.UnixConn), os.NewFile(uintptr(fds[1]), "child")
}

// startChild runs the test binary in role, sends it params and fds, and
// registers cleanup: the child is killed and waited for if still running.
func startChild(t testing.TB, role string, params childParams, fds ...int) *child {
	t.Helper()
	sock, cf := socketpair(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+role)
	cmd.ExtraFiles = []*os.File{cf}
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGQUIT) } // a hung child dumps its stacks
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatal(err)
	}
	cf.Close()
	c := &child{cmd: cmd, sock: sock}
	t.Cleanup(func() {
		sock.Close()
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			cmd.Wait()
		}
		cancel()
	})
	msg, _ := json.Marshal(params)
	if err := SendFds(sock, msg, fds...); err != nil {
		t.Fatal(err)
	}
	// The child answers one byte once set up, so that nothing the parent
	// sends later is read as part of the setup message.
	var ready [1]byte
	if _, err := io.ReadFull(sock, ready[:]); err != nil {
		t.Fatalf("child setup: %v", err)
	}
	return c
}

// wait waits for the child and fails the test if it did not exit 0.
func (c *child) wait(t testing.TB) {
	t.Helper()
	if err := c.cmd.Wait(); err != nil {
		t.Fatalf("child: %v", err)
	}
}

func childMain(role string) int {
	f := os.NewFile(3, "sock")
	fc, err := net.FileConn(f)
	f.Close()
	if err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		return 2
	}
	sock := fc.(*net.UnixConn)
	buf := make([]byte, 4096)
	n, fds, err := RecvFds(sock, buf, 8)
	if err != nil {
		fmt.Fprintln(os.Stderr, "child: setup:", err)
		return 2
	}
	var p childParams
	if err := json.Unmarshal(buf[:n], &p); err != nil {
		fmt.Fprintln(os.Stderr, "child: params:", err)
		return 2
	}
	if len(p.CPUs) > 0 {
		if _, err := pinProcess(p.CPUs); err != nil {
			fmt.Fprintln(os.Stderr, "child: pin:", err)
			return 2
		}
	}
	if _, err := sock.Write([]byte{'R'}); err != nil {
		return 2
	}
	if !p.Capture {
		go func() { // parent-death pipe
			io.Copy(io.Discard, sock)
			os.Exit(3)
		}()
	}
	if err := runChild(role, p, fds, sock); err != nil {
		fmt.Fprintf(os.Stderr, "child %s: %v\n", role, err)
		return 1
	}
	return 0
}

func runChild(role string, p childParams, fds []int, sock *net.UnixConn) error {
	ctx := context.Background()
	switch role {
	case "socketecho":
		buf := make([]byte, p.Size)
		for {
			if _, err := io.ReadFull(sock, buf); err != nil {
				if err == io.EOF {
					return nil
				}
				return err
			}
			if _, err := sock.Write(buf); err != nil {
				return err
			}
		}
	case "atomic":
		seg, err := OpenSegment(fds[0])
		if err != nil {
			return err
		}
		ctl, _ := seg.Ring(0)
		w := atomicWord(ctl, offHead)
		for last := uint64(0); ; {
			v := w.Load()
			if v == math.MaxUint64 {
				return nil
			}
			if v != last && v%2 == 1 {
				last = v + 1
				w.Store(last)
			}
		}
	case "eventfd":
		runtime.LockOSThread()
		var b [8]byte
		for {
			if _, err := unix.Read(fds[0], b[:]); err != nil {
				return err
			}
			if b[0] == 2 {
				return nil
			}
			if _, err := unix.Write(fds[1], one[:]); err != nil {
				return err
			}
		}
	case "doorbell":
		ping, err := DoorbellFromFd(fds[0])
		if err != nil {
			return err
		}
		pong, err := DoorbellFromFd(fds[1])
		if err != nil {
			return err
		}
		for {
			if err := ping.Wait(ctx); err != nil {
				return err
			}
			if err := pong.Ring(); err != nil {
				return err
			}
		}
	}
	d, err := OpenDuplex(fds, WithSpin(p.Spin))
	if err != nil {
		return err
	}
	defer d.Close()
	switch role {
	case "exchange":
		var wg sync.WaitGroup
		var sendErr error
		wg.Go(func() { sendErr = sendMixed(ctx, d.Tx, 1, p.N) })
		recvErr := recvMixed(ctx, d.Rx, 0, p.N)
		wg.Wait()
		return errors.Join(sendErr, recvErr)
	case "echo":
		for {
			if err := d.Rx.Wait(ctx); err != nil {
				return err
			}
			f, err := d.Rx.Next()
			if err != nil {
				return err
			}
			if f.Kind == kindStop { // report how many waits a re-check rescued
				return d.Tx.Write(ctx, Header{Kind: kindAck, ID: d.Rescued()})
			}
			if err := d.Tx.Write(ctx, f.Header, f.Body); err != nil {
				return err
			}
		}
	case "sink":
		var frames, bytes uint64
		var buf []byte
		for {
			if err := d.Rx.Wait(ctx); err != nil {
				return err
			}
			for {
				f, err := d.Rx.Next()
				if err == ErrRingEmpty {
					break
				}
				if err != nil {
					return err
				}
				if f.Kind == kindStop {
					return d.Tx.Write(ctx, Header{Kind: kindAck, ID: frames, Aux: uint32(bytes >> 20)})
				}
				frames++
				bytes += uint64(len(f.Body))
				if p.Copy {
					buf = append(buf[:0], f.Body...)
				}
			}
		}
	case "stream":
		pattern := testPattern()
		for i := 0; ; i++ {
			size := 1 + i%4000
			if err := d.Tx.Write(ctx, Header{Kind: kindData, ID: uint64(i)}, pattern[:size]); err != nil {
				return err
			}
		}
	}
	return fmt.Errorf("unknown role %q", role)
}

// mixedSize returns the size of frame i in direction dir: log-uniform from
// 1 byte to 64 KiB, so small frames dominate and every scale is covered.
func mixedSize(rng *rand.Rand, i int) int {
	if i%1000 == 999 {
		return 64 << 10
	}
	return int(math.Exp2(rng.Float64() * 16))
}

var sharedPattern = sync.OnceValue(testPattern)

func patternAt(i, size int) []byte {
	off := (i * 7919) % (64 << 10)
	return sharedPattern()[off : off+size]
}

func sendMixed(ctx context.Context, p *Producer, dir uint64, n int) error {
	rng := rand.New(rand.NewPCG(dir, 7))
	for i := 0; i < n; i++ {
		size := mixedSize(rng, i)
		err := p.Append(Header{Kind: kindData, Service: uint16(dir), ID: uint64(i), Aux: uint32(size)}, patternAt(i, size))
		if err == ErrRingFull {
			if err = p.WaitSpace(ctx, size); err == nil {
				err = p.Append(Header{Kind: kindData, Service: uint16(dir), ID: uint64(i), Aux: uint32(size)}, patternAt(i, size))
			}
		}
		if err != nil {
			return fmt.Errorf("send %d: %w", i, err)
		}
		if i%16 == 15 {
			p.Flush()
		}
	}
	p.Flush()
	return nil
}

func recvMixed(ctx context.Context, c *Consumer, dir uint64, n int) error {
	rng := rand.New(rand.NewPCG(dir, 7))
	for i := 0; i < n; {
		if err := c.Wait(ctx); err != nil {
			return fmt.Errorf("recv %d: %w", i, err)
		}
		for batch := 0; i < n && batch < 64; batch++ {
			f, err := c.Next()
			if err == ErrRingEmpty {
				break
			}
			if err != nil {
				return fmt.Errorf("recv %d: %w", i, err)
			}
			size := mixedSize(rng, i)
			if f.Kind != kindData || f.Service != uint16(dir) || f.ID != uint64(i) || int(f.Aux) != size || len(f.Body) != size {
				return fmt.Errorf("frame %d: header %+v, %d bytes, want %d", i, f.Header, len(f.Body), size)
			}
			if !bytes.Equal(f.Body, patternAt(i, size)) {
				return fmt.Errorf("frame %d: body differs", i)
			}
			i++
		}
		c.Release()
	}
	return nil
}

// testExchange streams n frames of mixed sizes each way between this process
// and a child, every byte checked on both sides.
func testExchange(t *testing.T, n int) {
	d, err := NewDuplex("exchange", 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	c := startChild(t, "exchange", childParams{N: n, Spin: DefaultSpin()}, d.Fds()...)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	start := time.Now()
	var wg sync.WaitGroup
	var sendErr error
	wg.Go(func() { sendErr = sendMixed(ctx, d.Tx, 0, n) })
	recvErr := recvMixed(ctx, d.Rx, 1, n)
	wg.Wait()
	if err := errors.Join(sendErr, recvErr); err != nil {
		t.Fatal(err)
	}
	c.wait(t)
	var total int
	rng := rand.New(rand.NewPCG(0, 7))
	for i := 0; i < n; i++ {
		total += mixedSize(rng, i)
	}
	el := time.Since(start)
	t.Logf("%d frames, %.1f MB each way, verified, in %v (%.2f GB/s each way)", n, float64(total)/1e6, el, float64(total)/el.Seconds()/1e9)
}

func TestCrossProcessExchange(t *testing.T) { testExchange(t, 20_000) }

func openFds(t testing.TB) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// TestCrossProcessPeerKilled kills a streaming child with SIGKILL and checks
// that the parent notices through the socket within a second, stops its
// reader, and gets every descriptor back.
func TestCrossProcessPeerKilled(t *testing.T) {
	before := openFds(t)
	d, err := NewDuplex("killed", 1<<16)
	if err != nil {
		t.Fatal(err)
	}
	c := startChild(t, "stream", childParams{Spin: DefaultSpin()}, d.Fds()...)

	var notice time.Time
	watcher := make(chan struct{})
	go func() { // the link's liveness watcher: EOF on the socket means the peer is gone
		defer close(watcher)
		io.Copy(io.Discard, c.sock)
		notice = time.Now()
		d.Shutdown()
	}()
	reader := make(chan error, 1)
	var frames int
	var streamed atomic.Bool // a frame came
	go func() {
		pattern := testPattern()
		for {
			if err := d.Rx.Wait(context.Background()); err != nil {
				reader <- err
				return
			}
			for {
				f, err := d.Rx.Next()
				if err == ErrRingEmpty {
					break
				}
				if err != nil {
					reader <- err
					return
				}
				if f.ID != uint64(frames) || !bytes.Equal(f.Body, pattern[:1+frames%4000]) {
					reader <- fmt.Errorf("frame %d corrupt", frames)
					return
				}
				frames++
				streamed.Store(true)
			}
		}
	}()
	// Let the stream run, then kill the child mid-stream.
	for deadline := time.Now().Add(30 * time.Second); !streamed.Load(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("no frame streamed in 30 s")
		}
	}
	time.Sleep(50 * time.Millisecond)
	killed := time.Now()
	if err := c.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-reader:
		if !errors.Is(err, ErrClosed) {
			t.Fatalf("reader ended with %v, want ErrClosed", err)
		}
	case <-time.After(10 * time.Second): // a failure bound: the figure is logged below
		t.Fatal("reader still running 10 s after the peer was killed")
	}
	<-watcher
	if lag := notice.Sub(killed); lag > 10*time.Second {
		t.Fatalf("peer death noticed after %v", lag)
	}
	t.Logf("%d frames before the kill; death noticed after %v", frames, notice.Sub(killed))
	c.cmd.Wait()
	c.sock.Close()
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if after := openFds(t); after != before {
		t.Fatalf("open fds: %d before, %d after", before, after)
	}
}

// pinProcess sets the CPU affinity of every thread of this process (threads
// created later inherit it) and GOMAXPROCS to match, as if the process had
// been started under taskset, and returns the previous mask.
func pinProcess(cpus []int) (unix.CPUSet, error) {
	var old, set unix.CPUSet
	if err := unix.SchedGetaffinity(0, &old); err != nil {
		return old, err
	}
	for _, c := range cpus {
		set.Set(c)
	}
	if err := setProcessAffinity(&set); err != nil {
		return old, err
	}
	runtime.GOMAXPROCS(len(cpus))
	return old, nil
}

// restoreAffinity undoes pinProcess.
func restoreAffinity(old unix.CPUSet) {
	setProcessAffinity(&old)
	runtime.GOMAXPROCS(old.Count())
}

func setProcessAffinity(set *unix.CPUSet) error {
	ents, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return err
	}
	for _, e := range ents {
		tid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if err := unix.SchedSetaffinity(tid, set); err != nil && !errors.Is(err, unix.ESRCH) {
			return err
		}
	}
	return nil
}
