// Command benchrun runs the peer benchmarks: every workload on every peer,
// each cell repeated, each process a child it starts and kills. It writes
// results.md, results.json and SVG charts. tests/bench/run.sh builds the
// programs and calls it; see that script for the flags.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// result is a client's result line (benchpeer's result, and the C
// client's).
type result struct {
	Ops   int64         `json:"ops"`
	Secs  float64       `json:"secs"`
	Bytes int64         `json:"bytes,omitempty"`
	Lost  int64         `json:"lost,omitempty"`
	Hist  map[int]int64 `json:"hist,omitempty"`
	Err   string        `json:"err,omitempty"`
	Note  string        `json:"note,omitempty"`
}

type config struct {
	bin     string        // where benchpeer, qbserver and qbclient are
	out     string        // results folder
	dur     time.Duration // measuring time per repetition
	reps    int           // repetitions per cell
	conns   int           // idle connections for the memory workload
	many    int           // idle connections for the large memory workload
	cpus    string        // taskset CPU list for every child, or ""
	smoke   bool
	peers   map[string]bool // only these peers (all if empty)
	works   map[string]bool // only these workloads (all if empty)
	repo    string          // the repository root (versions)
	unavail map[string]string
}

func main() {
	var c config
	var peers, works, unavail string
	flag.StringVar(&c.bin, "bin", "", "directory holding benchpeer, qbserver and qbclient")
	flag.StringVar(&c.out, "out", "results", "results folder")
	flag.DurationVar(&c.dur, "dur", 2*time.Second, "measuring time per repetition")
	flag.IntVar(&c.reps, "reps", 3, "repetitions per cell")
	flag.IntVar(&c.conns, "conns", 1000, "idle connections for the memory workload")
	flag.IntVar(&c.many, "many", 10000, "idle connections for the large memory workload (idle-10k)")
	flag.StringVar(&c.cpus, "cpus", "", "pin every process to these CPUs (taskset list, e.g. 0 or 0,1)")
	flag.BoolVar(&c.smoke, "smoke", false, "tiny durations, one repetition, 100 idle connections: checks the harness, measures nothing")
	flag.StringVar(&peers, "peers", "", "comma-separated peers to run (default all)")
	flag.StringVar(&works, "workloads", "", "comma-separated workloads to run (default all)")
	flag.StringVar(&unavail, "unavailable", "", "PEER=REASON;… peers the installer could not provide")
	flag.StringVar(&c.repo, "repo", ".", "repository root")
	flag.Parse()
	if c.bin == "" {
		fmt.Fprintln(os.Stderr, "benchrun: -bin is required (run tests/bench/run.sh)")
		os.Exit(2)
	}
	if c.smoke {
		c.dur, c.reps, c.conns = 200*time.Millisecond, 1, 100
	}
	if c.many != 10000 {
		workloadByKey("idle-10k").title = fmt.Sprintf("broker memory, %d idle connections", c.many)
	}
	c.peers, c.works = set(peers), set(works)
	c.unavail = map[string]string{}
	for _, kv := range strings.Split(unavail, ";") {
		if k, v, ok := strings.Cut(kv, "="); ok {
			c.unavail[k] = v
		}
	}
	// Every child inherits the limit: the 10,000-connection row needs
	// tens of thousands of descriptors in the broker and the client.
	if err := raiseNoFile(); err != nil {
		fmt.Fprintln(os.Stderr, "benchrun: RLIMIT_NOFILE:", err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	ps := &procs{live: map[*proc]bool{}, cpus: c.cpus}
	err := run(ctx, &c, ps)
	ps.killAll()
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "benchrun:", err)
		os.Exit(1)
	}
}

func set(s string) map[string]bool {
	m := map[string]bool{}
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			m[f] = true
		}
	}
	return m
}

func run(ctx context.Context, c *config, ps *procs) error {
	if err := os.MkdirAll(c.out, 0o755); err != nil {
		return err
	}
	rep := &report{
		Machine:  machine(),
		Versions: versions(c),
		Config: runConfig{Duration: c.dur.String(), Reps: c.reps, IdleConns: c.conns, CPUs: c.cpus,
			Smoke: c.smoke, Command: strings.Join(os.Args, " "), Started: time.Now().UTC().Format(time.RFC3339)},
	}
	for _, p := range allPeers {
		if len(c.peers) > 0 && !c.peers[p.name] {
			continue
		}
		rep.Peers = append(rep.Peers, peerInfo{Name: p.name, Label: p.label})
	}
	for _, w := range allWorkloads {
		if len(c.works) > 0 && !c.works[w.key] {
			continue
		}
		for _, p := range allPeers {
			if len(c.peers) > 0 && !c.peers[p.name] {
				continue
			}
			if ctx.Err() != nil {
				return ctx.Err()
			}
			cell := runCell(ctx, c, ps, p, w)
			rep.Cells = append(rep.Cells, cell)
			fmt.Fprintf(os.Stderr, "%-12s %-18s %s\n", w.key, p.name, cell.summary())
		}
	}
	rep.Config.Finished = time.Now().UTC().Format(time.RFC3339)
	if err := rep.write(c.out); err != nil {
		return err
	}
	// A cell that failed is the harness rotting (or a peer broken): say
	// so in the exit status, after the results are written. Unavailable
	// peers and n/a cells are not failures.
	var failed []string
	for _, cl := range rep.Cells {
		if strings.HasPrefix(cl.Status, "error") {
			failed = append(failed, cl.Workload+"/"+cl.Peer)
		}
	}
	if len(failed) > 0 {
		return fmt.Errorf("%d cell(s) failed: %s", len(failed), strings.Join(failed, ", "))
	}
	return nil
}

// runCell runs one workload on one peer, c.reps times.
func runCell(ctx context.Context, c *config, ps *procs, p *peer, w *workload) *cell {
	cl := &cell{Workload: w.key, Peer: p.name}
	if why := c.unavail[p.name]; why != "" {
		cl.Status = "unavailable: " + why
		return cl
	}
	if why := p.na(w); why != "" {
		cl.Status = why
		return cl
	}
	if w.kind == kindIdleMany {
		n := w.idleConns(c)
		if need, lim := uint64(n*fdsPer(p.brokerFds)+256), noFileLimit(); need > lim {
			cl.Status = fmt.Sprintf("n/a: %d connections need %d descriptors in the broker (%d each), over RLIMIT_NOFILE's %d here (raise the hard limit: ulimit -Hn, LimitNOFILE=)",
				n, need, fdsPer(p.brokerFds), lim)
			return cl
		}
	}
	for i := range c.reps {
		if ctx.Err() != nil {
			break
		}
		dir, err := os.MkdirTemp("", "sbbench")
		if err != nil {
			cl.Status = "error: " + err.Error()
			return cl
		}
		s, err := runRep(ctx, c, ps, p, w, dir, i)
		os.RemoveAll(dir)
		if err != nil {
			var ce *childError
			if errors.As(err, &ce) && ce.err == "pending" {
				cl.Status = "n/a (pending)"
				return cl
			}
			cl.Status = "error: " + err.Error()
			return cl
		}
		cl.Samples = append(cl.Samples, s)
	}
	cl.summarize()
	return cl
}

// infra is what a repetition starts before its clients: a broker, a
// server (or a responder attached to the broker), or both.
type infra struct {
	procs  []*proc
	addr   string // what clients connect to
	broker string // the broker's address, when there is one
	mem    *proc  // whose memory the idle workload measures
}

func (in *infra) stop() {
	for i := len(in.procs) - 1; i >= 0; i-- {
		in.procs[i].stop(2 * time.Second)
	}
}

func runRep(ctx context.Context, c *config, ps *procs, p *peer, w *workload, dir string, rep int) (*sample, error) {
	in := &infra{}
	defer in.stop()
	if cross(w.kind) {
		return runCross(c, ps, p, w, dir, in)
	}
	if p.broker != nil {
		b, addr, err := p.broker(c, ps, dir)
		if err != nil {
			return nil, fmt.Errorf("broker: %w", err)
		}
		in.procs = append(in.procs, b)
		in.addr, in.broker, in.mem = addr, addr, b
	}
	if p.broker == nil || (w.kind != kindFanout && w.kind != kindP2P) {
		s, err := ps.start(p.name+" server", p.serverArgs(c, dir, in.addr))
		if err != nil {
			return nil, err
		}
		in.procs = append(in.procs, s)
		addr, err := s.ready("ready ", 20*time.Second)
		if err != nil {
			return nil, err
		}
		in.addr = addr
		if in.broker == "" { // a node is its own broker (Switchboard)
			in.broker = addr
		}
		if in.mem == nil {
			in.mem = s
		}
	}
	timeout := c.dur + 30*time.Second
	clientArgs := func(role string, extra ...string) []string {
		return p.clientArgs(c, role, w, dir, extra...)
	}
	switch w.kind {
	case kindRPC, kindEvents, kindConnect:
		role := map[string]string{kindRPC: "rpc", kindEvents: "events", kindConnect: "connect"}[w.kind]
		// Concurrent clients connect and warm up, say ready, and start
		// measuring together on a line from benchrun.
		var env []string
		if w.clients > 1 {
			env = []string{"BENCH_SYNC=1"}
		}
		var clients []*proc
		for i := range w.clients {
			cp, err := ps.start(fmt.Sprintf("%s client %d", p.name, i), clientArgs(role, "-addr", in.addr, "-id", strconv.Itoa(i)), env...)
			if err != nil {
				return nil, err
			}
			defer cp.stop(time.Second)
			clients = append(clients, cp)
		}
		if env != nil {
			for _, cp := range clients {
				if _, err := cp.ready("ready", 20*time.Second); err != nil {
					return nil, err
				}
			}
			for _, cp := range clients {
				if _, err := io.WriteString(cp.stdin, "go\n"); err != nil {
					return nil, cp.fail("go: " + err.Error())
				}
			}
		}
		var rs []*result
		for _, cp := range clients {
			r, err := cp.result(timeout)
			if err != nil {
				return nil, err
			}
			rs = append(rs, r)
		}
		return w.measure(rs), nil

	case kindFanout:
		var subs []*proc
		for i := range w.clients {
			sp, err := ps.start(fmt.Sprintf("%s subscriber %d", p.name, i), clientArgs("fansub", "-addr", in.broker, "-id", strconv.Itoa(i)))
			if err != nil {
				return nil, err
			}
			defer sp.stop(time.Second)
			subs = append(subs, sp)
			if _, err := sp.ready("ready", 20*time.Second); err != nil {
				return nil, err
			}
		}
		pub, err := ps.start(p.name+" publisher", clientArgs("fanpub", "-addr", in.broker, "-n", strconv.Itoa(w.clients)))
		if err != nil {
			return nil, err
		}
		defer pub.stop(time.Second)
		pr, err := pub.result(timeout)
		if err != nil {
			return nil, err
		}
		rs := []*result{pr}
		for _, sp := range subs {
			sp.stdin.Close() // done: report
			r, err := sp.result(10 * time.Second)
			if err != nil {
				return nil, err
			}
			rs = append(rs, r)
		}
		return w.measure(rs), nil

	case kindP2P:
		resp, err := ps.start(p.name+" responder", clientArgs("p2presp", "-addr", in.broker))
		if err != nil {
			return nil, err
		}
		in.procs = append(in.procs, resp)
		target, err := resp.ready("ready ", 20*time.Second)
		if err != nil {
			return nil, err
		}
		req, err := ps.start(p.name+" requester", clientArgs("p2p", "-addr", in.broker, "-target", target))
		if err != nil {
			return nil, err
		}
		defer req.stop(time.Second)
		r, err := req.result(timeout)
		if err != nil {
			return nil, err
		}
		return w.measure([]*result{r}), nil

	case kindIdle, kindIdleMany:
		n := w.idleConns(c)
		settle := 300 * time.Millisecond
		time.Sleep(settle)
		before, err := rssKiB(in.mem.pid())
		if err != nil {
			return nil, err
		}
		fds0, err := fdCount(in.mem.pid())
		if err != nil {
			return nil, err
		}
		// As many client processes as the descriptor limit needs.
		per := max(1, (int(noFileLimit())-256)/fdsPer(p.clientFds))
		for i, left := 0, n; left > 0; i++ {
			k := min(left, per)
			left -= k
			ip, err := ps.start(fmt.Sprintf("%s idle client %d", p.name, i), clientArgs("idle", "-addr", in.addr, "-n", strconv.Itoa(k)))
			if err != nil {
				return nil, err
			}
			defer ip.stop(5 * time.Second)
			if _, err := ip.ready("ready", 120*time.Second+time.Duration(k)*5*time.Millisecond); err != nil {
				return nil, err
			}
		}
		time.Sleep(settle)
		after, err := rssKiB(in.mem.pid())
		if err != nil {
			return nil, err
		}
		fds, err := fdCount(in.mem.pid())
		if err != nil {
			return nil, err
		}
		return &sample{Values: map[string]float64{"kib_per_conn": float64(after-before) / float64(n), "fds": float64(fds)},
			Notes: []string{fmt.Sprintf("%d connections: VmRSS %d → %d KiB, descriptors %d → %d (%.2f per connection) (pid %d, %s)",
				n, before, after, fds0, fds, float64(fds-fds0)/float64(n), in.mem.pid(), in.mem.name)}}, nil
	}
	return nil, fmt.Errorf("unknown workload kind %q", w.kind)
}

// runCross runs a cross-node workload: two linked nodes (in.procs), a
// responder or subscriber on node B, a requester or publisher on node A.
func runCross(c *config, ps *procs, p *peer, w *workload, dir string, in *infra) (*sample, error) {
	nodes, addrA, addrB, err := p.cluster(c, ps, dir)
	in.procs = append(in.procs, nodes...)
	if err != nil {
		return nil, err
	}
	timeout := c.dur + 30*time.Second
	clientArgs := func(role string, extra ...string) []string {
		return p.clientArgs(c, role, w, dir, extra...)
	}
	switch w.kind {
	case kindXRPC:
		resp, err := ps.start(p.name+" responder on B", clientArgs("xresp", "-addr", addrB))
		if err != nil {
			return nil, err
		}
		in.procs = append(in.procs, resp)
		target, err := resp.ready("ready ", 20*time.Second)
		if err != nil {
			return nil, err
		}
		req, err := ps.start(p.name+" requester on A", clientArgs("xrpc", "-addr", addrA, "-target", target))
		if err != nil {
			return nil, err
		}
		defer req.stop(time.Second)
		r, err := req.result(timeout)
		if err != nil {
			return nil, err
		}
		return w.measure([]*result{r}), nil
	case kindXEvents:
		sub, err := ps.start(p.name+" subscriber on B", clientArgs("xsub", "-addr", addrB))
		if err != nil {
			return nil, err
		}
		defer sub.stop(time.Second)
		if _, err := sub.ready("ready", 20*time.Second); err != nil {
			return nil, err
		}
		pub, err := ps.start(p.name+" publisher on A", clientArgs("xpub", "-addr", addrA, "-n", "1"))
		if err != nil {
			return nil, err
		}
		defer pub.stop(time.Second)
		pr, err := pub.result(timeout)
		if err != nil {
			return nil, err
		}
		sub.stdin.Close() // done: report
		sr, err := sub.result(10 * time.Second)
		if err != nil {
			return nil, err
		}
		return w.measure([]*result{pr, sr}), nil
	}
	return nil, fmt.Errorf("unknown cross-node workload kind %q", w.kind)
}

// binPath is a built program.
func (c *config) binPath(name string) string { return filepath.Join(c.bin, name) }
