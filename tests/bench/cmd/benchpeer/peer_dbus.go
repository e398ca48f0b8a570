package main

import (
	"context"
	"fmt"
	"time"

	"github.com/godbus/dbus/v5"
)

// D-Bus: a private dbus-daemon that benchrun starts (with the limits of
// Debian's session bus configuration), godbus/dbus/v5 clients. Like NATS,
// D-Bus has no server-side application: the RPC rows go through the
// daemon to a responder process that owns a well-known name.

const (
	dbusName  = "org.switchboard.Bench"
	dbusIface = "org.switchboard.Bench"
	dbusPath  = dbus.ObjectPath("/org/switchboard/Bench")
	dbusPub   = "org.switchboard.BenchPub"
)

func init() {
	register("dbus", map[string]roleFunc{
		"serve":   dbusResponder,
		"p2presp": dbusResponder,
		"rpc":     dbusRPC,
		"p2p":     dbusRPC,
		"events":  dbusEvents,
		"fanpub":  dbusFanPub,
		"fansub":  dbusFanSub,
		"connect": dbusConnect,
		"idle":    dbusIdle,
	})
}

type dbusService struct {
	c   *dbus.Conn
	out []byte
}

// Echo returns its argument.
func (s *dbusService) Echo(b []byte) ([]byte, *dbus.Error) { return b, nil }

// Emit sends count signals of size bytes.
func (s *dbusService) Emit(count, size uint32) *dbus.Error {
	p := make([]byte, size)
	for range count {
		if err := s.c.Emit(dbusPath, dbusIface+".Ev", p); err != nil {
			return dbus.MakeFailedError(err)
		}
	}
	return nil
}

func dbusOwn(addr, name string, v any) (*dbus.Conn, error) {
	c, err := dbus.Connect(addr)
	if err != nil {
		return nil, err
	}
	if err := c.Export(v, dbusPath, dbusIface); err != nil {
		c.Close()
		return nil, err
	}
	reply, err := c.RequestName(name, dbus.NameFlagDoNotQueue)
	if err != nil {
		c.Close()
		return nil, err
	}
	if reply != dbus.RequestNameReplyPrimaryOwner {
		c.Close()
		return nil, fmt.Errorf("name %s: not the primary owner (%v)", name, reply)
	}
	return c, nil
}

func dbusResponder(ctx context.Context, a *args) (*result, error) {
	s := &dbusService{}
	c, err := dbusOwn(a.addr, dbusName, s)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	s.c = c
	ready(a.addr)
	<-ctx.Done()
	return nil, nil
}

func dbusRPC(ctx context.Context, a *args) (*result, error) {
	c, err := dbus.Connect(a.addr)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	obj := c.Object(dbusName, dbusPath)
	return rpcLoop(ctx, a, func(ctx context.Context, p []byte) error {
		var out []byte
		if err := obj.CallWithContext(ctx, dbusIface+".Echo", 0, p).Store(&out); err != nil {
			return err
		}
		if len(out) != len(p) {
			return fmt.Errorf("echo of %d bytes came back as %d", len(p), len(out))
		}
		return nil
	})
}

// dbusSignals subscribes c to member's signals on the bench interface.
func dbusSignals(c *dbus.Conn, member string, buf int) (chan *dbus.Signal, error) {
	if err := c.AddMatchSignal(dbus.WithMatchInterface(dbusIface), dbus.WithMatchMember(member)); err != nil {
		return nil, err
	}
	ch := make(chan *dbus.Signal, buf)
	c.Signal(ch)
	return ch, nil
}

func dbusEvents(ctx context.Context, a *args) (*result, error) {
	c, err := dbus.Connect(a.addr)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	ch, err := dbusSignals(c, "Ev", 4*a.window)
	if err != nil {
		return nil, err
	}
	obj := c.Object(dbusName, dbusPath)
	calls := make(chan *dbus.Call, 64)
	go func() { // replies to Emit: drained, errors ignored (the counts tell)
		for range calls {
		}
	}()
	return receiveWindows(ctx, a,
		func() error {
			obj.Go(dbusIface+".Emit", 0, calls, uint32(a.window), uint32(a.size))
			return nil
		},
		func(deadline time.Time) (int, error) {
			t := time.NewTimer(time.Until(deadline))
			defer t.Stop()
			select {
			case s, ok := <-ch:
				if !ok {
					return 0, fmt.Errorf("connection closed")
				}
				if len(s.Body) == 1 {
					if b, ok := s.Body[0].([]byte); ok {
						return len(b), nil
					}
				}
				return 0, fmt.Errorf("unexpected signal %s %v", s.Name, s.Body)
			case <-t.C:
				return 0, errTimeout
			}
		})
}

type dbusAcks struct{ ch chan struct{} }

// Ack counts one window received by one subscriber.
func (d *dbusAcks) Ack() *dbus.Error {
	d.ch <- struct{}{}
	return nil
}

func dbusFanPub(ctx context.Context, a *args) (*result, error) {
	acks := &dbusAcks{ch: make(chan struct{}, 1<<16)}
	c, err := dbusOwn(a.addr, dbusPub, acks)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	return publishWindows(ctx, a, func(p []byte) error { return c.Emit(dbusPath, dbusIface+".Fan", p) }, nil, acks.ch)
}

func dbusFanSub(ctx context.Context, a *args) (*result, error) {
	c, err := dbus.Connect(a.addr)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	ch, err := dbusSignals(c, "Fan", 4*a.window)
	if err != nil {
		return nil, err
	}
	pub := c.Object(dbusPub, dbusPath)
	s := &subscriber{window: int64(a.window), ack: func() error {
		return pub.Go(dbusIface+".Ack", dbus.FlagNoReplyExpected, nil).Err
	}}
	ready("")
	for {
		select {
		case <-ch:
			s.received()
		case <-ctx.Done():
			return &result{Ops: s.got.Load()}, nil
		}
	}
}

func dbusConnect(ctx context.Context, a *args) (*result, error) {
	r, err := connectLoop(a, func() error {
		c, err := dbus.Connect(a.addr) // authenticates and says Hello
		if err != nil {
			return err
		}
		return c.Close()
	})
	return r, err
}

func dbusIdle(ctx context.Context, a *args) (*result, error) {
	return holdIdle(ctx, a, func() (func(), error) {
		c, err := dbus.Connect(a.addr)
		if err != nil {
			return nil, err
		}
		return func() { c.Close() }, nil
	})
}
