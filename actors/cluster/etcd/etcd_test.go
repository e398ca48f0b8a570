package etcd

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/switchboard-ipc/switchboard/actors/cluster"
	"github.com/switchboard-ipc/switchboard/actors/cluster/etcd/etcdtest"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// node is one Run, as a Federation would make it: called again after an
// error, until stopped; found's latest set kept.
type node struct {
	self   cluster.Member
	cancel context.CancelFunc
	done   chan struct{}

	mu    sync.Mutex
	set   []string
	calls int
	errs  []error
}

func runNode(t *testing.T, d *Discovery, name, addr string) *node {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	n := &node{self: cluster.Member{Cluster: "c1", Node: name, Incarnation: "i-" + name, Address: addr},
		cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(n.done)
		for ctx.Err() == nil {
			err := d.Run(ctx, n.self, func(addrs []string) {
				n.mu.Lock()
				n.set, n.calls = addrs, n.calls+1
				n.mu.Unlock()
			})
			if err != nil {
				n.mu.Lock()
				n.errs = append(n.errs, err)
				n.mu.Unlock()
				select {
				case <-ctx.Done():
				case <-time.After(200 * time.Millisecond):
				}
			}
		}
	}()
	t.Cleanup(n.stop)
	return n
}

// stop cancels the node's Run and waits until it returned.
func (n *node) stop() { n.cancel(); <-n.done }

func (n *node) addrs() []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.set
}

func (n *node) errors() []error {
	n.mu.Lock()
	defer n.mu.Unlock()
	return slices.Clone(n.errs)
}

func (n *node) failures() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return len(n.errs)
}

// waitSet waits until every node's latest set is want.
func waitSet(t *testing.T, within time.Duration, want []string, ns ...*node) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		ok := true
		for _, n := range ns {
			if !slices.Equal(n.addrs(), want) {
				ok = false
			}
		}
		if ok {
			return
		}
		if time.Now().After(deadline) {
			for _, n := range ns {
				t.Errorf("%s knows %v, errors %v", n.self.Node, n.addrs(), n.errors())
			}
			t.Fatalf("want %v within %v", want, within)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestDiscoveryEtcd: nodes registered in etcd find each other; one that
// stops is gone for the others at once (its lease revoked), one that dies
// after the lease's TTL; what a stranger writes in the directory that is
// not an address is ignored; a key of another cluster is not seen.
func TestDiscoveryEtcd(t *testing.T) {
	s := etcdtest.Start(t)
	// A long TTL: a node that stops is gone long before it.
	d, err := New(Config{Endpoints: []string{s.URL}, TTL: 30 * time.Second, Timeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	a1, a2, a3 := "127.0.0.1:7001", "127.0.0.1:7002", "127.0.0.1:7003"
	n1 := runNode(t, d, "n1", a1)
	n2 := runNode(t, d, "n2", a2)
	n3 := runNode(t, d, "n3", a3)
	waitSet(t, 10*time.Second, []string{a1, a2, a3}, n1, n2, n3)

	stopped := time.Now()
	n3.stop()
	waitSet(t, 15*time.Second, []string{a1, a2}, n1, n2)
	if took := time.Since(stopped); took > 10*time.Second {
		t.Errorf("a node that stopped was gone for the others after %v: its lease was not revoked (TTL 30s)", took)
	}

	// A node that dies: its key under a lease nobody keeps alive.
	cli := s.Client()
	defer cli.Close()
	ctx := context.Background()
	granted := time.Now()
	lease, err := cli.Grant(ctx, 2)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Put(ctx, d.Dir("c1")+"n4/i-dead", "127.0.0.1:7004", clientv3.WithLease(lease.ID)); err != nil {
		t.Fatal(err)
	}
	// A stranger's entries: too long to be an address; another cluster's.
	if _, err := cli.Put(ctx, d.Dir("c1")+"junk", strings.Repeat("x", maxValue+1)); err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Put(ctx, d.Dir("c2")+"n9/i", "127.0.0.1:7009"); err != nil {
		t.Fatal(err)
	}
	waitSet(t, 10*time.Second, []string{a1, a2, "127.0.0.1:7004"}, n1, n2)
	waitSet(t, 10*time.Second, []string{a1, a2}, n1, n2)
	if took := time.Since(granted); took < 1500*time.Millisecond {
		t.Errorf("a dead node's key went %v after its lease was granted, before its TTL (2s)", took)
	}
	// A node's own key deleted by another (a hasty clean-up) is written
	// again: it stays registered.
	own := d.Dir("c1") + "n1/i-n1"
	if r, err := cli.Delete(ctx, own); err != nil || r.Deleted != 1 {
		t.Fatalf("deleting %s: %v, %+v", own, err, r)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		r, err := cli.Get(ctx, own)
		if err != nil {
			t.Fatal(err)
		}
		if len(r.Kvs) == 1 && string(r.Kvs[0].Value) == a1 && r.Kvs[0].Lease != 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not written again within 10 s: %+v", own, r.Kvs)
		}
		time.Sleep(20 * time.Millisecond)
	}
	waitSet(t, 10*time.Second, []string{a1, a2}, n1, n2)
	// A key overwritten with junk is forgotten, not kept at its old value.
	if _, err := cli.Put(ctx, d.Dir("c1")+"n5/i", "127.0.0.1:7005"); err != nil {
		t.Fatal(err)
	}
	waitSet(t, 10*time.Second, []string{a1, a2, "127.0.0.1:7005"}, n1, n2)
	if _, err := cli.Put(ctx, d.Dir("c1")+"n5/i", strings.Repeat("y", maxValue+1)); err != nil {
		t.Fatal(err)
	}
	waitSet(t, 10*time.Second, []string{a1, a2}, n1, n2)
	if n1.failures()+n2.failures() != 0 {
		t.Fatalf("runs failed with etcd up: %v %v", n1.errors(), n2.errors())
	}
}

// TestDiscoveryEtcdOutage: with etcd gone, the nodes keep what they knew
// (a run that cannot keep its lease fails and is called again, and fails
// until etcd is back); once it is back, they register again, and a node
// that came meanwhile is found.
func TestDiscoveryEtcdOutage(t *testing.T) {
	s := etcdtest.Start(t)
	d, err := New(Config{Endpoints: []string{s.URL}, TTL: 2 * time.Second, Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	a1, a2, a3 := "127.0.0.1:7001", "127.0.0.1:7002", "127.0.0.1:7003"
	n1 := runNode(t, d, "n1", a1)
	n2 := runNode(t, d, "n2", a2)
	waitSet(t, 10*time.Second, []string{a1, a2}, n1, n2)

	s.Stop()
	n3 := runNode(t, d, "n3", a3) // cannot register: etcd is down
	deadline := time.Now().Add(15 * time.Second)
	for n1.failures() == 0 || n2.failures() == 0 || n3.failures() == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("with etcd down for 15 s, runs failed %d, %d and %d times: want each to fail (the lease, TTL 2s, lost)",
				n1.failures(), n2.failures(), n3.failures())
		}
		time.Sleep(50 * time.Millisecond)
	}
	// What they knew is kept: no empty set reported.
	if !slices.Equal(n1.addrs(), []string{a1, a2}) || !slices.Equal(n2.addrs(), []string{a1, a2}) || n3.addrs() != nil {
		t.Fatalf("with etcd down: n1 knows %v, n2 %v, n3 %v", n1.addrs(), n2.addrs(), n3.addrs())
	}

	s.Restart()
	waitSet(t, 20*time.Second, []string{a1, a2, a3}, n1, n2, n3)
	t.Logf("failed runs while etcd was down: n1 %d, n2 %d, n3 %d", n1.failures(), n2.failures(), n3.failures())
}

// TestNewRefuses: New refuses what it cannot use.
func TestNewRefuses(t *testing.T) {
	for _, c := range []Config{
		{},
		{Endpoints: []string{"127.0.0.1:2379"}},
		{Endpoints: []string{"http://127.0.0.1:2379"}, Prefix: "switchboard"},
		{Endpoints: []string{"http://127.0.0.1:2379"}, TTL: time.Second},
		{Endpoints: []string{"http://127.0.0.1:2379"}, TTL: 2500 * time.Millisecond},
		{Endpoints: []string{"http://127.0.0.1:2379"}, Timeout: -1},
		{Endpoints: []string{"http://127.0.0.1:2379"}, Username: "u"},
		{Endpoints: []string{"http://127.0.0.1:2379"}, Password: "p"},
	} {
		if _, err := New(c); err == nil {
			t.Errorf("New(%+v) accepted", c)
		}
	}
	d, err := New(Config{Endpoints: []string{"http://127.0.0.1:2379"}, Prefix: "/a/b/"})
	if err != nil {
		t.Fatal(err)
	}
	if got := d.Dir("c"); got != "/a/b/c/" {
		t.Fatalf("Dir = %q", got)
	}
	// Its description (status, nodes) names the endpoints, never a
	// password a URL carries.
	d, err = New(Config{Endpoints: []string{"http://u:secret@10.0.0.1:2379", "https://10.0.0.2:2379"}})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := d.String(), "etcd http://10.0.0.1:2379,https://10.0.0.2:2379, prefix /switchboard"; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
}

// TestDiscoveryEtcdBlip: etcd gone for less than the TTL: the nodes keep
// their registration (the same lease) and their runs (none fails), and
// follow the directory again once it is back.
func TestDiscoveryEtcdBlip(t *testing.T) {
	s := etcdtest.Start(t)
	d, err := New(Config{Endpoints: []string{s.URL}, TTL: 20 * time.Second, Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	a1, a2 := "127.0.0.1:7001", "127.0.0.1:7002"
	n1 := runNode(t, d, "n1", a1)
	n2 := runNode(t, d, "n2", a2)
	waitSet(t, 10*time.Second, []string{a1, a2}, n1, n2)
	cli := s.Client()
	defer cli.Close()
	ctx := context.Background()
	lease := func() int64 {
		t.Helper()
		r, err := cli.Get(ctx, d.Dir("c1")+"n1/i-n1")
		if err != nil || len(r.Kvs) != 1 {
			t.Fatalf("n1's key: %v, %+v", err, r)
		}
		return r.Kvs[0].Lease
	}
	before := lease()

	s.Stop()
	time.Sleep(2 * time.Second)
	s.Restart()
	if _, err := cli.Put(ctx, d.Dir("c1")+"n3/i", "127.0.0.1:7003"); err != nil {
		t.Fatal(err)
	}
	waitSet(t, 20*time.Second, []string{a1, a2, "127.0.0.1:7003"}, n1, n2)
	if after := lease(); after != before {
		t.Errorf("n1 registered again (lease %x, was %x): a blip shorter than the TTL should not cost the registration", after, before)
	}
	if f := n1.failures() + n2.failures(); f != 0 {
		t.Errorf("%d runs failed over a blip shorter than the TTL: %v %v", f, n1.errors(), n2.errors())
	}
	t.Logf("reads or watches retried within the runs: %d", d.Failures())
}

// TestDiscoveryEtcdCoalesced: a burst of changes reaches found as a few
// reports, the last of them the whole set.
func TestDiscoveryEtcdCoalesced(t *testing.T) {
	s := etcdtest.Start(t)
	d, err := New(Config{Endpoints: []string{s.URL}, TTL: 20 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	n1 := runNode(t, d, "n1", "127.0.0.1:7001")
	waitSet(t, 10*time.Second, []string{"127.0.0.1:7001"}, n1)
	cli := s.Client()
	defer cli.Close()
	n1.mu.Lock()
	calls := n1.calls
	n1.mu.Unlock()
	want := []string{"127.0.0.1:7001"}
	const burst = 50
	for i := range burst {
		a := fmt.Sprintf("127.0.0.1:%d", 8000+i)
		if _, err := cli.Put(context.Background(), d.Dir("c1")+fmt.Sprintf("b%d/i", i), a); err != nil {
			t.Fatal(err)
		}
		want = append(want, a)
	}
	slices.Sort(want)
	waitSet(t, 10*time.Second, want, n1)
	n1.mu.Lock()
	calls = n1.calls - calls
	n1.mu.Unlock()
	t.Logf("%d changes reported in %d calls", burst, calls)
	if calls > burst/2 {
		t.Errorf("%d changes reported in %d calls: not coalesced", burst, calls)
	}
}
