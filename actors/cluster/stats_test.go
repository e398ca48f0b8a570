package cluster

import (
	"testing"
	"time"

	"github.com/switchboard-ipc/switchboard"
	"github.com/switchboard-ipc/switchboard/actors/cluster/linkpb"
)

// TestLinksReport: Links describes each address as a user reads it in
// `switchboard nodes`: a configured peer that never answered (down, no
// name), a node up with its figures, a learned node linking, a refusal
// with its reason, and a node whose link went down (its name kept, and
// why).
func TestLinksReport(t *testing.T) {
	const a1, a2, a3, a4, learned = "127.0.0.1:7001", "127.0.0.1:7002", "127.0.0.1:7003", "127.0.0.1:7004", "127.0.0.1:7009"
	f, err := New(Config{Cluster: "c", Listen: "127.0.0.1:7000", Peers: []string{a1, a2, a3, a4}, SecretFile: testSecret(t)})
	if err != nil {
		t.Fatal(err)
	}
	if f.ClusterName() != "c" || f.DiscoveryName() != "" {
		t.Errorf("cluster name %q, discovery %q (none configured)", f.ClusterName(), f.DiscoveryName())
	}
	link := func(session uint64, node, addr string) *peer {
		f.mu.Lock()
		defer f.mu.Unlock()
		d := f.dialLocked(addr)
		d.node, d.incarnation = node, "i-"+node
		p := newPeer(f, session, d.session, &linkpb.Hello{Node: node, Incarnation: "i-" + node, Address: addr})
		f.bySession[session], f.byName[node], f.byAddr[addr] = p, p, p
		return p
	}
	up := link(1, "n1", a1)
	up.up = true
	up.sent, up.unacked = 3, 300
	up.delivered.Store(2)
	link(2, "n9", learned) // linking: it answered, not up yet
	gone := link(3, "n3", a3)
	gone.up = true
	heard := time.Now().Add(-time.Minute)
	gone.lastHeard.Store(heard.UnixNano())
	f.declareDown(gone, "connection lost", 0)
	f.mu.Lock()
	f.dial[a2].refused = `cluster "x" is not this node's cluster "c"`
	f.mu.Unlock()

	got := map[string]switchboard.LinkInfo{}
	for _, l := range f.Links() {
		if _, dup := got[l.Address]; dup {
			t.Fatalf("address %s listed twice", l.Address)
		}
		got[l.Address] = l
	}
	if len(got) != 5 {
		t.Fatalf("links %+v: want 5", got)
	}
	budget := f.cfg.Budget
	for _, c := range []struct {
		addr string
		want switchboard.LinkInfo
	}{
		{a1, switchboard.LinkInfo{Node: "n1", Incarnation: "i-n1", State: switchboard.LinkUp, Configured: true, Sent: 3, Delivered: 2, Unacked: 300}},
		{a2, switchboard.LinkInfo{State: switchboard.LinkRefused, Reason: `cluster "x" is not this node's cluster "c"`, Configured: true}},
		{a3, switchboard.LinkInfo{Node: "n3", Incarnation: "i-n3", State: switchboard.LinkDown, Reason: "connection lost", Configured: true, LastHeard: heard}},
		{a4, switchboard.LinkInfo{State: switchboard.LinkDown, Configured: true}},
		{learned, switchboard.LinkInfo{Node: "n9", Incarnation: "i-n9", State: switchboard.LinkLinking}},
	} {
		l := got[c.addr]
		c.want.Address, c.want.Budget = c.addr, budget
		if c.want.State != switchboard.LinkUp && c.want.State != switchboard.LinkLinking {
			if !l.LastHeard.Equal(c.want.LastHeard) {
				t.Errorf("%s: last heard %v, want %v", c.addr, l.LastHeard, c.want.LastHeard)
			}
		} else if time.Since(l.LastHeard) > time.Minute {
			t.Errorf("%s: last heard %v", c.addr, l.LastHeard)
		}
		l.LastHeard, c.want.LastHeard = time.Time{}, time.Time{}
		if l != c.want {
			t.Errorf("%s:\n got %+v\nwant %+v", c.addr, l, c.want)
		}
	}
	// Stats lists the links linked or linking, as before.
	if st := f.Stats(); len(st.Links) != 2 || st.Links[0].Node != "n1" || !st.Links[0].Up || st.Links[0].Sent != 3 ||
		st.Links[1].Node != "n9" || st.Links[1].Up || len(st.Refused) != 1 {
		t.Errorf("stats %+v", st)
	}
}
