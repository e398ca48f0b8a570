package cluster

import (
	"bufio"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// The multi-node tests run each node as a separate process (protoactor
// remote sets grpclog's global logger, so two in one process race): the
// test binary re-executes itself with memberEnv set, and memberMain runs
// a Federation whose host prints what it receives on stdout, taking
// commands on stdin. Each command is "VERB ID ARGS..." and its answer is
// "ID RESULT...".

const memberEnv = "SWITCHBOARD_CLUSTER_MEMBER"

// bigMark starts a message the member checksums instead of counting.
const bigMark = ^uint64(0)

// pingMark starts a message the member sends back to its sender
// (pingMark) or takes as the answer to its ping (pongMark).
const (
	pingMark = ^uint64(0) - 1
	pongMark = ^uint64(0) - 2
	// panicMark starts a message the member's host panics on (a bug of
	// the host's).
	panicMark = ^uint64(0) - 3
)

type memberHost struct {
	mu      sync.Mutex
	out     *bufio.Writer
	next    map[string]uint64 // sender → the sequence number wanted next
	got     map[string]uint64
	bad     map[string]uint64
	seqs    map[string]uint64 // receiver → the sequence number to send next
	downs   map[string]int    // node → NodeDowns heard
	stalled chan struct{}     // non-nil: Deliver waits for it to close
	f       *Federation
	pongs   chan struct{}
}

func (h *memberHost) printf(format string, args ...any) {
	h.mu.Lock()
	defer h.mu.Unlock()
	fmt.Fprintf(h.out, format+"\n", args...)
	h.out.Flush()
}

// NodeUp starts the sequence numbers both ways afresh: each session of a
// link is checked for order on its own.
func (h *memberHost) NodeUp(node, inc string) {
	h.mu.Lock()
	h.next[node], h.seqs[node] = 0, 0
	h.mu.Unlock()
	h.printf("up %s %s", node, inc)
}
func (h *memberHost) NodeDown(node, inc, reason string) {
	h.mu.Lock()
	h.downs[node]++
	h.mu.Unlock()
	h.printf("down %s %s %s", node, inc, reason)
}

func (h *memberHost) Deliver(node string, msg []byte) {
	h.mu.Lock()
	wait := h.stalled
	h.mu.Unlock()
	if wait != nil {
		<-wait
	}
	if len(msg) >= 8 {
		switch binary.LittleEndian.Uint64(msg) {
		case pingMark:
			binary.LittleEndian.PutUint64(msg, pongMark)
			h.f.Send(node, msg)
			return
		case pongMark:
			h.pongs <- struct{}{}
			return
		case panicMark:
			panic("the member's host broke on a message")
		}
	}
	if len(msg) >= 8 && binary.LittleEndian.Uint64(msg) == bigMark {
		sum := sha256.Sum256(msg)
		h.printf("big %s %d %s", node, len(msg), hex.EncodeToString(sum[:]))
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	var seq uint64
	if len(msg) >= 8 {
		seq = binary.LittleEndian.Uint64(msg)
	}
	if seq != h.next[node] {
		h.bad[node]++
	}
	h.next[node] = seq + 1
	h.got[node]++
}

// memberMain runs one member: its configuration comes from the
// environment (see startMember).
func memberMain() int {
	env := func(k string) string { return os.Getenv("SBM_" + k) }
	cfg := Config{
		Cluster: env("CLUSTER"),
		Listen:  env("LISTEN"),
		// An impostor's: another node's address, claimed in its Hellos.
		Advertise: env("ADVERTISE"),
	}
	if p := env("PEERS"); p != "" {
		cfg.Peers = strings.Split(p, ",")
	}
	if b := env("BUDGET"); b != "" {
		cfg.Budget, _ = strconv.ParseInt(b, 10, 64)
	}
	if o := env("OVERFLOW"); o != "" {
		cfg.Overflow, _ = ParseOverflow(o)
	}
	if d := env("LINK_TIMEOUT"); d != "" {
		cfg.LinkTimeout, _ = time.ParseDuration(d)
	}
	if d := env("STALL"); d != "" {
		cfg.StallTimeout, _ = time.ParseDuration(d)
	}
	cfg.TLSCert, cfg.TLSKey, cfg.TLSCA = env("CERT"), env("KEY"), env("CA")
	cfg.SecretFile = env("SECRET")
	cfg.v1Only = env("V1") != ""
	cfg.noPacked = env("NOPACK") != ""
	out := bufio.NewWriter(os.Stdout)
	h := &memberHost{out: out, next: map[string]uint64{}, got: map[string]uint64{}, bad: map[string]uint64{}, seqs: map[string]uint64{}, downs: map[string]int{}}
	f, err := New(cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, "member:", err)
		return 2
	}
	h.f, h.pongs = f, make(chan struct{}, 1)
	if err := f.Start(env("NAME"), env("INC"), h); err != nil {
		h.printf("starterr %v", err)
		return 2
	}
	h.printf("ready")
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		w := strings.Fields(in.Text())
		if len(w) < 2 {
			continue
		}
		verb, id, args := w[0], w[1], w[2:]
		switch verb {
		case "send", "fill": // send ID NODE COUNT SIZE; fill: the same, up to the first refusal
			n, _ := strconv.Atoi(args[1])
			size, _ := strconv.Atoi(args[2])
			ok, fails, first := 0, 0, ""
			for range n {
				if fails > 0 && verb == "fill" {
					break
				}
				msg := make([]byte, max(size, 8))
				h.mu.Lock()
				binary.LittleEndian.PutUint64(msg, h.seqs[args[0]])
				h.mu.Unlock()
				if err := f.Send(args[0], msg); err != nil {
					fails++
					if first == "" {
						first = strings.ReplaceAll(err.Error(), " ", "_")
					}
					continue
				}
				h.mu.Lock()
				h.seqs[args[0]]++
				h.mu.Unlock()
				ok++
			}
			h.printf("%s %d %d %s", id, ok, fails, first)
		case "stream": // stream ID NODE SIZE: send until Send fails (but for the budget), then answer
			// It keeps the link's budget full: a Send the budget refuses
			// is tried again, so that most of a budget's worth is always
			// queued in the node (the network holds at most the links'
			// 16 MiB windows), whenever the node is stopped.
			// It stops at its node's NodeDown too: a session of the
			// link, never the next one.
			size, _ := strconv.Atoi(args[1])
			h.mu.Lock()
			node, seq, downs := args[0], h.seqs[args[0]], h.downs[args[0]]
			h.mu.Unlock()
			go func() {
				ok := 0
				for {
					msg := make([]byte, max(size, 8))
					binary.LittleEndian.PutUint64(msg, seq)
					// Whether the session it started in is over, asked
					// before each Send under mu, which NodeDown takes: the
					// next session is announced only after NodeDown
					// returned, so a Send made here goes to this session.
					// (Asked after the Send, a message could go into the
					// next session, numbered as this one's.)
					h.mu.Lock()
					err := errors.New("node down")
					if h.downs[node] == downs {
						err = f.Send(node, msg)
					}
					h.mu.Unlock()
					if errors.Is(err, ErrBudget) {
						time.Sleep(200 * time.Microsecond)
						continue
					}
					if err != nil {
						h.printf("%s %d %s", id, ok, strings.ReplaceAll(err.Error(), " ", "_"))
						return
					}
					seq++
					ok++
					if ok%64 == 0 {
						runtime.Gosched()
					}
				}
			}()
		case "big": // big ID NODE SIZE
			size, _ := strconv.Atoi(args[1])
			msg := make([]byte, size)
			for i := range msg {
				msg[i] = byte(i * 7)
			}
			binary.LittleEndian.PutUint64(msg, bigMark)
			sum := sha256.Sum256(msg)
			h.printf("%s %v %s", id, f.Send(args[0], msg), hex.EncodeToString(sum[:]))
		case "ping": // ping ID NODE COUNT SIZE: round trips, one at a time; answers the median in ns
			n, _ := strconv.Atoi(args[1])
			size, _ := strconv.Atoi(args[2])
			rtts := make([]time.Duration, 0, n)
			for range n {
				msg := make([]byte, max(size, 8))
				binary.LittleEndian.PutUint64(msg, pingMark)
				start := time.Now()
				if err := f.Send(args[0], msg); err != nil {
					break
				}
				select {
				case <-h.pongs:
				case <-time.After(5 * time.Second):
				}
				rtts = append(rtts, time.Since(start))
			}
			slices.Sort(rtts)
			if len(rtts) == 0 {
				h.printf("%s 0", id)
				break
			}
			h.printf("%s %d", id, rtts[len(rtts)/2].Nanoseconds())
		case "panic": // panic ID NODE: a message NODE's host panics on
			msg := make([]byte, 8)
			binary.LittleEndian.PutUint64(msg, panicMark)
			h.printf("%s %v", id, f.Send(args[0], msg))
		case "count": // count ID NODE
			h.mu.Lock()
			got, bad := h.got[args[0]], h.bad[args[0]]
			h.mu.Unlock()
			h.printf("%s %d %d", id, got, bad)
		case "stall":
			h.mu.Lock()
			h.stalled = make(chan struct{})
			h.mu.Unlock()
			h.printf("%s ok", id)
		case "unstall":
			h.mu.Lock()
			close(h.stalled)
			h.stalled = nil
			h.mu.Unlock()
			h.printf("%s ok", id)
		case "reset": // reset ID NODE
			f.Reset(args[0], "asked by the test")
			h.printf("%s ok", id)
		case "rss": // rss ID: the process's resident memory, in KiB
			b, _ := os.ReadFile("/proc/self/status")
			var kb int64
			for _, l := range strings.Split(string(b), "\n") {
				if f := strings.Fields(l); len(f) >= 2 && f[0] == "VmRSS:" {
					kb, _ = strconv.ParseInt(f[1], 10, 64)
				}
			}
			h.printf("%s %d", id, kb)
		case "goroutines":
			h.printf("%s %d", id, runtime.NumGoroutine())
		case "stats":
			b, _ := json.Marshal(f.Stats())
			h.printf("%s %s", id, b)
		case "quit":
			f.Close()
			h.printf("%s closed", id)
			return 0
		}
	}
	f.Close()
	return 0
}

type nopHost struct{}

func (nopHost) NodeUp(string, string)           {}
func (nopHost) NodeDown(string, string, string) {}
func (nopHost) Deliver(string, []byte)          {}

func isRoot() bool { return os.Geteuid() == 0 }
