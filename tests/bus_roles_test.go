package tests

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"runtime/pprof"
	"runtime/trace"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/switchboard-ipc/switchboard"
)

// Bus roles, for the multi-process bus tests. Each prints "ready ADDRESS"
// once it is set up, then one line per thing the test watches for.
//
//	peer: SB_MODE echo (answers requests with "ADDRESS:payload"), hang
//	  (prints "request" and never answers), count (counts messages, see
//	  countMessages), stall (reads no event until the file SB_RESUME
//	  exists, then counts); SB_NOTIFY, with echo, a group each answer
//	  is published to before it is sent; SB_GROUPS, comma-separated, to
//	  subscribe; SB_NAME to own; SB_TRANSPORT.
//	observer: subscribes to sys.connections, sys.groups and sys.names and
//	  prints each notice as a line (see noticeLine).
//	requester: sends a request without deadline to SB_TO (a group if
//	  SB_GROUP is set) and waits for its answer, printing "answer ERR"
//	  when it comes.
func runBusRole(role string) (int, bool) {
	socket := os.Getenv("SB_SOCKET")
	tr, _ := strconv.Atoi(os.Getenv("SB_TRANSPORT"))
	opts := []switchboard.DialOption{switchboard.WithSocket(socket), switchboard.WithTransport(switchboard.Transport(tr)),
		switchboard.WithClientName(role)}
	if d := os.Getenv("SB_SPIN"); d != "" {
		spin, _ := time.ParseDuration(d)
		opts = append(opts, switchboard.WithSpin(spin))
	}
	if os.Getenv("SB_DIRECT") != "" {
		opts = append(opts, switchboard.WithDirectPeers(true))
	}
	ctx := context.Background()
	switch role {
	case "peer":
		mode := os.Getenv("SB_MODE")
		var addrV atomic.Value // the handler may run before Dial returns
		addrV.Store("")
		var connV atomic.Pointer[switchboard.Conn]
		counted := make(chan struct{}) // SB_EVENT_HANDLER: the handler counted SB_EXPECT messages
		switch mode {
		case "count":
			if os.Getenv("SB_EVENT_HANDLER") != "" {
				opts = append(opts, countingHandler(&connV, counted))
			}
		case "echo":
			if os.Getenv("SB_INLINE") != "" {
				opts = append(opts, switchboard.WithInlineRequests())
			}
			notify := os.Getenv("SB_NOTIFY") // a group to publish each answer to first
			opts = append(opts, switchboard.WithRequestHandler(func(ctx context.Context, r *switchboard.PeerRequest) ([]byte, error) {
				answer := append([]byte(addrV.Load().(string)+":"), r.Payload...)
				if c := connV.Load(); notify != "" && c != nil {
					if err := c.Publish(ctx, notify, answer); err != nil {
						return nil, err
					}
				}
				return answer, nil
			}))
		case "hang":
			opts = append(opts, switchboard.WithRequestHandler(func(ctx context.Context, r *switchboard.PeerRequest) ([]byte, error) {
				fmt.Println("request")
				<-ctx.Done()
				return nil, ctx.Err()
			}))
		}
		if q := os.Getenv("SB_CLIENT_QUEUE"); q != "" {
			n, _ := strconv.Atoi(q)
			opts = append(opts, switchboard.WithEventQueue(n))
		}
		c, err := switchboard.Dial(ctx, opts...)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1, true
		}
		addr := c.Address()
		addrV.Store(addr)
		connV.Store(c)
		for _, g := range strings.Split(os.Getenv("SB_GROUPS"), ",") {
			if g != "" {
				if err := c.Subscribe(ctx, g); err != nil {
					fmt.Fprintln(os.Stderr, err)
					return 1, true
				}
			}
		}
		if name := os.Getenv("SB_NAME"); name != "" {
			if _, _, err := c.Own(ctx, name); err != nil {
				fmt.Fprintln(os.Stderr, err)
				return 1, true
			}
		}
		fmt.Println("ready", addr)
		if prof := os.Getenv("SB_PEER_CPUPROFILE"); prof != "" { // for looking into benchmarks
			if f, err := os.Create(prof + "." + strconv.Itoa(os.Getpid())); err == nil && pprof.StartCPUProfile(f) == nil {
				defer pprof.StopCPUProfile()
			}
		}
		if out := os.Getenv("SB_PEER_TRACE"); out != "" { // an execution trace, for counting its goroutines' wake-ups
			if f, err := os.Create(out + "." + strconv.Itoa(os.Getpid())); err == nil && trace.Start(f) == nil {
				defer trace.Stop()
			}
		}
		sctx, stop := signalContext()
		defer stop()
		switch mode {
		case "count":
			if os.Getenv("SB_EVENT_HANDLER") != "" {
				select {
				case <-counted:
				case <-sctx.Done():
				}
				break
			}
			countMessages(sctx, c)
		case "stall":
			for {
				if _, err := os.Stat(os.Getenv("SB_RESUME")); err == nil {
					break
				}
				time.Sleep(5 * time.Millisecond)
			}
			countMessages(sctx, c)
		default:
			<-sctx.Done()
		}
		c.Close()
		return 0, true
	case "requester":
		c, err := switchboard.Dial(ctx, opts...)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1, true
		}
		fmt.Println("ready", c.Address())
		sctx, stop := signalContext()
		defer stop()
		to := os.Getenv("SB_TO")
		answered := make(chan error, 1)
		go func() {
			var err error
			if os.Getenv("SB_GROUP") != "" {
				_, err = c.RequestGroup(sctx, to, []byte("x"))
			} else {
				_, err = c.Request(sctx, to, []byte("x"))
			}
			answered <- err
		}()
		select {
		case err := <-answered:
			fmt.Println("answer", err)
		case <-sctx.Done():
		}
		c.Close()
		return 0, true
	case "observer":
		c, err := switchboard.Dial(ctx, opts...)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1, true
		}
		for _, g := range []string{switchboard.GroupConnections, switchboard.GroupGroups, switchboard.GroupNames} {
			if err := c.Subscribe(ctx, g); err != nil {
				fmt.Fprintln(os.Stderr, err)
				return 1, true
			}
		}
		fmt.Println("ready", c.Address())
		sctx, stop := signalContext()
		defer stop()
		for {
			e, err := c.RecvEvent(sctx)
			if err != nil {
				return 0, true
			}
			if n, err := e.Notice(); err == nil {
				fmt.Println(noticeLine(n))
			}
		}
	}
	return 0, false
}

// noticeLine is a notice as the tests compare it.
func noticeLine(n switchboard.Notice) string {
	switch n.Kind {
	case switchboard.NoticeConnected:
		return "connected " + n.Member.Address + " " + n.Member.ClientName
	case switchboard.NoticeDisconnected:
		return "disconnected " + n.Member.Address + " " + n.Reason.String()
	case switchboard.NoticeSubscribed:
		return "subscribed " + n.Member.Address + " " + n.Group
	case switchboard.NoticeUnsubscribed:
		return "unsubscribed " + n.Member.Address + " " + n.Group + " " + n.Reason.String()
	case switchboard.NoticeNameOwnerChanged:
		return fmt.Sprintf("owner %s %q -> %q", n.Name, n.OldOwner, n.NewOwner)
	}
	return n.Kind.String()
}

// countMessages reads messages "SENDER SEQ" until SB_EXPECT of them, dropped
// ones included, have been accounted for (or the context ends), checking
// that each sender's sequence grows (by 1 + the drops reported before it,
// unless SB_SPARSE is set: then it only grows); then prints
// "got N dropped D disorder K".
func countMessages(ctx context.Context, c *switchboard.Conn) {
	expect, _ := strconv.Atoi(os.Getenv("SB_EXPECT"))
	sparse := os.Getenv("SB_SPARSE") != ""
	noCheck := os.Getenv("SB_NOCHECK") != "" // count only (the throughput benchmarks)
	// SB_ACK_TO: tell that address how many messages were accounted for,
	// every SB_ACK_EVERY of them and at the end (flow control for the
	// benchmarks' publisher).
	ackTo := os.Getenv("SB_ACK_TO")
	ackEvery, _ := strconv.Atoi(os.Getenv("SB_ACK_EVERY"))
	if ackEvery <= 0 {
		ackEvery = 1024
	}
	var got, dropped, disorder, acked int
	ack := func() {
		if ackTo != "" {
			acked = got + dropped
			c.SendTo(ctx, ackTo, []byte(strconv.Itoa(acked)))
		}
	}
	defer ack()
	last := map[string]int{}
	for expect == 0 || got+dropped < expect {
		e, err := c.RecvEventView(ctx) // in place: no copy, no allocation
		if err != nil {
			break
		}
		dropped += int(e.Dropped)
		if e.Kind != switchboard.EventGroup && e.Kind != switchboard.EventMessage {
			e.Release()
			continue
		}
		got++
		if noCheck {
			e.Release()
			if got+dropped-acked >= ackEvery {
				ack()
			}
			continue
		}
		sender, seq := e.From, seqOf(e.Payload)
		e.Release()
		if got+dropped-acked >= ackEvery {
			ack()
		}
		prev, seen := last[sender]
		switch {
		case !seen:
		case sparse || dropped > 0: // a gap's count is exact, its position may not be
			if seq <= prev {
				disorder++
			}
		case seq != prev+1:
			disorder++
		}
		last[sender] = seq
	}
	fmt.Printf("got %d dropped %d disorder %d\n", got, dropped, disorder)
}

// countingHandler is countMessages' way for a subscriber that takes its
// messages in an event handler (SB_EVENT_HANDLER), as the peer run's
// subscribers do: it counts them, acknowledges to SB_ACK_TO every
// SB_ACK_EVERY (1024) and at the end, and closes done once SB_EXPECT came.
func countingHandler(conn *atomic.Pointer[switchboard.Conn], done chan struct{}) switchboard.DialOption {
	expect, _ := strconv.Atoi(os.Getenv("SB_EXPECT"))
	ackTo := os.Getenv("SB_ACK_TO")
	ackEvery, _ := strconv.Atoi(os.Getenv("SB_ACK_EVERY"))
	if ackEvery <= 0 {
		ackEvery = 1024
	}
	var got, acked int // the handler's: one goroutine
	return switchboard.WithEventHandler(func(e switchboard.Event) {
		got += int(e.Dropped)
		if e.Kind == switchboard.EventGroup || e.Kind == switchboard.EventMessage {
			got++
		}
		c := conn.Load()
		if c != nil && ackTo != "" && (got-acked >= ackEvery || got >= expect && acked < got) {
			acked = got
			c.SendTo(context.Background(), ackTo, []byte(strconv.Itoa(acked)))
		}
		if expect > 0 && got >= expect && done != nil {
			close(done)
			done = nil
		}
	})
}

// denyPolicy parses "action=target;…": those actions on those targets are
// refused, everything else is allowed.
func denyPolicy(spec string) switchboard.Policy {
	type rule struct {
		a      switchboard.Action
		target string
	}
	var rules []rule
	for _, r := range strings.Split(spec, ";") {
		a, target, _ := strings.Cut(r, "=")
		act, err := switchboard.ParseAction(a)
		if err != nil {
			panic(err)
		}
		rules = append(rules, rule{act, target})
	}
	return switchboard.PolicyFunc(func(who switchboard.Cred, what switchboard.Action, target string) error {
		for _, r := range rules {
			if r.a == what && r.target == target {
				return fmt.Errorf("policy: uid %d may not %s %q", who.UID, what, target)
			}
		}
		return nil
	})
}

// seqOf reads the decimal number after the last space of "NAME SEQ".
func seqOf(b []byte) int {
	n := 0
	for i := len(b) - 1; i >= 0 && b[i] != ' '; i-- {
		if b[i] < '0' || b[i] > '9' {
			return -1
		}
	}
	for i := bytes.LastIndexByte(b, ' ') + 1; i < len(b); i++ {
		n = n*10 + int(b[i]-'0')
	}
	return n
}
