package cluster

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/remote"
	"github.com/switchboard-ipc/switchboard/actors/cluster/linkpb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"
)

// TestLinkSurvivesHostileStreams: what remote itself would crash on — a
// batch whose indexes point outside its tables, a unary call it never
// implemented — closes that stream or is refused; the node lives on and
// its links stay up.
func TestLinkSurvivesHostileStreams(t *testing.T) {
	if !inNetns(t) {
		return
	}
	n1, n2 := startTwo(t, memberOpts{}, memberOpts{})

	client, ctx := rawClient(t, addrs["n1"])
	if _, err := client.ListProcesses(ctx, &remote.ListProcessesRequest{}); err == nil {
		t.Fatal("ListProcesses answered")
	}
	stream, err := client.Receive(ctx)
	if err != nil {
		t.Fatal(err)
	}
	err = stream.Send(&remote.RemoteMessage{MessageType: &remote.RemoteMessage_MessageBatch{MessageBatch: &remote.MessageBatch{
		TypeNames: []string{"switchboard.link.Envelope"},
		Envelopes: []*remote.MessageEnvelope{{Target: 99, TypeId: 7}},
	}}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err == nil {
		t.Fatal("the stream took a batch whose target index is out of range")
	}
	var s Stats
	deadline := time.Now().Add(5 * time.Second)
	for s = stats(t, n1); s.Panics == 0 || s.RefusedCalls == 0; s = stats(t, n1) {
		if time.Now().After(deadline) {
			t.Fatalf("n1 counted %d broken streams and %d refused calls, want 1 and 1", s.Panics, s.RefusedCalls)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if got := n2.do("send", "n1", 10, 64); got != "10 0 " {
		t.Fatalf("n2 → n1 after the hostile stream: %q", got)
	}
	waitCount(t, n1, "n2", 10)
	if n1.has("down ") || n2.has("down ") {
		t.Fatalf("a link went down:\n%s\n%s", n1.output(), n2.output())
	}
}

// TestLinkSecret: a node without the cluster's secret is refused by every
// node (counted), however it names itself: it can neither link nor take
// a linked node's place; the nodes with the secret stay linked. The nodes
// that list its address (a peer given the wrong secret) tell it why; a
// stranger at an address nobody dials is told nothing (a Bye would make
// remote dial whatever address a Hello names).
func TestLinkSecret(t *testing.T) {
	if !inNetns(t) {
		return
	}
	n1 := startMember(t, "n1", "an1", addrs["n1"], []string{addrs["n2"], addrs["n3"]}, memberOpts{})
	n2 := startMember(t, "n2", "an2", addrs["n2"], []string{addrs["n1"], addrs["n3"]}, memberOpts{})
	n1.wait("up n2 an2", 10*time.Second)
	n2.wait("up n1 an1", 10*time.Second)
	other := filepath.Join(t.TempDir(), "other")
	if err := os.WriteFile(other, []byte("not the cluster's secret at all"), 0o600); err != nil {
		t.Fatal(err)
	}
	// n3 without the secret, and an n2 impostor (a new n2 run at another
	// address) without it either.
	n3 := startMember(t, "n3", "an3", addrs["n3"], []string{addrs["n1"], addrs["n2"]}, memberOpts{secret: other})
	dup := startMember(t, "n2", "evil", addrs["n4"], []string{addrs["n1"]}, memberOpts{secret: other})
	deadline := time.Now().Add(10 * time.Second)
	for {
		s1, s2 := stats(t, n1), stats(t, n2)
		if s1.BadSecret >= 2 && s2.BadSecret >= 1 && len(stats(t, n3).Refused) == 2 {
			t.Logf("n1 refused %d Hellos without the secret, n2 %d", s1.BadSecret, s2.BadSecret)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Hellos without the secret refused: n1 %d, n2 %d; n3 refused by %v", s1.BadSecret, s2.BadSecret, stats(t, n3).Refused)
		}
		time.Sleep(50 * time.Millisecond)
	}
	for _, m := range []*member{n1, n2, n3, dup} {
		if m.has("up n3") || m.has("up n2 evil") || ((m == n3 || m == dup) && m.has("up ")) {
			t.Fatalf("%s linked a node without the secret:\n%s", m.name, m.output())
		}
	}
	if r := stats(t, dup).Refused; len(r) != 0 {
		t.Fatalf("the stranger at an address nobody dials was told why: %v", r)
	}
	if got := n1.do("send", "n2", 10, 64); got != "10 0 " {
		t.Fatalf("n1 → n2: %q", got)
	}
	waitCount(t, n2, "n1", 10)
	if n1.has("down ") || n2.has("down ") {
		t.Fatalf("a link went down:\n%s\n%s", n1.output(), n2.output())
	}
}

// TestLinkImpostor: a new session claiming a linked node's name and
// address (anyone can, in a Hello) while that node is alive is refused
// (counted), not taken for the node restarted: the real node's link stays
// up.
func TestLinkImpostor(t *testing.T) {
	if !inNetns(t) {
		return
	}
	n1, n2 := startTwo(t, memberOpts{}, memberOpts{})
	before := stats(t, n1).RefusedOut
	// Listens at n4's address, says it is n2 at n2's.
	startMember(t, "n2", "evil", addrs["n4"], []string{addrs["n1"]}, memberOpts{env: []string{"SBM_ADVERTISE=" + addrs["n2"]}})
	deadline := time.Now().Add(10 * time.Second)
	for stats(t, n1).RefusedOut < before+2 {
		if time.Now().After(deadline) {
			t.Fatalf("n1 refused %d Hellos of the impostor, want 2 or more", stats(t, n1).RefusedOut-before)
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(500 * time.Millisecond)
	if n1.has("down n2") || n2.has("down n1") || n1.has("up n2 evil") {
		t.Fatalf("the impostor displaced n2:\n%s\n%s", n1.output(), n2.output())
	}
	if got := n1.do("send", "n2", 10, 64); got != "10 0 " {
		t.Fatalf("n1 → n2 after the impostor: %q", got)
	}
	waitCount(t, n2, "n1", 10)
}

// TestLinkSelfAddressHello: a Hello that gives the receiver's own address
// as the sender's (anyone who reaches the port can send one) is dropped
// and counted: answering it would deliver the answer to the receiver
// itself, on the goroutine handling the Hello, which once deadlocked the
// node. The node goes on serving its links.
func TestLinkSelfAddressHello(t *testing.T) {
	if !inNetns(t) {
		return
	}
	n1, n2 := startTwo(t, memberOpts{}, memberOpts{})
	before := stats(t, n1)

	client, ctx := rawClient(t, addrs["n1"])
	stream, err := client.Receive(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, cluster := range []string{"evil", "test"} { // refused, and not: both would answer
		env, _ := proto.Marshal(&linkpb.Envelope{Session: 77, Body: &linkpb.Envelope_Hello{Hello: &linkpb.Hello{
			Version: protoVersion, Cluster: cluster, Node: "x", Incarnation: "y", Address: addrs["n1"]}}})
		err = stream.Send(&remote.RemoteMessage{MessageType: &remote.RemoteMessage_MessageBatch{MessageBatch: &remote.MessageBatch{
			TypeNames: []string{"switchboard.link.Envelope"},
			Targets:   []string{linkActorName},
			Envelopes: []*remote.MessageEnvelope{{MessageData: env}},
		}}})
		if err != nil {
			t.Fatal(err)
		}
	}
	// n1 still serves: it sends, and its counters answer.
	id := n1.start("send", "n2", 10, 64)
	if got := strings.TrimPrefix(n1.wait(id+" ", 5*time.Second).text, id+" "); got != "10 0 " {
		t.Fatalf("n1 → n2 after the Hellos: %q", got)
	}
	waitCount(t, n2, "n1", 10)
	if s := stats(t, n1); s.Protocol < before.Protocol+2 {
		t.Fatalf("n1 counted %d protocol errors, want %d more", s.Protocol, 2)
	}
}

// rawClient dials a node's link port as remote's own client would, with
// none of the link's checks on what it sends; the connection and the
// context (10 s) end with the test.
func rawClient(t *testing.T, addr string) (remote.RemotingClient, context.Context) {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return remote.NewRemotingClient(conn), ctx
}
