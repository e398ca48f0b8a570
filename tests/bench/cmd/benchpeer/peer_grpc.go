package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// gRPC-go over a Unix socket, default server and client options. The
// service is written by hand (no generated code): Echo (unary) and Events
// (a bidirectional stream: each message from the client is a window
// request (count, size), answered with count messages). Messages are raw
// bytes through a codec that copies them, as the proto codec would.

type rawMsg struct{ b []byte }

type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error) {
	m, ok := v.(*rawMsg)
	if !ok {
		return nil, fmt.Errorf("raw codec: cannot marshal %T", v)
	}
	return m.b, nil
}

func (rawCodec) Unmarshal(data []byte, v any) error {
	m, ok := v.(*rawMsg)
	if !ok {
		return fmt.Errorf("raw codec: cannot unmarshal into %T", v)
	}
	m.b = append(m.b[:0], data...)
	return nil
}

func (rawCodec) Name() string { return "raw" }

var grpcDesc = grpc.ServiceDesc{
	ServiceName: "bench.Bench",
	HandlerType: (*any)(nil),
	Methods: []grpc.MethodDesc{{
		MethodName: "Echo",
		Handler: func(_ any, ctx context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
			in := new(rawMsg)
			if err := dec(in); err != nil {
				return nil, err
			}
			return in, nil
		},
	}},
	Streams: []grpc.StreamDesc{{
		StreamName:    "Events",
		ServerStreams: true,
		ClientStreams: true,
		Handler: func(_ any, s grpc.ServerStream) error {
			var req, out rawMsg
			for {
				if err := s.RecvMsg(&req); err != nil {
					if errors.Is(err, io.EOF) {
						return nil
					}
					return err
				}
				if len(req.b) < 8 {
					return errors.New("short window request")
				}
				count, size := int(getU32(req.b)), int(getU32(req.b[4:]))
				if cap(out.b) < size {
					out.b = make([]byte, size)
				}
				out.b = out.b[:size]
				for range count {
					if err := s.SendMsg(&out); err != nil {
						return err
					}
				}
			}
		},
	}},
}

func init() {
	register("grpc", map[string]roleFunc{
		"serve":   grpcServe,
		"rpc":     grpcRPC,
		"events":  grpcEvents,
		"connect": grpcConnect,
		"idle":    grpcIdle,
	})
}

func grpcServe(ctx context.Context, a *args) (*result, error) {
	path := filepath.Join(a.dir, "grpc.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, err
	}
	s := grpc.NewServer(grpc.ForceServerCodec(rawCodec{}))
	s.RegisterService(&grpcDesc, struct{}{})
	go func() { <-ctx.Done(); s.Stop() }()
	ready(path)
	if err := s.Serve(ln); err != nil && ctx.Err() == nil {
		return nil, err
	}
	return nil, nil
}

func grpcDial(a *args) (*grpc.ClientConn, error) {
	return grpc.NewClient("unix://"+a.addr,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.ForceCodec(rawCodec{})))
}

func grpcEcho(ctx context.Context, c *grpc.ClientConn, p []byte, out *rawMsg) error {
	if err := c.Invoke(ctx, "/bench.Bench/Echo", &rawMsg{b: p}, out); err != nil {
		return err
	}
	if len(out.b) != len(p) {
		return fmt.Errorf("echo of %d bytes came back as %d", len(p), len(out.b))
	}
	return nil
}

func grpcRPC(ctx context.Context, a *args) (*result, error) {
	c, err := grpcDial(a)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	var out rawMsg
	return rpcLoop(ctx, a, func(ctx context.Context, p []byte) error { return grpcEcho(ctx, c, p, &out) })
}

func grpcEvents(ctx context.Context, a *args) (*result, error) {
	c, err := grpcDial(a)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	s, err := c.NewStream(sctx, &grpcDesc.Streams[0], "/bench.Bench/Events")
	if err != nil {
		return nil, err
	}
	req := &rawMsg{b: make([]byte, 8)}
	putU32(req.b, uint32(a.window))
	putU32(req.b[4:], uint32(a.size))
	type msg struct {
		n   int
		err error
	}
	in := make(chan msg, 2*a.window)
	go func() { // RecvMsg takes no deadline: read on a goroutine of its own
		var m rawMsg
		for {
			err := s.RecvMsg(&m)
			in <- msg{len(m.b), err}
			if err != nil {
				return
			}
		}
	}()
	return receiveWindows(ctx, a, func() error { return s.SendMsg(req) },
		func(deadline time.Time) (int, error) {
			t := time.NewTimer(time.Until(deadline))
			defer t.Stop()
			select {
			case m := <-in:
				return m.n, m.err
			case <-t.C:
				return 0, errTimeout
			}
		})
}

func grpcConnect(ctx context.Context, a *args) (*result, error) {
	p := make([]byte, 64)
	var out rawMsg
	r, err := connectLoop(a, func() error {
		c, err := grpcDial(a)
		if err != nil {
			return err
		}
		err = grpcEcho(ctx, c, p, &out) // NewClient is lazy: the first call connects
		c.Close()
		return err
	})
	if r != nil {
		r.Note = "each connection makes one 64 B call (gRPC connects lazily)"
	}
	return r, err
}

func grpcIdle(ctx context.Context, a *args) (*result, error) {
	p := make([]byte, 64)
	var out rawMsg
	return holdIdle(ctx, a, func() (func(), error) {
		c, err := grpcDial(a)
		if err != nil {
			return nil, err
		}
		if err := grpcEcho(ctx, c, p, &out); err != nil {
			c.Close()
			return nil, err
		}
		return func() { c.Close() }, nil
	})
}
