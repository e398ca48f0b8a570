package tests

import (
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/switchboard-ipc/switchboard/actors/cluster/dns/dnstest"
	"golang.org/x/sys/unix"
)

// useTestDNS points this process and the nodes it starts at a DNS server
// on 127.0.0.1:53: it bind-mounts a resolv.conf of its own over
// /etc/resolv.conf, in the mount namespace inFedNamespaces made for the
// test (the machine's is untouched).
func useTestDNS(t *testing.T) {
	t.Helper()
	ns, err := os.Readlink("/proc/self/ns/mnt")
	if parent := os.Getenv(parentMntEnv); err != nil || parent == "" || ns == parent {
		t.Fatalf("not in a mount namespace of the test's own (%s, the parent's %q, %v): the machine's /etc/resolv.conf is not to be touched", ns, parent, err)
	}
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		t.Fatalf("making the mounts private: %v", err)
	}
	conf := filepath.Join(t.TempDir(), "resolv.conf")
	if err := os.WriteFile(conf, []byte("nameserver 127.0.0.1\noptions timeout:1 attempts:1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount(conf, "/etc/resolv.conf", "", unix.MS_BIND, ""); err != nil {
		t.Fatalf("bind-mounting %s over /etc/resolv.conf: %v", conf, err)
	}
}

// TestFederationDNS: nodes that list no peers, each at its own loopback
// address and the same port, find each other as the A records of one
// name (cluster.discovery = "dns", a Kubernetes headless Service's way)
// and form one bus; a node added to the name is found, and one removed
// and killed leaves.
func TestFederationDNS(t *testing.T) {
	if testing.Short() {
		t.Skip("starts four nodes")
	}
	if !inFedNamespaces(t, syscall.CLONE_NEWNS) {
		return
	}
	useTestDNS(t)
	s := dnstest.Start(t, "127.0.0.1:53", "nodes.sb.test")
	ip := func(i int) string { return fmt.Sprintf("127.0.0.%d", i+11) }
	s.Set(false, ip(0), ip(1), ip(2))
	cfg := func(i int) string {
		return fmt.Sprintf("name = \"n%d\"\n\n[cluster]\nenabled = true\nlisten = \"%s:7951\"\nsecret_file = %q\n"+
			"discovery = \"dns\"\ndns_name = \"nodes.sb.test\"\ndns_interval = \"200ms\"\n", i+1, ip(i), fedSecret(t))
	}
	g := startFedGroup(t, cfg, 3)

	s.Set(false, ip(0), ip(1), ip(2), ip(3))
	g.join(3)
	g.waitMembers(4, 0, 1, 2, 3)
	g.publish(3, "from n4", 0, 1, 2)

	s.Set(false, ip(0), ip(1), ip(3))
	g.ds[2].signal(t, syscall.SIGKILL)
	g.waitMembers(3, 0, 1, 3)
}
