package tests

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/switchboard-ipc/switchboard"
	"golang.org/x/sys/unix"
)

// Cross-process benchmarks against a node in a child process. Run them in
// one command with the shm baselines (raw ring and socketpair ping-pong):
//
//	go test -run '^$' -bench 'PingPong|Call|Events' -count 5 ./shm ./tests
//
// cpus=any pins nothing (both processes may run anywhere, and spin before
// parking by default); cpus=separate pins this process to CPU 0 and the
// node to CPU 1; cpus=shared pins both to CPU 0 (GOMAXPROCS to match). A
// pinned process sees one CPU and so does not spin by default.

var benchCPUs = []struct {
	name         string
	client, node []int
}{
	{"cpus=any", nil, nil},
	{"cpus=separate", []int{0}, []int{1}},
	{"cpus=shared", []int{0}, []int{0}},
}

func benchNode(b *testing.B, clientCPUs, nodeCPUs []int, env ...string) string {
	b.Helper()
	socket, _ := benchNodeChild(b, clientCPUs, nodeCPUs, env...)
	return socket
}

// benchNodeChild is benchNode that also returns the node's process.
func benchNodeChild(b *testing.B, clientCPUs, nodeCPUs []int, env ...string) (string, *child) {
	b.Helper()
	if runtime.NumCPU() < 2 {
		b.Skip("needs two CPUs")
	}
	if clientCPUs != nil {
		old, err := pinnedTo(clientCPUs)
		if err != nil {
			b.Skipf("cannot pin: %v", err)
		}
		b.Cleanup(func() { restoreCPUs(old) })
	}
	socket := publicDir(b) + "/node.sock"
	if nodeCPUs != nil {
		env = append(env, "SB_CPUS="+cpuString(nodeCPUs))
	}
	node := startRole(b, "node", append(env, "SB_SOCKET="+socket), nil)
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := switchboard.Dial(context.Background(), switchboard.WithSocket(socket))
		if err == nil {
			c.Close()
			return socket, node
		}
		if time.Now().After(deadline) {
			b.Fatalf("node not serving: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// BenchmarkConnect measures a client's whole connection to a node in a
// child process: Dial (socket, handshake, the segment mapped, the
// doorbells checked) and Close, one after the other, as the peer
// benchmark's "connect" row does. allocs/op and B/op are the client's;
// node-cpu-us/op is the node process's user and system time per cycle
// (from /proc, in clock ticks: meaningful over a few thousand cycles).
//
//	go test -run '^$' -bench Connect -benchmem -count 5 ./tests
func BenchmarkConnect(b *testing.B) {
	for _, cpus := range benchCPUs {
		b.Run(cpus.name, func(b *testing.B) {
			socket, node := benchNodeChild(b, cpus.client, cpus.node)
			ctx := context.Background()
			b.ReportAllocs()
			cpu0 := procCPU(b, node.cmd.Process.Pid)
			for b.Loop() {
				c, err := switchboard.Dial(ctx, switchboard.WithSocket(socket))
				if err != nil {
					b.Fatal(err)
				}
				if err := c.Close(); err != nil {
					b.Fatal(err)
				}
			}
			used := procCPU(b, node.cmd.Process.Pid) - cpu0
			b.ReportMetric(float64(used.Microseconds())/float64(b.N), "node-cpu-us/op")
		})
	}
}

// procCPU returns the user and system time process pid has used.
func procCPU(b *testing.B, pid int) time.Duration {
	b.Helper()
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		b.Fatal(err)
	}
	// The fields after the command name, which is in parentheses.
	f := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:]))
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	const ticksPerSecond = 100 // USER_HZ on Linux
	return time.Duration(utime+stime) * time.Second / ticksPerSecond
}

func BenchmarkCall(b *testing.B) {
	for _, cpus := range benchCPUs {
		b.Run(cpus.name, func(b *testing.B) {
			for _, bc := range []struct {
				size int
				view bool
			}{{64, false}, {64 << 10, false}, {64 << 10, true}} {
				size := bc.size
				name := fmt.Sprintf("size=%d", size)
				if bc.view {
					name += "/view"
				}
				b.Run(name, func(b *testing.B) {
					socket := benchNode(b, cpus.client, cpus.node)
					c, err := switchboard.Dial(context.Background(), switchboard.WithSocket(socket))
					if err != nil {
						b.Fatal(err)
					}
					defer c.Close()
					ctx := context.Background()
					payload := make([]byte, size)
					lat := make([]int64, 0, 1<<16)
					b.SetBytes(int64(2 * size))
					b.ReportAllocs()
					for b.Loop() {
						t0 := time.Now()
						if bc.view {
							r, err := c.CallView(ctx, svcTest, cmdEcho, payload)
							if err != nil {
								b.Fatal(err)
							}
							r.Release()
						} else if _, err := c.Call(ctx, svcTest, cmdEcho, payload); err != nil {
							b.Fatal(err)
						}
						lat = append(lat, int64(time.Since(t0)))
					}
					reportLatency(b, lat)
				})
			}
		})
	}
}

// BenchmarkCallClients: 8 clients (one Conn each, in this process) call
// the node's echo at once, 64 KiB each way, as the peer benchmark's
// rpc-64k-8 row; /view reads replies in place (CallView). The node's own
// allocations and GC cycles per call are reported (node-*), read from the
// node child.
func BenchmarkCallClients(b *testing.B) {
	const clients = 8
	for _, view := range []bool{false, true} {
		name := "clients=8/size=65536"
		if view {
			name += "/view"
		}
		b.Run(name, func(b *testing.B) {
			socket := benchNode(b, nil, nil)
			ctx := context.Background()
			conns := make([]*switchboard.Conn, clients)
			for i := range conns {
				c, err := switchboard.Dial(ctx, switchboard.WithSocket(socket))
				if err != nil {
					b.Fatal(err)
				}
				defer c.Close()
				conns[i] = c
			}
			payload := make([]byte, 64<<10)
			b.SetBytes(int64(2 * len(payload)))
			b.ReportAllocs()
			before := readNodeMem(b, conns[0])
			var left atomic.Int64
			left.Store(int64(b.N))
			errs := make(chan error, clients)
			b.ResetTimer()
			start := time.Now()
			for _, c := range conns {
				go func() {
					for left.Add(-1) >= 0 {
						if view {
							r, err := c.CallView(ctx, svcTest, cmdEcho, payload)
							if err != nil {
								errs <- err
								return
							}
							r.Release()
						} else if _, err := c.Call(ctx, svcTest, cmdEcho, payload); err != nil {
							errs <- err
							return
						}
					}
					errs <- nil
				}()
			}
			for range clients {
				if err := <-errs; err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "calls/s")
			b.StopTimer()
			readNodeMem(b, conns[0]).report(b, before)
		})
	}
}

// nodeMem is what the node child says of its memory (cmdMem).
type nodeMem struct{ gc, mallocs, bytes, waits, expired uint64 }

func readNodeMem(b *testing.B, c *switchboard.Conn) nodeMem {
	b.Helper()
	r, err := c.Call(context.Background(), svcTest, cmdMem, nil)
	if err != nil {
		b.Fatal(err)
	}
	var m nodeMem
	if _, err := fmt.Sscan(string(r), &m.gc, &m.mallocs, &m.bytes, &m.waits, &m.expired); err != nil {
		b.Fatalf("cmdMem %q: %v", r, err)
	}
	return m
}

// report reports the node's allocations per op, its GC cycles per 10,000
// ops and the times a handler's event waited for room per op, since
// before.
func (m nodeMem) report(b *testing.B, before nodeMem) {
	n := float64(b.N)
	b.ReportMetric(float64(m.mallocs-before.mallocs)/n, "node-allocs/op")
	b.ReportMetric(float64(m.bytes-before.bytes)/n, "node-B/op")
	b.ReportMetric(float64(m.gc-before.gc)*10000/n, "node-GC/10k")
	b.ReportMetric(float64(m.waits-before.waits)/n, "node-waits/op")
	b.ReportMetric(float64(m.expired-before.expired)/n, "node-waits-expired/op")
}

// BenchmarkCall's size=65536/view variant reads replies in place (CallView).

// BenchmarkEvents measures event throughput from the node to one client,
// which takes them with RecvEvent and Release (api=one) or in batches of
// up to 256 with RecvEvents (api=batch). (RecvEventView, in place,
// measured no faster here: the node's copy into the ring and the windows
// bound this benchmark, not the client's copy out.)
// The client asks for events a window at a time (two windows in flight),
// so that a node faster than its client does not overflow the queue; a
// run that lost events reports them in the "dropped" metric. /loan sends
// with Request.WriteEvent (the payload copied from one buffer straight
// into the ring). The node's allocations, GC cycles and waits for ring
// room are reported per event (node-*); SB_EVENT_WAIT=0 in the
// environment of the node child (set it for the go test command) makes
// its handlers queue instead of waiting, as before WithEventWait.
func BenchmarkEvents(b *testing.B) {
	for _, cpus := range benchCPUs {
		b.Run(cpus.name, func(b *testing.B) {
			for _, api := range []string{"one", "batch"} {
				for _, bc := range []struct {
					size int
					loan bool
				}{{64, false}, {64 << 10, false}, {64 << 10, true}} {
					size, emit := bc.size, cmdEmit
					name := fmt.Sprintf("size=%d", size) // the name from before the batch API
					if bc.loan {
						emit, name = cmdEmitLoan, name+"/loan"
					}
					if api == "batch" {
						name = "api=batch/" + name
					}
					b.Run(name, func(b *testing.B) {
						// A deep node queue (100,000 events, 1 GiB), so that a window
						// ahead of the client waits in the node instead of being dropped.
						socket := benchNode(b, cpus.client, cpus.node, "SB_EVENT_QUEUE=100000")
						c, err := switchboard.Dial(context.Background(), switchboard.WithSocket(socket), switchboard.WithEventQueue(4096))
						if err != nil {
							b.Fatal(err)
						}
						defer c.Close()
						ctx := context.Background()
						window := 4096
						if size > 4096 {
							window = 64 // 4 MiB per window
						}
						b.SetBytes(int64(size))
						b.ReportAllocs()
						before := readNodeMem(b, c)
						b.ResetTimer()
						var asked, got, dropped, calls int
						ask := func() {
							n := min(window, b.N-asked)
							if err := c.Send(ctx, svcTest, emit, []byte(fmt.Sprintf("%d:%d", n, size))); err != nil {
								b.Fatal(err)
							}
							asked += n
						}
						start := time.Now()
						for asked < b.N && asked < 2*window {
							ask()
						}
						evs := make([]switchboard.Event, 256) // api=batch: RecvEvents into the same slice
						for got+dropped < b.N {
							if api == "batch" {
								k, err := c.RecvEvents(ctx, evs)
								if err != nil {
									b.Fatal(err)
								}
								calls++
								got += k
								for _, e := range evs[:k] {
									dropped += int(e.Dropped)
								}
							} else {
								e, err := c.RecvEvent(ctx)
								if err != nil {
									b.Fatal(err)
								}
								got++
								dropped += int(e.Dropped)
								e.Release()
							}
							for asked < b.N && asked-(got+dropped) < window {
								ask()
							}
						}
						el := time.Since(start).Seconds()
						b.ReportMetric(float64(got)/el, "events/s")
						b.ReportMetric(float64(dropped), "dropped")
						if calls > 0 {
							b.ReportMetric(float64(got)/float64(calls), "events/call")
						}
						b.StopTimer()
						readNodeMem(b, c).report(b, before)
					})
				}
			}
		})
	}
}

func reportLatency(b *testing.B, lat []int64) {
	if len(lat) == 0 {
		return
	}
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2]), "p50-ns")
	b.ReportMetric(float64(lat[len(lat)*99/100]), "p99-ns")
}

func cpuString(cpus []int) string {
	s := make([]string, len(cpus))
	for i, c := range cpus {
		s[i] = strconv.Itoa(c)
	}
	return strings.Join(s, ",")
}

func cpuList(s string) []int {
	var cpus []int
	for _, f := range strings.Split(s, ",") {
		if n, err := strconv.Atoi(f); err == nil {
			cpus = append(cpus, n)
		}
	}
	return cpus
}

// pinProcess pins every thread of this process to cpus (threads created
// later inherit it) and sets GOMAXPROCS to match.
func pinProcess(cpus []int) error {
	_, err := pinnedTo(cpus)
	return err
}

func pinnedTo(cpus []int) (unix.CPUSet, error) {
	var old, set unix.CPUSet
	if err := unix.SchedGetaffinity(0, &old); err != nil {
		return old, err
	}
	for _, c := range cpus {
		set.Set(c)
	}
	if err := setAffinity(&set); err != nil {
		return old, err
	}
	runtime.GOMAXPROCS(len(cpus))
	return old, nil
}

func restoreCPUs(old unix.CPUSet) {
	setAffinity(&old)
	runtime.GOMAXPROCS(old.Count())
}

func setAffinity(set *unix.CPUSet) error {
	ents, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return err
	}
	for _, e := range ents {
		if tid, err := strconv.Atoi(e.Name()); err == nil {
			unix.SchedSetaffinity(tid, set)
		}
	}
	return nil
}

// BenchmarkPeerRequest: one-to-one RPC between two clients through the
// node (this process → node → responder process → node → back), 64 B.
// The /direct variants dial both clients WithDirectPeers(true): after a
// warm-up request the two talk over a channel the node brokered (this
// process → responder process → back), and the run fails unless every
// timed request went that way.
func BenchmarkPeerRequest(b *testing.B) {
	for _, bc := range []struct{ spin, inline, direct string }{{"default", "", ""}, {"0s", "", ""}, {"default", "1", ""}, {"0s", "1", ""},
		{"default", "", "1"}, {"0s", "", "1"}, {"default", "1", "1"}} {
		spin := bc.spin
		name := "spin=" + spin
		if bc.inline != "" {
			name += "/inline"
		}
		if bc.direct != "" {
			name += "/direct"
		}
		b.Run(name, func(b *testing.B) {
			env := []string{"SB_INLINE=" + bc.inline, "SB_DIRECT=" + bc.direct}
			opts := []switchboard.DialOption{nil, switchboard.WithDirectPeers(bc.direct != "")}
			if spin != "default" {
				env = append(env, "SB_SPIN="+spin)
				d, _ := time.ParseDuration(spin)
				opts = append(opts, switchboard.WithSpin(d))
			}
			socket := benchNode(b, nil, nil, env...)
			opts[0] = switchboard.WithSocket(socket)
			_, addr := startPeer(b, "peer", socket, append(env, "SB_MODE=echo")...)
			c, err := switchboard.Dial(context.Background(), opts...)
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			ctx := context.Background()
			payload := make([]byte, 64)
			if bc.direct != "" { // the channel is set up after the first request: not timed
				for c.DirectStats().Opened == 0 {
					if _, err := c.Request(ctx, addr, payload); err != nil {
						b.Fatal(err)
					}
					time.Sleep(time.Millisecond)
				}
			}
			lat := make([]int64, 0, 1<<16)
			b.ReportAllocs()
			before := c.DirectStats().Requests
			for b.Loop() {
				t0 := time.Now()
				if _, err := c.Request(ctx, addr, payload); err != nil {
					b.Fatal(err)
				}
				lat = append(lat, int64(time.Since(t0)))
			}
			reportLatency(b, lat)
			if bc.direct != "" && c.DirectStats().Requests-before != uint64(b.N) {
				b.Fatalf("%d of %d requests went direct", c.DirectStats().Requests-before, b.N)
			}
		})
	}
}

// BenchmarkFanout: one publisher (this process) → a group of subscriber
// processes, 64 B messages; "msgs/s" counts deliveries (each publication
// once per subscriber). Subscribers acknowledge every 1024 messages and the
// publisher keeps at most a window unacknowledged per subscriber, so a
// publisher faster than its subscribers waits instead of overflowing their
// queues (a run that lost messages reports them in "dropped"). With
// stalled=1, one more subscriber reads nothing: "pub/s" against the run
// without it shows what a stalled member costs the publisher. The
// subscribers view their messages in place (RecvEventView); with
// "handlers=N" they take them in an event handler instead, as the peer
// run's (tests/bench) do.
func BenchmarkFanout(b *testing.B) {
	for _, bc := range []struct {
		subs, stalled int
		handler       bool
	}{{4, 0, false}, {4, 1, false}, {16, 0, false}, {64, 0, false}, {4, 0, true}, {16, 0, true}} {
		name := fmt.Sprintf("subs=%d/stalled=%d", bc.subs, bc.stalled)
		if bc.handler {
			name = fmt.Sprintf("handlers=%d/stalled=%d", bc.subs, bc.stalled)
		}
		b.Run(name, func(b *testing.B) {
			env := []string{"SB_SPIN=" + os.Getenv("SB_BENCH_SPIN")} // unset: the defaults
			if os.Getenv("SB_BENCH_SPIN") == "" {
				env = nil
			}
			socket := benchNode(b, nil, nil, append(env, "SB_EVENT_QUEUE=16384", "SB_CPUPROFILE="+os.Getenv("SB_BENCH_PROFILE"))...)
			c, err := switchboard.Dial(context.Background(), switchboard.WithSocket(socket), switchboard.WithEventQueue(1<<16))
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			ctx := context.Background()
			for range bc.stalled {
				startPeer(b, "peer", socket, append(env, "SB_MODE=stall", "SB_GROUPS=fan", "SB_RESUME=/nonexistent")...)
			}
			sub := append(env, "SB_MODE=count", "SB_GROUPS=fan", "SB_NOCHECK=1", "SB_ACK_TO="+c.Address(),
				"SB_CLIENT_QUEUE=16384", fmt.Sprintf("SB_EXPECT=%d", b.N))
			if bc.handler {
				sub = append(sub, "SB_EVENT_HANDLER=1")
			}
			for range bc.subs {
				startPeer(b, "peer", socket, sub...)
			}
			window := 8192
			acked := map[string]int{}
			minAcked := func() int {
				if len(acked) < bc.subs {
					return 0
				}
				m := b.N
				for _, n := range acked {
					m = min(m, n)
				}
				return m
			}
			take := func(e switchboard.Event) {
				if e.Kind == switchboard.EventMessage {
					n, _ := strconv.Atoi(string(e.Payload))
					acked[e.From] = max(acked[e.From], n)
				}
			}
			payload := make([]byte, 64)
			for i := range payload {
				payload[i] = '0'
			}
			payload[0], payload[1] = 'p', ' '
			b.ReportAllocs()
			b.ResetTimer()
			start := time.Now()
			for i := range b.N {
				for i-minAcked() >= window {
					e, err := c.RecvEvent(ctx)
					if err != nil {
						b.Fatal(err)
					}
					take(e)
				}
				for e, ok := c.TryRecvEvent(); ok; e, ok = c.TryRecvEvent() {
					take(e)
				}
				if err := c.Publish(ctx, "fan", payload); err != nil {
					b.Fatal(err)
				}
			}
			published := time.Since(start)
			for minAcked() < b.N {
				e, err := c.RecvEvent(ctx)
				if err != nil {
					b.Fatal(err)
				}
				take(e)
			}
			el := time.Since(start)
			b.StopTimer()
			b.ReportMetric(float64(b.N*bc.subs)/el.Seconds(), "msgs/s")
			b.ReportMetric(float64(b.N)/published.Seconds(), "pub/s")
		})
	}
}
