package tests

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/switchboard-ipc/switchboard"
	"golang.org/x/sys/unix"
)

// The federation tests run three cmd/node processes linked by [cluster]
// on loopback, inside a private network namespace (as root; skipped
// otherwise), with this process's clients on each node's socket (Unix
// sockets are paths: they do not belong to a network namespace).

const fedNetnsEnv = "SWITCHBOARD_TESTS_NETNS"

// parentMntEnv carries the parent's mount namespace to a child made with
// CLONE_NEWNS, which checks it is in another before it mounts anything.
const parentMntEnv = "SWITCHBOARD_TESTS_PARENT_MNTNS"

// inFedNetns runs the calling test again in a child process with a
// network namespace of its own and reports its result (false: the caller
// returns); in that child it brings loopback up and returns true.
func inFedNetns(t *testing.T) bool {
	t.Helper()
	return inFedNamespaces(t, 0)
}

// inFedNamespaces is inFedNetns with more namespaces for the child
// (CLONE_NEWNS: a mount namespace of its own, the caller's to set up).
func inFedNamespaces(t *testing.T, more uintptr) bool {
	t.Helper()
	if os.Getenv(fedNetnsEnv) != "" {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer unix.Close(fd)
		ifr, err := unix.NewIfreq("lo")
		if err != nil {
			t.Fatal(err)
		}
		if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
			t.Fatal(err)
		}
		ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
		if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
			t.Fatalf("bringing lo up: %v", err)
		}
		return true
	}
	if os.Geteuid() != 0 {
		t.Skip("federation tests run three node processes on loopback in a private network namespace (CLONE_NEWNET), which needs root")
	}
	cmd := exec.Command(os.Args[0], "-test.run=^"+t.Name()+"$", "-test.v", "-test.count=1", "-test.timeout=5m")
	cmd.Env = append(os.Environ(), fedNetnsEnv+"=1")
	if more&syscall.CLONE_NEWNS != 0 {
		ns, err := os.Readlink("/proc/self/ns/mnt")
		if err != nil {
			t.Fatal(err)
		}
		cmd.Env = append(cmd.Env, parentMntEnv+"="+ns)
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET | more, Pdeathsig: syscall.SIGKILL}
	out, err := cmd.CombinedOutput()
	for _, line := range strings.Split(strings.TrimRight(string(out), "\n"), "\n") {
		t.Log(line)
	}
	if err != nil {
		t.Fatalf("in its network namespace, the test failed: %v", err)
	}
	return false
}

// fedSecret returns the path of a cluster secret file (mode 0600) that the
// loopback nodes of the calling test share: without TLS a node requires
// one.
func fedSecret(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(os.TempDir(), fmt.Sprintf("switchboard-fed-%d", os.Getpid()))
	path := filepath.Join(dir, "cluster.secret")
	if _, err := os.Stat(path); err == nil {
		return path
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte("the test cluster's secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return path
}

// fedCluster starts nodes n1..nN, each listening on 127.0.0.1:7951+i and
// dialling the others, and waits until each sees the others up.
func fedCluster(t *testing.T, n int) []*daemon {
	t.Helper()
	addr := func(i int) string { return fmt.Sprintf("127.0.0.1:%d", 7951+i) }
	secret := fedSecret(t)
	var ds []*daemon
	for i := range n {
		var peers []string
		for j := range n {
			if j != i {
				peers = append(peers, fmt.Sprintf("%q", addr(j)))
			}
		}
		cfg := fmt.Sprintf("name = \"n%d\"\n\n[cluster]\nenabled = true\nlisten = %q\npeers = [%s]\nsecret_file = %q\n",
			i+1, addr(i), strings.Join(peers, ", "), secret)
		ds = append(ds, startDaemon(t, daemonOpts{config: cfg}))
	}
	return ds
}

// fedDial connects to d, subscribed to sys.nodes, and waits until the
// node sees want other nodes up (as Members of the cluster show).
func fedDial(t *testing.T, d *daemon, opts ...switchboard.DialOption) *switchboard.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := switchboard.Dial(ctx, append([]switchboard.DialOption{switchboard.WithSocket(d.socket)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// waitMembers waits until c sees want members in group, cluster-wide.
func waitMembers(t *testing.T, c *switchboard.Conn, group string, want int) {
	t.Helper()
	checkFor(t, 20*time.Second, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		ms, err := c.Members(ctx, group)
		if err != nil {
			return err
		}
		if len(ms) != want {
			return fmt.Errorf("%d members of %s, want %d", len(ms), group, want)
		}
		return nil
	})
}

func seqPayload(i int) []byte { return binary.LittleEndian.AppendUint64(nil, uint64(i)) }

// recvSeq reads n bus messages of kind from c, checking that their
// payloads count 0..n-1 in order.
func recvSeq(t *testing.T, c *switchboard.Conn, kind switchboard.EventKind, from string, n int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for next := 0; next < n; {
		e, err := c.RecvEvent(ctx)
		if err != nil {
			t.Fatalf("after %d of %d messages: %v", next, n, err)
		}
		if e.Kind != kind || e.From != from {
			continue // notices
		}
		if len(e.Payload) != 8 || binary.LittleEndian.Uint64(e.Payload) != uint64(next) {
			t.Fatalf("message %d of %d from %s: payload %x", next, n, from, e.Payload)
		}
		next++
	}
}

// checkFedCLI: the command line on n1 (of three nodes) lists n2 and n3
// up, lists remote (a connection on n2) with its node, and counts the
// nodes in status.
func checkFedCLI(t *testing.T, d *daemon, remote *switchboard.Conn) {
	t.Helper()
	sock := "--socket=" + d.socket
	r := runCLI(t, nil, "nodes", "--json", sock)
	var nodes struct {
		Node      string `json:"node"`
		Federated bool   `json:"federated"`
		Cluster   string `json:"cluster"`
		NodesUp   int    `json:"nodes_up"`
		Links     []struct {
			Node, Address, State string
			Configured           bool
			Sent, Delivered      uint64
			BudgetBytes          int64 `json:"budget_bytes"`
		} `json:"links"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &nodes); r.code != 0 || err != nil {
		t.Fatalf("nodes --json: exit %d, %v\n%s%s", r.code, err, r.stdout, r.stderr)
	}
	if nodes.Node != "n1" || !nodes.Federated || nodes.Cluster != "switchboard" || nodes.NodesUp != 2 || len(nodes.Links) != 2 {
		t.Fatalf("nodes --json on n1:\n%s", r.stdout)
	}
	for i, l := range nodes.Links {
		if l.Node != fmt.Sprintf("n%d", i+2) || l.State != "up" || l.Address != fmt.Sprintf("127.0.0.1:%d", 7952+i) ||
			!l.Configured || l.Sent == 0 || l.Delivered == 0 || l.BudgetBytes <= 0 {
			t.Errorf("nodes --json on n1: link %d: %+v", i, l)
		}
	}
	r = runCLI(t, nil, "ls", "--json", sock)
	var conns []struct{ Address, Node, Transport string }
	if err := json.Unmarshal([]byte(r.stdout), &conns); r.code != 0 || err != nil {
		t.Fatalf("ls --json: exit %d, %v\n%s%s", r.code, err, r.stdout, r.stderr)
	}
	found := false
	for _, c := range conns {
		found = found || c.Address == remote.Address() && c.Node == "n2" && c.Transport == "remote"
	}
	if !found {
		t.Errorf("ls --json on n1 does not list %s on n2:\n%s", remote.Address(), r.stdout)
	}
	if r = runCLI(t, nil, "ls", sock); !regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(remote.Address()) + ` +n2 `).MatchString(r.stdout) {
		t.Errorf("ls on n1 does not list %s on n2:\n%s", remote.Address(), r.stdout)
	}
	if r = runCLI(t, nil, "status", sock); !strings.Contains(r.stdout, "2 of 2 other nodes up, 2 configured") {
		t.Errorf("status on n1:\n%s", r.stdout)
	}
	t.Logf("switchboard nodes on n1:\n%s", runCLI(t, nil, "nodes", sock).stdout)
}

// TestFederationBus: three node processes; a client on each. Direct
// messages, publications, requests to one peer and to a group cross the
// links in order, nothing lost; want-answer to a remote address nobody
// has, to a group empty cluster-wide and to an unowned name fails; a node killed mid-request fails its caller with ErrPeerGone
// at once.
func TestFederationBus(t *testing.T) {
	if testing.Short() {
		t.Skip("starts three nodes")
	}
	if !inFedNetns(t) {
		return
	}
	ds := fedCluster(t, 3)
	served := make(chan struct{}, 1)
	block := make(chan struct{})
	defer close(block)
	handler := func(ctx context.Context, r *switchboard.PeerRequest) ([]byte, error) {
		if string(r.Payload) == "block" {
			served <- struct{}{}
			select {
			case <-block:
			case <-ctx.Done():
			}
			return nil, ctx.Err()
		}
		return append([]byte("re:"), r.Payload...), nil
	}
	c1 := fedDial(t, ds[0])
	c2 := fedDial(t, ds[1], switchboard.WithRequestHandler(handler))
	c3 := fedDial(t, ds[2], switchboard.WithRequestHandler(handler))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for _, c := range []*switchboard.Conn{c2, c3} {
		if err := c.Subscribe(ctx, "g"); err != nil {
			t.Fatal(err)
		}
	}
	waitMembers(t, c1, "g", 2) // the links are up and the interest crossed them
	checkFedCLI(t, ds[0], c2)

	const n = 2000
	for i := range n {
		if err := c1.Publish(ctx, "g", seqPayload(i)); err != nil {
			t.Fatal(err)
		}
		if err := c1.SendTo(ctx, c2.Address(), seqPayload(i)); err != nil {
			t.Fatal(err)
		}
	}
	recvSeq(t, c3, switchboard.EventGroup, c1.Address(), n)
	// c2 gets both streams, interleaved: each in its order.
	func() {
		rctx, rcancel := context.WithTimeout(ctx, time.Minute)
		defer rcancel()
		var group, direct int
		for group < n || direct < n {
			e, err := c2.RecvEvent(rctx)
			if err != nil {
				t.Fatalf("after %d publications and %d messages: %v", group, direct, err)
			}
			p := &direct
			switch {
			case e.From != c1.Address():
				continue
			case e.Kind == switchboard.EventGroup:
				p = &group
			case e.Kind != switchboard.EventMessage:
				continue
			}
			if binary.LittleEndian.Uint64(e.Payload) != uint64(*p) {
				t.Fatalf("%v %d: payload %x", e.Kind, *p, e.Payload)
			}
			*p++
		}
	}()

	// Requests: to one peer, then to the group (both remote nodes answer).
	for i := range 100 {
		p := seqPayload(i)
		got, err := c1.Request(ctx, c2.Address(), p)
		if err != nil || string(got) != "re:"+string(p) {
			t.Fatalf("request %d: %q, %v", i, got, err)
		}
	}
	for i := range 50 {
		p := seqPayload(i)
		rs, err := c1.RequestGroup(ctx, "g", p)
		if err != nil || len(rs) != 2 {
			t.Fatalf("RequestGroup %d: %d results, %v", i, len(rs), err)
		}
		for _, r := range rs {
			if r.Err != nil || string(r.Payload) != "re:"+string(p) || (r.Address != c2.Address() && r.Address != c3.Address()) {
				t.Fatalf("RequestGroup %d: %s answered %q, %v", i, r.Address, r.Payload, r.Err)
			}
		}
		if rs[0].Address == rs[1].Address {
			t.Fatalf("RequestGroup %d: %s answered twice", i, rs[0].Address)
		}
	}

	// Want-answer to an address of n2 that nobody has.
	nobody := c2.Address()[:strings.LastIndexByte(c2.Address(), '.')+1] + "999999"
	if err := c1.SendTo(ctx, nobody, []byte("x"), switchboard.WantAnswer()); !errors.Is(err, switchboard.ErrUndeliverable) {
		t.Fatalf("SendTo %s with WantAnswer: %v, want ErrUndeliverable", nobody, err)
	}
	// Want-answer to a group whose one member, on n2, left it: empty
	// cluster-wide once n1 heard so.
	if err := c2.Subscribe(ctx, "lonely"); err != nil {
		t.Fatal(err)
	}
	waitMembers(t, c1, "lonely", 1)
	if err := c1.Publish(ctx, "lonely", []byte("x"), switchboard.WantAnswer()); err != nil {
		t.Fatalf("Publish to a group with a member on n2: %v", err)
	}
	if err := c2.Unsubscribe(ctx, "lonely"); err != nil {
		t.Fatal(err)
	}
	waitMembers(t, c1, "lonely", 0)
	if err := c1.Publish(ctx, "lonely", []byte("x"), switchboard.WantAnswer()); !errors.Is(err, switchboard.ErrUndeliverable) {
		t.Fatalf("Publish with WantAnswer to a group empty cluster-wide: %v, want ErrUndeliverable", err)
	}
	// And to a name whose owner, on n2, gave it up: unowned everywhere.
	if primary, _, err := c2.Own(ctx, "svc.fed"); err != nil || !primary {
		t.Fatalf("Own svc.fed on n2: %v, %v", primary, err)
	}
	checkFor(t, 20*time.Second, func() error { return c1.SendTo(ctx, "svc.fed", []byte("x"), switchboard.WantAnswer()) })
	if err := c2.Disown(ctx, "svc.fed"); err != nil {
		t.Fatal(err)
	}
	checkFor(t, 20*time.Second, func() error {
		if err := c1.SendTo(ctx, "svc.fed", []byte("x"), switchboard.WantAnswer()); !errors.Is(err, switchboard.ErrUndeliverable) {
			return fmt.Errorf("SendTo an unowned name with WantAnswer: %v, want ErrUndeliverable", err)
		}
		return nil
	})
	if _, err := c1.Request(ctx, "svc.fed", []byte("x")); !errors.Is(err, switchboard.ErrUndeliverable) {
		t.Fatalf("Request to an unowned name: %v, want ErrUndeliverable", err)
	}

	// n3 dies while c3 serves c1's request: the request fails at once.
	errc := make(chan error, 1)
	go func() {
		_, err := c1.Request(ctx, c3.Address(), []byte("block"))
		errc <- err
	}()
	select {
	case <-served:
	case <-time.After(30 * time.Second):
		t.Fatal("the request did not reach c3")
	}
	killed := time.Now()
	ds[2].cmd.Process.Kill()
	select {
	case err := <-errc:
		if !errors.Is(err, switchboard.ErrPeerGone) {
			t.Fatalf("request to a killed node's client: %v, want ErrPeerGone", err)
		}
		t.Logf("a request to a killed node's client failed %v after the kill", time.Since(killed))
	case <-time.After(10 * time.Second):
		t.Fatal("a request to a killed node's client did not fail")
	}
	waitMembers(t, c1, "g", 1)
	// nodes on n1 shows n3 down, by name, and why (the connection lost,
	// or no heartbeat: whichever saw it first).
	r := runCLI(t, nil, "nodes", "--socket="+ds[0].socket)
	if !regexp.MustCompile(`(?m)^n3 +\S+ +127\.0\.0\.1:7953 +down: \S`).MatchString(r.stdout) ||
		!regexp.MustCompile(`(?m)^n2 +\S+ +127\.0\.0\.1:7952 +up `).MatchString(r.stdout) {
		t.Errorf("nodes on n1 after n3 was killed:\n%s%s", r.stdout, r.stderr)
	}
}
