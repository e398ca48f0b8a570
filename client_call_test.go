package switchboard

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"
)

func TestCallInProcess(t *testing.T) { bothTransports(t, testCallInProcess) }

func testCallInProcess(t *testing.T, tr Transport) {
	n := startNode(t)
	echoService(n)
	c := dial(t, n, WithTransport(tr))
	ctx := context.Background()
	for _, size := range []int{0, 1, 100, 64 << 10, 1 << 20, 3<<20 + 7} {
		p := bytes.Repeat([]byte{byte(size)}, size)
		got, err := c.Call(ctx, svcEcho, cmdEcho, p)
		if err != nil || !bytes.Equal(got, p) {
			t.Fatalf("size %d: %d bytes, %v", size, len(got), err)
		}
	}
	if _, err := c.Call(ctx, 99, 1, nil); !errors.Is(err, ErrUnknownService) {
		t.Fatalf("unknown service: %v", err)
	}
	if _, err := c.Call(ctx, svcEcho, 77, nil); !errors.Is(err, ErrUnknownCommand) {
		t.Fatalf("unknown command: %v", err)
	}
	if _, err := c.Call(ctx, svcEcho, cmdFail, nil); !errors.Is(err, ErrHandler) || err.Error() != "switchboard: handler error: you asked for it" {
		t.Fatalf("handler error: %v", err)
	}
	if _, err := c.Call(ctx, svcEcho, cmdBoom, nil); !errors.Is(err, ErrInternal) {
		t.Fatalf("panic: %v", err)
	}
	if _, err := c.Call(ctx, svcEcho, cmdEcho, make([]byte, c.MaxMessage()+1)); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("too large: %v", err)
	}
	// The connection survives all of that.
	if got, err := c.Call(ctx, svcEcho, cmdEcho, []byte("still here")); err != nil || string(got) != "still here" {
		t.Fatalf("after errors: %q %v", got, err)
	}
	dctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if _, err := c.Call(dctx, svcEcho, cmdSlow, nil); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("deadline: %v", err)
	}
	if _, err := c.Call(ctx, SystemService, SysPing, nil); err != nil {
		t.Fatal(err)
	}
}

func TestConcurrentCalls(t *testing.T) { bothTransports(t, testConcurrentCalls) }

func testConcurrentCalls(t *testing.T, tr Transport) {
	n := startNode(t)
	echoService(n)
	c := dial(t, n, WithTransport(tr))
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for g := range 64 {
		wg.Go(func() {
			for i := range 200 {
				p := []byte(fmt.Sprintf("g%d-%d", g, i))
				got, err := c.Call(context.Background(), svcEcho, cmdEcho, p)
				if err != nil || !bytes.Equal(got, p) {
					errs <- fmt.Errorf("g%d call %d: %q %v", g, i, got, err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

func TestCallView(t *testing.T) {
	bothTransports(t, func(t *testing.T, tr Transport) {
		n := startNode(t)
		echoService(n)
		c := dial(t, n, WithTransport(tr), WithSpin(50*time.Millisecond))
		ctx := context.Background()
		// Whether a reply is read in place is a race between the caller's
		// spin and the client's own reader, which a loaded machine can
		// lose 100 times in a row (.ci/run saw it once): call until one
		// is, 100 calls at least, 5,000 at most.
		inPlace, calls := 0, 0
		for i := 0; i < 5000 && (i < 100 || inPlace == 0); i++ {
			calls++
			p := []byte(fmt.Sprint("view ", i))
			r, err := c.CallView(ctx, svcEcho, cmdEcho, p)
			if err != nil || string(r.Body) != string(p) {
				t.Fatalf("call %d: %q %v", i, r.Body, err)
			}
			if r.c != nil {
				inPlace++
			}
			r.Release()
			r.Release() // idempotent
		}
		if inPlace == 0 && tr == TransportSHM { // over the socket the client's own pump is as quick as the caller
			t.Fatal("no reply was read in place")
		}
		t.Logf("%d of %d replies read in place", inPlace, calls)
		if _, err := c.CallView(ctx, svcEcho, cmdFail, nil); !errors.Is(err, ErrHandler) {
			t.Fatalf("error through CallView: %v", err)
		}
		// Calls from other goroutines go on while views come and go.
		var wg sync.WaitGroup
		for g := range 8 {
			wg.Go(func() {
				for i := range 50 {
					p := []byte(fmt.Sprint(g, "/", i))
					if g%2 == 0 {
						r, err := c.CallView(ctx, svcEcho, cmdEcho, p)
						if err != nil || string(r.Body) != string(p) {
							t.Errorf("view %s: %q %v", p, r.Body, err)
							return
						}
						r.Release()
						continue
					}
					got, err := c.Call(ctx, svcEcho, cmdEcho, p)
					if err != nil || string(got) != string(p) {
						t.Errorf("call %s: %q %v", p, got, err)
						return
					}
				}
			})
		}
		wg.Wait()
	})
}

// A caller's spin for its reply shrinks while replies come long after it
// (it would only burn a CPU the node needs) and grows back at once when
// one comes soon after it gave up.
func TestLeadSpinAdapts(t *testing.T) {
	n := startNode(t)
	echoService(n)
	n.HandleFunc(svcEcho+1, func(ctx context.Context, r *Request) ([]byte, error) {
		time.Sleep(5 * time.Millisecond)
		return nil, nil
	})
	const spin = time.Millisecond
	c := dial(t, n, WithSpin(spin))
	ctx := context.Background()
	if got := c.leadSpin.Budget(); got != spin {
		t.Fatalf("budget %v at first, want %v", got, spin)
	}
	for i := range 12 { // each reply comes 4 ms after the spin gave up: halved, 1 ms to 1 µs in 10
		if _, err := c.Call(ctx, svcEcho+1, 1, nil); err != nil {
			t.Fatalf("slow call %d: %v", i, err)
		}
	}
	if got := c.leadSpin.Budget(); got > 2*time.Microsecond {
		t.Fatalf("budget %v after 12 replies 5 ms late, want it shrunk to a microsecond or two", got)
	}
	// A quick reply: the short spin may give up, but the reply comes well
	// within the whole budget after it, which the next call gets back.
	for i := 0; ; i++ {
		if i == 20 {
			t.Fatalf("budget %v after 20 quick replies, want %v", c.leadSpin.Budget(), spin)
		}
		if _, err := c.Call(ctx, svcEcho, cmdEcho, []byte("quick")); err != nil {
			t.Fatalf("quick call %d: %v", i, err)
		}
		if c.leadSpin.Budget() == spin {
			t.Logf("budget back to %v after %d quick replies", spin, i+1)
			break
		}
	}
}
