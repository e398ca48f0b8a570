package tests

import (
	"context"
	"fmt"
	"net/http"
	"syscall"
	"testing"
	"time"

	"github.com/switchboard-ipc/switchboard"
	"github.com/switchboard-ipc/switchboard/actors/cluster/etcd/etcdtest"
)

// TestFederationEtcd: nodes with no peers configured, registered in etcd
// (cluster.discovery = "etcd"), find each other and form one bus; with
// etcd gone they stay linked and the bus serves on; once etcd is back, a
// node started meanwhile is found; a node killed is forgotten by etcd
// after its TTL (and by its links at once).
func TestFederationEtcd(t *testing.T) {
	if testing.Short() {
		t.Skip("starts etcd and four nodes")
	}
	if !inFedNetns(t) {
		return
	}
	e := etcdtest.Start(t)
	cfg := func(i int) string {
		return fmt.Sprintf("name = \"n%d\"\n\n[cluster]\nenabled = true\nlisten = \"127.0.0.1:%d\"\nsecret_file = %q\n"+
			"discovery = \"etcd\"\netcd_endpoints = [%q]\netcd_ttl = \"2s\"\n\n[metrics]\nlisten = \"127.0.0.1:%d\"\n",
			i+1, 7951+i, fedSecret(t), e.URL, 9481+i)
	}
	g := startFedGroup(t, cfg, 3)
	g.publish(0, "to 3 members", 1, 2)
	// What `switchboard nodes` and `status` show: the discovery, and the
	// other two nodes as listed by it.
	ci, err := g.cs[0].ClusterNodes(g.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if want := "etcd " + e.URL + ", prefix /switchboard"; ci.Discovery != want || len(ci.Links) != 2 ||
		!ci.Links[0].Discovered || !ci.Links[1].Discovered {
		t.Errorf("n1's cluster: discovery %q (want %q), links %+v (want both discovered)", ci.Discovery, want, ci.Links)
	}

	// etcd gone for longer than the TTL: the links stay, the bus serves.
	e.Stop()
	time.Sleep(3 * time.Second)
	g.waitMembers(3, 0)
	g.publish(0, "etcd gone", 1, 2)

	// A node started while etcd is down is found once it is back.
	g.join(3)
	e.Restart()
	g.waitMembers(4, 0, 1, 2, 3)
	g.publish(0, "to 4 members", 1, 2, 3)
	discovered := func() float64 {
		fams := scrape(t, http.DefaultClient, "http://127.0.0.1:9481/metrics")
		return value(t, fams, "switchboard_federation_discovered_nodes", nil)
	}
	checkFor(t, 20*time.Second, func() error {
		if n := discovered(); n != 3 {
			return fmt.Errorf("n1 has %v other nodes from etcd, want 3", n)
		}
		return nil
	})

	// n4 killed: its members leave at once (the link broke), its
	// registration after the TTL.
	g.ds[3].signal(t, syscall.SIGKILL)
	g.waitMembers(3, 0)
	checkFor(t, 20*time.Second, func() error {
		if n := discovered(); n != 2 {
			return fmt.Errorf("n1 has %v other nodes from etcd after n4 was killed, want 2", n)
		}
		return nil
	})
	g.publish(0, "n4 gone", 1, 2)
}

// fedGroup is nodes started one by one (cfg(i) is node i's
// configuration), each with a client subscribed to group g: the
// discovery tests' cluster.
type fedGroup struct {
	t   *testing.T
	ctx context.Context
	cfg func(i int) string
	ds  []*daemon
	cs  []*switchboard.Conn
}

// startFedGroup starts n nodes and their clients (a context of two minutes
// for the test's calls), and waits until each client sees n members.
func startFedGroup(t *testing.T, cfg func(i int) string, n int) *fedGroup {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	g := &fedGroup{t: t, ctx: ctx, cfg: cfg}
	for i := range n {
		g.join(i)
	}
	for i := range n {
		g.waitMembers(n, i)
	}
	return g
}

// join starts node i and its client.
func (g *fedGroup) join(i int) {
	g.t.Helper()
	g.ds = append(g.ds, startDaemon(g.t, daemonOpts{config: g.cfg(i)}))
	c := fedDial(g.t, g.ds[i])
	if err := c.Subscribe(g.ctx, "g"); err != nil {
		g.t.Fatal(err)
	}
	g.cs = append(g.cs, c)
}

// waitMembers waits until the clients of nodes on see want members of g.
func (g *fedGroup) waitMembers(want int, on ...int) {
	g.t.Helper()
	for _, i := range on {
		waitMembers(g.t, g.cs[i], "g", want)
	}
}

// publish publishes payload to g from node from's client and waits until
// the clients of nodes to receive it (the publisher is not sent its own).
func (g *fedGroup) publish(from int, payload string, to ...int) {
	g.t.Helper()
	if err := g.cs[from].Publish(g.ctx, "g", []byte(payload)); err != nil {
		g.t.Fatal(err)
	}
	for _, i := range to {
		for {
			ev, err := g.cs[i].RecvEvent(g.ctx)
			if err != nil {
				g.t.Fatalf("%s waiting for %q: %v", g.cs[i].Address(), payload, err)
			}
			if ev.Kind == switchboard.EventGroup && string(ev.Payload) == payload {
				break
			}
		}
	}
}
