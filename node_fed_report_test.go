package switchboard

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	pb "github.com/switchboard-ipc/switchboard/proto"
	gproto "google.golang.org/protobuf/proto"
)

// reportingFed is a fake federation that reports links (a
// FederationReporter), as actors/cluster's does.
type reportingFed struct {
	*fakeFed
	links     []LinkInfo
	discovery string
}

func (f *reportingFed) ClusterName() string   { return "prod" }
func (f *reportingFed) Links() []LinkInfo     { return f.links }
func (f *reportingFed) DiscoveryName() string { return f.discovery }

// TestClusterNodesNotFederated: a node without a federation answers the
// nodes command with its name, its run and Federated false: no error.
func TestClusterNodesNotFederated(t *testing.T) {
	n := startNode(t, WithNodeName("solo"))
	c := dial(t, n)
	ci, err := c.ClusterNodes(ctx5(t))
	if err != nil {
		t.Fatal(err)
	}
	if ci.Federated || ci.Node != "solo" || ci.Cluster != "" || ci.Links != nil ||
		!strings.HasPrefix(c.Address(), ":solo."+ci.Incarnation+".") || ci.Incarnation == "" {
		t.Fatalf("not federated: %+v (address %s)", ci, c.Address())
	}
}

// TestClusterNodesFromHost: a federation that does not report its links
// still gets the nodes up listed, as the node heard of them.
func TestClusterNodesFromHost(t *testing.T) {
	cl := newFakeCluster()
	n1 := startFedNode(t, cl, "n1")
	n2 := startFedNode(t, cl, "n2")
	n3 := startFedNode(t, cl, "n3")
	waitMesh(t, n1, n2, n3)
	ci, err := dial(t, n1).ClusterNodes(ctx5(t))
	if err != nil {
		t.Fatal(err)
	}
	inc2 := strings.Split(n2.addrPrefix, ".")[1]
	if !ci.Federated || ci.Node != "n1" || len(ci.Links) != 2 || ci.Up() != 2 ||
		ci.Links[0] != (LinkInfo{Node: "n2", Incarnation: inc2, State: LinkUp}) || ci.Links[1].Node != "n3" {
		t.Fatalf("n1's view: %+v", ci)
	}
	cl.down("n3", "cut")
	waitFor(t, func() bool { return n1.ClusterNodes().Up() == 1 })
}

// TestClusterNodesReported: a FederationReporter's links reach the
// client whole, in order (by node name, unknown names last, then
// address), with the cluster's name.
func TestClusterNodesReported(t *testing.T) {
	heard := time.Unix(1_700_000_000, 123456789)
	links := []LinkInfo{
		{Address: "10.0.0.9:7000", State: LinkDown, Configured: true, Discovered: true},
		{Node: "n3", Incarnation: "i3", Address: "10.0.0.3:7000", State: LinkRefused, Reason: `cluster "x" is not this node's`, Configured: true, Budget: 1 << 26},
		{Node: "n2", Incarnation: "i2", Address: "10.0.0.2:7000", State: LinkUp, Configured: true, Sent: 7, Delivered: 5, Unacked: 1234, Budget: 1 << 26, LastHeard: heard},
		{Address: "10.0.0.8:7000", State: LinkDown, Reason: "connection lost"},
		{Node: "n4", Address: "10.0.0.4:7000", State: LinkLinking, LastHeard: heard},
	}
	cl := newFakeCluster()
	n1 := startFedNode(t, cl, "n1", WithFederation(&reportingFed{fakeFed: cl.fed(), links: links, discovery: "dns nodes.example, port own, every 5s"}))
	ci, err := dial(t, n1).ClusterNodes(ctx5(t))
	if err != nil {
		t.Fatal(err)
	}
	want := []LinkInfo{links[2], links[1], links[4], links[3], links[0]}
	if !ci.Federated || ci.Cluster != "prod" || ci.Discovery != "dns nodes.example, port own, every 5s" || ci.Node != "n1" || ci.Up() != 1 {
		t.Fatalf("n1: %+v", ci)
	}
	if len(ci.Links) != len(want) {
		t.Fatalf("links %+v", ci.Links)
	}
	for i := range want {
		got := ci.Links[i]
		if !got.LastHeard.Equal(want[i].LastHeard) {
			t.Errorf("link %d heard %v, want %v", i, got.LastHeard, want[i].LastHeard)
		}
		got.LastHeard = want[i].LastHeard
		if got != want[i] {
			t.Errorf("link %d:\n got %+v\nwant %+v", i, got, want[i])
		}
	}
	if links[0].Address != "10.0.0.9:7000" {
		t.Error("the node reordered its federation's slice")
	}
	// The command is listed among the system service's.
	svcs, err := dial(t, n1).Services(ctx5(t))
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range svcs {
		if s.ID == SystemService && (len(s.Commands) != 5 || s.Commands[4] != (CommandInfo{ID: SysNodes, Name: "nodes", Description: s.Commands[4].Description})) {
			t.Errorf("system service's commands: %+v", s.Commands)
		}
	}
}

// FuzzClusterNodes: any reply decodes or fails with ErrProtocol; what
// decodes has a known state for every link and encodes back the same.
func FuzzClusterNodes(f *testing.F) {
	seed, _ := gproto.Marshal(clusterProto(ClusterInfo{Node: "n1", Incarnation: "i", Federated: true, Cluster: "c",
		Links: []LinkInfo{{Node: "n2", Address: "a:1", State: LinkRefused, Reason: "r", Sent: 1, LastHeard: time.Unix(0, 5)}}}))
	f.Add(seed)
	bad, _ := gproto.Marshal(&pb.ClusterNodes{Links: []*pb.LinkInfo{{State: 99}, {State: -1}}})
	f.Add(bad)
	f.Add([]byte{0xff})
	f.Fuzz(func(t *testing.T, b []byte) {
		ci, err := clusterInfoOf(b)
		if err != nil {
			if !errors.Is(err, ErrProtocol) {
				t.Fatalf("error %v is not ErrProtocol", err)
			}
			return
		}
		for _, l := range ci.Links {
			if l.State > LinkRefused {
				t.Fatalf("state %d", l.State)
			}
		}
		again, _ := gproto.Marshal(clusterProto(ci))
		ci2, err := clusterInfoOf(again)
		if err != nil || !reflect.DeepEqual(ci, ci2) {
			t.Fatalf("round trip: %+v, %v; want %+v", ci2, err, ci)
		}
	})
}
