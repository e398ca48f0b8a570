package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/switchboard-ipc/switchboard"
)

const benchHelp = `usage: switchboard bench [--socket PATH] [--duration D] [--subscribers K] [--json]

Measure standard workloads against a running node, each for --duration (setup included),
one after the other, with clients in this process:

  call      a 64-byte call to the node's echo command, one at a time: round trip
  events    64-byte direct messages from one client to another, as fast as
            the receiver takes them (at most 256 in flight): throughput
  fan-out   64-byte publications to a group of K subscribers (--subscribers),
            as fast as the slowest takes them: deliveries per second
  request   a 64-byte request to a peer that echoes it, one at a time: round trip

A progress line goes to standard error, the result table to standard
output (--json: an array of records). The numbers include this process's
own scheduling: run it on a quiet machine, and compare runs on the same one.

Exit codes: 0 done; 1 a workload failed (its error on standard error);
2 bad arguments; 3 no node.

flags:
`

// benchResult is one row of the result table; the JSON names are stable.
type benchResult struct {
	Workload     string  `json:"workload"`
	Unit         string  `json:"unit"` // what one op is
	Ops          uint64  `json:"ops"`
	Seconds      float64 `json:"seconds"`
	OpsPerSecond float64 `json:"ops_per_second"`
	P50Micros    float64 `json:"p50_us"` // round trips only; 0 otherwise
	P99Micros    float64 `json:"p99_us"`
	Lost         uint64  `json:"lost"` // messages the node dropped for a receiver
}

func cmdBench(ctx context.Context, std stdio, args []string) int {
	fs := newFlagSet("bench", benchHelp)
	var cf clientFlags
	cf.register(fs)
	d := fs.Duration("duration", 2*time.Second, "how long each workload runs")
	k := fs.Int("subscribers", 4, "subscribers in the fan-out workload")
	asJSON := fs.Bool("json", false, "print the results as JSON")
	rest, code, ok := parseArgs(fs, args, std)
	if !ok {
		return code
	}
	if len(rest) > 0 || *d <= 0 || *k <= 0 {
		fmt.Fprintln(std.stderr, "usage: switchboard bench [--duration D] [--subscribers K]   (switchboard bench --help)")
		return exitUsage
	}
	b := &bench{cf: cf, std: std, d: *d}
	probe, code := cf.connect(ctx, std)
	if probe == nil {
		return code
	}
	probe.Close()
	workloads := []struct {
		name, unit string
		run        func(ctx context.Context, ops *atomic.Uint64) ([]time.Duration, uint64, error)
	}{
		{"call 64 B", "round trips", b.call},
		{"events 64 B", "events", func(ctx context.Context, ops *atomic.Uint64) ([]time.Duration, uint64, error) {
			return b.stream(ctx, ops, 1, false)
		}},
		{fmt.Sprintf("fan-out 64 B to %d", *k), "deliveries", func(ctx context.Context, ops *atomic.Uint64) ([]time.Duration, uint64, error) {
			return b.stream(ctx, ops, *k, true)
		}},
		{"request 64 B", "round trips", b.request},
	}
	var results []benchResult
	for _, w := range workloads {
		r, err := b.run(ctx, w.name, w.run)
		if err != nil {
			return failed(std, fmt.Errorf("%s: %w", w.name, err))
		}
		r.Unit = w.unit
		results = append(results, r)
		if ctx.Err() != nil {
			break
		}
	}
	if *asJSON {
		return printJSON(std, results)
	}
	tw := tabwriter.NewWriter(std.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "WORKLOAD\tOPS\tPER SECOND\tP50\tP99\tLOST")
	for _, r := range results {
		p50, p99 := "-", "-"
		if r.P50Micros > 0 {
			p50, p99 = fmt.Sprintf("%.1fµs", r.P50Micros), fmt.Sprintf("%.1fµs", r.P99Micros)
		}
		fmt.Fprintf(tw, "%s\t%d\t%s %s\t%s\t%s\t%d\n", r.Workload, r.Ops, rateText(r.OpsPerSecond), r.Unit, p50, p99, r.Lost)
	}
	tw.Flush()
	return exitOK
}

func rateText(v float64) string {
	switch {
	case v >= 1e6:
		return strconv.FormatFloat(v/1e6, 'f', 2, 64) + "M"
	case v >= 1e3:
		return strconv.FormatFloat(v/1e3, 'f', 1, 64) + "k"
	}
	return strconv.FormatFloat(v, 'f', 0, 64)
}

type bench struct {
	cf  clientFlags
	std stdio
	d   time.Duration
}

// run runs one workload for b.d, with a progress line on standard error
// (rewritten in place on a terminal, once otherwise).
func (b *bench) run(ctx context.Context, name string, f func(context.Context, *atomic.Uint64) ([]time.Duration, uint64, error)) (benchResult, error) {
	var ops atomic.Uint64
	wctx, cancel := context.WithTimeout(ctx, b.d)
	defer cancel()
	tty := false
	if f, ok := b.std.stderr.(*os.File); ok {
		tty = isTerminal(f)
	}
	start := time.Now()
	var progress sync.WaitGroup
	if tty {
		progress.Go(func() {
			t := time.NewTicker(200 * time.Millisecond)
			defer t.Stop()
			for {
				select {
				case <-wctx.Done():
					fmt.Fprint(b.std.stderr, "\r\033[K")
					return
				case <-t.C:
					fmt.Fprintf(b.std.stderr, "\r\033[Kbench: %-22s %4.1fs/%v  %d ops", name, time.Since(start).Seconds(), b.d, ops.Load())
				}
			}
		})
	} else {
		fmt.Fprintf(b.std.stderr, "bench: %s for %v\n", name, b.d)
	}
	lat, lost, err := f(wctx, &ops)
	cancel()
	progress.Wait()
	elapsed := time.Since(start)
	r := benchResult{Workload: name, Ops: ops.Load(), Seconds: elapsed.Seconds(), Lost: lost}
	r.OpsPerSecond = float64(r.Ops) / elapsed.Seconds()
	if len(lat) > 0 {
		slices.Sort(lat)
		r.P50Micros = float64(lat[len(lat)/2].Nanoseconds()) / 1e3
		r.P99Micros = float64(lat[len(lat)*99/100].Nanoseconds()) / 1e3
	}
	return r, err
}

func (b *bench) dial(ctx context.Context, opts ...switchboard.DialOption) (*switchboard.Conn, error) {
	dctx, cancel := context.WithTimeout(ctx, b.cf.timeout)
	defer cancel()
	return switchboard.Dial(dctx, append([]switchboard.DialOption{switchboard.WithSocket(b.cf.socket), switchboard.WithClientName("node-bench")}, opts...)...)
}

// roundTrips times op, one at a time, until ctx ends.
func roundTrips(ctx context.Context, ops *atomic.Uint64, op func(context.Context) error) ([]time.Duration, uint64, error) {
	lat := make([]time.Duration, 0, 1<<16)
	for ctx.Err() == nil {
		t0 := time.Now()
		if err := op(ctx); err != nil {
			// At the deadline an op may fail before ctx says it is done.
			if ctx.Err() != nil || errors.Is(err, context.DeadlineExceeded) {
				break
			}
			return nil, 0, err
		}
		if len(lat) < 1<<22 {
			lat = append(lat, time.Since(t0))
		}
		ops.Add(1)
	}
	return lat, 0, nil
}

var payload64 = make([]byte, 64)

func (b *bench) call(ctx context.Context, ops *atomic.Uint64) ([]time.Duration, uint64, error) {
	c, err := b.dial(context.WithoutCancel(ctx))
	if err != nil {
		return nil, 0, err
	}
	defer c.Close()
	return roundTrips(ctx, ops, func(ctx context.Context) error {
		_, err := c.Call(ctx, switchboard.SystemService, switchboard.SysEcho, payload64)
		return err
	})
}

func (b *bench) request(ctx context.Context, ops *atomic.Uint64) ([]time.Duration, uint64, error) {
	srv, err := b.dial(context.WithoutCancel(ctx), switchboard.WithRequestHandler(func(ctx context.Context, r *switchboard.PeerRequest) ([]byte, error) {
		return r.Payload, nil
	}))
	if err != nil {
		return nil, 0, err
	}
	defer srv.Close()
	c, err := b.dial(context.WithoutCancel(ctx))
	if err != nil {
		return nil, 0, err
	}
	defer c.Close()
	return roundTrips(ctx, ops, func(ctx context.Context) error {
		_, err := c.Request(ctx, srv.Address(), payload64)
		return err
	})
}

// stream sends 64-byte messages to k receivers until ctx ends: direct
// messages to one receiver, or publications to a group of k. Each
// receiver grants 256 credits, so nobody floods the node's queues; ops
// counts the messages received.
func (b *bench) stream(ctx context.Context, ops *atomic.Uint64, k int, publish bool) ([]time.Duration, uint64, error) {
	setup := context.WithoutCancel(ctx)
	group := fmt.Sprintf("bench.%d.fanout", os.Getpid())
	sender, err := b.dial(setup)
	if err != nil {
		return nil, 0, err
	}
	defer sender.Close()
	type receiver struct {
		c      *switchboard.Conn
		credit chan struct{}
	}
	var recvs []receiver
	defer func() {
		for _, r := range recvs {
			r.c.Close()
		}
	}()
	for range k {
		c, err := b.dial(setup)
		if err != nil {
			return nil, 0, err
		}
		recvs = append(recvs, receiver{c, make(chan struct{}, 256)})
		if publish {
			if err := c.Subscribe(setup, group); err != nil {
				return nil, 0, err
			}
		}
	}
	var lost atomic.Uint64
	var wg sync.WaitGroup
	rctx, stop := context.WithCancel(setup)
	defer func() { stop(); wg.Wait() }() // before the receivers close
	for _, r := range recvs {
		wg.Go(func() {
			for {
				e, err := r.c.RecvEvent(rctx)
				if err != nil {
					return
				}
				lost.Add(e.Dropped)
				for range 1 + e.Dropped {
					select {
					case <-r.credit:
					default:
					}
				}
				ops.Add(1)
			}
		})
	}
	to := recvs[0].c.Address()
	for ctx.Err() == nil {
		for _, r := range recvs {
			select {
			case r.credit <- struct{}{}:
			case <-ctx.Done():
				return nil, lost.Load(), nil
			}
		}
		if publish {
			err = sender.Publish(ctx, group, payload64)
		} else {
			err = sender.SendTo(ctx, to, payload64)
		}
		if err != nil && ctx.Err() == nil && !errors.Is(err, context.DeadlineExceeded) {
			return nil, lost.Load(), err
		}
	}
	return nil, lost.Load(), nil
}
