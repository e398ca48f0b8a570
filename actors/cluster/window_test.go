package cluster

import (
	"encoding/binary"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestLinkNoPingPerMessage: messages sent one at a time over a link (a
// request, then its reply: the cross-node RPC case) cost no HTTP/2 PING
// each. grpc-go's dynamic flow control sends a bandwidth-estimation PING
// whenever data arrives with none outstanding, a write, a read and a
// wake-up more on each side per message; the link's windows are fixed
// (linkWindow). n2 advertises a proxy that counts the PING frames of
// n1's connection to it, both ways.
func TestLinkNoPingPerMessage(t *testing.T) {
	if !inNetns(t) {
		return
	}
	const proxyAddr = "127.0.0.1:7110"
	px, err := startFrameProxy(proxyAddr, addrs["n2"])
	if err != nil {
		t.Fatal(err)
	}
	defer px.close()
	n2 := startMember(t, "n2", "an2", addrs["n2"], []string{addrs["n1"]}, memberOpts{env: []string{"SBM_ADVERTISE=" + proxyAddr}})
	n1 := startMember(t, "n1", "an1", addrs["n1"], []string{proxyAddr}, memberOpts{})
	n1.wait("up n2 an2", 10*time.Second)
	n2.wait("up n1 an1", 10*time.Second)
	before := px.pings.Load()
	const n = 100
	for i := 1; i <= n; i++ {
		if got := n1.do("send", "n2", 1, 64); got != "1 0 " && got != "1 0" {
			t.Fatalf("send %d: %q", i, got)
		}
		waitCount(t, n2, "n1", i)
	}
	if px.frames.Load() == 0 {
		t.Fatal("no HTTP/2 frame went through the proxy: n1 did not link through it")
	}
	if pings := px.pings.Load() - before; pings > n/10 {
		t.Errorf("%d HTTP/2 PING frames for %d messages sent one at a time, want at most %d", pings, n, n/10)
	}
}

// frameProxy forwards TCP connections to one address and counts the
// HTTP/2 frames (and PING frames) they carry, both ways.
type frameProxy struct {
	ln            net.Listener
	frames, pings atomic.Int64
	wg            sync.WaitGroup
	mu            sync.Mutex
	conns         []net.Conn
}

func startFrameProxy(listen, to string) (*frameProxy, error) {
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return nil, err
	}
	p := &frameProxy{ln: ln}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			d, err := net.Dial("tcp", to)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, c, d)
			p.mu.Unlock()
			p.wg.Add(2)
			go p.pipe(d, c, len("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")) // the client's side starts with the preface
			go p.pipe(c, d, 0)
		}
	}()
	return p, nil
}

// pipe copies from src to dst, counting frames after skip bytes.
func (p *frameProxy) pipe(dst, src net.Conn, skip int) {
	defer p.wg.Done()
	defer dst.Close()
	var buf []byte
	b := make([]byte, 64<<10)
	for {
		k, err := src.Read(b)
		if k > 0 {
			if _, werr := dst.Write(b[:k]); werr != nil {
				return
			}
			buf = append(buf, b[:k]...)
			if skip > 0 {
				s := min(skip, len(buf))
				buf, skip = buf[s:], skip-s
			}
			for len(buf) >= 9 {
				size := int(buf[0])<<16 | int(binary.BigEndian.Uint16(buf[1:3]))
				if len(buf) < 9+size {
					break
				}
				p.frames.Add(1)
				if buf[3] == 0x6 { // PING
					p.pings.Add(1)
				}
				buf = buf[9+size:]
			}
		}
		if err != nil { // EOF, or the proxy closed
			return
		}
	}
}

func (p *frameProxy) close() {
	p.ln.Close()
	p.mu.Lock()
	for _, c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}
