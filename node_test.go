package switchboard

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	pb "github.com/switchboard-ipc/switchboard/proto"
	"github.com/switchboard-ipc/switchboard/shm"
)

func TestNodeCloseFailsCalls(t *testing.T) { bothTransports(t, testNodeCloseFailsCalls) }

func testNodeCloseFailsCalls(t *testing.T, tr Transport) {
	n := startNode(t)
	echoService(n)
	c := dial(t, n, WithTransport(tr))
	errc := make(chan error, 1)
	go func() {
		_, err := c.Call(context.Background(), svcEcho, cmdSlow, nil)
		errc <- err
	}()
	time.Sleep(50 * time.Millisecond)
	start := time.Now()
	n.Close()
	select {
	case err := <-errc:
		if !errors.Is(err, ErrNodeGone) {
			t.Fatalf("in-flight call: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("in-flight call not failed by node shutdown")
	}
	t.Logf("in-flight call failed %v after Close", time.Since(start))
	if _, err := c.Call(context.Background(), svcEcho, cmdEcho, nil); !errors.Is(err, ErrNodeGone) {
		t.Fatalf("call after shutdown: %v", err)
	}
}

// TestServeReturnsClosed checks that Serve, stopped by its context,
// returns only once the node is closed: a call made after it returned
// fails with ErrNodeGone, never reaching a node still shutting down.
func TestServeReturnsClosed(t *testing.T) {
	for range 20 {
		n, err := NewNode(WithSocket(filepath.Join(t.TempDir(), "node.sock")))
		if err != nil {
			t.Fatal(err)
		}
		if err := n.Listen(); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		served := make(chan error, 1)
		go func() { served <- n.Serve(ctx) }()
		c := dial(t, n)
		cancel()
		if err := <-served; err != nil {
			t.Fatal(err)
		}
		if _, err := c.Call(context.Background(), SystemService, SysPing, nil); !errors.Is(err, ErrNodeGone) {
			t.Fatalf("call after Serve returned: %v", err)
		}
		n.Close()
	}
}

func TestListenRefusesLiveSocket(t *testing.T) {
	n := startNode(t)
	other, err := NewNode(WithSocket(n.SocketPath()))
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	if err := other.Listen(); err == nil || !contains(err.Error(), "another node serves") {
		t.Fatalf("second node on a live socket: %v", err)
	}
}

func TestListenReplacesStaleSocket(t *testing.T) {
	path := t.TempDir() + "/node.sock"
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false)
	ln.Close() // a socket file nobody serves: what a killed node leaves
	n, err := NewNode(WithSocket(path))
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	if err := n.Listen(); err != nil {
		t.Fatalf("stale socket not replaced: %v", err)
	}
}

func TestConnections(t *testing.T) {
	n := startNode(t)
	a := dial(t, n, WithClientName("alpha"))
	b := dial(t, n, WithClientName("beta"))
	var list []ConnInfo
	waitFor(t, func() bool { list = n.Connections(); return len(list) == 2 })
	if list[0].ID != a.ID() || list[0].Name != "alpha" || list[1].Address != b.Address() || list[0].Cred.PID != int32(os.Getpid()) {
		t.Fatalf("connections %+v", list)
	}
	a.Close()
	waitFor(t, func() bool { list = n.Connections(); return len(list) == 1 && list[0].ID == b.ID() })
}

// TestProtocolViolation: a client that writes a frame the protocol does
// not allow is disconnected with that reason; the node serves the others.
func TestProtocolViolation(t *testing.T) {
	bothTransports(t, func(t *testing.T, tr Transport) {
		n := startNode(t)
		echoService(n)
		bad, good := dial(t, n, WithTransport(tr)), dial(t, n, WithTransport(tr))
		bad.wmu.Lock()
		err := bad.req.Write(context.Background(), shm.Header{Kind: pb.KindReply, ID: 1}, []byte("not a request"))
		bad.wmu.Unlock()
		if err != nil {
			t.Fatal(err)
		}
		select {
		case <-bad.gone:
		case <-time.After(5 * time.Second):
			t.Fatal("the node kept a client that broke the protocol")
		}
		if err := bad.err(); !errors.Is(err, ErrProtocol) {
			t.Fatalf("bad client ended with %v, want ErrProtocol", err)
		}
		if _, err := good.Call(context.Background(), svcEcho, cmdEcho, []byte("x")); err != nil {
			t.Fatalf("other client: %v", err)
		}
	})
}

// TestReleaseWithBlockedSocketWriter: a socket-transport client that
// stops reading (the node's writer blocks) and then breaks the protocol is
// still released: a blocked write must not hold the release up.
func TestReleaseWithBlockedSocketWriter(t *testing.T) {
	n := startNode(t)
	raw, err := net.Dial("unix", n.SocketPath())
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	uc := raw.(*net.UnixConn)
	uc.SetReadBuffer(4096)
	if err := pb.WriteControl(uc, &pb.Control{Msg: &pb.Control_Hello{Hello: &pb.Hello{ProtocolVersion: pb.ProtocolVersion, ClientName: "raw", Transport: pb.Transport_TRANSPORT_SOCKET}}}, nil); err != nil {
		t.Fatal(err)
	}
	m, err := pb.ReadControl(uc)
	if err != nil || m.GetWelcome() == nil {
		t.Fatalf("welcome: %v %v", m, err)
	}
	id := m.GetWelcome().GetConnectionId()
	cn := n.reg.Lookup(id)
	payload := make([]byte, 32<<10)
	// A client that never reads: its socket fills, the writer blocks.
	for i := 0; i < 400; i++ {
		n.SendEvent(id, 1, 1, payload)
		if i%20 == 0 {
			time.Sleep(5 * time.Millisecond)
		}
	}
	time.Sleep(500 * time.Millisecond) // sendFrames now blocked in Write: we never read
	// A bad frame on the socket: the node ends the connection (no goodbye on this path).
	raw.Write(make([]byte, shm.HeaderSize))
	select {
	case <-cn.Done():
		t.Log("released")
	case <-time.After(3 * time.Second):
		t.Fatal("connection never released: release waits for sockMu held by sendFrames' blocked Write")
	}
}

// TestMonitorPrivilegedWithoutPolicy: a node without a policy allows
// every action but monitoring to anyone it lets connect; monitoring is
// for root and its own uid.
func TestMonitorPrivilegedWithoutPolicy(t *testing.T) {
	n := startNode(t)
	other := Cred{UID: 65534, GID: 65534}
	if err := n.allow(other, ActionMonitor, ""); err == nil {
		t.Error("uid 65534 may monitor a node without a policy")
	}
	if err := n.allow(other, ActionPublish, "g"); err != nil {
		t.Errorf("publish without a policy: %v", err)
	}
	for _, uid := range []uint32{0, uint32(os.Geteuid())} {
		if err := n.allow(Cred{UID: uid}, ActionMonitor, ""); err != nil {
			t.Errorf("uid %d may not monitor: %v", uid, err)
		}
	}
}

// TestCloseRemovesWhatListenCreated: the socket and the directories Listen
// created for it are gone after Close; a directory that was there before,
// or that holds someone else's file, stays.
func TestCloseRemovesWhatListenCreated(t *testing.T) {
	base := t.TempDir()
	kept := filepath.Join(base, "kept")
	if err := os.MkdirAll(filepath.Join(kept, "busy"), 0o750); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		socket string
		gone   string // the topmost directory Close must remove ("": none)
		stays  string
	}{
		{filepath.Join(base, "run", "sb", "node.sock"), filepath.Join(base, "run"), base},
		{filepath.Join(kept, "sb", "node.sock"), filepath.Join(kept, "sb"), kept},
		{filepath.Join(kept, "busy", "node.sock"), "", filepath.Join(kept, "busy")},
	} {
		n, err := NewNode(WithSocket(tc.socket))
		if err != nil {
			t.Fatal(err)
		}
		if err := n.Listen(); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- n.Serve(context.Background()) }()
		if err := n.Close(); err != nil {
			t.Fatal(err)
		}
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		if _, err := os.Lstat(tc.socket); !os.IsNotExist(err) {
			t.Errorf("%s: the socket is still there (%v)", tc.socket, err)
		}
		if tc.gone != "" {
			if _, err := os.Lstat(tc.gone); !os.IsNotExist(err) {
				t.Errorf("%s: %s, created by Listen, is still there (%v)", tc.socket, tc.gone, err)
			}
		}
		if _, err := os.Lstat(tc.stays); err != nil {
			t.Errorf("%s: %s, there before, is gone: %v", tc.socket, tc.stays, err)
		}
	}
	// A directory Listen created but someone else filled stays.
	sock := filepath.Join(base, "shared", "node.sock")
	n, err := NewNode(WithSocket(sock))
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Listen(); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(base, "shared", "theirs"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	n.Close()
	if _, err := os.Lstat(filepath.Join(base, "shared", "theirs")); err != nil {
		t.Errorf("someone else's file went with the node's directory: %v", err)
	}
}

// lockedBuffer is a log destination several goroutines write to.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// records returns the JSON log records written so far.
func (l *lockedBuffer) records(t *testing.T) []map[string]any {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []map[string]any
	for line := range bytes.SplitSeq(bytes.TrimSpace(l.b.Bytes()), []byte("\n")) {
		if len(line) == 0 {
			continue
		}
		var r map[string]any
		if err := json.Unmarshal(line, &r); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		out = append(out, r)
	}
	return out
}

// TestRefusalsCountedAndLogged: every refusal, of a connection or of an
// action on any path, is counted by action and logged at warn with who
// asked what; a flood of refusals shows at most refusalLines a second in
// the log, and the next line says how many were left out.
func TestRefusalsCountedAndLogged(t *testing.T) {
	var logs lockedBuffer
	logger := slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelWarn}))
	refuseAll := PolicyFunc(func(who Cred, what Action, target string) error {
		if what == ActionPublish || what == ActionSubscribe {
			return fmt.Errorf("no %s for uid %d", what, who.UID)
		}
		return nil
	})
	n := startNode(t, WithLogger(logger), WithPolicy(refuseAll), WithAuthorize(func(c Cred) error {
		if c.PID == int32(os.Getpid()) && os.Getenv("SB_REFUSE_ME") == "1" {
			return errors.New("not today")
		}
		return nil
	}))
	ctx := ctx5(t)
	c := dial(t, n)
	if err := c.Publish(ctx, "g", []byte("x"), WantAnswer()); !errors.Is(err, ErrRefused) {
		t.Fatalf("publish: %v", err)
	}
	if err := c.Subscribe(ctx, "g"); !errors.Is(err, ErrRefused) {
		t.Fatalf("subscribe: %v", err)
	}
	t.Setenv("SB_REFUSE_ME", "1")
	if _, err := Dial(ctx, WithSocket(n.SocketPath())); !errors.Is(err, ErrRefused) {
		t.Fatalf("dial: %v", err)
	}
	st := n.Stats()
	if st.Refusals[ActionPublish] != 1 || st.Refusals[ActionSubscribe] != 1 || st.Refusals[ActionConnect] != 1 || st.HandshakesRefused != 1 {
		t.Fatalf("refusals %v, handshakes refused %d; want one publish, one subscribe, one connect", st.Refusals, st.HandshakesRefused)
	}
	want := map[string]string{"publish": "g", "subscribe": "g", "connect": ""}
	for _, r := range logs.records(t) {
		if r["msg"] != "refused" || r["level"] != "WARN" {
			continue
		}
		action, _ := r["action"].(string)
		target, ok := want[action]
		if !ok || r["target"] != target || r["uid"] != float64(os.Geteuid()) || r["gid"] != float64(os.Getegid()) ||
			r["pid"] != float64(os.Getpid()) || r["reason"] == "" {
			t.Errorf("refusal logged as %v", r)
		}
		delete(want, action)
	}
	if len(want) != 0 {
		t.Fatalf("refusals not logged: %v", want)
	}

	// A flood: the log is bounded, and nothing is lost from the counts.
	const flood = 300
	before := len(logs.records(t))
	for range flood {
		if err := c.Publish(ctx, "g", nil, WantAnswer()); !errors.Is(err, ErrRefused) {
			t.Fatal(err)
		}
	}
	time.Sleep(time.Until(time.Now().Truncate(time.Second).Add(time.Second))) // a fresh second
	if err := c.Publish(ctx, "g", nil, WantAnswer()); !errors.Is(err, ErrRefused) {
		t.Fatal(err)
	}
	recs := logs.records(t)[before:]
	var shown, left uint64
	for _, r := range recs {
		shown++
		if v, ok := r["refusals_not_logged"].(float64); ok {
			left += uint64(v)
		}
	}
	if shown+left != flood+1 || shown > 3*refusalLines+1 {
		t.Fatalf("%d refusals: %d logged, %d said left out; want all accounted for, at most %d a second", flood+1, shown, left, refusalLines)
	}
	if got := n.Stats().Refusals[ActionPublish]; got != flood+2 {
		t.Fatalf("publish refusals counted: %d, want %d", got, flood+2)
	}
}
