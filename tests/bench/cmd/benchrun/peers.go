package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// peer is one system under test.
type peer struct {
	name, label string
	// broker starts the peer's broker (NATS, D-Bus), if it has one, and
	// returns it with its address.
	broker func(c *config, ps *procs, dir string) (*proc, string, error)
	// serverArgs is the command of the peer's server, or of the responder
	// attached to its broker; it prints "ready ADDRESS".
	serverArgs func(c *config, dir, broker string) []string
	// clientArgs is the command of one client process in role.
	clientArgs func(c *config, role string, w *workload, dir string, extra ...string) []string
	// notFor maps a workload kind to why it does not apply to this peer.
	notFor map[string]string
	// cluster starts two linked nodes (servers) of the peer, A and B, for
	// the cross-node rows, and returns them with the address a client
	// dials on each; nil: the peer has no cluster, its cross-node cells
	// are n/a.
	cluster func(c *config, ps *procs, dir string) (nodes []*proc, addrA, addrB string, err error)
	// brokerFds and clientFds are the descriptors one idle connection
	// costs the broker (or server) and the client (1 when unset): the
	// large idle row checks them against RLIMIT_NOFILE, and spreads its
	// connections over as many client processes as the limit needs.
	brokerFds, clientFds int
}

// fdsPer returns n, or 1 when unset.
func fdsPer(n int) int { return max(n, 1) }

func (p *peer) na(w *workload) string {
	if cross(w.kind) && p.cluster == nil {
		return noCluster
	}
	return p.notFor[w.kind]
}

const (
	noBroker = "n/a: no broker to route through"
	// pending marks the Switchboard cells waiting for the bus API. To add
	// one: implement its hook in cmd/benchpeer/peer_switchboard.go and
	// delete its line from the switchboard peer's notFor below.
	pending = "n/a (pending)"
	// notMany: the 10,000-connection row runs where holding that many is
	// cheap for the harness (one descriptor, or Switchboard's few, per
	// connection; no per-connection files or daemon limits to lift).
	notMany = "n/a: not run at 10,000 connections"
	// noCluster: the cross-node rows run on the peers whose servers link
	// to each other (Switchboard's [cluster], NATS's routes).
	noCluster = "n/a: no cluster of nodes"
)

// goPeer is a peer whose processes are all benchpeer.
func goPeer(name, label string, notFor map[string]string, extra ...string) *peer {
	return &peer{
		name: name, label: label, notFor: notFor,
		serverArgs: func(c *config, dir, broker string) []string {
			return append([]string{c.binPath("benchpeer"), "-peer", name, "-role", "serve", "-dir", dir, "-addr", broker}, extra...)
		},
		clientArgs: func(c *config, role string, w *workload, dir string, more ...string) []string {
			args := []string{c.binPath("benchpeer"), "-peer", name, "-role", role, "-dir", dir,
				"-size", strconv.Itoa(w.size), "-dur", c.dur.String()}
			args = append(args, extra...)
			return append(args, more...)
		},
	}
}

var allPeers = []*peer{
	sbPeer(),
	sbSocketPeer(),
	goPeer("shm", "bare shm", map[string]string{
		kindFanout:   noBroker,
		kindP2P:      noBroker,
		kindConnect:  "n/a: no handshake to measure",
		kindIdle:     "n/a: not a server",
		kindIdleMany: "n/a: not a server",
	}),
	goPeer("unix", "Unix socket", map[string]string{kindFanout: noBroker, kindP2P: noBroker}),
	libqbPeer("shm"),
	libqbPeer("socket"),
	natsPeer(),
	goPeer("grpc", "gRPC (Unix socket)", map[string]string{kindFanout: noBroker, kindP2P: noBroker, kindIdleMany: notMany}),
	goPeer("shmipc", "shmipc-go", map[string]string{kindFanout: noBroker, kindP2P: noBroker, kindIdleMany: notMany}),
	dbusPeer(),
}

// sbPeer is Switchboard over shared memory. A connection costs the node
// its socket and three doorbells (eventfds), the client its socket, the
// segment's memfd kept for the mapping and its doorbells.
func sbPeer() *peer {
	p := goPeer("switchboard", "Switchboard", nil)
	p.brokerFds, p.clientFds = 4, 6
	p.cluster = benchpeerPair("switchboard", "xnode")
	return p
}

// benchpeerPair starts two benchpeer processes in role, node A (-name a)
// and node B (-name b, -join A's link address): each prints "ready ADDRESS
// LINK", what clients dial and what the other node links to; B says ready
// once its link to A is up. Each chooses its own free loopback ports (the
// kernel's ephemeral ones, as the single NATS broker does): they cannot
// collide with the harness's other servers, which listen on Unix sockets
// or on ports the kernel chose.
func benchpeerPair(name, role string) func(c *config, ps *procs, dir string) ([]*proc, string, string, error) {
	return func(c *config, ps *procs, dir string) ([]*proc, string, string, error) {
		var nodes []*proc
		var addrs []string
		join := ""
		for _, node := range []string{"a", "b"} {
			args := []string{c.binPath("benchpeer"), "-peer", name, "-role", role, "-dir", dir, "-name", node}
			if join != "" {
				args = append(args, "-join", join)
			}
			p, err := ps.start(fmt.Sprintf("%s node %s", name, node), args)
			if err != nil {
				return nodes, "", "", err
			}
			nodes = append(nodes, p)
			line, err := p.ready("ready ", 30*time.Second)
			if err != nil {
				return nodes, "", "", err
			}
			addr, link, ok := strings.Cut(line, " ")
			if !ok {
				return nodes, "", "", p.fail("ready line without a link address: " + line)
			}
			addrs = append(addrs, addr)
			join = link
		}
		return nodes, addrs[0], addrs[1], nil
	}
}

// sbSocketPeer is Switchboard with its clients on the socket transport.
func sbSocketPeer() *peer {
	p := goPeer("switchboard-socket", "Switchboard, socket transport", map[string]string{kindIdleMany: notMany},
		"-transport", "socket")
	p.cluster = benchpeerPair("switchboard-socket", "xnode")
	return p
}

func libqbPeer(transport string) *peer {
	name := "libqb-" + transport
	return &peer{
		name: name, label: "libqb " + transport,
		notFor: map[string]string{kindFanout: noBroker, kindP2P: noBroker, kindIdleMany: notMany},
		serverArgs: func(c *config, dir, _ string) []string {
			return []string{c.binPath("qbserver"), transport, fmt.Sprintf("sbb%d%s", os.Getpid(), filepath.Base(dir))}
		},
		clientArgs: func(c *config, role string, w *workload, dir string, more ...string) []string {
			addr, n := "", "1"
			for i := 0; i+1 < len(more); i += 2 {
				switch more[i] {
				case "-addr":
					addr = more[i+1]
				case "-n":
					n = more[i+1]
				}
			}
			return []string{c.binPath("qbclient"), role, addr, strconv.Itoa(w.size),
				strconv.FormatInt(c.dur.Milliseconds(), 10), n, strconv.Itoa(window(w.size))}
		},
	}
}

// window matches benchpeer's defaultWindow, for the C client.
func window(size int) int {
	if size >= 16<<10 {
		return 16
	}
	return 500
}

func natsPeer() *peer {
	p := goPeer("nats", "NATS", nil)
	p.broker = func(c *config, ps *procs, dir string) (*proc, string, error) {
		b, err := ps.start("nats-server", []string{c.binPath("benchpeer"), "-peer", "nats", "-role", "broker"})
		if err != nil {
			return nil, "", err
		}
		addr, err := b.ready("ready ", 20*time.Second)
		if err != nil {
			b.stop(time.Second)
			return nil, "", err
		}
		return b, addr, nil
	}
	p.cluster = benchpeerPair("nats", "xbroker")
	return p
}

// dbusConfig is a private bus: the limits of Debian's session bus
// (/usr/share/dbus-1/session.conf), which are higher than dbus-daemon's
// built-in ones, and a policy that lets the benchmark own its names.
const dbusConfig = `<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:path=%s</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
  <limit name="max_incoming_bytes">1000000000</limit>
  <limit name="max_incoming_unix_fds">250000000</limit>
  <limit name="max_outgoing_bytes">1000000000</limit>
  <limit name="max_outgoing_unix_fds">250000000</limit>
  <limit name="max_message_size">1000000000</limit>
  <limit name="max_message_unix_fds">4096</limit>
  <limit name="service_start_timeout">120000</limit>
  <limit name="auth_timeout">240000</limit>
  <limit name="pending_fd_timeout">150000</limit>
  <limit name="max_completed_connections">100000</limit>
  <limit name="max_incomplete_connections">10000</limit>
  <limit name="max_connections_per_user">100000</limit>
  <limit name="max_pending_service_starts">10000</limit>
  <limit name="max_names_per_connection">50000</limit>
  <limit name="max_match_rules_per_connection">50000</limit>
  <limit name="max_replies_per_connection">50000</limit>
</busconfig>
`

func dbusPeer() *peer {
	p := goPeer("dbus", "D-Bus (dbus-daemon)", map[string]string{kindIdleMany: notMany})
	p.broker = func(c *config, ps *procs, dir string) (*proc, string, error) {
		cfg := filepath.Join(dir, "bus.conf")
		if err := os.WriteFile(cfg, fmt.Appendf(nil, dbusConfig, filepath.Join(dir, "bus")), 0o644); err != nil {
			return nil, "", err
		}
		b, err := ps.start("dbus-daemon", []string{"dbus-daemon", "--config-file=" + cfg, "--nofork", "--nopidfile", "--print-address=1"})
		if err != nil {
			return nil, "", err
		}
		addr, err := b.ready("", 20*time.Second)
		if err != nil {
			b.stop(time.Second)
			return nil, "", err
		}
		return b, addr, nil
	}
	return p
}

// installedVersion runs a command and returns the first line it prints.
func installedVersion(argv ...string) string {
	out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput()
	if err != nil {
		return "unknown (" + err.Error() + ")"
	}
	line, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
	return line
}
