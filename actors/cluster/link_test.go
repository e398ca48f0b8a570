package cluster

import (
	"encoding/json"
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"
)

var addrs = map[string]string{"n1": "127.0.0.1:7101", "n2": "127.0.0.1:7102", "n3": "127.0.0.1:7103", "n4": "127.0.0.1:7104"}

// startTwo starts n1 (with o1) and n2 (with o2), each dialling the other,
// and waits until each has the other up.
func startTwo(t testing.TB, o1, o2 memberOpts) (n1, n2 *member) {
	t.Helper()
	n1 = startMember(t, "n1", "an1", addrs["n1"], []string{addrs["n2"]}, o1)
	n2 = startMember(t, "n2", "an2", addrs["n2"], []string{addrs["n1"]}, o2)
	n1.wait("up n2 an2", 10*time.Second)
	n2.wait("up n1 an1", 10*time.Second)
	return n1, n2
}

// startThree starts n1, n2 and n3, each dialling the other two, and waits
// until every one has the other two up.
func startThree(t testing.TB, o memberOpts) map[string]*member {
	t.Helper()
	ms := map[string]*member{}
	for _, n := range []string{"n1", "n2", "n3"} {
		var peers []string
		for _, p := range []string{"n1", "n2", "n3"} {
			if p != n {
				peers = append(peers, addrs[p])
			}
		}
		ms[n] = startMember(t, n, "a"+n, addrs[n], peers, o)
	}
	for n, m := range ms {
		for p := range ms {
			if p != n {
				m.wait("up "+p+" a"+p, 10*time.Second)
			}
		}
	}
	return ms
}

func stats(t testing.TB, m *member) Stats {
	t.Helper()
	var s Stats
	if err := json.Unmarshal([]byte(m.do("stats")), &s); err != nil {
		t.Fatal(err)
	}
	return s
}

// waitCount waits until m has received want messages from node, and
// checks they came in order.
func waitCount(t testing.TB, m *member, node string, want int) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		var got, bad int
		fmt.Sscan(m.do("count", node), &got, &bad)
		if bad != 0 {
			t.Fatalf("%s got %d messages from %s out of order", m.name, bad, node)
		}
		if got == want {
			return
		}
		if got > want || time.Now().After(deadline) {
			t.Fatalf("%s got %d messages from %s, want %d", m.name, got, node, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestLinkThreeNodes: three nodes link up; sequence-numbered messages
// cross every link in order with nothing lost; a 16 MiB message crosses;
// a node of a name already linked is refused, and the cluster keeps the
// first.
func TestLinkThreeNodes(t *testing.T) {
	if !inNetns(t) {
		return
	}
	// A 16 MiB message crosses in one of remote's batches, and the
	// heartbeats queued behind it arrive after it: on a loaded 2-CPU
	// machine under -race that took over a second. The link timeout must
	// exceed the time a link takes to carry its budget (WIRE.md §12.5);
	// the hung-node test keeps the default.
	ms := startThree(t, memberOpts{env: []string{"SBM_LINK_TIMEOUT=5s"}})
	const n = 3000
	for from, m := range ms {
		for to := range ms {
			if to != from {
				if got := m.do("send", to, n, 64); got != fmt.Sprintf("%d 0 ", n) {
					t.Fatalf("%s sending to %s: %q", from, to, got)
				}
			}
		}
	}
	for to, m := range ms {
		for from := range ms {
			if from != to {
				waitCount(t, m, from, n)
			}
		}
	}

	// 16 MiB, in 64 chunks, arrives whole.
	answer := strings.Fields(ms["n1"].do("big", "n2", 16<<20))
	if answer[0] != "<nil>" {
		t.Fatalf("sending 16 MiB: %v", answer)
	}
	got := strings.Fields(ms["n2"].wait("big n1", 20*time.Second).text)
	if got[2] != fmt.Sprint(16<<20) || got[3] != answer[1] {
		t.Fatalf("16 MiB message arrived as %v, sent with sha256 %s", got, answer[1])
	}

	// A second n2, elsewhere, is refused by all; the first stays up.
	dup := startMember(t, "n2", "other", addrs["n4"], []string{addrs["n1"], addrs["n2"], addrs["n3"]}, memberOpts{})
	deadline := time.Now().Add(5 * time.Second)
	for {
		s := stats(t, dup)
		if len(s.Refused) == 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the duplicate n2 was refused by %v, want all three", s.Refused)
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(500 * time.Millisecond) // as long as two heartbeats: nothing more happens
	if dup.has("up ") {
		t.Fatalf("a duplicate n2 came up:\n%s", dup.output())
	}
	for _, m := range []*member{ms["n1"], ms["n3"]} {
		if m.has("down n2") || m.has("up n2 other") {
			t.Fatalf("%s took the duplicate n2:\n%s", m.name, m.output())
		}
	}
	if got := ms["n1"].do("send", "n2", 1, 64); got != "1 0 " {
		t.Fatalf("n1 → n2 after the duplicate: %q", got)
	}
	waitCount(t, ms["n2"], "n1", n+1)
}

// TestLinkBudget: a receiver that stops taking messages stops
// acknowledging them; its sender's budget fills and Send refuses (counted),
// and when the receiver resumes everything accepted arrives in order.
func TestLinkBudget(t *testing.T) {
	if !inNetns(t) {
		return
	}
	const budget = 20 << 20
	// The stall timeout (10 s by default) would end the link if the
	// machine were slow enough to keep n2 stalled that long: this test is
	// of the budget, not of that timeout.
	ms := startThree(t, memberOpts{budget: budget, env: []string{"SBM_STALL=2m"}})
	ms["n2"].do("stall")
	var ok, refused int
	var why string
	fmt.Sscan(ms["n1"].do("send", "n2", 1000, 64<<10), &ok, &refused, &why)
	t.Logf("n1 → stalled n2, 1000 × 64 KiB with a %d MiB budget: %d accepted, %d refused (%s)", budget>>20, ok, refused, why)
	if refused == 0 || why != "cluster:_link_budget_spent" || ok > budget/(64<<10) || ok == 0 {
		t.Fatalf("accepted %d, refused %d (%s): want the budget to refuse past %d", ok, refused, why, budget/(64<<10))
	}
	if s := stats(t, ms["n1"]); s.Overflow != uint64(refused) {
		t.Fatalf("overflow counted %d, want %d", s.Overflow, refused)
	}
	// n1's other links are not held back.
	if got := ms["n1"].do("send", "n3", 10, 64); got != "10 0 " {
		t.Fatalf("n1 → n3 while n2 stalls: %q", got)
	}
	waitCount(t, ms["n3"], "n1", 10)
	ms["n2"].do("unstall")
	waitCount(t, ms["n2"], "n1", ok)
	if got := ms["n1"].do("send", "n2", 10, 64); got != "10 0 " {
		t.Fatalf("n1 → n2 once it resumed: %q", got)
	}
	waitCount(t, ms["n2"], "n1", ok+10)
}

// TestLinkBudgetDisconnect: with the disconnect policy, a Send past the
// budget is refused and the link to the stalled node goes down, then
// links again as a new session.
func TestLinkBudgetDisconnect(t *testing.T) {
	if !inNetns(t) {
		return
	}
	const budget = 20 << 20
	n1, n2 := startTwo(t, memberOpts{budget: budget, env: []string{"SBM_OVERFLOW=disconnect"}}, memberOpts{budget: budget})
	n2.do("stall")
	// Up to the first refusal: what follows it may go to a new session.
	// n2's reader is held by its host's Deliver only when the first
	// message was delivered in place; one that came before n2's host
	// finished hearing NodeUp was queued, and the reader, free, reads
	// n1's Bye and Hello and links again at once.
	var ok, refused int
	var why string
	fmt.Sscan(n1.do("fill", "n2", 1000, 64<<10), &ok, &refused, &why)
	if refused != 1 || ok > budget/(64<<10) || why != "cluster:_link_budget_spent" {
		t.Fatalf("accepted %d, refused %d (%s): want the budget to refuse past %d", ok, refused, why, budget/(64<<10))
	}
	l := n1.wait("down n2 an2", 5*time.Second)
	if !strings.Contains(l.text, "link budget spent") {
		t.Fatalf("n1 declared n2 down for another reason: %s", l.text)
	}
	// The session is over. n2 reads n1's Bye and Hellos once its host
	// takes messages again (or at once, its reader free: see above); then
	// the two link again as a new session.
	n2.do("unstall")
	n1.waitNth("up n2 an2", 2, 15*time.Second)
	n2.waitNth("up n1 an1", 2, 15*time.Second)
}

// TestLinkKilledNode: a SIGKILLed node is declared down by the others at
// once (remote sees its stream break); restarted, it comes up as a new
// incarnation.
func TestLinkKilledNode(t *testing.T) {
	if !inNetns(t) {
		return
	}
	ms := startThree(t, memberOpts{})
	killed := time.Now()
	ms["n3"].kill()
	for _, n := range []string{"n1", "n2"} {
		l := ms[n].wait("down n3 an3", 5*time.Second)
		took := l.at.Sub(killed)
		t.Logf("%s declared the killed n3 down after %v: %s", n, took.Round(time.Microsecond), l.text)
		// remote sees the stream break within milliseconds (the
		// figure logged above); the bound only catches a detection that
		// never came, since the machine may be loaded.
		if took > 10*time.Second {
			t.Errorf("%s took %v to declare a killed node down", n, took)
		}
	}
	n3 := startMember(t, "n3", "bn3", addrs["n3"], []string{addrs["n1"], addrs["n2"]}, memberOpts{})
	for _, n := range []string{"n1", "n2"} {
		ms[n].wait("up n3 bn3", 10*time.Second)
		n3.wait("up "+n+" a"+n, 10*time.Second)
	}
	if got := ms["n1"].do("send", "n3", 5, 64); got != "5 0 " {
		t.Fatalf("n1 → restarted n3: %q", got)
	}
	waitCount(t, n3, "n1", 5)
}

// TestLinkHungNode: a node stopped (SIGSTOP) for 3 s while it streams
// messages is declared down (after the link timeout); resumed, its session
// is fenced: what it had queued, and sent before it learned, is not
// delivered (counted as stale); then the pause heals: the node links
// again in the same incarnation as a new session, and its new messages
// arrive. The other nodes' links are unaffected.
func TestLinkHungNode(t *testing.T) {
	if !inNetns(t) {
		return
	}
	ms := startThree(t, memberOpts{})
	// n3 keeps its link's budget (64 MiB) full of 16 KiB messages: when
	// it stops, most of that is still queued in it (the network holds at
	// most the links' 16 MiB windows); once it resumes, that crosses in
	// the session n1 has fenced (counted stale there), or is dropped
	// unsent if n3 learns first that the session is over (its Unsent):
	// either way n1 delivers none of it.
	stream := ms["n3"].start("stream", "n1", 16<<10)
	time.Sleep(200 * time.Millisecond)
	stopped := time.Now()
	ms["n3"].cmd.Process.Signal(syscall.SIGSTOP)
	for _, n := range []string{"n1", "n2"} {
		l := ms[n].wait("down n3 an3", 15*time.Second)
		took := l.at.Sub(stopped)
		t.Logf("%s declared the stopped n3 down after %v: %s", n, took.Round(time.Millisecond), l.text)
		// The link timeout (1 s) and a heartbeat, as logged above; the
		// bound only catches a detection that never came.
		if took > 10*time.Second {
			t.Errorf("%s took %v to declare a hung node down", n, took)
		}
	}
	var atDown, bad int
	fmt.Sscan(ms["n1"].do("count", "n3"), &atDown, &bad)
	time.Sleep(3*time.Second - time.Since(stopped))
	resumed := time.Now()
	ms["n3"].cmd.Process.Signal(syscall.SIGCONT)
	var streamed int
	var why string
	fmt.Sscan(strings.TrimPrefix(ms["n3"].wait(stream+" ", 10*time.Second).text, stream+" "), &streamed, &why)
	ms["n3"].wait("down n1 an1", 10*time.Second)
	// Healed: the same incarnations link again, as new sessions.
	for _, pair := range [][2]string{{"n1", "n3"}, {"n3", "n1"}, {"n2", "n3"}, {"n3", "n2"}} {
		l := ms[pair[0]].waitNth("up "+pair[1]+" a"+pair[1], 2, 15*time.Second)
		t.Logf("%s linked %s again %v after the resume", pair[0], pair[1], l.at.Sub(resumed).Round(time.Millisecond))
	}
	s := stats(t, ms["n1"])
	t.Logf("n3 streamed %d messages to n1 (then %s); n1 delivered %d before it declared n3 down, "+
		"then ignored %d envelopes from the fenced session", streamed, why, atDown, s.Stale)
	waitCount(t, ms["n1"], "n3", atDown) // nothing more from the fenced session
	if atDown == 0 || streamed <= atDown {
		t.Fatalf("n3 streamed %d, n1 delivered %d: want a stream cut by the fence", streamed, atDown)
	}
	if s.Stale == 0 {
		t.Fatalf("n1 counted no envelope of the fenced session as stale: %+v", s)
	}
	if got := ms["n3"].do("send", "n1", 10, 64); got != "10 0 " {
		t.Fatalf("n3 → n1 in its new session: %q", got)
	}
	waitCount(t, ms["n1"], "n3", atDown+10)
	if got := ms["n1"].do("send", "n2", 10, 64); got != "10 0 " {
		t.Fatalf("n1 → n2 after n3 was fenced: %q", got)
	}
	waitCount(t, ms["n2"], "n1", 10)
	if ms["n1"].has("down n2") || ms["n2"].has("down n1") {
		t.Fatalf("n1 and n2 lost each other:\n%s\n%s", ms["n1"].output(), ms["n2"].output())
	}
}

// TestLinkReset: a node that resets a link (as the host does when the link
// refused a message it cannot do without) has the other node declared
// down on both ends, then linked again as a new session in the same
// incarnation; messages flow again, in order.
func TestLinkReset(t *testing.T) {
	if !inNetns(t) {
		return
	}
	n1, n2 := startTwo(t, memberOpts{}, memberOpts{})
	if got := n1.do("send", "n2", 10, 64); got != "10 0 " {
		t.Fatalf("n1 → n2: %q", got)
	}
	waitCount(t, n2, "n1", 10)
	n1.do("reset", "n2")
	if l := n1.wait("down n2 an2", 10*time.Second); !strings.Contains(l.text, "reset") {
		t.Fatalf("n1 declared n2 down for another reason: %s", l.text)
	}
	n2.wait("down n1 an1", 10*time.Second)
	n1.waitNth("up n2 an2", 2, 15*time.Second)
	n2.waitNth("up n1 an1", 2, 15*time.Second)
	if s := stats(t, n1); s.Resets != 1 {
		t.Fatalf("n1 counted %d resets, want 1", s.Resets)
	}
	for _, m := range []*member{n1, n2} {
		other := map[*member]string{n1: "n2", n2: "n1"}[m]
		if got := m.do("send", other, 10, 64); got != "10 0 " {
			t.Fatalf("%s → %s after the reset: %q", m.name, other, got)
		}
	}
	waitCount(t, n2, "n1", 20)
	waitCount(t, n1, "n2", 10)
}

// TestLinkAcksRideAlong: between nodes that take batches, a burst of
// messages crosses in a few Batch envelopes, its acknowledgement rides on
// heartbeats (no Ack envelope for a burst far below a quarter of the
// budget), and the sender's window empties within a heartbeat or two.
func TestLinkAcksRideAlong(t *testing.T) {
	if !inNetns(t) {
		return
	}
	n1, n2 := startTwo(t, memberOpts{}, memberOpts{})
	const n = 5000
	if got := n1.do("send", "n2", n, 64); got != fmt.Sprintf("%d 0 ", n) {
		t.Fatalf("send: %q", got)
	}
	waitCount(t, n2, "n1", n)
	// How many batches depends on how far the writer lags the sends
	// (logged, not asserted); that they were batches does not.
	s1 := stats(t, n1)
	if s1.Batches == 0 || s1.Packed == 0 {
		t.Fatalf("%d messages crossed in %d Batches, %d packed: want small ones packed", n, s1.Batches, s1.Packed)
	}
	if s2 := stats(t, n2); s2.Acks != 0 {
		t.Fatalf("n2 sent %d Ack envelopes for %d bytes: want the acknowledgement on its heartbeats", s2.Acks, n*64)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		s := stats(t, n1)
		if len(s.Links) == 1 && s.Links[0].Unacked == 0 {
			t.Logf("%d messages in %d batches; acknowledged by heartbeat", n, s1.Batches)
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("n1's window never emptied: %+v", s.Links)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestLinkV1Peer: a node that speaks the link's first version (no
// batches, an Ack for every pass) and a current one link and exchange
// messages both ways, in order, small and chunked, with nothing held
// unacknowledged; neither sends a Batch.
func TestLinkV1Peer(t *testing.T) {
	if !inNetns(t) {
		return
	}
	n1, n2 := exchangeAcrossVersions(t, "SBM_V1=1")
	s1, s2 := stats(t, n1), stats(t, n2)
	if s1.Batches != 0 || s2.Batches != 0 {
		t.Fatalf("batches sent: n1 %d, n2 %d: want none on a link with a first-version node", s1.Batches, s2.Batches)
	}
	if s2.Acks == 0 {
		t.Fatal("n2 sent the first-version node no Ack envelope")
	}
	waitAcked(t, n1, n2)
}

// TestLinkBatchOnlyPeer: a node that takes batches but not packed ones
// (FEATURE_BATCH alone) and a current one link and exchange messages both
// ways, as TestLinkV1Peer; the current node sends it no packed batch and
// no Ack envelope.
func TestLinkBatchOnlyPeer(t *testing.T) {
	if !inNetns(t) {
		return
	}
	n1, n2 := exchangeAcrossVersions(t, "SBM_NOPACK=1")
	s1, s2 := stats(t, n1), stats(t, n2)
	if s1.Packed != 0 || s2.Packed != 0 || s1.Batches == 0 || s2.Batches == 0 {
		t.Fatalf("batches n1 %d (%d packed), n2 %d (%d packed): want batches, none packed", s1.Batches, s1.Packed, s2.Batches, s2.Packed)
	}
	if s2.Acks != 0 {
		t.Fatalf("n2 sent %d Ack envelopes to a node that takes acknowledgements in batches", s2.Acks)
	}
	waitAcked(t, n1, n2)
}

// exchangeAcrossVersions starts n1 speaking an older version of the link
// (env), n2 the current one, and has each send the other 2,000 small
// messages and 3 chunked ones, checked in order.
func exchangeAcrossVersions(t *testing.T, env string) (n1, n2 *member) {
	t.Helper()
	n1, n2 = startTwo(t, memberOpts{env: []string{env}}, memberOpts{})
	for _, pair := range [][2]*member{{n1, n2}, {n2, n1}} {
		from, to := pair[0], pair[1]
		if got := from.do("send", to.name, 2000, 64); got != "2000 0 " {
			t.Fatalf("%s → %s: %q", from.name, to.name, got)
		}
		if got := from.do("send", to.name, 3, 600<<10); got != "3 0 " {
			t.Fatalf("%s → %s, chunked: %q", from.name, to.name, got)
		}
		waitCount(t, to, from.name, 2003)
	}
	return n1, n2
}

// waitAcked waits until neither of two linked members holds anything
// unacknowledged.
func waitAcked(t *testing.T, n1, n2 *member) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		a, b := stats(t, n1), stats(t, n2)
		if len(a.Links) == 1 && len(b.Links) == 1 && a.Links[0].Unacked == 0 && b.Links[0].Unacked == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("unacknowledged: n1 %+v, n2 %+v", a.Links, b.Links)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestLinkBallastNotResident: a node holds a GC ballast of its link budget
// while its links run, in address space only: a node with a 512 MiB
// budget is not 512 MiB larger in memory than one with 64 MiB.
func TestLinkBallastNotResident(t *testing.T) {
	if !inNetns(t) {
		return
	}
	// Each started, alone (their budgets differ: they would not link).
	n1 := startMember(t, "n1", "an1", addrs["n1"], nil, memberOpts{budget: 512 << 20})
	n2 := startMember(t, "n2", "an2", addrs["n2"], nil, memberOpts{budget: 64 << 20})
	var big, small int64
	fmt.Sscan(n1.do("rss"), &big)
	fmt.Sscan(n2.do("rss"), &small)
	t.Logf("resident: %d KiB with a 512 MiB budget, %d KiB with 64 MiB", big, small)
	if big == 0 || small == 0 || big > small+(128<<10) {
		t.Fatalf("resident %d KiB with a 512 MiB budget against %d KiB with 64 MiB: the ballast is in memory", big, small)
	}
}

// TestLinkHostPanics: a host that panics on a message (its bug) takes
// that link down, counted, instead of wedging it: the node hears NodeDown,
// the two link again as a new session and messages flow; and Close
// returns.
func TestLinkHostPanics(t *testing.T) {
	if !inNetns(t) {
		return
	}
	n1, n2 := startTwo(t, memberOpts{}, memberOpts{})
	if got := n1.do("panic", "n2"); got != "<nil>" {
		t.Fatalf("panic: %q", got)
	}
	l := n2.wait("down n1 an1", 5*time.Second)
	if !strings.Contains(l.text, "panicked") {
		t.Fatalf("n2 took n1 down for another reason: %s", l.text)
	}
	n2.waitNth("up n1 an1", 2, 10*time.Second)
	n1.waitNth("up n2 an2", 2, 10*time.Second)
	if got := n1.do("send", "n2", 10, 64); got != "10 0 " {
		t.Fatalf("n1 → n2 after the panic: %q", got)
	}
	waitCount(t, n2, "n1", 10)
	if s := stats(t, n2); s.HostPanics != 1 {
		t.Fatalf("n2 counted %d host panics, want 1", s.HostPanics)
	}
	id := n2.start("quit")
	n2.wait(id+" closed", 10*time.Second)
}
