package tests

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
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
	startRole(b, "node", append(env, "SB_SOCKET="+socket), nil)
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := switchboard.Dial(context.Background(), switchboard.WithSocket(socket))
		if err == nil {
			c.Close()
			return socket
		}
		if time.Now().After(deadline) {
			b.Fatalf("node not serving: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
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

// BenchmarkCall's size=65536/view variant reads replies in place (CallView).

// BenchmarkEvents measures event throughput from the node to one client,
// which takes them with RecvEvent and Release (api=one) or in batches of
// up to 256 with RecvEvents (api=batch). (RecvEventView, in place,
// measured no faster here: the node's copy into the ring and the windows
// bound this benchmark, not the client's copy out.)
// The client asks for events a window at a time (two windows in flight),
// so that a node faster than its client does not overflow the queue; a
// run that lost events reports them in the "dropped" metric.
func BenchmarkEvents(b *testing.B) {
	for _, cpus := range benchCPUs {
		b.Run(cpus.name, func(b *testing.B) {
			for _, api := range []string{"one", "batch"} {
				for _, size := range []int{64, 64 << 10} {
					name := fmt.Sprintf("size=%d", size) // the name from before the batch API
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
						var asked, got, dropped, calls int
						ask := func() {
							n := min(window, b.N-asked)
							if err := c.Send(ctx, svcTest, cmdEmit, []byte(fmt.Sprintf("%d:%d", n, size))); err != nil {
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
func BenchmarkPeerRequest(b *testing.B) {
	for _, bc := range []struct{ spin, inline string }{{"default", ""}, {"0s", ""}, {"default", "1"}, {"0s", "1"}} {
		spin := bc.spin
		name := "spin=" + spin
		if bc.inline != "" {
			name += "/inline"
		}
		b.Run(name, func(b *testing.B) {
			env := []string{"SB_INLINE=" + bc.inline}
			opts := []switchboard.DialOption{nil}
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
			lat := make([]int64, 0, 1<<16)
			b.ReportAllocs()
			for b.Loop() {
				t0 := time.Now()
				if _, err := c.Request(ctx, addr, payload); err != nil {
					b.Fatal(err)
				}
				lat = append(lat, int64(time.Since(t0)))
			}
			reportLatency(b, lat)
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
// without it shows what a stalled member costs the publisher.
func BenchmarkFanout(b *testing.B) {
	for _, bc := range []struct{ subs, stalled int }{{4, 0}, {4, 1}, {16, 0}, {64, 0}} {
		b.Run(fmt.Sprintf("subs=%d/stalled=%d", bc.subs, bc.stalled), func(b *testing.B) {
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
			for range bc.subs {
				startPeer(b, "peer", socket, append(env, "SB_MODE=count", "SB_GROUPS=fan", "SB_NOCHECK=1", "SB_ACK_TO="+c.Address(),
					"SB_CLIENT_QUEUE=16384", fmt.Sprintf("SB_EXPECT=%d", b.N))...)
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
