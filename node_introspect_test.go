package switchboard

import (
	"context"
	"testing"
	"time"
)

// TestServicesListsNamesAndDescriptions: Conn.Services lists the system
// service and every registered service by id, with the names,
// descriptions and commands (sorted by id) their registrations gave; a
// service registered without them is listed bare, and a re-registration
// replaces the description.
func TestServicesListsNamesAndDescriptions(t *testing.T) {
	n := startNode(t)
	echoService(n) // no name
	n.HandleFunc(42, func(ctx context.Context, r *Request) ([]byte, error) { return nil, nil },
		WithName("old"), WithDescription("replaced below"))
	n.HandleFunc(42, func(ctx context.Context, r *Request) ([]byte, error) { return r.Payload, nil },
		WithName("echo"), WithDescription("returns what it gets"),
		WithCommand(2, "twice", "the payload twice"), WithCommand(1, "once", "the payload"))
	c := dial(t, n)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ss, err := c.Services(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(ss) != 3 {
		t.Fatalf("services: %+v; want 7, 42 and the system service", ss)
	}
	if s := ss[0]; s.ID != svcEcho || s.Name != "" || s.Description != "" || len(s.Commands) != 0 {
		t.Errorf("unnamed service: %+v", s)
	}
	s := ss[1]
	if s.ID != 42 || s.Name != "echo" || s.Description != "returns what it gets" || s.Actor {
		t.Errorf("named service: %+v", s)
	}
	if len(s.Commands) != 2 || s.Commands[0] != (CommandInfo{1, "once", "the payload"}) || s.Commands[1] != (CommandInfo{2, "twice", "the payload twice"}) {
		t.Errorf("commands: %+v", s.Commands)
	}
	sys := ss[2]
	if sys.ID != SystemService || sys.Name != "system" || sys.Description == "" {
		t.Errorf("system service: %+v", sys)
	}
	names := map[uint16]string{}
	for _, c := range sys.Commands {
		names[c.ID] = c.Name
	}
	if names[SysPing] != "ping" || names[SysEcho] != "echo" || names[SysInfo] != "info" || names[SysServices] != "services" {
		t.Errorf("system commands: %+v", sys.Commands)
	}
}
