package switchboard

import (
	"context"
	"time"

	"github.com/switchboard-ipc/switchboard/shm"
)

// WithAdaptiveProcs lets the node set its process's GOMAXPROCS from Listen
// to Close (which leaves it as Listen found it): one P while its clients'
// rings are quiet (no spin would pay) and the process needs less than most
// of a core, all of them as soon as a client's ring is busy or the one P
// nearly is. A node that crosses links answers sooner and spends about a
// third less CPU per request at one P: each goroutine readied while a P is
// idle wakes a thread on another CPU, and a crossing readies several
// (remote's writer, gRPC's, the link's reader). Meant for a process that
// is a node (cmd/node's procs setting); a program that embeds a node beside
// work of its own should leave its Ps alone. One node per process governs;
// the others' option does nothing. See shm.GovernProcs.
func WithAdaptiveProcs() NodeOption {
	return nodeOption(func(o *nodeOptions) error { o.adaptiveProcs = true; return nil })
}

// ProcsState is what a node with WithAdaptiveProcs did with the process's
// Ps: whether it governs them now (false without the option, when another
// node of the process does, and after Close), whether the process runs at
// one P now, and, over the process's life, how often it moved to one P
// and back and how long it ran at one P.
type ProcsState struct {
	Governing, One bool
	Downs, Ups     uint64
	AtOne          time.Duration
}

// Procs returns what the node's governor of Ps did so far; the zero
// ProcsState if the node does not govern them (now).
func (n *Node) Procs() ProcsState {
	if !n.procsOn.Load() {
		return ProcsState{}
	}
	return ProcsState(shm.ReadProcsState()) // the same fields
}

// startProcs starts the governor of Ps when the node was asked to and is
// not closed (Listen, n.mu held). Close stops it.
func (n *Node) startProcs() {
	if !n.o.adaptiveProcs || n.closed || n.procsStop != nil {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	wait, ok := shm.GovernProcs(ctx)
	if !ok {
		cancel()
		return
	}
	n.procsStop = func() { cancel(); wait() }
	n.procsOn.Store(true)
}
