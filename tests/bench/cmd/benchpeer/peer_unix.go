package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"syscall"
	"time"
)

// The Unix stream socket peer: the floor any socket-based IPC pays. Frames
// are an 8-byte header (length, op) and a body. op 1: echo the body back;
// op 2: the body is (count, size): send count frames of size bytes (op 3).

const (
	unixEcho  = 1
	unixEmit  = 2
	unixEvent = 3
)

func init() {
	register("unix", map[string]roleFunc{
		"serve":   unixServe,
		"rpc":     unixRPC,
		"events":  unixEvents,
		"connect": unixConnect,
		"idle":    unixIdle,
	})
}

func unixServe(ctx context.Context, a *args) (*result, error) {
	path := filepath.Join(a.dir, "unix.sock")
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
		go unixConn(c)
	}
}

func unixConn(c net.Conn) {
	defer c.Close()
	r := bufio.NewReaderSize(c, 128<<10)
	w := bufio.NewWriterSize(c, 128<<10)
	hdr := make([]byte, 8)
	var body, out []byte
	for {
		if _, err := io.ReadFull(r, hdr); err != nil {
			return
		}
		n := int(getU32(hdr))
		if cap(body) < n {
			body = make([]byte, n)
		}
		body = body[:n]
		if _, err := io.ReadFull(r, body); err != nil {
			return
		}
		switch getU32(hdr[4:]) {
		case unixEcho:
			w.Write(hdr)
			w.Write(body)
		case unixEmit:
			count, size := int(getU32(body)), int(getU32(body[4:]))
			if cap(out) < size {
				out = make([]byte, size)
			}
			var h [8]byte
			putU32(h[:], uint32(size))
			putU32(h[4:], unixEvent)
			for range count {
				w.Write(h[:])
				w.Write(out[:size])
			}
		}
		if err := w.Flush(); err != nil {
			return
		}
	}
}

type unixClient struct {
	c    net.Conn
	r    *bufio.Reader
	hdr  []byte
	body []byte
}

func dialUnix(addr string) (*unixClient, error) {
	c, err := net.Dial("unix", addr)
	if err != nil {
		return nil, err
	}
	return &unixClient{c: c, r: bufio.NewReaderSize(c, 128<<10), hdr: make([]byte, 8)}, nil
}

func (u *unixClient) send(op uint32, p []byte) error {
	var h [8]byte
	putU32(h[:], uint32(len(p)))
	putU32(h[4:], op)
	bufs := net.Buffers{h[:], p}
	_, err := bufs.WriteTo(u.c)
	return err
}

func (u *unixClient) recv() (int, error) {
	if _, err := io.ReadFull(u.r, u.hdr); err != nil {
		return 0, err
	}
	n := int(getU32(u.hdr))
	if cap(u.body) < n {
		u.body = make([]byte, n)
	}
	_, err := io.ReadFull(u.r, u.body[:n])
	return n, err
}

func unixRPC(ctx context.Context, a *args) (*result, error) {
	u, err := dialUnix(a.addr)
	if err != nil {
		return nil, err
	}
	defer u.c.Close()
	return rpcLoop(ctx, a, func(_ context.Context, p []byte) error {
		if err := u.send(unixEcho, p); err != nil {
			return err
		}
		n, err := u.recv()
		if err == nil && n != len(p) {
			err = fmt.Errorf("echo of %d bytes came back as %d", len(p), n)
		}
		return err
	})
}

func unixEvents(ctx context.Context, a *args) (*result, error) {
	u, err := dialUnix(a.addr)
	if err != nil {
		return nil, err
	}
	defer u.c.Close()
	req := make([]byte, 8)
	putU32(req, uint32(a.window))
	putU32(req[4:], uint32(a.size))
	return receiveWindows(ctx, a, func() error { return u.send(unixEmit, req) },
		func(deadline time.Time) (int, error) {
			u.c.SetReadDeadline(deadline)
			n, err := u.recv()
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				return 0, errTimeout
			}
			return n, err
		})
}

func unixConnect(ctx context.Context, a *args) (*result, error) {
	return connectLoop(a, func() error {
		for {
			c, err := net.Dial("unix", a.addr)
			if errors.Is(err, syscall.EAGAIN) {
				// The listen backlog is full: the server has not accepted
				// yet. A client waits, as it would for any server.
				time.Sleep(10 * time.Microsecond)
				continue
			}
			if err != nil {
				return err
			}
			return c.Close()
		}
	})
}

func unixIdle(ctx context.Context, a *args) (*result, error) {
	return holdIdle(ctx, a, func() (func(), error) {
		c, err := net.Dial("unix", a.addr)
		if err != nil {
			return nil, err
		}
		return func() { c.Close() }, nil
	})
}
