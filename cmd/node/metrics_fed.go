package main

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/switchboard-ipc/switchboard"
	"github.com/switchboard-ipc/switchboard/actors/cluster"
)

// The cluster's series, served when [cluster] is enabled: what crossed the
// node's links and what did not (a message a link refused, one another
// node sent that this one dropped), so that nothing the federation loses
// is lost silently, and per node up, its link's figures. The link labels
// are node names: as many as the cluster has nodes up.

type fedSource interface {
	FederationStats() switchboard.FederationStats
}

type linkSource interface {
	Stats() cluster.Stats
}

var (
	descFedNodes = desc("switchboard_federation_nodes", "Other nodes of the cluster up, linked with this one.")
	descFedMsgs  = desc("switchboard_federation_messages_total",
		"Messages between this node and the others: sent (handed to a link), send_failed (a link refused them: "+
			"the node not up, the budget spent), received, malformed, unknown (a newer node's kind), "+
			"refused (by this node's policy), late (answers nobody waited for), stale_decisions.", "what")
	descFedLink = desc("switchboard_federation_link_events_total",
		"The link layer's refusals and drops: not_up, overflow (budget spent), too_large, unknown, foreign, "+
			"stale (from a fenced or unknown session), protocol (links closed for breaking it, Hellos ignored), refused_out, "+
			"refused_in, panics, refused_calls, discovery_failed (a discovery run that failed, tried again), "+
			"bad_discovered (a discovered address that is not HOST:PORT, or not loopback without TLS), dial_full (one the dial table had no room for).", "what")
	descFedDiscovered = desc("switchboard_federation_discovered_nodes", "Addresses of other nodes the discovery (cluster.discovery) lists now.")
	descFedUnacked    = desc("switchboard_federation_link_unacked_bytes", "Bytes sent on the link to a node and not yet acknowledged.", "node")
	descFedSent       = desc("switchboard_federation_link_sent_total", "Messages sent on the link to a node, in its current run.", "node")
	descFedDelivered  = desc("switchboard_federation_link_delivered_total", "Messages delivered from a node, in its current run.", "node")
)

type fedCollector struct {
	node  fedSource
	links linkSource
}

// attachFederation registers the cluster's series.
func (m *metrics) attachFederation(node fedSource, links linkSource) {
	m.reg.MustRegister(&fedCollector{node: node, links: links})
}

func (c *fedCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descFedNodes, descFedMsgs, descFedLink, descFedDiscovered, descFedUnacked, descFedSent, descFedDelivered} {
		ch <- d
	}
}

func (c *fedCollector) Collect(ch chan<- prometheus.Metric) {
	fs := c.node.FederationStats()
	ch <- prometheus.MustNewConstMetric(descFedNodes, prometheus.GaugeValue, float64(fs.Nodes))
	for _, v := range []struct {
		what string
		n    uint64
	}{{"sent", fs.Sent}, {"send_failed", fs.SendFails}, {"received", fs.Received}, {"malformed", fs.Malformed},
		{"unknown", fs.Unknown}, {"refused", fs.Refused}, {"late", fs.Late}, {"stale_decisions", fs.StaleDecisions}} {
		ch <- prometheus.MustNewConstMetric(descFedMsgs, prometheus.CounterValue, float64(v.n), v.what)
	}
	ls := c.links.Stats()
	for _, v := range []struct {
		what string
		n    uint64
	}{{"not_up", ls.NotUp}, {"overflow", ls.Overflow}, {"too_large", ls.TooLarge}, {"unknown", ls.Unknown},
		{"foreign", ls.Foreign}, {"stale", ls.Stale}, {"protocol", ls.Protocol}, {"refused_out", ls.RefusedOut},
		{"refused_in", ls.RefusedIn}, {"panics", ls.Panics}, {"refused_calls", ls.RefusedCalls},
		{"discovery_failed", ls.DiscoveryFailures}, {"bad_discovered", ls.BadDiscovered}, {"dial_full", ls.DialFull}} {
		ch <- prometheus.MustNewConstMetric(descFedLink, prometheus.CounterValue, float64(v.n), v.what)
	}
	ch <- prometheus.MustNewConstMetric(descFedDiscovered, prometheus.GaugeValue, float64(ls.Discovered))
	seen := map[string]bool{}
	for _, l := range ls.Links {
		if !l.Up || seen[l.Node] { // one run of a node is up at a time; the others are gone
			continue
		}
		seen[l.Node] = true
		ch <- prometheus.MustNewConstMetric(descFedUnacked, prometheus.GaugeValue, float64(l.Unacked), l.Node)
		ch <- prometheus.MustNewConstMetric(descFedSent, prometheus.CounterValue, float64(l.Sent), l.Node)
		ch <- prometheus.MustNewConstMetric(descFedDelivered, prometheus.CounterValue, float64(l.Delivered), l.Node)
	}
}
