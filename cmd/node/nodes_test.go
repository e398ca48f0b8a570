package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/switchboard-ipc/switchboard"
)

// fakeNet joins embedded nodes in this process, for the CLI's tests of
// what it prints about a cluster: each node's fakeFed sends to the
// others through a queue per direction, delivered in order by one
// goroutine, NodeUp first.
type fakeNet struct {
	mu    sync.Mutex
	nodes map[string]*fakeFed
}

type fakeFed struct {
	net       *fakeNet
	self, inc string
	host      switchboard.FederationHost
	mu        sync.Mutex
	out       map[string]chan []byte // to each other node
	stop      chan struct{}
	wg        sync.WaitGroup
	closeOnce sync.Once
}

var errNotUp = errors.New("fake: node not up")

func (f *fakeFed) Start(self, inc string, host switchboard.FederationHost) error {
	f.net.mu.Lock()
	defer f.net.mu.Unlock()
	f.self, f.inc, f.host = self, inc, host
	f.out, f.stop = map[string]chan []byte{}, make(chan struct{})
	for _, o := range f.net.nodes {
		f.link(o)
		o.link(f)
	}
	f.net.nodes[self] = f
	return nil
}

// link starts the direction from f to o: o hears NodeUp, then f's
// messages.
func (f *fakeFed) link(o *fakeFed) {
	ch := make(chan []byte, 1<<12)
	f.mu.Lock()
	f.out[o.self] = ch
	f.mu.Unlock()
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		o.host.NodeUp(f.self, f.inc)
		for {
			select {
			case <-f.stop:
				return
			case <-o.stop:
				return
			case msg := <-ch:
				o.host.Deliver(f.self, msg)
			}
		}
	}()
}

func (f *fakeFed) Send(node string, msg []byte) error {
	f.mu.Lock()
	ch := f.out[node]
	f.mu.Unlock()
	if ch == nil {
		return errNotUp
	}
	select {
	case ch <- msg:
		return nil
	default:
		return errNotUp
	}
}

func (f *fakeFed) Close() error {
	f.closeOnce.Do(func() {
		f.net.mu.Lock()
		delete(f.net.nodes, f.self)
		f.net.mu.Unlock()
		if f.stop != nil {
			close(f.stop)
		}
	})
	f.wg.Wait()
	return nil
}

// reportingFed reports links, as actors/cluster's Federation does.
type reportingFed struct {
	*fakeFed
	links     []switchboard.LinkInfo
	discovery string
}

func (f *reportingFed) ClusterName() string           { return "prod" }
func (f *reportingFed) Links() []switchboard.LinkInfo { return f.links }
func (f *reportingFed) DiscoveryName() string         { return f.discovery }

// startNode runs an embedded node named name and returns its socket.
func startNode(t *testing.T, name string, opts ...switchboard.NodeOption) (*switchboard.Node, string) {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "node.sock")
	n, err := switchboard.NewNode(append([]switchboard.NodeOption{switchboard.WithSocket(sock), switchboard.WithNodeName(name)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Listen(); err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- n.Serve(context.Background()) }()
	t.Cleanup(func() {
		if err := n.Close(); err != nil {
			t.Error(err)
		}
		if err := <-served; err != nil {
			t.Error(err)
		}
	})
	return n, sock
}

// cli runs the command line in this process, piped (no terminal).
func cli(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	t.Setenv("SWITCHBOARD_TTY", "0")
	var o, e bytes.Buffer
	code = run(t.Context(), args, stdio{stdin: strings.NewReader(""), stdout: &o, stderr: &e})
	return code, o.String(), e.String()
}

// TestCLINodesNotFederated: nodes on a node without [cluster] says so and
// exits 0; status has no cluster section (null in JSON).
func TestCLINodesNotFederated(t *testing.T) {
	_, sock := startNode(t, "solo")
	code, out, errs := cli(t, "nodes", "--socket", sock)
	if code != exitOK || out != "node solo is not federated: its configuration has no [cluster] enabled\n" {
		t.Errorf("nodes: exit %d\n%s%s", code, out, errs)
	}
	code, out, _ = cli(t, "nodes", "--socket", sock, "--json")
	var nj nodesJSON
	if err := json.Unmarshal([]byte(out), &nj); code != exitOK || err != nil || nj.Federated || nj.Node != "solo" || nj.Links == nil ||
		!strings.Contains(out, `"links": []`) {
		t.Errorf("nodes --json: exit %d %v\n%s", code, err, out)
	}
	code, out, _ = cli(t, "status", "--socket", sock)
	if code != exitOK || strings.Contains(out, "cluster") {
		t.Errorf("status of a lone node:\n%s", out)
	}
	code, out, _ = cli(t, "status", "--socket", sock, "--json")
	if code != exitOK || !strings.Contains(out, `"cluster": null`) {
		t.Errorf("status --json of a lone node:\n%s", out)
	}
}

// TestCLINodes: nodes lists the node itself, then the links as the
// federation reports them: state and why, figures, last heard; --json has
// every field; status sums them up.
func TestCLINodes(t *testing.T) {
	now := time.Now()
	links := []switchboard.LinkInfo{
		{Node: "n2", Incarnation: "r2", Address: "10.0.0.2:7946", State: switchboard.LinkUp, Configured: true,
			Sent: 12, Delivered: 34, Unacked: 2048, Budget: 64 << 20, LastHeard: now.Add(-300 * time.Millisecond)},
		{Node: "n3", Incarnation: "r3", Address: "10.0.0.3:7946", State: switchboard.LinkDown, Reason: "connection lost",
			Configured: true, Discovered: true, Budget: 64 << 20, LastHeard: now.Add(-time.Minute)},
		{Address: "10.0.0.4:7946", State: switchboard.LinkRefused, Reason: `cluster "prod" is not this node's cluster "test"`, Budget: 64 << 20},
	}
	fed := &reportingFed{fakeFed: &fakeFed{net: &fakeNet{nodes: map[string]*fakeFed{}}}, links: links,
		discovery: "etcd http://10.0.0.9:2379, prefix /switchboard"}
	n1, sock := startNode(t, "n1", switchboard.WithFederation(fed))
	run := n1.ClusterNodes().Incarnation

	code, out, errs := cli(t, "nodes", "--socket", sock)
	// The RUN column is as wide as this node's run.
	pad := func(s string) string { return s + strings.Repeat(" ", len(run)-len(s)) + "  " }
	want := "NODE  " + pad("RUN") + "ADDRESS        STATE                                                      SENT  DELIVERED  UNACKED     HEARD\n" +
		"n1    " + pad(run) + "-              this node                                                  -     -          -           -\n" +
		"n2    " + pad("r2") + "10.0.0.2:7946  up                                                         12    34         2.0K/64.0M  300ms ago\n" +
		"n3    " + pad("r3") + "10.0.0.3:7946  down: connection lost                                      0     0          0/64.0M     1m0s ago\n" +
		"?     " + pad("-") + "10.0.0.4:7946  refused: cluster \"prod\" is not this node's cluster \"test\"  0     0          0/64.0M     -\n"
	// The ages move on while the test runs: compare them by pattern.
	ages := regexp.MustCompile(`[0-9.]+(ms|s)? ago|1m0s ago`)
	if code != exitOK || ages.ReplaceAllString(out, "AGE") != ages.ReplaceAllString(want, "AGE") {
		t.Errorf("nodes: exit %d\n%s%s\nwant\n%s", code, out, errs, want)
	}
	code, out, _ = cli(t, "nodes", "--socket", sock, "--json")
	var nj nodesJSON
	if err := json.Unmarshal([]byte(out), &nj); code != exitOK || err != nil {
		t.Fatalf("nodes --json: exit %d %v\n%s", code, err, out)
	}
	if !nj.Federated || nj.Cluster != "prod" || nj.Discovery != fed.discovery || nj.Node != "n1" || nj.Incarnation != run || nj.NodesUp != 1 || len(nj.Links) != 3 {
		t.Fatalf("nodes --json: %+v", nj)
	}
	l := nj.Links[0]
	if l.Node != "n2" || l.State != "up" || l.Sent != 12 || l.Delivered != 34 || l.UnackedBytes != 2048 || l.BudgetBytes != 64<<20 ||
		!l.Configured || l.Discovered || l.HeardSecondsAgo == nil || *l.HeardSecondsAgo < 0.3 || *l.HeardSecondsAgo > 30 {
		t.Errorf("n2's link: %+v", l)
	}
	if l := nj.Links[1]; l.Node != "n3" || !l.Configured || !l.Discovered {
		t.Errorf("n3's link, listed by the discovery: %+v", l)
	}
	if l := nj.Links[2]; l.Node != "" || l.State != "refused" || !strings.HasPrefix(l.Reason, `cluster "prod"`) || l.HeardSecondsAgo != nil || l.LastHeard != "" {
		t.Errorf("the refusal: %+v", l)
	}
	code, out, _ = cli(t, "status", "--socket", sock)
	for _, w := range []string{"cluster      prod (this node n1, run " + run + ")\n", "nodes        1 of 3 other nodes up, 2 configured",
		"links        12 sent, 34 delivered, 2.0K unacknowledged\n",
		"discovery    etcd http://10.0.0.9:2379, prefix /switchboard: 1 listed\n"} {
		if code != exitOK || !strings.Contains(out, w) {
			t.Errorf("status: no %q in\n%s", w, out)
		}
	}
	code, out, _ = cli(t, "status", "--socket", sock, "--json")
	var st statusJSON
	if err := json.Unmarshal([]byte(out), &st); code != exitOK || err != nil || st.Cluster == nil ||
		*st.Cluster != (clusterStatusJSON{Name: "prod", Node: "n1", Incarnation: run, NodesUp: 1, NodesKnown: 3, Configured: 2,
			Discovery: fed.discovery, Discovered: 1, Sent: 12, Delivered: 34, UnackedBytes: 2048}) {
		t.Errorf("status --json: %v %+v\n%s", err, st.Cluster, out)
	}
}

// TestCLILsRemote: ls on a node of a cluster lists the connections on the
// other nodes too, with their node and no figures; --local leaves them
// out; --json gives each its node.
func TestCLILsRemote(t *testing.T) {
	net := &fakeNet{nodes: map[string]*fakeFed{}}
	n1, sock1 := startNode(t, "n1", switchboard.WithFederation(&fakeFed{net: net}))
	_, sock2 := startNode(t, "n2", switchboard.WithFederation(&fakeFed{net: net}))
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	c, err := switchboard.Dial(ctx, switchboard.WithSocket(sock2), switchboard.WithClientName("far"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Subscribe(ctx, "chat"); err != nil {
		t.Fatal(err)
	}
	// n1 hears of it, then of its membership (a later message on the link).
	listed := func() bool {
		var recs []connJSON
		if err := json.Unmarshal([]byte(lsJSON(t, sock1)), &recs); err != nil {
			t.Fatal(err)
		}
		for _, r := range recs {
			if r.Address == c.Address() && slices.Contains(r.Groups, "chat") {
				return true
			}
		}
		return false
	}
	for !listed() {
		select {
		case <-ctx.Done():
			t.Fatalf("n1 never listed %s in chat", c.Address())
		case <-time.After(10 * time.Millisecond):
		}
	}
	// Earlier commands' own connections may still be listed while n1
	// ends them.
	code, out, errs := cli(t, "ls", "--socket", sock1)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if code != exitOK || strings.Join(strings.Fields(lines[0]), " ") !=
		"ADDRESS NODE NAME UID GID PID TRANSPORT GROUPS CALLS/SENDS EVENTS IN OUT DROPS FILL PENDING AGE" {
		t.Fatalf("ls: exit %d\n%s%s", code, out, errs)
	}
	var local, remote []string
	for _, l := range lines[1:] {
		f := strings.Fields(l)
		switch {
		case f[0] == c.Address():
			remote = f
		default: // this command's, or an earlier one's
			local = f
			if !strings.HasPrefix(f[0], ":n1."+n1.ClusterNodes().Incarnation+".") || f[1] != "n1" || f[2] != "switchboard" ||
				f[6] != "shm" && f[6] != "socket" {
				t.Errorf("ls: this node's connection: %q\n%s", f, out)
			}
		}
	}
	if local == nil {
		t.Errorf("ls: not this command's own connection:\n%s", out)
	}
	if remote == nil || remote[1] != "n2" || remote[2] != "far" || remote[6] != "remote" || remote[7] != "chat" ||
		strings.Join(remote[8:], " ") != "- - - - - - - -" {
		t.Errorf("ls: n2's connection: %q\n%s", remote, out)
	}
	if !strings.HasPrefix(lines[len(lines)-1], c.Address()) {
		t.Errorf("ls: the other nodes' connections do not come last:\n%s", out)
	}
	code, out, _ = cli(t, "ls", "--socket", sock1, "--local")
	if code != exitOK || strings.Contains(out, c.Address()) || strings.Contains(out, " n2 ") || !strings.Contains(out, " n1 ") {
		t.Errorf("ls --local:\n%s", out)
	}
	var recs []connJSON
	if err := json.Unmarshal([]byte(lsJSON(t, sock1)), &recs); err != nil || len(recs) < 2 || recs[0].Node != "n1" ||
		recs[len(recs)-1].Node != "n2" || recs[len(recs)-1].Address != c.Address() || recs[len(recs)-1].Transport != "remote" {
		t.Errorf("ls --json: %v %+v", err, recs)
	}
	code, out, _ = cli(t, "ls", "--socket", sock1, "--local", "--json")
	recs = nil
	if err := json.Unmarshal([]byte(out), &recs); code != exitOK || err != nil || len(recs) == 0 {
		t.Errorf("ls --local --json: %v %+v", err, recs)
	}
	for _, r := range recs {
		if r.Node != "n1" {
			t.Errorf("ls --local --json lists %+v", r)
		}
	}
}

func lsJSON(t *testing.T, sock string) string {
	t.Helper()
	code, out, errs := cli(t, "ls", "--socket", sock, "--json")
	if code != exitOK {
		t.Fatalf("ls --json: exit %d: %s", code, errs)
	}
	return out
}
