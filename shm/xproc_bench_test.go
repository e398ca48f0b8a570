package shm

import (
	"context"
	"fmt"
	"io"
	"math"
	"runtime"
	"slices"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Cross-process benchmarks. Each starts a child process, pins both
// processes as its name says, and reports:
//
//	PingPong: round-trip latency p50/p99 (ns) of one frame there and back;
//	Stream:   one-way frames/s and bytes/s with batched flushes.
//
// cpus=separate pins this process to CPU 0 and the child to CPU 1;
// cpus=shared pins both to CPU 0. spin waits spin up to 20µs before
// parking; park waits park at once. The baselines (socketpair, eventfd,
// atomic) run in the same process tree for ratios.
//
// Run: go test ./shm -run '^$' -bench 'PingPong|Stream' -count 6

var cpuModes = []struct {
	name          string
	parent, child []int
}{
	{"cpus=separate", []int{0}, []int{1}},
	{"cpus=shared", []int{0}, []int{0}},
}

var spinModes = []struct {
	name string
	spin time.Duration
}{
	{"spin", defaultSpin},
	{"park", 0},
}

// pinForBench pins this process for the benchmark and restores it after.
func pinForBench(b *testing.B, cpus []int) {
	if runtime.NumCPU() < 2 {
		b.Skip("needs two CPUs")
	}
	old, err := pinProcess(cpus)
	if err != nil {
		b.Skipf("cannot pin: %v", err)
	}
	b.Cleanup(func() { restoreAffinity(old) })
}

// latencies records one duration per iteration and reports percentiles.
type latencies []int64

func (l latencies) report(b *testing.B) {
	if len(l) == 0 {
		return
	}
	slices.Sort(l)
	b.ReportMetric(float64(l[len(l)/2]), "p50-ns")
	b.ReportMetric(float64(l[len(l)*99/100]), "p99-ns")
}

func BenchmarkPingPong(b *testing.B) {
	for _, cm := range cpuModes {
		b.Run(cm.name, func(b *testing.B) {
			for _, size := range []int{64, 64 << 10} {
				for _, sm := range spinModes {
					b.Run(fmt.Sprintf("size=%d/ring-%s", size, sm.name), func(b *testing.B) {
						benchRingPingPong(b, cm.parent, cm.child, size, sm.spin)
					})
				}
				b.Run(fmt.Sprintf("size=%d/socketpair", size), func(b *testing.B) {
					benchSocketPingPong(b, cm.parent, cm.child, size)
				})
			}
			b.Run("eventfd", func(b *testing.B) { benchEventfdPingPong(b, cm.parent, cm.child) })
			b.Run("eventfd-netpoll", func(b *testing.B) { benchDoorbellPingPong(b, cm.parent, cm.child) })
			if cm.name == "cpus=separate" { // a pure spin on one CPU only measures the scheduler's time slice
				b.Run("atomic", func(b *testing.B) { benchAtomicPingPong(b, cm.parent, cm.child) })
			}
		})
	}
}

func benchRingPingPong(b *testing.B, parent, childCPUs []int, size int, spin time.Duration) {
	pinForBench(b, parent)
	d, err := NewDuplex("bench", 1<<20, WithSpin(spin))
	if err != nil {
		b.Fatal(err)
	}
	defer d.Close()
	c := startChild(b, "echo", childParams{Spin: spin, CPUs: childCPUs}, d.Fds()...)
	ctx := context.Background()
	payload := make([]byte, size)
	lat := make(latencies, 0, 1<<16)
	b.SetBytes(int64(2 * size))
	b.ReportAllocs()
	for b.Loop() {
		t0 := time.Now()
		if err := d.Tx.Write(ctx, Header{Kind: kindData}, payload); err != nil {
			b.Fatal(err)
		}
		if err := d.Rx.Wait(ctx); err != nil {
			b.Fatal(err)
		}
		if _, err := d.Rx.Next(); err != nil {
			b.Fatal(err)
		}
		d.Rx.Release()
		lat = append(lat, int64(time.Since(t0)))
	}
	lat.report(b)
	if err := d.Tx.Write(ctx, Header{Kind: kindStop}); err != nil {
		b.Fatal(err)
	}
	c.wait(b)
}

func benchSocketPingPong(b *testing.B, parent, childCPUs []int, size int) {
	pinForBench(b, parent)
	c := startChild(b, "socketecho", childParams{Size: size, CPUs: childCPUs, Capture: true})
	buf := make([]byte, size)
	lat := make(latencies, 0, 1<<16)
	b.SetBytes(int64(2 * size))
	b.ReportAllocs()
	for b.Loop() {
		t0 := time.Now()
		if _, err := c.sock.Write(buf); err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadFull(c.sock, buf); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, int64(time.Since(t0)))
	}
	lat.report(b)
	c.sock.CloseWrite()
	c.wait(b)
}

// benchEventfdPingPong is the bare wake-up reference: two blocking eventfds,
// each side on a locked OS thread in read(2), no ring and no netpoller.
func benchEventfdPingPong(b *testing.B, parent, childCPUs []int) {
	pinForBench(b, parent)
	var fds [2]int
	for i := range fds {
		fd, err := unix.Eventfd(0, unix.EFD_CLOEXEC)
		if err != nil {
			b.Fatal(err)
		}
		fds[i] = fd
		defer unix.Close(fd)
	}
	c := startChild(b, "eventfd", childParams{CPUs: childCPUs}, fds[0], fds[1])
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var buf [8]byte
	lat := make(latencies, 0, 1<<16)
	for b.Loop() {
		t0 := time.Now()
		if _, err := unix.Write(fds[0], one[:]); err != nil {
			b.Fatal(err)
		}
		if _, err := unix.Read(fds[1], buf[:]); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, int64(time.Since(t0)))
	}
	lat.report(b)
	stop := [8]byte{2}
	unix.Write(fds[0], stop[:])
	c.wait(b)
}

// benchDoorbellPingPong is the same wake-up through Go's netpoller: two
// Doorbells, no ring. The gap to benchEventfdPingPong is the runtime's.
func benchDoorbellPingPong(b *testing.B, parent, childCPUs []int) {
	pinForBench(b, parent)
	ping, pong := newBells(b)
	c := startChild(b, "doorbell", childParams{CPUs: childCPUs}, ping.Fd(), pong.Fd())
	ctx := context.Background()
	lat := make(latencies, 0, 1<<16)
	b.ReportAllocs()
	for b.Loop() {
		t0 := time.Now()
		if err := ping.Ring(); err != nil {
			b.Fatal(err)
		}
		if err := pong.Wait(ctx); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, int64(time.Since(t0)))
	}
	lat.report(b)
	c.sock.Close() // the child's doorbells stay open; closing its socket ends it
	c.cmd.Wait()
}

// benchAtomicPingPong is the physical floor: one atomic word in a shared
// page, both sides spinning.
func benchAtomicPingPong(b *testing.B, parent, childCPUs []int) {
	pinForBench(b, parent)
	seg, err := CreateSegment("atomic", MinRingCapacity)
	if err != nil {
		b.Fatal(err)
	}
	defer seg.Close()
	c := startChild(b, "atomic", childParams{CPUs: childCPUs}, seg.Fd())
	ctl, _ := seg.Ring(0)
	w := atomicWord(ctl, offHead)
	lat := make(latencies, 0, 1<<16)
	v := uint64(0)
	for b.Loop() {
		t0 := time.Now()
		w.Store(v + 1)
		for w.Load() != v+2 {
		}
		v += 2
		lat = append(lat, int64(time.Since(t0)))
	}
	lat.report(b)
	w.Store(math.MaxUint64)
	c.wait(b)
}

func BenchmarkStream(b *testing.B) {
	for _, cm := range cpuModes {
		b.Run(cm.name, func(b *testing.B) {
			for _, size := range []int{64, 64 << 10} {
				for _, sm := range spinModes {
					b.Run(fmt.Sprintf("size=%d/%s", size, sm.name), func(b *testing.B) {
						benchStream(b, cm.parent, cm.child, size, sm.spin, false)
					})
				}
				b.Run(fmt.Sprintf("size=%d/park-copy", size), func(b *testing.B) {
					benchStream(b, cm.parent, cm.child, size, 0, true)
				})
			}
		})
	}
}

// benchStream streams frames to a sink child. The sink takes zero-copy
// views and does not read the bodies, unless copy is set: then it copies
// each body out (Consumer.Read), as a receiver that keeps the bytes would.
func benchStream(b *testing.B, parent, childCPUs []int, size int, spin time.Duration, copy bool) {
	pinForBench(b, parent)
	capacity := 1 << 20
	if size > 4096 {
		capacity = 4 << 20
	}
	d, err := NewDuplex("bench", capacity, WithSpin(spin))
	if err != nil {
		b.Fatal(err)
	}
	defer d.Close()
	c := startChild(b, "sink", childParams{Spin: spin, CPUs: childCPUs, Copy: copy}, d.Fds()...)
	ctx := context.Background()
	payload := make([]byte, size)
	h := Header{Kind: kindData}
	b.SetBytes(int64(size))
	b.ReportAllocs()
	start := time.Now()
	n := 0
	for b.Loop() {
		err := d.Tx.Append(h, payload)
		if err == ErrRingFull {
			if err = d.Tx.WaitSpace(ctx, size); err == nil {
				err = d.Tx.Append(h, payload)
			}
		}
		if err != nil {
			b.Fatal(err)
		}
		if n++; n%32 == 0 {
			d.Tx.Flush()
		}
	}
	if err := d.Tx.Write(ctx, Header{Kind: kindStop}); err != nil {
		b.Fatal(err)
	}
	if err := d.Rx.Wait(ctx); err != nil {
		b.Fatal(err)
	}
	ack, err := d.Rx.Next()
	if err != nil || ack.Kind != kindAck {
		b.Fatalf("ack: %+v %v", ack.Header, err)
	}
	el := time.Since(start).Seconds()
	if ack.ID != uint64(n) {
		b.Fatalf("child received %d frames, sent %d", ack.ID, n)
	}
	b.ReportMetric(float64(n)/el, "frames/s")
	b.ReportMetric(float64(n)*float64(size)/el/1e9, "GB/s")
	c.wait(b)
}
