package switchboard

import (
	"context"
	"fmt"

	pb "github.com/switchboard-ipc/switchboard/proto"
	gproto "google.golang.org/protobuf/proto"
)

// Services asks the node's system service which services it serves
// (SysServices), by id, with the names, descriptions and commands their
// registrations gave (WithName, WithDescription, WithCommand). The system
// service itself is always among them. A node that predates the command
// answers ErrUnknownCommand.
func (c *Conn) Services(ctx context.Context) ([]ServiceInfo, error) {
	reply, err := c.Call(ctx, SystemService, SysServices, nil)
	if err != nil {
		return nil, err
	}
	var l pb.ServiceList
	if err := gproto.Unmarshal(reply, &l); err != nil {
		return nil, fmt.Errorf("%w: bad ServiceList: %w", ErrProtocol, err)
	}
	out := make([]ServiceInfo, 0, len(l.GetServices()))
	for _, s := range l.GetServices() {
		if s.GetId() > 0xFFFF {
			return nil, fmt.Errorf("%w: service id %d out of range", ErrProtocol, s.GetId())
		}
		si := ServiceInfo{ID: uint16(s.GetId()), Name: s.GetName(), Description: s.GetDescription(), Actor: s.GetActor()}
		for _, cmd := range s.GetCommands() {
			if cmd.GetId() > 0xFFFF {
				return nil, fmt.Errorf("%w: command id %d out of range", ErrProtocol, cmd.GetId())
			}
			si.Commands = append(si.Commands, CommandInfo{ID: uint16(cmd.GetId()), Name: cmd.GetName(), Description: cmd.GetDescription()})
		}
		out = append(out, si)
	}
	return out, nil
}
