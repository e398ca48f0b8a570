package cluster

import (
	"bytes"
	"maps"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"fmt"

	"github.com/switchboard-ipc/switchboard"
	"github.com/switchboard-ipc/switchboard/actors/cluster/linkpb"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

// split cuts msg into the Data envelopes a sender makes, from seq.
func split(msg []byte, seq uint64) []*linkpb.Data {
	n := int64(len(msg))
	count := chunks(n)
	var out []*linkpb.Data
	for i := range count {
		lo, hi := i*ChunkSize, min((i+1)*ChunkSize, n)
		out = append(out, &linkpb.Data{Seq: seq + uint64(i), Index: uint32(i), Count: uint32(count), Size: uint64(n), Bytes: msg[lo:hi]})
	}
	return out
}

func TestReassemblerJoins(t *testing.T) {
	r := newReassembler(16 << 20)
	seq := uint64(1)
	for _, size := range []int{0, 1, ChunkSize - 1, ChunkSize, ChunkSize + 1, 3*ChunkSize + 17, 16 << 20} {
		msg := bytes.Repeat([]byte{byte(size)}, size)
		parts := split(msg, seq)
		seq += uint64(len(parts))
		for i, d := range parts {
			got, done, err := r.add(d)
			if err != nil {
				t.Fatalf("size %d chunk %d: %v", size, i, err)
			}
			if done != (i == len(parts)-1) {
				t.Fatalf("size %d chunk %d: done %v", size, i, done)
			}
			if done && !bytes.Equal(got, msg) {
				t.Fatalf("size %d: joined %d bytes, not the message", size, len(got))
			}
		}
	}
}

func TestReassemblerRefuses(t *testing.T) {
	msg := make([]byte, 2*ChunkSize+5)
	for _, c := range []struct {
		name string
		feed func() []*linkpb.Data
		want string
	}{
		{"gap", func() []*linkpb.Data { d := split([]byte("a"), 2); return d }, "sequence gap"},
		{"duplicate", func() []*linkpb.Data { d := split([]byte("a"), 1); return append(d, d[0]) }, "sequence gap"},
		{"too large", func() []*linkpb.Data {
			return []*linkpb.Data{{Seq: 1, Count: 65, Size: 16<<20 + 1, Bytes: make([]byte, ChunkSize)}}
		}, "past the"},
		{"wrong count", func() []*linkpb.Data { d := split(msg, 1); d[0].Count = 9; return d[:1] }, "chunks, want"},
		{"starts mid-message", func() []*linkpb.Data { d := split(msg, 1); d[1].Seq = 1; return d[1:2] }, "starts at chunk"},
		{"chunk skipped", func() []*linkpb.Data {
			d := split(msg, 1)
			d[2].Seq, d[2].Index = 2, 2
			return []*linkpb.Data{d[0], d[2]}
		}, "inside chunk"},
		{"short chunk", func() []*linkpb.Data { d := split(msg, 1); d[0].Bytes = d[0].Bytes[:10]; return d }, "holds"},
		{"size lies", func() []*linkpb.Data { return []*linkpb.Data{{Seq: 1, Count: 1, Size: 9, Bytes: []byte("a")}} }, "carries"},
		{"last chunk long", func() []*linkpb.Data {
			d := split(msg, 1)
			d[2].Bytes = make([]byte, 100)
			return d
		}, "add up to more"},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := newReassembler(16 << 20)
			var err error
			for _, d := range c.feed() {
				if _, _, err = r.add(d); err != nil {
					break
				}
			}
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got %v, want an error with %q", err, c.want)
			}
		})
	}
}

// TestUnknownEnvelopeIgnored: an envelope of a kind this node does not
// know (a newer node's) is counted and ignored, not an error.
func TestUnknownEnvelopeIgnored(t *testing.T) {
	b, err := proto.Marshal(&linkpb.Envelope{Session: 7})
	if err != nil {
		t.Fatal(err)
	}
	b = protowire.AppendTag(b, 99, protowire.BytesType) // a oneof case from the future
	b = protowire.AppendBytes(b, []byte("whatever"))
	var env linkpb.Envelope
	if err := proto.Unmarshal(b, &env); err != nil {
		t.Fatal(err)
	}
	f, err := New(Config{Cluster: "c", Listen: "127.0.0.1:0", Advertise: "127.0.0.1:1", SecretFile: testSecret(t)})
	if err != nil {
		t.Fatal(err)
	}
	f.receive(&env)
	if got := f.Stats().Unknown; got != 1 {
		t.Fatalf("unknown envelopes counted: %d, want 1", got)
	}
}

func TestConfig(t *testing.T) {
	ok := Config{Cluster: "c", Listen: "127.0.0.1:7000", Peers: []string{"127.0.0.1:7001"}, SecretFile: testSecret(t)}
	if _, err := New(ok); err != nil {
		t.Fatalf("a loopback configuration: %v", err)
	}
	slow := ok
	slow.LinkTimeout = 15 * time.Second
	if f, err := New(slow); err != nil || f.cfg.StallTimeout != slow.LinkTimeout {
		t.Fatalf("a link timeout past the default stall timeout: %v; want it accepted, the stall timeout raised to it", err)
	}
	dir := t.TempDir()
	open := filepath.Join(dir, "open")
	short := filepath.Join(dir, "short")
	if err := os.WriteFile(open, []byte("a secret long enough to pass\n"), 0o640); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(short, []byte("short\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		edit func(*Config)
		want string
	}{
		{"no TLS off loopback", func(c *Config) { c.Listen = "10.0.0.1:7000" }, "TLS is required"},
		{"no TLS on all addresses", func(c *Config) { c.Listen = "0.0.0.0:7000"; c.Advertise = "10.0.0.1:7000" }, "TLS is required"},
		{"part of TLS", func(c *Config) { c.TLSCert = "/x" }, "or none of them"},
		{"unreachable advertise", func(c *Config) { c.Listen = "0.0.0.0:7000" }, "advertise"},
		{"bad peer", func(c *Config) { c.Peers = []string{"nowhere"} }, "peers"},
		// Without TLS the secret crosses in every Hello: never off this host.
		{"no TLS, a peer off loopback", func(c *Config) { c.Peers = []string{"127.0.0.1:7001", "10.0.0.2:7001"} }, `peers: "10.0.0.2:7001" is not a loopback address`},
		{"no TLS, a peer by a name", func(c *Config) { c.Peers = []string{"node2:7001"} }, `peers: "node2:7001" is not a loopback address`},
		{"no TLS, advertised off loopback", func(c *Config) { c.Advertise = "10.0.0.1:7000" }, `advertise: "10.0.0.1:7000" is not a loopback address`},
		{"IPv6 listen", func(c *Config) { c.Listen = "[::1]:7000"; c.Advertise = "[::1]:7000" }, "IPv6"},
		{"no cluster", func(c *Config) { c.Cluster = "" }, "cluster: name"},
		{"timeout under two heartbeats", func(c *Config) { c.Heartbeat = time.Second }, "link_timeout"},
		{"budget under a message", func(c *Config) { c.Budget = 1 << 20 }, "budget"},
		{"missing certificate", func(c *Config) { c.TLSCert, c.TLSKey, c.TLSCA = "/nonexistent", "/nonexistent", "/nonexistent" }, "tls"},
		{"no secret without TLS", func(c *Config) { c.SecretFile = "" }, "secret_file: required without TLS"},
		{"secret readable by the group", func(c *Config) { c.SecretFile = open }, "accessible by group or others"},
		{"secret too short", func(c *Config) { c.SecretFile = short }, "a secret is 16 to 4096"},
		{"secret missing", func(c *Config) { c.SecretFile = filepath.Join(dir, "none") }, "secret_file"},
	} {
		cfg := ok
		c.edit(&cfg)
		if _, err := New(cfg); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: got %v, want an error with %q", c.name, err, c.want)
		}
	}
}

// TestStartRefusesATakenPort: remote.Start would panic on a port it
// cannot have; Start returns an error that says so.
func TestStartRefusesATakenPort(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	f, err := New(Config{Cluster: "c", Listen: ln.Addr().String(), SecretFile: testSecret(t)})
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Start("n1", "i1", nopHost{}); err == nil || !strings.Contains(err.Error(), "cluster: listen") {
		t.Fatalf("Start on a port taken: %v, want a listen error", err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestNodeNames: the link takes the node names and incarnations the host
// takes, and no other: a name the host would ignore (not printable ASCII)
// is refused in a Hello and by Start, never linked "up" in vain.
func TestNodeNames(t *testing.T) {
	hello := func(node, inc string) *linkpb.Hello {
		return &linkpb.Hello{Version: protoVersion, Cluster: "c", Node: node, Incarnation: inc, Address: "127.0.0.1:7000"}
	}
	for _, c := range []struct {
		node, inc string
		ok        bool
	}{
		{"n1", "i1", true},
		{"nöde", "i1", false},
		{"n1", "inc\x7f", false},
		{"n.1", "i1", false},
		{"n 1", "i1", false},
		{strings.Repeat("n", 65), "i1", false},
		{"", "i1", false},
	} {
		hostOK := switchboard.CheckNodeName(c.node) == nil && switchboard.CheckNodeName(c.inc) == nil
		if err := checkHello(hello(c.node, c.inc)); (err == nil) != c.ok || hostOK != c.ok {
			t.Errorf("node %q incarnation %q: link %v, host ok %v; want ok %v", c.node, c.inc, err, hostOK, c.ok)
		}
	}
	f, err := New(Config{Cluster: "c", Listen: "127.0.0.1:0", Advertise: "127.0.0.1:1", SecretFile: testSecret(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Start("nöde", "i1", nopHost{}); err == nil || !strings.Contains(err.Error(), "node name") {
		t.Fatalf("Start as nöde: %v, want a node name error", err)
	}
}

// TestUnpack: packed messages come out numbered on from first, as slices
// of the batch; what a sender never packs ends the link.
func TestUnpack(t *testing.T) {
	var got []string
	err := unpack(7, []byte{1, 'a', 0, 2, 'b', 'c'}, func(seq uint64, msg []byte) error {
		got = append(got, fmt.Sprintf("%d:%s", seq, msg))
		return nil
	})
	if err != nil || strings.Join(got, " ") != "7:a 8: 9:bc" {
		t.Fatalf("unpack: %v, %v", got, err)
	}
	many := bytes.Repeat([]byte{0}, batchChunks+1)
	big := append(protowire.AppendVarint(nil, packMax+1), make([]byte, packMax+1)...)
	for name, c := range map[string]struct {
		first  uint64
		packed []byte
	}{
		"first 0":   {0, []byte{1, 'a'}},
		"cut short": {1, []byte{5, 'a'}},
		"too large": {1, big},
		"too many":  {1, many},
	} {
		if err := unpack(c.first, c.packed, func(uint64, []byte) error { return nil }); err == nil {
			t.Errorf("%s: taken", name)
		}
	}
	if err := unpack(1, many[:batchChunks], func(uint64, []byte) error { return nil }); err != nil {
		t.Errorf("%d empty messages: %v", batchChunks, err)
	}
}

// TestPlaintextStaysOnHost: a node without TLS sends the cluster's secret
// in every Hello, so it dials no address off this host: a Hello that
// advertises one is neither answered nor dialled (counted), and a
// discovery's non-loopback addresses are ignored (counted). localhost
// and all of 127.0.0.0/8 are loopback.
func TestPlaintextStaysOnHost(t *testing.T) {
	f, err := New(Config{Cluster: "c", Listen: "127.0.0.1:7000", SecretFile: testSecret(t)})
	if err != nil {
		t.Fatal(err)
	}
	secret, err := readSecret(f.cfg.SecretFile)
	if err != nil {
		t.Fatal(err)
	}
	f.onHello(5, &linkpb.Hello{Version: protoVersion, Cluster: "c", Node: "n2", Incarnation: "i2", Address: "10.0.0.2:7000", Secret: secret})
	f.found([]string{"10.0.0.3:7000", "node4:7000", "localhost:7001", "127.1.2.3:7002", "LocalHost.:7003", "[::1]:7004"})
	f.mu.Lock()
	dial := maps.Clone(f.dial)
	peers := len(f.bySession)
	f.mu.Unlock()
	if peers != 0 || len(dial) != 4 || dial["localhost:7001"] == nil || dial["127.1.2.3:7002"] == nil || dial["LocalHost.:7003"] == nil || dial["[::1]:7004"] == nil {
		t.Errorf("peers %d, dial table %v: want no peer, and only the four loopback addresses to dial", peers, dial)
	}
	if st := f.Stats(); st.Protocol != 1 || st.BadDiscovered != 2 {
		t.Errorf("protocol %d, bad discovered %d: want 1 (the Hello) and 2", st.Protocol, st.BadDiscovered)
	}
}
