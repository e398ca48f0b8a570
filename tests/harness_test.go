package tests

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/switchboard-ipc/switchboard"
)

// Multi-process tests re-execute this test binary in a role given by
// SB_TEST_ROLE: "node" runs a node with the test services below; the
// client roles connect to one. Every child gets a parent-death pipe on fd
// 3: it exits when the pipe closes, so a dead test leaves no process.

const roleEnv = "SB_TEST_ROLE"

func TestMain(m *testing.M) {
	if role := os.Getenv(roleEnv); role != "" {
		go func() { // parent-death pipe
			f := os.NewFile(3, "parent")
			var b [1]byte
			f.Read(b[:])
			os.Exit(7)
		}()
		os.Exit(runRole(role))
	}
	code := m.Run()
	if nodeDir != "" {
		os.RemoveAll(nodeDir) // the cmd/node binary built by buildNode
	}
	os.Exit(code)
}

// Test services served by the "node" role.
const (
	svcTest  uint16 = 7
	cmdEcho  uint16 = 1
	cmdSlow  uint16 = 2 // waits for its context to end
	cmdPanic uint16 = 3
	cmdEmit  uint16 = 4 // payload: decimal count; sends that many events, numbered
	cmdFail  uint16 = 5
	// cmdStuck ignores its context and returns once cmdUnstick is called;
	// cmdStats answers "STUCK LATE CONNECTIONS ENTERED SPARES" from the
	// node's stats and the count of cmdStuck calls that began.
	cmdStuck   uint16 = 6
	cmdUnstick uint16 = 7
	cmdStats   uint16 = 8
	// cmdEmitLoan is cmdEmit "COUNT:SIZE" with Request.WriteEvent: each
	// event's payload is copied from one buffer straight into the ring.
	cmdEmitLoan uint16 = 9
	// cmdMem answers "NUMGC MALLOCS TOTALALLOC EVENTWAITS EXPIRED" from the
	// node's runtime.MemStats and its connections' event waits.
	cmdMem uint16 = 10
)

// The node role's node, and what cmdStuck waits for.
var (
	roleNode    *switchboard.Node
	unstick     = make(chan struct{})
	unstickOnce sync.Once
	stuckCalls  atomic.Int32
)

func runRole(role string) int {
	if code, ok := runBusRole(role); ok {
		return code
	}
	if role == "drainer" {
		return runDrainer()
	}
	ctx := context.Background()
	socket := os.Getenv("SB_SOCKET")
	switch role {
	case "node":
		var opts []switchboard.NodeOption
		if q := os.Getenv("SB_EVENT_QUEUE"); q != "" {
			n, _ := strconv.Atoi(q)
			policy := switchboard.DropOldest
			if os.Getenv("SB_OVERFLOW") == "disconnect" {
				policy = switchboard.DisconnectSlow
			}
			opts = append(opts, switchboard.WithEventQueue(n), switchboard.WithEventQueueBytes(1<<30), switchboard.WithOverflow(policy))
		}
		if cpus := os.Getenv("SB_CPUS"); cpus != "" {
			if err := pinProcess(cpuList(cpus)); err != nil {
				fmt.Fprintln(os.Stderr, err)
				return 1
			}
		}
		if d := os.Getenv("SB_SPIN"); d != "" {
			spin, err := time.ParseDuration(d)
			if err != nil {
				fmt.Fprintln(os.Stderr, err)
				return 1
			}
			opts = append(opts, switchboard.WithSpin(spin))
		}
		if p := os.Getenv("SB_POLICY"); p != "" {
			opts = append(opts, switchboard.WithPolicy(denyPolicy(p)))
		}
		if os.Getenv("SB_AUTHORIZE") == "all" {
			opts = append(opts, switchboard.WithAuthorize(func(switchboard.Cred) error { return nil }))
		}
		if l := os.Getenv("SB_UID_LIMITS"); l != "" { // "CONNS,HANDSHAKES"
			conns, hs, _ := strings.Cut(l, ",")
			c, _ := strconv.Atoi(conns)
			h, _ := strconv.Atoi(hs)
			opts = append(opts, switchboard.WithUIDLimits(c, h), switchboard.WithHandshakeTimeout(30*time.Second))
		}
		if w := os.Getenv("SB_EVENT_WAIT"); w != "" { // "0" restores the queue's path for handlers' events
			d, err := time.ParseDuration(w)
			if err != nil {
				fmt.Fprintln(os.Stderr, err)
				return 1
			}
			opts = append(opts, switchboard.WithEventWait(d))
		}
		if r := os.Getenv("SB_EVENT_RING"); r != "" {
			n, _ := strconv.Atoi(r)
			opts = append(opts, switchboard.WithRings(1<<20, 1<<20, n))
		}
		n, err := switchboard.NewNode(append(opts, switchboard.WithSocket(socket))...)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		n.HandleFunc(svcTest, testService, switchboard.WithName("test"),
			switchboard.WithDescription("the tests' service: echo, slow, panic, emit, fail, stuck, unstick, stats"),
			switchboard.WithCommand(cmdEcho, "echo", "the payload"), switchboard.WithCommand(cmdSlow, "slow", "waits for its context to end"),
			switchboard.WithCommand(cmdFail, "fail", "an error"))
		roleNode = n
		if err := n.Listen(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		if prof := os.Getenv("SB_MEMPROFILE"); prof != "" { // every allocation, written at exit
			runtime.MemProfileRate = 1
			defer func() {
				if f, err := os.Create(prof); err == nil {
					pprof.Lookup("allocs").WriteTo(f, 0)
					f.Close()
				}
			}()
		}
		if prof := os.Getenv("SB_CPUPROFILE"); prof != "" { // for looking into benchmarks
			f, err := os.Create(prof)
			if err == nil && pprof.StartCPUProfile(f) == nil {
				defer pprof.StopCPUProfile()
			}
		}
		sctx, stop := signalContext()
		defer stop()
		if err := n.Serve(sctx); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		return 0
	case "stuckcall": // connects, starts a call to a handler that ignores its context, says so with its address
		tr, _ := strconv.Atoi(os.Getenv("SB_TRANSPORT"))
		c, err := switchboard.Dial(ctx, switchboard.WithSocket(socket), switchboard.WithTransport(switchboard.Transport(tr)))
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		go c.Call(ctx, svcTest, cmdStuck, []byte("a request the handler holds"))
		fmt.Println("calling", c.Address())
		select {}
	case "slowcall": // connects, starts a call that never ends, says so on stdout
		tr, _ := strconv.Atoi(os.Getenv("SB_TRANSPORT"))
		c, err := switchboard.Dial(ctx, switchboard.WithSocket(socket), switchboard.WithTransport(switchboard.Transport(tr)))
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		go c.Call(ctx, svcTest, cmdSlow, nil)
		fmt.Println("calling")
		select {}
	case "flood": // holds as many connections as it gets, then as many handshakes in progress; reports; waits
		var held []*switchboard.Conn
		var err error
		for range 1000 {
			var c *switchboard.Conn
			if c, err = switchboard.Dial(ctx, switchboard.WithSocket(socket)); err != nil {
				break
			}
			held = append(held, c)
		}
		limited := errors.Is(err, switchboard.ErrLimitExceeded)
		fmt.Printf("conns %d limited %v: %v\n", len(held), limited, err)
		for _, c := range held {
			c.Close()
		}
		var probe *switchboard.Conn
		for probe == nil { // a slot frees once the node has seen one go
			probe, _ = switchboard.Dial(ctx, switchboard.WithSocket(socket))
			time.Sleep(time.Millisecond)
		}
		for { // until the node holds none of ours but the probe
			cs, err := probe.Connections(ctx)
			mine := 0
			for _, ci := range cs {
				if ci.Cred.UID == uint32(os.Geteuid()) {
					mine++
				}
			}
			if err != nil || mine <= 1 {
				break
			}
			time.Sleep(time.Millisecond)
		}
		probe.Close() // its slot, while it goes, leaves room under the connection limit
		var raws []net.Conn
		refusedAt := -1
		for i := range 1000 { // sockets that never say Hello
			r, err := net.Dial("unix", socket)
			if err != nil {
				break
			}
			raws = append(raws, r)
			r.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
			if n, _ := r.Read(make([]byte, 64)); n > 0 { // an answer before Hello: refused
				refusedAt = i
				break
			}
		}
		fmt.Printf("handshakes %d refused at %d\n", len(raws), refusedAt)
		select {}
	case "dialloop": // holds what it may, then dials until SB_SECONDS pass; reports the refusals
		var held []*switchboard.Conn
		for {
			c, err := switchboard.Dial(ctx, switchboard.WithSocket(socket))
			if err != nil {
				break
			}
			held = append(held, c)
		}
		secs, _ := strconv.ParseFloat(os.Getenv("SB_SECONDS"), 64)
		start, refused, other := time.Now(), 0, 0
		for time.Since(start).Seconds() < secs {
			c, err := switchboard.Dial(ctx, switchboard.WithSocket(socket))
			switch {
			case errors.Is(err, switchboard.ErrLimitExceeded):
				refused++
			case err == nil:
				c.Close()
			default:
				other++
			}
		}
		fmt.Printf("held %d refused %d other %d in %.2fs\n", len(held), refused, other, time.Since(start).Seconds())
		select {}
	case "dial": // connects once and reports the error, or "ok"
		c, err := switchboard.Dial(ctx, switchboard.WithSocket(socket))
		if err != nil {
			switch {
			case errors.Is(err, switchboard.ErrRefused):
				fmt.Println("refused:", err)
			default:
				fmt.Println("error:", err)
			}
			return 0
		}
		c.Close()
		fmt.Println("ok")
		return 0
	}
	fmt.Fprintln(os.Stderr, "unknown role", role)
	return 2
}

func signalContext() (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(context.Background())
	ch := make(chan os.Signal, 1)
	signalNotify(ch)
	go func() {
		select {
		case <-ch:
			cancel()
		case <-ctx.Done():
		}
	}()
	return ctx, cancel
}

func testService(ctx context.Context, r *switchboard.Request) ([]byte, error) {
	switch r.Command {
	case cmdEcho:
		return r.Payload, nil // the node copies the reply before it releases the request
	case cmdSlow:
		<-ctx.Done()
		return nil, ctx.Err()
	case cmdPanic:
		panic("test panic")
	case cmdFail:
		return nil, errors.New("failed on purpose")
	case cmdStuck:
		stuckCalls.Add(1)
		<-unstick
		return []byte("unstuck"), nil
	case cmdUnstick:
		unstickOnce.Do(func() { close(unstick) })
		return nil, nil
	case cmdStats:
		st := roleNode.Stats()
		return fmt.Appendf(nil, "%d %d %d %d %d", st.StuckHandlers, st.LateReplies, st.Connections, stuckCalls.Load(), st.SpareSegments), nil
	case cmdMem:
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		var waits, expired uint64
		for _, ci := range roleNode.Connections() {
			waits += ci.EventWaits
			expired += ci.EventWaitsExpired
		}
		return fmt.Appendf(nil, "%d %d %d %d %d", ms.NumGC, ms.Mallocs, ms.TotalAlloc, waits, expired), nil
	case cmdEmitLoan:
		count, size, _ := strings.Cut(string(r.Payload), ":")
		n, err := strconv.Atoi(count)
		if err != nil {
			return nil, err
		}
		sz, err := strconv.Atoi(size)
		if err != nil {
			return nil, err
		}
		payload := make([]byte, sz)
		fill := func(p []byte) (int, error) { return copy(p, payload), nil }
		for i := range n {
			if err := r.WriteEvent(uint16(i), sz, fill); err != nil {
				return nil, err
			}
		}
		return nil, nil
	case cmdEmit: // "COUNT" numbers the events; "COUNT:SIZE" sends SIZE-byte events
		count, size, sized := strings.Cut(string(r.Payload), ":")
		n, err := strconv.Atoi(count)
		if err != nil {
			return nil, err
		}
		if sized {
			sz, err := strconv.Atoi(size)
			if err != nil {
				return nil, err
			}
			payload := make([]byte, sz) // shared by every event: the node copies it into the ring
			for i := range n {
				r.SendEvent(uint16(i), payload)
			}
			return nil, nil
		}
		for i := range n {
			r.SendEvent(uint16(i), []byte(strconv.Itoa(i)))
		}
		return nil, nil
	}
	return nil, switchboard.ErrUnknownCommand
}

// child is a process started by the tests.
type child struct {
	cmd    *exec.Cmd
	death  *os.File // parent end of the parent-death pipe
	stdout *syncBuffer
}

// syncBuffer collects a child's output; the test reads it while it grows.
type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// startRole starts this test binary in role with env, and registers its
// cleanup: SIGTERM, then SIGKILL after a grace period, always waited for.
func startRole(t testing.TB, role string, env []string, attr *syscall.SysProcAttr) *child {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	cmd := exec.CommandContext(ctx, selfBinary(t, attr != nil), "-test.run=^$")
	cmd.Env = append(append(os.Environ(), roleEnv+"="+role), env...)
	cmd.ExtraFiles = []*os.File{r}
	out := &syncBuffer{}
	cmd.Stdout = out
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = attr
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGQUIT) }
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatal(err)
	}
	r.Close()
	c := &child{cmd: cmd, death: w, stdout: out}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Signal(syscall.SIGTERM)
			done := make(chan struct{})
			go func() { cmd.Wait(); close(done) }()
			select {
			case <-done:
			case <-time.After(5 * time.Second):
				cmd.Process.Kill()
				<-done
			}
		}
		w.Close()
		cancel()
	})
	return c
}

// selfBinary returns this test binary, or a copy that any user can run
// (for children started under another uid).
func selfBinary(t testing.TB, forOthers bool) string {
	if !forOthers {
		return os.Args[0]
	}
	dir := publicDir(t)
	dst := filepath.Join(dir, "tests.test")
	data, err := os.ReadFile(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, data, 0o755); err != nil {
		t.Fatal(err)
	}
	return dst
}

// publicDir returns a directory that every user can enter.
func publicDir(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "switchboard-test-")
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(dir, 0o755)
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// nodeChild runs a node in a child process and waits until it serves and
// has released the connection that checked it.
func nodeChild(t testing.TB, env ...string) (*child, string) {
	t.Helper()
	socket := filepath.Join(publicDir(t), "node.sock")
	c := startRole(t, "node", append(env, "SB_SOCKET="+socket), nil)
	checkFor(t, 10*time.Second, func() error {
		conn, err := switchboard.Dial(context.Background(), switchboard.WithSocket(socket))
		if err != nil {
			return err
		}
		conn.Close()
		return nil
	})
	checkFor(t, 5*time.Second, func() error {
		fds, err := fdsOf(c.cmd.Process.Pid)
		if err != nil {
			return err
		}
		// The listener is its one socket once the checking connection is
		// released (its segment's memfd goes earlier, with the Welcome).
		if n := countMatching(fds, "socket:"); n != 1 {
			return fmt.Errorf("node holds %d sockets, want its listener alone", n)
		}
		return nil
	})
	poolSettled(t, c.cmd.Process.Pid, socket)
	return c, socket
}

// nodeSpares is how many segments a node keeps made ahead for the
// connections to come (spareLinks in node_handshake.go), each a memfd and
// three eventfds.
const nodeSpares = 4

// poolSettled waits until the node at pid holds its spare segments and no
// other memfd, with nothing in flight: descriptor baselines are taken
// after it. A probe connection asks the node (NodeStats.SpareSegments)
// until the pool has made up for the probe's segment, then leaves; once it
// is released the node holds its four spares, the connections it had
// before, and nothing else.
func poolSettled(t testing.TB, pid int, socket string) {
	t.Helper()
	sockets := func() int {
		fds, err := fdsOf(pid)
		if err != nil {
			t.Fatal(err)
		}
		return countMatching(fds, "socket:")
	}
	before := sockets()
	probe, err := switchboard.Dial(context.Background(), switchboard.WithSocket(socket))
	if err != nil {
		t.Fatal(err)
	}
	checkFor(t, 5*time.Second, func() error {
		b, err := probe.Call(context.Background(), svcTest, cmdStats, nil)
		if err != nil {
			return err
		}
		if f := strings.Fields(string(b)); len(f) != 5 || f[4] != strconv.Itoa(nodeSpares) {
			return fmt.Errorf("node stats %q: want %d spare segments last", b, nodeSpares)
		}
		return nil
	})
	probe.Close()
	checkFor(t, 5*time.Second, func() error {
		fds, err := fdsOf(pid)
		if err != nil {
			return err
		}
		if n := countMatching(fds, "socket:"); n != before {
			return fmt.Errorf("node holds %d sockets, %d before the probe", n, before)
		}
		if n := countMatching(fds, "memfd:"); n != nodeSpares {
			return fmt.Errorf("node holds %d segments, want its %d spares", n, nodeSpares)
		}
		return nil
	})
}

// checkFor polls f until it returns nil or the time is up.
func checkFor(t testing.TB, total time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(total)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %v", total, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// fdsOf lists the targets of a process's open descriptors.
func fdsOf(pid int) ([]string, error) {
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range ents {
		if l, err := os.Readlink(filepath.Join(dir, e.Name())); err == nil {
			out = append(out, l)
		}
	}
	return out, nil
}

func countMatching(list []string, sub string) int {
	n := 0
	for _, s := range list {
		if strings.Contains(s, sub) {
			n++
		}
	}
	return n
}

// leakCheck fails the test if this process ends it with more goroutines
// or descriptors than it started with.
func leakCheck(t *testing.T) {
	t.Helper()
	g0 := runtime.NumGoroutine()
	f0, _ := fdsOf(os.Getpid())
	t.Cleanup(func() {
		checkFor(t, 5*time.Second, func() error {
			g1 := runtime.NumGoroutine()
			f1, _ := fdsOf(os.Getpid())
			if g1 > g0 || len(f1) > len(f0) {
				return fmt.Errorf("leak: goroutines %d -> %d, fds %d -> %d", g0, g1, len(f0), len(f1))
			}
			return nil
		})
	})
}
