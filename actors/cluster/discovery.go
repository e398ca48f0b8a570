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
// are ignored (Stats.DialFull).
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
		if time.Since(began) > discoveryBackoff {
			backoff = minBackoff
		}
		f.stats.discoveryFails.Add(1)
		f.logf("cluster: discovery failed (trying again in %v): %v", backoff, err)
		select {
		case <-f.ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, discoveryBackoff)
	}
}

// found takes the addresses the Discovery knows now. Each is untrusted
// (a registry is written by whoever may write there): one that is not a
// dialable HOST:PORT is ignored, and one past maxDiscovered or with the
// dial table full too; each counted (and logged) when first listed. An
// address newly listed is tried at once, even in the backoff of an earlier
// failure (not one that refused this node: the node there, if another
// since, lifts the refusal by linking to this one); one no longer listed
// is kept while it is linked, and forgotten a while after its link ends,
// like an address learned from a Hello.
func (f *Federation) found(addrs []string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return
	}
	listed := make(map[string]bool, min(len(addrs), maxDiscovered))
	ignored := make(map[string]bool)
	for _, a := range addrs {
		switch {
		case f.local(a) || listed[a] || ignored[a]:
		case checkAddr(a) != nil:
			ignored[a] = true
			if !f.ignored[a] {
				f.stats.badDiscovered.Add(1)
				f.logf("cluster: the discovery lists %q, not an address to dial: ignored", clip(a))
			}
		case len(listed) >= maxDiscovered:
			ignored[a] = true
			if !f.ignored[a] {
				f.stats.dialFull.Add(1)
				f.logf("cluster: the discovery lists more than %d addresses: %s ignored", maxDiscovered, a)
			}
		default:
			listed[a] = true
		}
	}
	now := time.Now()
	for addr, d := range f.dial {
		if d.discovered && !listed[addr] {
			d.discovered = false
			if f.byAddr[addr] == nil {
				d.downSince = now // forgotten learnedKept from now
			}
		}
	}
	for addr := range listed {
		d := f.dialLocked(addr)
		switch {
		case d == nil:
			delete(listed, addr)
			ignored[addr] = true
			if !f.ignored[addr] {
				f.stats.dialFull.Add(1)
				f.logf("cluster: the table of addresses to dial is full: %s, discovered, ignored", addr)
			}
		case d.discovered:
		default:
			d.discovered = true
			d.next, d.backoff = now, 0
		}
	}
	f.ignored = ignored
	f.discovered = len(listed)
}

// clip returns s, cut to 64 bytes for a log line.
func clip(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}
