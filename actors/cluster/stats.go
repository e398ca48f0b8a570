package cluster

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/switchboard-ipc/switchboard"
)

// Stats are a Federation's figures.
type Stats struct {
	// Send refusals: no such node up; the budget spent; too large.
	NotUp    uint64 `json:"not_up"`
	Overflow uint64 `json:"overflow"`
	TooLarge uint64 `json:"too_large"`
	// Envelopes ignored: an unknown kind (a newer node's), another
	// protobuf type, or from a session not linked (fenced or never up).
	Unknown uint64 `json:"unknown"`
	Foreign uint64 `json:"foreign"`
	Stale   uint64 `json:"stale"`
	// Links closed for breaking the protocol, and Hellos ignored (no
	// trustworthy address, or, without TLS, one not on loopback); nodes
	// this one refused; refusals this one received.
	Protocol   uint64 `json:"protocol"`
	RefusedOut uint64 `json:"refused_out"`
	RefusedIn  uint64 `json:"refused_in"`
	// remote's stream reader panicked on what a node sent (the stream
	// was closed instead); unary gRPC calls refused.
	Panics       uint64 `json:"panics"`
	RefusedCalls uint64 `json:"refused_calls"`
	// Resets: sessions the host reset (Reset) after the link refused a
	// message it could not do without.
	Resets uint64 `json:"resets"`
	// BadSecret: Hellos refused for not carrying the cluster's secret
	// (counted in RefusedOut too).
	BadSecret uint64 `json:"bad_secret"`
	// Dials: addresses not linked that took a TCP probe and were sent a
	// Hello; DialFailures: probes that failed (the address is tried
	// again after a backoff, 250 ms doubling to 10 s).
	Dials        uint64 `json:"dials"`
	DialFailures uint64 `json:"dial_failures"`
	// Batches: Batch envelopes sent (each carries the chunks queued
	// while remote's writer was busy); Acks: acknowledgements sent as
	// envelopes of their own (the others ride on Batches and heartbeats).
	Batches uint64 `json:"batches"`
	Acks    uint64 `json:"acks"`
	// Packed: Batches that carried small messages packed (of Batches).
	Packed uint64 `json:"packed"`
	// Unsent: chunks Send accepted that were still pending when their
	// link went down (their node hears NodeDown: nothing of that session
	// is delivered after it anyway).
	Unsent uint64 `json:"unsent"`
	// HostPanics: deliveries the host panicked on (its bug, on another
	// node's message): the link was declared down.
	HostPanics uint64 `json:"host_panics"`
	// Discovered: the addresses Config.Discovery lists now (this node's
	// own not counted); DiscoveryFailures: its runs that failed (each
	// logged, then tried again), and the failures it retried within a
	// run (if it counts them: a Discovery with a Failures() uint64
	// method); BadDiscovered: addresses it listed that were not a
	// dialable HOST:PORT (ignored); DialFull: addresses it listed past
	// maxDiscovered or that found the table of addresses to dial full
	// (ignored).
	Discovered        int    `json:"discovered"`
	DiscoveryFailures uint64 `json:"discovery_failures"`
	BadDiscovered     uint64 `json:"bad_discovered"`
	DialFull          uint64 `json:"dial_full"`
	// Links, by node name.
	Links []LinkStats `json:"links"`
	// Refused lists the addresses that refused this node, with why.
	Refused []string `json:"refused,omitempty"`
}

// LinkStats describe one link.
type LinkStats struct {
	Node        string `json:"node"`
	Incarnation string `json:"incarnation"`
	Address     string `json:"address"`
	Up          bool   `json:"up"`
	Unacked     int64  `json:"unacked_bytes"`
	Sent        uint64 `json:"sent"`
	Delivered   uint64 `json:"delivered"`
}

// Stats returns the Federation's figures now.
func (f *Federation) Stats() Stats {
	s := Stats{
		NotUp:        f.stats.notUp.Load(),
		Overflow:     f.stats.overflow.Load(),
		TooLarge:     f.stats.tooLarge.Load(),
		Unknown:      f.stats.unknown.Load(),
		Foreign:      f.stats.foreign.Load(),
		Stale:        f.stats.stale.Load(),
		Protocol:     f.stats.protocol.Load(),
		RefusedOut:   f.stats.refusedOut.Load(),
		RefusedIn:    f.stats.refusedIn.Load(),
		Panics:       f.stats.panics.Load(),
		RefusedCalls: f.stats.refusedCalls.Load(),
		Resets:       f.stats.resets.Load(),
		BadSecret:    f.stats.badSecret.Load(),
		Dials:        f.stats.dials.Load(),
		DialFailures: f.stats.dialFails.Load(),
		Batches:      f.stats.batches.Load(),
		Acks:         f.stats.acks.Load(),
		Packed:       f.stats.packed.Load(),
		Unsent:       f.stats.unsent.Load(),
		HostPanics:   f.stats.hostPanics.Load(),

		DiscoveryFailures: f.stats.discoveryFails.Load() + f.discoveryRetries(),
		BadDiscovered:     f.stats.badDiscovered.Load(),
		DialFull:          f.stats.dialFull.Load(),
	}
	for _, l := range f.Links() {
		if l.State == switchboard.LinkUp || l.State == switchboard.LinkLinking {
			s.Links = append(s.Links, LinkStats{Node: l.Node, Incarnation: l.Incarnation, Address: l.Address,
				Up: l.State == switchboard.LinkUp, Unacked: l.Unacked, Sent: l.Sent, Delivered: l.Delivered})
		}
	}
	f.mu.RLock()
	s.Discovered = f.disc.listed
	for addr, d := range f.dial {
		if d.refused != "" {
			s.Refused = append(s.Refused, addr+": "+d.refused)
		}
	}
	f.mu.RUnlock()
	slices.SortFunc(s.Links, func(a, b LinkStats) int { return strings.Compare(a.Node, b.Node) })
	slices.Sort(s.Refused)
	return s
}

// ClusterName returns the cluster's name (Config.Cluster). It implements
// switchboard.FederationReporter.
func (f *Federation) ClusterName() string { return f.cfg.Cluster }

// DiscoveryName describes Config.Discovery: its String if it has one,
// else its type; "" for none. It implements switchboard.DiscoveryReporter.
func (f *Federation) DiscoveryName() string {
	switch d := f.cfg.Discovery.(type) {
	case nil:
		return ""
	case fmt.Stringer:
		return d.String()
	default:
		return fmt.Sprintf("%T", d)
	}
}

// Links describes the links: every node linked or linking (its figures
// since the link came up), then every address to dial that is not
// linked: configured (Config.Peers, or listed by Config.Discovery) or learned, down (with the reason its
// last link ended and the name of the node last linked there) or refused
// (with the refusal). Unordered. It implements
// switchboard.FederationReporter.
func (f *Federation) Links() []switchboard.LinkInfo {
	var out []switchboard.LinkInfo
	f.mu.RLock()
	peers := make([]*peer, 0, len(f.bySession))
	for _, p := range f.bySession {
		state := switchboard.LinkLinking
		if p.up {
			state = switchboard.LinkUp
		}
		d := f.dial[p.addr]
		peers = append(peers, p)
		out = append(out, switchboard.LinkInfo{Node: p.name, Incarnation: p.incarnation, Address: p.addr, State: state,
			Configured: d != nil && d.configured(), Discovered: d != nil && d.discovered, Budget: f.cfg.Budget, LastHeard: time.Unix(0, p.lastHeard.Load())})
	}
	for addr, d := range f.dial {
		if f.byAddr[addr] != nil {
			continue
		}
		l := switchboard.LinkInfo{Node: d.node, Incarnation: d.incarnation, Address: addr, State: switchboard.LinkDown,
			Reason: d.downReason, Configured: d.configured(), Discovered: d.discovered, Budget: f.cfg.Budget}
		if d.lastHeard != 0 {
			l.LastHeard = time.Unix(0, d.lastHeard)
		}
		if d.refused != "" {
			l.State, l.Reason = switchboard.LinkRefused, d.refused
		}
		out = append(out, l)
	}
	f.mu.RUnlock()
	for i, p := range peers { // the peers come first in out
		out[i].Unacked, out[i].Sent = p.figures()
		out[i].Delivered = p.delivered.Load()
	}
	return out
}

var (
	_ switchboard.FederationReporter = (*Federation)(nil)
	_ switchboard.DiscoveryReporter  = (*Federation)(nil)
)
