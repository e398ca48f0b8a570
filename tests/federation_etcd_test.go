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
	var ds []*daemon
	var cs []*switchboard.Conn
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	join := func(i int) {
		ds = append(ds, startDaemon(t, daemonOpts{config: cfg(i)}))
		c := fedDial(t, ds[i])
		if err := c.Subscribe(ctx, "g"); err != nil {
			t.Fatal(err)
		}
		cs = append(cs, c)
	}
	for i := range 3 {
		join(i)
	}
	for _, c := range cs {
		waitMembers(t, c, "g", 3)
	}
	publish := func(want int) {
		t.Helper()
		payload := []byte(fmt.Sprintf("to %d members", want))
		if err := cs[0].Publish(ctx, "g", payload); err != nil {
			t.Fatal(err)
		}
		for _, c := range cs[1:want] { // the publisher is not sent its own
			for {
				ev, err := c.RecvEvent(ctx)
				if err != nil {
					t.Fatalf("%s waiting for %q: %v", c.Address(), payload, err)
				}
				if ev.Kind == switchboard.EventGroup && string(ev.Payload) == string(payload) {
					break
				}
			}
		}
	}
	publish(3)

	// etcd gone for longer than the TTL: the links stay, the bus serves.
	e.Stop()
	time.Sleep(3 * time.Second)
	waitMembers(t, cs[0], "g", 3)
	publish(3)

	// A node started while etcd is down is found once it is back.
	join(3)
	e.Restart()
	for _, c := range cs {
		waitMembers(t, c, "g", 4)
	}
	publish(4)
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
	ds[3].signal(t, syscall.SIGKILL)
	waitMembers(t, cs[0], "g", 3)
	checkFor(t, 20*time.Second, func() error {
		if n := discovered(); n != 2 {
			return fmt.Errorf("n1 has %v other nodes from etcd after n4 was killed, want 2", n)
		}
		return nil
	})
	publish(3)
}
