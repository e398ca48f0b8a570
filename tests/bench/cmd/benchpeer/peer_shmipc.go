package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/cloudwego/shmipc-go"
)

// cloudwego's shmipc-go: the nearest Go shared-memory IPC library. A
// server accepts Unix socket connections and makes each a shmipc session
// (shmipc.Server, shmipc.DefaultConfig()); a client is a SessionManager
// (shmipc.DefaultSessionManagerConfig(): one session, a 32 MiB buffer,
// an 8192-entry I/O queue) that takes one stream for its whole run. The
// frames are the Unix socket peer's (an 8-byte header: length, op; then
// the body), written with the stream's BufferWriter and read in place with
// its BufferReader, one ReleasePreviousRead per frame.
//
// Two settings differ from DefaultConfig, neither of them a tuning knob:
// clients map with MemMapTypeMemFd, as shmipc's own examples do (the
// default, a file in /dev/shm, would outlive a killed client and does not
// fit a container's 64 MiB /dev/shm with 8 clients); and the library's
// session log goes to stderr, since stdout carries benchpeer's result.

func init() {
	register("shmipc", map[string]roleFunc{
		"serve":   shmipcServe,
		"rpc":     shmipcRPC,
		"events":  shmipcEvents,
		"connect": shmipcConnect,
		"idle":    shmipcIdle,
	})
}

func shmipcServe(ctx context.Context, a *args) (*result, error) {
	path := filepath.Join(a.dir, "shmipc.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, err
	}
	go func() { <-ctx.Done(); ln.Close() }()
	ready(path)
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil, nil
			}
			return nil, err
		}
		go shmipcSession(ctx, c)
	}
}

// shmipcSession serves one client's session: a goroutine per stream, as
// shmipc's example server does.
func shmipcSession(ctx context.Context, c net.Conn) {
	conf := shmipc.DefaultConfig()
	conf.LogOutput = os.Stderr
	s, err := shmipc.Server(c, conf)
	if err != nil {
		c.Close()
		fmt.Fprintf(os.Stderr, "shmipc server session: %v\n", err)
		return
	}
	defer s.Close()
	stop := context.AfterFunc(ctx, func() { s.Close() })
	defer stop()
	for {
		st, err := s.AcceptStream()
		if err != nil {
			return
		}
		go shmipcStream(st)
	}
}

func shmipcStream(st *shmipc.Stream) {
	defer st.Close()
	r, w := st.BufferReader(), st.BufferWriter()
	var hdr [8]byte
	var out []byte
	for {
		h, err := r.ReadBytes(8)
		if err != nil {
			return
		}
		copy(hdr[:], h)
		n := int(getU32(hdr[:]))
		body, err := r.ReadBytes(n)
		if err != nil {
			return
		}
		switch getU32(hdr[4:]) {
		case unixEcho:
			if err := shmipcWrite(w, unixEcho, body); err != nil {
				return
			}
		case unixEmit:
			count, size := int(getU32(body)), int(getU32(body[4:]))
			if cap(out) < size {
				out = make([]byte, size)
			}
			for range count {
				if err := shmipcWrite(w, unixEvent, out[:size]); err != nil {
					return
				}
			}
		}
		r.ReleasePreviousRead()
		if err := st.Flush(false); err != nil {
			return
		}
	}
}

// shmipcWrite appends one frame to the stream's buffer (sent at Flush).
func shmipcWrite(w shmipc.BufferWriter, op uint32, body []byte) error {
	h, err := w.Reserve(8)
	if err != nil {
		return err
	}
	putU32(h, uint32(len(body)))
	putU32(h[4:], op)
	_, err = w.WriteBytes(body)
	return err
}

func shmipcConfig(addr string) *shmipc.SessionManagerConfig {
	conf := shmipc.DefaultSessionManagerConfig()
	conf.Network = "unix"
	conf.Address = addr
	conf.MemMapType = shmipc.MemMapTypeMemFd
	conf.LogOutput = os.Stderr
	return conf
}

// shmipcClient is one client: a session manager and the stream it uses.
type shmipcClient struct {
	sm *shmipc.SessionManager
	st *shmipc.Stream
}

func dialShmipc(addr string) (*shmipcClient, error) {
	sm, err := shmipc.NewSessionManager(shmipcConfig(addr))
	if err != nil {
		return nil, err
	}
	st, err := sm.GetStream()
	if err != nil {
		sm.Close()
		return nil, err
	}
	return &shmipcClient{sm: sm, st: st}, nil
}

func (c *shmipcClient) close() {
	c.st.Close()
	c.sm.Close()
}

func (c *shmipcClient) send(op uint32, p []byte) error {
	if err := shmipcWrite(c.st.BufferWriter(), op, p); err != nil {
		return err
	}
	return c.st.Flush(false)
}

// recv reads one frame and releases it; it returns the body's length.
func (c *shmipcClient) recv() (int, error) {
	r := c.st.BufferReader()
	h, err := r.ReadBytes(8)
	if err != nil {
		return 0, err
	}
	n := int(getU32(h))
	if _, err := r.ReadBytes(n); err != nil {
		return 0, err
	}
	r.ReleasePreviousRead()
	return n, nil
}

func shmipcRPC(ctx context.Context, a *args) (*result, error) {
	c, err := dialShmipc(a.addr)
	if err != nil {
		return nil, err
	}
	defer c.close()
	return rpcLoop(ctx, a, func(_ context.Context, p []byte) error {
		if err := c.send(unixEcho, p); err != nil {
			return err
		}
		n, err := c.recv()
		if err == nil && n != len(p) {
			err = fmt.Errorf("echo of %d bytes came back as %d", len(p), n)
		}
		return err
	})
}

func shmipcEvents(ctx context.Context, a *args) (*result, error) {
	c, err := dialShmipc(a.addr)
	if err != nil {
		return nil, err
	}
	defer c.close()
	req := make([]byte, 8)
	putU32(req, uint32(a.window))
	putU32(req[4:], uint32(a.size))
	return receiveWindows(ctx, a, func() error { return c.send(unixEmit, req) },
		func(deadline time.Time) (int, error) {
			c.st.SetReadDeadline(deadline)
			n, err := c.recv()
			if errors.Is(err, shmipc.ErrTimeout) {
				return 0, errTimeout
			}
			return n, err
		})
}

// shmipcConnect measures a session's set-up and tear-down: the Unix socket
// connection, the exchange of the shared memory's descriptors, and one
// stream opened.
func shmipcConnect(ctx context.Context, a *args) (*result, error) {
	return connectLoop(a, func() error {
		c, err := dialShmipc(a.addr)
		if err != nil {
			return err
		}
		c.close()
		return nil
	})
}

func shmipcIdle(ctx context.Context, a *args) (*result, error) {
	return holdIdle(ctx, a, func() (func(), error) {
		c, err := dialShmipc(a.addr)
		if err != nil {
			return nil, err
		}
		return c.close, nil
	})
}
