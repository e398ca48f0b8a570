package tests

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/switchboard-ipc/switchboard"
)

// The partition suite: nodes in two network namespaces joined by a veth
// pair, cut by setting one end down (a silent partition: no RST, no FIN,
// packets just vanish) and healed by setting it up again. Long mode: it
// is skipped under -short.

// ipCmd runs ip with args and fails the test on error.
func ipCmd(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// vethPair makes two named network namespaces joined by a veth pair
// (10.99.0.1/24 in the first, 10.99.0.2/24 in the second), loopback up
// in each, and removes both namespaces, and with them the pair, at the
// end of the test, then checks that nothing is left. It returns the
// namespaces' names and the first namespace's end of the pair.
func vethPair(t *testing.T) (nsA, nsB, devA string) {
	t.Helper()
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("the partition suite needs ip (iproute2)")
	}
	id := os.Getpid()
	nsA, nsB = fmt.Sprintf("sbpartA%d", id), fmt.Sprintf("sbpartB%d", id)
	devA, devB := fmt.Sprintf("sbvA%d", id), fmt.Sprintf("sbvB%d", id)
	t.Cleanup(func() {
		for _, ns := range []string{nsA, nsB} {
			exec.Command("ip", "netns", "del", ns).Run()
		}
		exec.Command("ip", "link", "del", devA).Run() // if it never moved
		out, _ := exec.Command("ip", "netns", "list").CombinedOutput()
		links, _ := exec.Command("ip", "-o", "link").CombinedOutput()
		for _, name := range []string{nsA, nsB} {
			if strings.Contains(string(out), name) {
				t.Errorf("network namespace %s left behind", name)
			}
		}
		for _, name := range []string{devA, devB} {
			if strings.Contains(string(links), name) {
				t.Errorf("link %s left behind", name)
			}
		}
	})
	ipCmd(t, "netns", "add", nsA)
	ipCmd(t, "netns", "add", nsB)
	ipCmd(t, "link", "add", devA, "type", "veth", "peer", "name", devB)
	ipCmd(t, "link", "set", devA, "netns", nsA)
	ipCmd(t, "link", "set", devB, "netns", nsB)
	for _, x := range []struct{ ns, dev, addr string }{{nsA, devA, "10.99.0.1/24"}, {nsB, devB, "10.99.0.2/24"}} {
		ipCmd(t, "-n", x.ns, "addr", "add", x.addr, "dev", x.dev)
		ipCmd(t, "-n", x.ns, "link", "set", x.dev, "up")
		ipCmd(t, "-n", x.ns, "link", "set", "lo", "up")
	}
	return nsA, nsB, devA
}

// clusterTLS writes a CA and one certificate for every node (IP SANs
// 10.99.0.1 and 10.99.0.2, for both server and client use) into a
// directory, and returns the [cluster] keys that use them.
func clusterTLS(t *testing.T) string {
	t.Helper()
	dir := publicDir(t)
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "switchboard test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "switchboard node"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("10.99.0.1"), net.ParseIP("10.99.0.2")},
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	write := func(name, typ string, b []byte) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: b}), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	return fmt.Sprintf("tls_cert = %q\ntls_key = %q\ntls_ca = %q\n",
		write("node.pem", "CERTIFICATE", der), write("node.key", "EC PRIVATE KEY", keyDER), write("ca.pem", "CERTIFICATE", caDER))
}

// TestFederationPartition: n1 and n2 in one namespace, n3 in another,
// joined by a veth pair. The pair goes down without a word: each side
// declares the other down within about the link timeout, and the name
// whose owner is on n1 gets an owner on n3's side too (names are
// available, not strict, in a partition). Nothing n3's clients send
// reaches the other side. When the pair comes back up, the sides link
// again by themselves as new sessions (the silent ones stay fenced), the
// name's two owners merge to one everywhere (the smaller address keeps
// it), traffic flows, and nothing is left of the fenced sessions (every
// node lists each connection once, nothing unacknowledged).
func TestFederationPartition(t *testing.T) {
	if testing.Short() {
		t.Skip("the partition suite is long mode: it runs without -short")
	}
	if !inFedNetns(t) {
		return
	}
	nsA, nsB, devA := vethPair(t)
	tlsKeys := clusterTLS(t)
	addrs := []string{"10.99.0.1:7951", "10.99.0.1:7952", "10.99.0.2:7953"}
	spaces := []string{nsA, nsA, nsB}
	config := func(i int) string {
		var peers []string
		for j, a := range addrs {
			if j != i {
				peers = append(peers, fmt.Sprintf("%q", a))
			}
		}
		return fmt.Sprintf("name = \"n%d\"\n\n[cluster]\nenabled = true\nlisten = %q\npeers = [%s]\n%s",
			i+1, addrs[i], strings.Join(peers, ", "), tlsKeys)
	}
	var ds []*daemon
	for i := range 3 {
		ds = append(ds, startDaemon(t, daemonOpts{config: config(i), netns: spaces[i]}))
	}
	a := fedDial(t, ds[0])
	b := fedDial(t, ds[1])
	c := fedDial(t, ds[2])
	wa := fedDial(t, ds[0]) // watchers: sys.nodes on each side
	wc := fedDial(t, ds[2])
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for _, x := range []*switchboard.Conn{a, b, c} {
		if err := x.Subscribe(ctx, "g"); err != nil {
			t.Fatal(err)
		}
	}
	for _, w := range []*switchboard.Conn{wa, wc} {
		if err := w.Subscribe(ctx, switchboard.GroupNodes); err != nil {
			t.Fatal(err)
		}
	}
	for _, x := range []*switchboard.Conn{a, b, c} {
		waitMembers(t, x, "g", 3)
	}
	const name = "svc.part"
	if primary, _, err := a.Own(ctx, name); err != nil || !primary {
		t.Fatalf("Own %s on n1: primary %v, %v", name, primary, err)
	}
	if primary, pos, err := c.Own(ctx, name); err != nil || primary || pos != 1 {
		t.Fatalf("Own %s on n3: primary %v, position %d, %v; want a standby", name, primary, pos, err)
	}

	cut := time.Now()
	ipCmd(t, "-n", nsA, "link", "set", devA, "down")
	// At once, before either side notices: n3 still takes these for its
	// links up and sends them into sessions the other side is about to
	// fence. None may ever be delivered, not even once the pair is back
	// up and TCP carries what it held (checked after the heal).
	for i := range 20 {
		if err := c.Publish(ctx, "g", seqPayload(500+i)); err != nil {
			t.Fatalf("publication %d in the silent window: %v", i, err)
		}
		if err := c.SendTo(ctx, a.Address(), seqPayload(500+i)); err != nil {
			t.Fatalf("message %d in the silent window: %v", i, err)
		}
	}
	left := nextNotice(t, wa, 10*time.Second, func(n switchboard.Notice) bool { return n.Kind == switchboard.NoticeNodeLeft })
	if left.Node != "n3" {
		t.Fatalf("n1 saw %s leave, want n3", left.Node)
	}
	t.Logf("n1 declared n3 down %v after the cut (%s)", time.Since(cut).Round(time.Millisecond), left.Detail)
	gone := map[string]bool{}
	for len(gone) < 2 {
		n := nextNotice(t, wc, 10*time.Second, func(n switchboard.Notice) bool { return n.Kind == switchboard.NoticeNodeLeft })
		gone[n.Node] = true
	}
	t.Logf("n3 declared n1 and n2 down %v after the cut", time.Since(cut).Round(time.Millisecond))
	// n3's side gives the name to its standby: available, not strict.
	nextNotice(t, c, 10*time.Second, func(n switchboard.Notice) bool {
		return n.Kind == switchboard.NoticeNameAcquired && n.Name == name
	})
	prefix := c.Address()[:strings.LastIndexByte(c.Address(), '.')+1]
	for i := range 20 {
		c.Publish(ctx, "g", seqPayload(i))
		c.SendTo(ctx, a.Address(), seqPayload(i))
	}
	quiet(t, a, prefix, time.Second) // nothing crosses the cut

	healed := time.Now()
	ipCmd(t, "-n", nsA, "link", "set", devA, "up")
	// The sides link again by themselves, as new sessions of the same
	// runs (the sessions that went silent stay fenced): n1 hears n3 join,
	// in the incarnation it had, and each side's state is sent afresh.
	joined := nextNotice(t, wa, 30*time.Second, func(n switchboard.Notice) bool { return n.Kind == switchboard.NoticeNodeJoined })
	if _, inc := nodeOf(c.Address()); joined.Node != "n3" || joined.Incarnation != inc {
		t.Fatalf("node joined: %s.%s, want n3 in the same run", joined.Node, joined.Incarnation)
	}
	t.Logf("n3 linked again %v after the pair came back up", time.Since(healed).Round(time.Millisecond))
	// The name had two owners, one on each side: the smaller address (n1's)
	// keeps it, n3's owner hears it lost, every node lists one owner.
	nextNotice(t, c, 20*time.Second, func(n switchboard.Notice) bool {
		return n.Kind == switchboard.NoticeNameLost && n.Name == name
	})
	for _, x := range []*switchboard.Conn{a, b, c} {
		checkFor(t, 10*time.Second, func() error {
			ns, err := x.Names(ctx)
			if err != nil {
				return err
			}
			for _, n := range ns {
				if n.Name == name {
					if n.Owner != a.Address() {
						return fmt.Errorf("%s seen from %s: owner %s, want %s", name, x.Address(), n.Owner, a.Address())
					}
					return nil
				}
			}
			return fmt.Errorf("%s not listed", name)
		})
	}
	waitMembers(t, a, "g", 3)
	for i := range 100 {
		if err := c.Publish(ctx, "g", seqPayload(1000+i)); err != nil {
			t.Fatal(err)
		}
	}
	// What c sent during the partition never reached a: neither what went
	// into the sessions n1 fenced (the silent window), nor what came after
	// (n3 had no remote member of g, and its SendTo's to a found its node
	// down): the first publication a gets from c is the first after the
	// heal, and no message of c's arrives at all.
	rctx, rcancel := context.WithTimeout(ctx, time.Minute)
	defer rcancel()
	for next := 0; next < 100; {
		e, err := a.RecvEvent(rctx)
		if err != nil {
			t.Fatalf("after %d of 100 publications from n3: %v", next, err)
		}
		if e.From != c.Address() {
			continue
		}
		if e.Kind == switchboard.EventMessage {
			t.Fatalf("a message n3's client sent during the partition reached n1: %x", e.Payload)
		}
		if e.Kind == switchboard.EventGroup && binary.LittleEndian.Uint64(e.Payload) != uint64(1000+next) {
			t.Fatalf("publication %d from n3 after the heal: payload %x", next, e.Payload)
		}
		if e.Kind == switchboard.EventGroup {
			next++
		}
	}
	// Nothing leaked by the fenced sessions: every node lists the same
	// connections, each once (none left over from before the cut, none
	// twice), the other two nodes up, and nothing unacknowledged once
	// the traffic is over.
	var first []string
	for i, x := range []*switchboard.Conn{a, b, c} {
		checkFor(t, 10*time.Second, func() error {
			cs, err := x.Connections(ctx)
			if err != nil {
				return err
			}
			var addrs []string
			for _, ci := range cs {
				addrs = append(addrs, ci.Address)
			}
			slices.Sort(addrs)
			if len(slices.Compact(slices.Clone(addrs))) != len(addrs) {
				return fmt.Errorf("n%d lists a connection twice: %v", i+1, addrs)
			}
			for _, y := range []*switchboard.Conn{a, b, c, wa, wc} {
				if !slices.Contains(addrs, y.Address()) {
					return fmt.Errorf("n%d does not list %s: %v", i+1, y.Address(), addrs)
				}
			}
			if first != nil && !slices.Equal(addrs, first) {
				return fmt.Errorf("n%d lists %v, n1 %v", i+1, addrs, first)
			}
			if first == nil {
				first = addrs
			}
			ci, err := x.ClusterNodes(ctx)
			if err != nil {
				return err
			}
			for _, l := range ci.Links {
				if l.State != switchboard.LinkUp || l.Unacked != 0 {
					return fmt.Errorf("n%d's link to %s: %v, %d bytes unacknowledged", i+1, l.Node, l.State, l.Unacked)
				}
			}
			if ci.Up() != 2 {
				return fmt.Errorf("n%d has %d other nodes up, want 2", i+1, ci.Up())
			}
			return nil
		})
	}
}
