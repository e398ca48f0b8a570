package switchboard

import (
	"errors"
	"sync"
	"testing"
)

// fakeCluster joins Nodes in one process: a Federation per node, a
// directed link per pair of started nodes, each a queue and a goroutine
// that delivers in order (NodeUp first). down cuts a node off: its links
// stop (what they held is lost, as a cut link loses it), then every other
// node hears NodeDown, and so does the node cut off.
type fakeCluster struct {
	mu    sync.Mutex
	nodes map[string]*fakeFed
	links map[[2]string]*fakeLink
}

func newFakeCluster() *fakeCluster {
	return &fakeCluster{nodes: map[string]*fakeFed{}, links: map[[2]string]*fakeLink{}}
}

type fakeFed struct {
	cl        *fakeCluster
	self, inc string
	host      FederationHost
	closeOnce sync.Once
}

type fakeLink struct {
	from, to *fakeFed
	mu       sync.Mutex
	cond     *sync.Cond
	q        [][]byte
	stopped  bool
	done     chan struct{}
}

var errNotUp = errors.New("fake federation: node not up")

func (cl *fakeCluster) fed() *fakeFed { return &fakeFed{cl: cl} }

func (f *fakeFed) Start(self, inc string, host FederationHost) error {
	cl := f.cl
	cl.mu.Lock()
	defer cl.mu.Unlock()
	if cl.nodes[self] != nil {
		return errors.New("fake federation: node name taken")
	}
	f.self, f.inc, f.host = self, inc, host
	for name, o := range cl.nodes {
		cl.links[[2]string{self, name}] = startLink(f, o)
		cl.links[[2]string{name, self}] = startLink(o, f)
	}
	cl.nodes[self] = f
	return nil
}

func startLink(from, to *fakeFed) *fakeLink {
	l := &fakeLink{from: from, to: to, done: make(chan struct{})}
	l.cond = sync.NewCond(&l.mu)
	go l.run()
	return l
}

func (l *fakeLink) run() {
	defer close(l.done)
	l.to.host.NodeUp(l.from.self, l.from.inc)
	for {
		l.mu.Lock()
		for len(l.q) == 0 && !l.stopped {
			l.cond.Wait()
		}
		if l.stopped {
			l.mu.Unlock()
			return
		}
		q := l.q
		l.q = nil
		l.mu.Unlock()
		if bh, ok := l.to.host.(FederationBatchHost); ok {
			// As the link does: what came in one pass, at once.
			l.mu.Lock()
			stopped := l.stopped
			l.mu.Unlock()
			if stopped {
				return
			}
			bh.DeliverBatch(l.from.self, q)
			continue
		}
		for _, m := range q {
			l.mu.Lock()
			stopped := l.stopped
			l.mu.Unlock()
			if stopped {
				return
			}
			l.to.host.Deliver(l.from.self, m)
		}
	}
}

func (l *fakeLink) stop() {
	l.mu.Lock()
	l.stopped = true
	l.cond.Broadcast()
	l.mu.Unlock()
	<-l.done
}

func (f *fakeFed) Send(node string, msg []byte) error {
	f.cl.mu.Lock()
	l := f.cl.links[[2]string{f.self, node}]
	f.cl.mu.Unlock()
	if l == nil {
		return errNotUp
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.stopped {
		return errNotUp
	}
	l.q = append(l.q, msg)
	l.cond.Signal()
	return nil
}

func (f *fakeFed) Close() error {
	f.closeOnce.Do(func() { f.cl.down(f.self, "closed") })
	return nil
}

// down cuts node off the others.
func (cl *fakeCluster) down(node, reason string) {
	cl.mu.Lock()
	f := cl.nodes[node]
	if f == nil {
		cl.mu.Unlock()
		return
	}
	delete(cl.nodes, node)
	var cut []*fakeLink
	for k, l := range cl.links {
		if k[0] == node || k[1] == node {
			cut = append(cut, l)
			delete(cl.links, k)
		}
	}
	others := make([]*fakeFed, 0, len(cl.nodes))
	for _, o := range cl.nodes {
		others = append(others, o)
	}
	cl.mu.Unlock()
	for _, l := range cut {
		l.stop()
	}
	for _, o := range others {
		o.host.NodeDown(node, f.inc, reason)
		f.host.NodeDown(o.self, o.inc, reason)
	}
}

// startFedNode runs a node named name in cl.
func startFedNode(t testing.TB, cl *fakeCluster, name string, opts ...NodeOption) *Node {
	t.Helper()
	return startNode(t, append([]NodeOption{WithNodeName(name), WithFederation(cl.fed())}, opts...)...)
}

// heal joins f, cut off by down, to the others again, in the same
// incarnation: a partition that heals.
func (cl *fakeCluster) heal(f *fakeFed) {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	for name, o := range cl.nodes {
		cl.links[[2]string{f.self, name}] = startLink(f, o)
		cl.links[[2]string{name, f.self}] = startLink(o, f)
	}
	cl.nodes[f.self] = f
}

func (cl *fakeCluster) node(name string) *fakeFed {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	return cl.nodes[name]
}

// cutPair cuts the links between a and b alone (each hears the other
// down), leaving their links to the others: a partition that splits the
// cluster along several pairs is cut pair by pair.
func (cl *fakeCluster) cutPair(a, b string) {
	cl.mu.Lock()
	fa, fb := cl.nodes[a], cl.nodes[b]
	ab, ba := cl.links[[2]string{a, b}], cl.links[[2]string{b, a}]
	delete(cl.links, [2]string{a, b})
	delete(cl.links, [2]string{b, a})
	cl.mu.Unlock()
	ab.stop()
	ba.stop()
	fa.host.NodeDown(b, fb.inc, "cut")
	fb.host.NodeDown(a, fa.inc, "cut")
}

// joinPair links a and b again after cutPair, in the same incarnations.
func (cl *fakeCluster) joinPair(a, b string) {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	fa, fb := cl.nodes[a], cl.nodes[b]
	cl.links[[2]string{a, b}] = startLink(fa, fb)
	cl.links[[2]string{b, a}] = startLink(fb, fa)
}
