package cluster

import (
	"context"
	"time"
)

// Member is how a node announces itself to a Discovery.
type Member struct {
	// Cluster is the cluster's name (Config.Cluster).
	Cluster string
	// Node is the node's name, Incarnation its run (Federation.Start's).
	Node, Incarnation string
	// Address is the HOST:PORT the other nodes dial (Config.Advertise).
	Address string
}

// Discovery finds the other nodes of a cluster whose members are not all
// known in advance: a registry (package actors/cluster/etcd), DNS, an
// orchestrator's API. It only says where the nodes are: each address it
// finds is dialled like one of Config.Peers, and the link decides what
// is up (a Hello with the cluster's secret or certificate, its own
// heartbeat), so a registry that lies or lags can make a node dial in
// vain but never link it to a node that is not one of the cluster's.
type Discovery interface {
	// Run announces self and calls found with the advertised addresses
	// of the cluster's nodes each time the set it knows changes (the
	// whole set each time; self's own address among them is ignored),
	// until ctx is done; then it withdraws self's announcement if it
	// can and returns. An error it returns before ctx is done is logged
	// and Run is called again after a backoff. found must not be called
	// after Run returns; it does not block for long.
	Run(ctx context.Context, self Member, found func(addrs []string)) error
}

// discoveryBackoff bounds the wait before Run is called again after it
// failed: doubling from minBackoff up to this, and back to minBackoff
// after a Run that lasted longer than it (a new episode of failures).
const discoveryBackoff = 30 * time.Second

// maxDiscovered bounds the addresses a Discovery may have the node dial
// (well below maxDial, which learned addresses share): past it, the rest
// are ignored (Stats.DialFull). Those it brought and no longer lists are
// forgotten at once unless linked, so they never hold more than this and
// the links up.
const maxDiscovered = 1024

// discover runs cfg.Discovery until Close, on a goroutine of f.wg.
func (f *Federation) discover() {
	defer f.wg.Done()
	self := Member{Cluster: f.cfg.Cluster, Node: f.self, Incarnation: f.incarnation, Address: f.cfg.Advertise}
	backoff := minBackoff
	for {
		began := time.Now()
		err := f.cfg.Discovery.Run(f.ctx, self, f.found)
		if f.ctx.Err() != nil {
			return
		}
		var wait time.Duration
		wait, backoff = discoveryRetry(backoff, time.Since(began))
		f.stats.discoveryFails.Add(1)
		f.logf("cluster: discovery failed (trying again in %v): %v", wait, err)
		select {
		case <-f.ctx.Done():
			return
		case <-time.After(wait):
		}
	}
}

// discoveryRetry returns how long to wait before calling Run again after
// a Run that failed having lasted ran, with backoff the wait it was due
// (minBackoff at first), and the backoff due after that one: doubling up
// to discoveryBackoff, back to minBackoff after a Run that lasted longer
// than discoveryBackoff (a new episode of failures, not the same one).
func discoveryRetry(backoff, ran time.Duration) (wait, next time.Duration) {
	if ran > discoveryBackoff {
		backoff = minBackoff
	}
	return backoff, min(2*backoff, discoveryBackoff)
}

// discovered is what the Federation keeps of its Discovery's list, under
// f.mu.
type discovered struct {
	listed  int             // the addresses it lists now, dialled
	ignored map[string]bool // those it lists that are ignored (each counted once)
	last    []string        // its last list
	short   bool            // some of it did not fit in the dial table (beat tries again)
}

// found takes the addresses the Discovery knows now. Each is untrusted
// (a registry is written by whoever may write there): one that is not a
// dialable HOST:PORT (without TLS, a loopback one) is ignored, and one past maxDiscovered or with the
// dial table full too (tried again each heartbeat until it fits); each
// counted once while listed, and logged in a line at most every 10 s. An
// address newly listed is tried at once, even in the backoff of an earlier
// failure (not one that refused this node: the node there, if another
// since, lifts the refusal by linking to this one). One no longer listed
// is kept while it is linked; if the discovery brought it, it is forgotten
// at once when not linked (so the addresses a discovery has in the table
// are at most maxDiscovered, and those linked), else a while after its
// link ends, like an address learned from a Hello.
func (f *Federation) found(addrs []string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.closed {
		f.foundLocked(addrs, time.Now())
	}
}

// foundLocked is found under f.mu; beat calls it again with the last list
// while some of it did not fit in the dial table.
func (f *Federation) foundLocked(addrs []string, now time.Time) {
	f.disc.last, f.disc.short = addrs, false
	listed := make(map[string]bool, min(len(addrs), maxDiscovered))
	ignored := make(map[string]bool)
	var bad, excess, full int
	var example string
	ignore := func(a string, n *int) {
		ignored[a] = true
		if !f.disc.ignored[a] {
			*n++
			example = a
		}
	}
	for _, a := range addrs {
		switch {
		case f.local(a) || listed[a] || ignored[a]:
		case checkAddr(a) != nil || !f.dialable(a):
			ignore(a, &bad)
		case len(listed) >= maxDiscovered:
			ignore(a, &excess)
		default:
			listed[a] = true
		}
	}
	for addr, d := range f.dial {
		switch {
		case !d.discovered || listed[addr]:
		case f.byAddr[addr] != nil:
			d.discovered = false // linked: kept while it is
		case d.viaDiscovery:
			delete(f.dial, addr)
		default:
			d.discovered = false
			d.downSince = now // forgotten learnedKept from now
		}
	}
	for addr := range listed {
		d := f.dial[addr]
		if d == nil {
			if d = f.dialLocked(addr); d == nil {
				delete(listed, addr)
				ignore(addr, &full)
				f.disc.short = true
				continue
			}
			d.viaDiscovery = true
		}
		if !d.discovered {
			d.discovered = true
			d.next, d.backoff = now, 0
		}
	}
	f.disc.ignored, f.disc.listed = ignored, len(listed)
	f.stats.badDiscovered.Add(uint64(bad))
	f.stats.dialFull.Add(uint64(excess + full))
	if n := bad + excess + full; n > 0 {
		if ok, since := f.logs.discovery.allow(now, uint64(n)); ok {
			f.logf("cluster: the discovery lists addresses that are ignored: %d not HOST:PORT (or not loopback, without TLS), %d past %d, %d with the table of addresses to dial full (%d since the last such line; %q among them)",
				bad, excess, maxDiscovered, full, since, clip(example))
		}
	}
}

// discoveryRetries is what the Discovery counts of its own failures,
// retried within a run (0 if it counts none).
func (f *Federation) discoveryRetries() uint64 {
	if c, ok := f.cfg.Discovery.(interface{ Failures() uint64 }); ok {
		return c.Failures()
	}
	return 0
}

// clip returns s, cut to 64 bytes for a log line.
func clip(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}
