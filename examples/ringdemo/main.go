// Command ringdemo shows two processes exchanging frames through a sealed
// memfd ring pair, and prints the rates it measures.
//
//	go run ./examples/ringdemo [-n frames] [-duration 2s]
//
// The program runs as the parent, creates the shared segment and its
// doorbells, starts a copy of itself as the child, and passes it the
// descriptors over a Unix socketpair (SCM_RIGHTS). It then measures one-way
// streaming to the child at a few frame sizes, and round trips (the child
// echoes each frame).
package main

import (
	"context"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"time"

	"github.com/switchboard-ipc/switchboard/shm"
)

const (
	kindData = 1 + iota
	kindEcho
	kindStop
	kindAck
)

func main() {
	if os.Getenv("RINGDEMO_CHILD") == "1" {
		if err := child(); err != nil {
			fmt.Fprintln(os.Stderr, "ringdemo child:", err)
			os.Exit(1)
		}
		return
	}
	duration := flag.Duration("duration", time.Second, "how long each measurement runs")
	flag.Parse()
	if err := parent(*duration); err != nil {
		fmt.Fprintln(os.Stderr, "ringdemo:", err)
		os.Exit(1)
	}
}

func parent(duration time.Duration) error {
	link, err := shm.NewDuplex("ringdemo", 4<<20)
	if err != nil {
		return err
	}
	defer link.Close()

	fds, err := socketpair()
	if err != nil {
		return err
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	cmd := exec.Command(self)
	cmd.Env = append(os.Environ(), "RINGDEMO_CHILD=1")
	cmd.ExtraFiles = []*os.File{fds[1]}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return err
	}
	fds[1].Close()
	defer cmd.Wait()
	sock, err := fileConn(fds[0])
	if err != nil {
		return err
	}
	defer sock.Close()
	if err := shm.SendFds(sock, []byte("segment"), link.Fds()...); err != nil {
		return err
	}
	fmt.Printf("parent pid %d, child pid %d: one %d-byte sealed memfd, two rings of 4 MiB\n\n",
		os.Getpid(), cmd.Process.Pid, link.Seg.Size())

	ctx := context.Background()
	fmt.Printf("%-26s %14s %12s\n", "one-way stream", "frames/s", "MB/s")
	for _, size := range []int{64, 1024, 64 << 10} {
		n, el, err := stream(ctx, link, size, duration)
		if err != nil {
			return err
		}
		fmt.Printf("%-26s %14.0f %12.0f\n", fmt.Sprintf("%d-byte frames", size), float64(n)/el.Seconds(), float64(n)*float64(size)/el.Seconds()/1e6)
	}
	fmt.Printf("\n%-26s %14s %12s\n", "round trip (echo)", "p50", "p99")
	for _, size := range []int{64, 64 << 10} {
		lat, err := pingPong(ctx, link, size, duration)
		if err != nil {
			return err
		}
		fmt.Printf("%-26s %14v %12v\n", fmt.Sprintf("%d-byte frames", size), lat[len(lat)/2], lat[len(lat)*99/100])
	}
	return link.Tx.Write(ctx, shm.Header{Kind: kindStop})
}

// stream sends size-byte frames for about d, flushing every 32 frames, and
// returns how many the child acknowledged having received.
func stream(ctx context.Context, link *shm.Duplex, size int, d time.Duration) (uint64, time.Duration, error) {
	payload := make([]byte, size)
	h := shm.Header{Kind: kindData}
	start := time.Now()
	var sent uint64
	for time.Since(start) < d {
		for range 1024 {
			err := link.Tx.Append(h, payload)
			if errors.Is(err, shm.ErrRingFull) {
				if err = link.Tx.WaitSpace(ctx, size); err == nil {
					err = link.Tx.Append(h, payload)
				}
			}
			if err != nil {
				return 0, 0, err
			}
			if sent++; sent%32 == 0 {
				link.Tx.Flush()
			}
		}
	}
	if err := link.Tx.Write(ctx, shm.Header{Kind: kindAck}); err != nil {
		return 0, 0, err
	}
	f, err := recv(ctx, link)
	if err != nil {
		return 0, 0, err
	}
	got := f.ID
	link.Rx.Release()
	if got != sent {
		return 0, 0, fmt.Errorf("child received %d frames of %d", got, sent)
	}
	return got, time.Since(start), nil
}

func pingPong(ctx context.Context, link *shm.Duplex, size int, d time.Duration) ([]time.Duration, error) {
	payload := make([]byte, size)
	var lat []time.Duration
	for start := time.Now(); time.Since(start) < d; {
		t0 := time.Now()
		if err := link.Tx.Write(ctx, shm.Header{Kind: kindEcho, ID: uint64(len(lat))}, payload); err != nil {
			return nil, err
		}
		f, err := recv(ctx, link)
		if err != nil {
			return nil, err
		}
		if f.ID != uint64(len(lat)) || len(f.Body) != size {
			return nil, fmt.Errorf("echo %d came back as %d (%d bytes)", len(lat), f.ID, len(f.Body))
		}
		link.Rx.Release()
		lat = append(lat, time.Since(t0))
	}
	slices.Sort(lat)
	return lat, nil
}

// recv waits for the next frame; the caller releases it.
func recv(ctx context.Context, link *shm.Duplex) (shm.Frame, error) {
	for {
		f, err := link.Rx.Next()
		if !errors.Is(err, shm.ErrRingEmpty) {
			return f, err
		}
		if err := link.Rx.Wait(ctx); err != nil {
			return f, err
		}
	}
}

// child counts streamed frames and echoes echo frames until told to stop or
// until the parent goes away (EOF on the socket).
func child() error {
	sock, err := fileConn(os.NewFile(3, "socket"))
	if err != nil {
		return err
	}
	buf := make([]byte, 64)
	_, fds, err := shm.RecvFds(sock, buf, 5)
	if err != nil {
		return err
	}
	link, err := shm.OpenDuplex(fds)
	if err != nil {
		return err
	}
	defer link.Close()
	go func() { // the parent's death closes the socket: stop waiting
		io.Copy(io.Discard, sock)
		link.Shutdown()
	}()
	ctx := context.Background()
	var count uint64
	for {
		f, err := recv(ctx, link)
		if errors.Is(err, shm.ErrClosed) {
			return nil
		}
		if err != nil {
			return err
		}
		switch f.Kind {
		case kindData:
			count++
		case kindEcho:
			if err := link.Tx.Write(ctx, f.Header, f.Body); err != nil {
				return err
			}
		case kindAck:
			var b [8]byte
			binary.LittleEndian.PutUint64(b[:], count)
			if err := link.Tx.Write(ctx, shm.Header{Kind: kindAck, ID: count}, b[:]); err != nil {
				return err
			}
			count = 0
		case kindStop:
			return nil
		}
		link.Rx.Release()
	}
}
