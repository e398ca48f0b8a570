package tests

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/switchboard-ipc/switchboard"
)

// startPeer starts a bus role and waits for its "ready ADDRESS" line.
func startPeer(t testing.TB, role, socket string, env ...string) (*child, string) {
	t.Helper()
	c := startRole(t, role, append(env, "SB_SOCKET="+socket), nil)
	var addr string
	checkFor(t, 10*time.Second, func() error {
		for _, l := range strings.Split(c.stdout.String(), "\n") {
			if a, ok := strings.CutPrefix(l, "ready "); ok {
				addr = a
				return nil
			}
		}
		return fmt.Errorf("%s not ready", role)
	})
	return c, addr
}

// lines returns a child's output lines after its "ready" line.
func lines(c *child) []string {
	var out []string
	ready := false
	for _, l := range strings.Split(strings.TrimSpace(c.stdout.String()), "\n") {
		if ready && l != "" {
			out = append(out, l)
		}
		ready = ready || strings.HasPrefix(l, "ready ")
	}
	return out
}

func waitLine(t *testing.T, c *child, prefix string) string {
	t.Helper()
	var line string
	checkFor(t, 20*time.Second, func() error {
		for _, l := range lines(c) {
			if strings.HasPrefix(l, prefix) {
				line = l
				return nil
			}
		}
		return fmt.Errorf("no line %q yet; have %q", prefix, lines(c))
	})
	return line
}

func kill9(c *child) {
	c.cmd.Process.Kill()
	c.cmd.Wait()
}

// TestBusPeerKilledMidRequest: a request in flight to a peer process
// killed with SIGKILL fails with ErrPeerGone at once, not at its deadline,
// whether the peer was reached by address or by name.
func TestBusPeerKilledMidRequest(t *testing.T) {
	transports(t, func(t *testing.T, tr switchboard.Transport) {
		_, socket := nodeChild(t)
		trEnv := "SB_TRANSPORT=" + strconv.Itoa(int(tr))
		peer, addr := startPeer(t, "peer", socket, "SB_MODE=hang", "SB_NAME=svc.hang", trEnv)
		other, otherAddr := startPeer(t, "peer", socket, "SB_MODE=echo", trEnv)
		c := dialT(t, socket, switchboard.WithTransport(tr))
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		type result struct {
			err error
			at  time.Time
		}
		done := make(chan result, 2)
		for _, to := range []string{addr, "svc.hang"} {
			go func() {
				_, err := c.Request(ctx, to, []byte("x"))
				done <- result{err, time.Now()}
			}()
		}
		checkFor(t, 10*time.Second, func() error {
			if n := strings.Count(peer.stdout.String(), "request"); n < 1 {
				return errors.New("request not delivered yet")
			}
			return nil
		})
		killed := time.Now()
		kill9(peer)
		for range 2 {
			r := <-done
			if !errors.Is(r.err, switchboard.ErrPeerGone) {
				t.Fatalf("request to a killed peer: %v", r.err)
			}
			t.Logf("ErrPeerGone %v after SIGKILL", r.at.Sub(killed))
			if d := r.at.Sub(killed); d > 5*time.Second {
				t.Fatalf("peer gone noticed after %v", d)
			}
		}
		// The other peer is unaffected, and the dead one is undeliverable.
		if r, err := c.Request(ctx, otherAddr, []byte("y")); err != nil || string(r) != otherAddr+":y" {
			t.Fatalf("other peer: %q %v", r, err)
		}
		checkFor(t, 5*time.Second, func() error {
			_, err := c.Request(ctx, "svc.hang", nil)
			if !errors.Is(err, switchboard.ErrUndeliverable) {
				return fmt.Errorf("name of a dead peer: %v", err)
			}
			return nil
		})
		_ = other
	})
}

// TestBusAddressesAcrossRestart: a node killed with SIGKILL and started
// again on its socket gives its new connections the ids of the first
// run's but none of their addresses, and a request or a message to a
// first run's address is undeliverable instead of reaching whoever has
// that id now.
func TestBusAddressesAcrossRestart(t *testing.T) {
	d := startDaemon(t, daemonOpts{})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, peer1 := startPeer(t, "peer", d.socket, "SB_MODE=echo")
	c1 := dialT(t, d.socket)
	if r, err := c1.Request(ctx, peer1, []byte("x")); err != nil || string(r) != peer1+":x" {
		t.Fatalf("request to %s in the first run: %q %v", peer1, r, err)
	}
	d.cmd.Process.Kill()
	<-d.waited

	startDaemon(t, daemonOpts{socket: d.socket})
	_, peer2 := startPeer(t, "peer", d.socket, "SB_MODE=echo")
	c2 := dialT(t, d.socket)
	if c2.ID() != c1.ID() {
		t.Errorf("ids %d and %d: the runs should have counted alike", c1.ID(), c2.ID())
	}
	run := func(addr string) string { return addr[:strings.LastIndexByte(addr, '.')+1] }
	for _, a := range []string{peer2, c2.Address()} {
		for _, old := range []string{peer1, c1.Address()} {
			if a == old || run(a) == run(old) {
				t.Errorf("second run's %s is too like the first run's %s", a, old)
			}
		}
	}
	if r, err := c2.Request(ctx, peer1, []byte("x")); !errors.Is(err, switchboard.ErrUndeliverable) {
		t.Errorf("request to the first run's %s: %q %v, want undeliverable", peer1, r, err)
	}
	if err := c2.SendTo(ctx, c1.Address(), []byte("x"), switchboard.WantAnswer()); !errors.Is(err, switchboard.ErrUndeliverable) {
		t.Errorf("message to the first run's %s: %v, want undeliverable", c1.Address(), err)
	}
	if r := runCLI(t, nil, "request", "--socket", d.socket, peer1, "x"); r.code != 1 || !strings.Contains(r.stderr, "undeliverable") {
		t.Errorf("node request %s: exit %d, stdout %q, stderr %q; want 1, undeliverable", peer1, r.code, r.stdout, r.stderr)
	}
	if r, err := c2.Request(ctx, peer2, []byte("y")); err != nil || string(r) != peer2+":y" {
		t.Fatalf("request to %s in the second run: %q %v", peer2, r, err)
	}
	if e, ok := c2.TryRecvEvent(); ok {
		t.Errorf("the second run's %s got %+v", c2.Address(), e)
	}
}

// TestBusMemberKilledMidGroupRequest: a group request gathers every
// member's answer; a member killed before it answers is ErrPeerGone, at
// once.
func TestBusMemberKilledMidGroupRequest(t *testing.T) {
	_, socket := nodeChild(t)
	_, a := startPeer(t, "peer", socket, "SB_MODE=echo", "SB_GROUPS=workers")
	_, b := startPeer(t, "peer", socket, "SB_MODE=echo", "SB_GROUPS=workers")
	hang, h := startPeer(t, "peer", socket, "SB_MODE=hang", "SB_GROUPS=workers")
	c := dialT(t, socket)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	type res struct {
		rs  []switchboard.GroupResult
		err error
	}
	done := make(chan res, 1)
	go func() {
		rs, err := c.RequestGroup(ctx, "workers", []byte("q"))
		done <- res{rs, err}
	}()
	waitLine(t, hang, "request")
	killed := time.Now()
	kill9(hang)
	r := <-done
	t.Logf("group request done %v after the kill", time.Since(killed))
	if r.err != nil || len(r.rs) != 3 {
		t.Fatalf("%+v %v", r.rs, r.err)
	}
	want := map[string]string{a: a + ":q", b: b + ":q", h: "gone"}
	for _, g := range r.rs {
		w, ok := want[g.Address]
		if !ok {
			t.Fatalf("result from %s", g.Address)
		}
		if w == "gone" && !errors.Is(g.Err, switchboard.ErrPeerGone) || w != "gone" && (g.Err != nil || string(g.Payload) != w) {
			t.Fatalf("%s: %q %v", g.Address, g.Payload, g.Err)
		}
	}
	// With a deadline and a member that never answers: its result is the
	// deadline, the others' are their answers.
	_, h2 := startPeer(t, "peer", socket, "SB_MODE=hang", "SB_GROUPS=workers")
	dctx, dcancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer dcancel()
	rs, err := c.RequestGroup(dctx, "workers", []byte("d"))
	if err != nil || len(rs) != 3 {
		t.Fatalf("%+v %v", rs, err)
	}
	for _, g := range rs {
		if g.Address == h2 && !errors.Is(g.Err, context.DeadlineExceeded) || g.Address != h2 && g.Err != nil {
			t.Fatalf("%s: %v", g.Address, g.Err)
		}
	}
	if _, err := c.RequestGroup(ctx, "nobody", nil); !errors.Is(err, switchboard.ErrUndeliverable) {
		t.Fatalf("empty group: %v", err)
	}
}

// TestBusNameTakeover: three processes queue for one name; when the owner
// is killed the first standby takes over, when that one closes the next;
// requests by name follow, and an observer sees each handover.
func TestBusNameTakeover(t *testing.T) {
	_, socket := nodeChild(t)
	obs, _ := startPeer(t, "observer", socket)
	var peers []*child
	var addrs []string
	for range 3 {
		p, a := startPeer(t, "peer", socket, "SB_MODE=echo", "SB_NAME=svc.main")
		peers, addrs = append(peers, p), append(addrs, a)
	}
	c := dialT(t, socket)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	names, err := c.Names(ctx)
	if err != nil || len(names) != 1 || names[0].Owner != addrs[0] || strings.Join(names[0].Standby, ",") != addrs[1]+","+addrs[2] {
		t.Fatalf("names %+v %v", names, err)
	}
	answeredBy := func(want string) {
		t.Helper()
		checkFor(t, 5*time.Second, func() error {
			r, err := c.Request(ctx, "svc.main", []byte("who"))
			if err != nil {
				return err
			}
			if string(r) != want+":who" {
				return fmt.Errorf("answered %q, want %s", r, want)
			}
			return nil
		})
	}
	answeredBy(addrs[0])
	kill9(peers[0])
	answeredBy(addrs[1])
	peers[1].cmd.Process.Signal(os.Interrupt) // closes cleanly
	peers[1].cmd.Wait()
	answeredBy(addrs[2])
	var got []string
	checkFor(t, 5*time.Second, func() error {
		got = nil
		for _, l := range lines(obs) {
			if strings.HasPrefix(l, "owner ") || strings.HasPrefix(l, "disconnected ") {
				got = append(got, l)
			}
		}
		if len(got) < 5 {
			return fmt.Errorf("notices so far %q", got)
		}
		return nil
	})
	want := []string{
		fmt.Sprintf("owner svc.main %q -> %q", "", addrs[0]),
		fmt.Sprintf("owner svc.main %q -> %q", addrs[0], addrs[1]),
		"disconnected " + addrs[0] + " DISCONNECT_LOST",
		fmt.Sprintf("owner svc.main %q -> %q", addrs[1], addrs[2]),
		"disconnected " + addrs[1] + " DISCONNECT_CLOSED",
	}
	// The test's own client connected and disconnects around these; keep
	// only the peers' lines.
	var peersOnly []string
	for _, l := range got {
		if !strings.Contains(l, c.Address()) {
			peersOnly = append(peersOnly, l)
		}
	}
	if strings.Join(peersOnly, "\n") != strings.Join(want, "\n") {
		t.Fatalf("notices:\n%s\nwant:\n%s", strings.Join(peersOnly, "\n"), strings.Join(want, "\n"))
	}
}

// TestBusNoticeSequence: the exact notices an observer process sees when a
// client connects, subscribes, owns a name and disconnects — closing, or
// killed.
func TestBusNoticeSequence(t *testing.T) {
	_, socket := nodeChild(t)
	obs, obsAddr := startPeer(t, "observer", socket)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := switchboard.Dial(ctx, switchboard.WithSocket(socket), switchboard.WithClientName("seq"))
	if err != nil {
		t.Fatal(err)
	}
	x := c.Address()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(c.Subscribe(ctx, "g1"))
	must(c.Subscribe(ctx, "g2"))
	_, _, err = c.Own(ctx, "n1")
	must(err)
	must(c.Unsubscribe(ctx, "g1"))
	must(c.Close())
	// And a process that is killed, holding a group and a name.
	p, y := startPeer(t, "peer", socket, "SB_GROUPS=g3", "SB_NAME=n2")
	kill9(p)
	want := []string{
		"subscribed " + obsAddr + " sys.groups",
		"subscribed " + obsAddr + " sys.names",
		"connected " + x + " seq",
		"subscribed " + x + " g1",
		"subscribed " + x + " g2",
		fmt.Sprintf("owner n1 %q -> %q", "", x),
		"unsubscribed " + x + " g1 DISCONNECT_UNSPECIFIED",
		"unsubscribed " + x + " g2 DISCONNECT_CLOSED",
		fmt.Sprintf("owner n1 %q -> %q", x, ""),
		"disconnected " + x + " DISCONNECT_CLOSED",
		"connected " + y + " peer",
		"subscribed " + y + " g3",
		fmt.Sprintf("owner n2 %q -> %q", "", y),
		"unsubscribed " + y + " g3 DISCONNECT_LOST",
		fmt.Sprintf("owner n2 %q -> %q", y, ""),
		"disconnected " + y + " DISCONNECT_LOST",
	}
	checkFor(t, 10*time.Second, func() error {
		if got := lines(obs); len(got) < len(want) {
			return fmt.Errorf("%d notices so far: %q", len(got), got)
		}
		return nil
	})
	if got := lines(obs); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("notices:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// TestBusOrdering: four senders, each on its own connection and goroutine,
// interleave direct messages to one subscriber process with publications
// to a group of three; every subscriber sees each sender's messages in the
// order sent, none lost.
func TestBusOrdering(t *testing.T) {
	transports(t, func(t *testing.T, tr switchboard.Transport) {
		const perSender = 5000
		_, socket := nodeChild(t, "SB_EVENT_QUEUE=100000")
		trEnv := "SB_TRANSPORT=" + strconv.Itoa(int(tr))
		// The first subscriber gets every message of every sender (direct
		// and group): 4×perSender; the others every other one: sparse.
		first, firstAddr := startPeer(t, "peer", socket, "SB_MODE=count", "SB_GROUPS=ord", trEnv, "SB_CLIENT_QUEUE=100000",
			fmt.Sprintf("SB_EXPECT=%d", 4*perSender))
		var rest []*child
		for range 2 {
			p, _ := startPeer(t, "peer", socket, "SB_MODE=count", "SB_GROUPS=ord", trEnv, "SB_CLIENT_QUEUE=100000", "SB_SPARSE=1",
				fmt.Sprintf("SB_EXPECT=%d", 4*perSender/2))
			rest = append(rest, p)
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		var wg sync.WaitGroup
		for s := range 4 {
			c := dialT(t, socket, switchboard.WithTransport(tr))
			wg.Go(func() {
				for i := range perSender {
					msg := []byte(fmt.Sprintf("s%d %d", s, i))
					var err error
					if i%2 == 0 {
						err = c.Publish(ctx, "ord", msg)
					} else {
						err = c.SendTo(ctx, firstAddr, msg)
					}
					if err != nil {
						t.Error(err)
						return
					}
				}
			})
		}
		wg.Wait()
		if l := waitLine(t, first, "got "); l != fmt.Sprintf("got %d dropped 0 disorder 0", 4*perSender) {
			t.Fatalf("first subscriber: %s", l)
		}
		for _, p := range rest {
			if l := waitLine(t, p, "got "); l != fmt.Sprintf("got %d dropped 0 disorder 0", 4*perSender/2) {
				t.Fatalf("subscriber: %s", l)
			}
		}
	})
}

// TestBusSlowSubscriber: a subscriber process that stops reading loses
// messages (counted, and reported to it as a gap), while the others get
// every one.
func TestBusSlowSubscriber(t *testing.T) {
	const n = 30000
	_, socket := nodeChild(t, "SB_EVENT_QUEUE=256", "SB_EVENT_RING=65536")
	resume := filepath.Join(t.TempDir(), "resume")
	stalled, _ := startPeer(t, "peer", socket, "SB_MODE=stall", "SB_GROUPS=feed", "SB_RESUME="+resume,
		fmt.Sprintf("SB_EXPECT=%d", n), "SB_CLIENT_QUEUE=64")
	var fine []*child
	for range 2 {
		p, _ := startPeer(t, "peer", socket, "SB_MODE=count", "SB_GROUPS=feed", fmt.Sprintf("SB_EXPECT=%d", n), "SB_CLIENT_QUEUE=100000")
		fine = append(fine, p)
	}
	c := dialT(t, socket)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	readers := map[string]bool{}
	for _, p := range fine {
		readers[strings.TrimPrefix(strings.SplitN(p.stdout.String(), "\n", 2)[0], "ready ")] = true
	}
	for i := range n {
		if err := c.Publish(ctx, "feed", []byte(fmt.Sprintf("p %d", i))); err != nil {
			t.Fatal(err)
		}
		if i%250 == 249 {
			// A feed the reading subscribers keep up with, however slow
			// this machine: wait until the node holds nothing back for them.
			checkFor(t, 20*time.Second, func() error {
				conns, err := c.Connections(ctx)
				if err != nil {
					return err
				}
				for _, ci := range conns {
					if readers[ci.Address] && (ci.EventsQueued > 0 || ci.EventFill > 32<<10) {
						return fmt.Errorf("%s behind: %d queued, %d bytes in its ring", ci.Address, ci.EventsQueued, ci.EventFill)
					}
				}
				return nil
			})
		}
	}
	for _, p := range fine {
		if l := waitLine(t, p, "got "); l != fmt.Sprintf("got %d dropped 0 disorder 0", n) {
			t.Fatalf("reading subscriber: %s", l)
		}
	}
	conns, err := c.Connections(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, ci := range conns {
		t.Logf("%s %s events %d dropped %d queued %d ring %d", ci.Address, ci.Name, ci.Events, ci.Dropped, ci.EventsQueued, ci.EventFill)
	}
	if err := os.WriteFile(resume, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	l := waitLine(t, stalled, "got ")
	var got, dropped, disorder int
	fmt.Sscanf(l, "got %d dropped %d disorder %d", &got, &dropped, &disorder)
	if got+dropped != n || dropped == 0 || disorder != 0 {
		t.Fatalf("stalled subscriber: %s (want got+dropped = %d, some dropped)", l, n)
	}
	t.Logf("stalled subscriber: %s", l)
}

// TestBusPolicyPaths: a rule on an address, a group or a name holds on
// every path that leads there: direct, by name, group request, listing.
func TestBusPolicyPaths(t *testing.T) {
	_, socket := nodeChild(t, "SB_POLICY=publish=secret;subscribe=secret;own=svc.root;list=;list=secret;send=svc.blocked")
	_, protected := startPeer(t, "peer", socket, "SB_MODE=echo", "SB_NAME=svc.blocked")
	_, _ = startPeer(t, "peer", socket, "SB_MODE=echo", "SB_NAME=svc.alias")
	c := dialT(t, socket)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	refused := map[string]error{}
	refused["publish"] = c.Publish(ctx, "secret", nil, switchboard.WantAnswer())
	_, refused["group request"] = c.RequestGroup(ctx, "secret", nil)
	refused["subscribe"] = c.Subscribe(ctx, "secret")
	_, refused["subscribe with members"] = c.SubscribeWithMembers(ctx, "secret")
	_, _, refused["own"] = c.Own(ctx, "svc.root")
	_, refused["members"] = c.Members(ctx, "secret")
	_, refused["groups"] = c.Groups(ctx)
	_, refused["names"] = c.Names(ctx)
	_, refused["connections"] = c.Connections(ctx)
	refused["notices (a listing by another path)"] = c.Subscribe(ctx, switchboard.GroupConnections)
	refused["send to name"] = c.SendTo(ctx, "svc.blocked", nil, switchboard.WantAnswer())
	_, refused["request to name"] = c.Request(ctx, "svc.blocked", nil)
	for what, err := range refused {
		if !errors.Is(err, switchboard.ErrRefused) {
			t.Errorf("%s: %v, want ErrRefused", what, err)
		}
	}
	// What the rules do not name is allowed.
	if r, err := c.Request(ctx, "svc.alias", []byte("ok")); err != nil || !strings.HasSuffix(string(r), ":ok") {
		t.Fatalf("allowed request: %q %v", r, err)
	}
	if r, err := c.Request(ctx, protected, []byte("ok")); err != nil || !strings.HasSuffix(string(r), ":ok") {
		t.Fatalf("by address (no rule on it): %q %v", r, err)
	}
}

// TestBusListings: Connections, Groups, Members and Names from another
// process's point of view.
func TestBusListings(t *testing.T) {
	_, socket := nodeChild(t)
	pa, a := startPeer(t, "peer", socket, "SB_GROUPS=ga,gb", "SB_NAME=na")
	_, b := startPeer(t, "peer", socket, "SB_GROUPS=gb", "SB_NAME=na")
	c := dialT(t, socket, switchboard.WithClientName("lister"))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conns, err := c.Connections(ctx)
	if err != nil || len(conns) != 3 {
		t.Fatalf("%+v %v", conns, err)
	}
	byAddr := map[string]switchboard.ConnInfo{}
	for _, ci := range conns {
		byAddr[ci.Address] = ci
	}
	if ci := byAddr[a]; ci.Name != "peer" || ci.Cred.PID != int32(pa.cmd.Process.Pid) || strings.Join(ci.Groups, ",") != "ga,gb" ||
		strings.Join(ci.Names, ",") != "na" || ci.Transport != "shm" {
		t.Fatalf("a: %+v", ci)
	}
	if ci := byAddr[b]; len(ci.Names) != 0 || strings.Join(ci.Groups, ",") != "gb" {
		t.Fatalf("b (standby for na): %+v", ci)
	}
	if byAddr[c.Address()].Name != "lister" {
		t.Fatalf("self: %+v", byAddr[c.Address()])
	}
	groups, err := c.Groups(ctx)
	if err != nil || len(groups) != 2 || groups[0].Name != "ga" || groups[0].Members != 1 || groups[1].Members != 2 {
		t.Fatalf("groups %+v %v", groups, err)
	}
	ms, err := c.Members(ctx, "gb")
	if err != nil || len(ms) != 2 || ms[0].Address != a || ms[1].Address != b || ms[0].Cred.PID != int32(pa.cmd.Process.Pid) {
		t.Fatalf("members %+v %v", ms, err)
	}
	names, err := c.Names(ctx)
	if err != nil || len(names) != 1 || names[0].Owner != a || len(names[0].Standby) != 1 || names[0].Standby[0] != b {
		t.Fatalf("names %+v %v", names, err)
	}
}

// TestBusSlowSubscriberEvicted: with the disconnect policy, a subscriber
// that stops reading is evicted, the publisher goes on, and the eviction is
// announced.
func TestBusSlowSubscriberEvicted(t *testing.T) {
	_, socket := nodeChild(t, "SB_EVENT_QUEUE=64", "SB_EVENT_RING=65536", "SB_OVERFLOW=disconnect")
	obs, _ := startPeer(t, "observer", socket)
	_, stalled := startPeer(t, "peer", socket, "SB_MODE=stall", "SB_GROUPS=feed", "SB_RESUME=/nonexistent", "SB_CLIENT_QUEUE=64")
	c := dialT(t, socket)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for i := range 20000 {
		if err := c.Publish(ctx, "feed", []byte(fmt.Sprintf("p %d", i))); err != nil {
			t.Fatal(err)
		}
	}
	waitLine(t, obs, "disconnected "+stalled+" DISCONNECT_EVICTED")
	if l := waitLine(t, obs, "unsubscribed "+stalled); l != "unsubscribed "+stalled+" feed DISCONNECT_EVICTED" {
		t.Fatalf("%q", l)
	}
}

// TestBusRequesterKilled: when the process that sent a request is killed
// with SIGKILL, the context of the handler serving it is cancelled, with
// ErrPeerGone as its cause, for a request to one peer and to a group.
func TestBusRequesterKilled(t *testing.T) {
	transports(t, func(t *testing.T, tr switchboard.Transport) {
		_, socket := nodeChild(t)
		started := make(chan error, 4) // nil for each handler that starts
		ended := make(chan error, 4)   // its context's cause when it ends
		handler := func(ctx context.Context, r *switchboard.PeerRequest) ([]byte, error) {
			started <- nil
			<-ctx.Done()
			ended <- context.Cause(ctx)
			return nil, ctx.Err()
		}
		next := func(ch chan error, what string) error {
			t.Helper()
			select {
			case err := <-ch:
				return err
			case <-time.After(10 * time.Second):
				t.Fatalf("no %s after 10 s", what)
				return nil
			}
		}
		var members []*switchboard.Conn
		for range 2 {
			m := dialT(t, socket, switchboard.WithTransport(tr), switchboard.WithRequestHandler(handler))
			if err := m.Subscribe(context.Background(), "workers"); err != nil {
				t.Fatal(err)
			}
			members = append(members, m)
		}
		for _, tc := range []struct {
			env      []string
			handlers int
		}{{[]string{"SB_TO=" + members[0].Address()}, 1}, {[]string{"SB_TO=workers", "SB_GROUP=1"}, len(members)}} {
			req, _ := startPeer(t, "requester", socket, append(tc.env, "SB_TRANSPORT="+strconv.Itoa(int(tr)))...)
			for range tc.handlers {
				next(started, "handler start")
			}
			killed := time.Now()
			kill9(req)
			for range tc.handlers {
				if err := next(ended, "cancellation"); !errors.Is(err, switchboard.ErrPeerGone) {
					t.Fatalf("%v: cause %v", tc.env, err)
				}
			}
			t.Logf("%v: handlers cancelled %v after SIGKILL", tc.env, time.Since(killed))
		}
	})
}
