package switchboard

import (
	"cmp"
	"slices"

	pb "github.com/switchboard-ipc/switchboard/proto"
	gproto "google.golang.org/protobuf/proto"
)

// WithName gives a service a short name ("echo"), which the system
// service's services command (Conn.Services, `services` on the command
// line) lists beside its id. It is a label, not an address: calls still
// go to the id.
func WithName(name string) ServiceOption {
	return func(s *service) { s.name = name }
}

// WithDescription gives a service one line saying what it does, listed
// with its name.
func WithDescription(text string) ServiceOption {
	return func(s *service) { s.description = text }
}

// WithCommand documents one command of the service: its id, a short name
// and a line of description, listed in that order of ids. Documenting is
// optional and changes nothing about what the handler is asked to serve.
func WithCommand(id uint16, name, description string) ServiceOption {
	return func(s *service) {
		s.commands = append(s.commands, CommandInfo{ID: id, Name: name, Description: description})
	}
}

// systemServiceOptions name the built-in system service and its commands.
var systemServiceOptions = []ServiceOption{
	WithName("system"),
	WithDescription("the node's built-in service: ping, echo, info, services, nodes"),
	WithCommand(SysPing, "ping", "an empty reply"),
	WithCommand(SysEcho, "echo", "the request's payload"),
	WithCommand(SysInfo, "info", "the node's NodeInfo"),
	WithCommand(SysServices, "services", "the node's services, as a ServiceList"),
	WithCommand(SysNodes, "nodes", "the node's cluster and links, as a ClusterNodes"),
}

// serviceList describes the registered services, by id. Services found
// by a WithSelector function exist only when called: they are not listed.
func (n *Node) serviceList() *pb.ServiceList {
	l := &pb.ServiceList{}
	for id := range n.services {
		s := n.services[id].Load()
		if s == nil {
			continue
		}
		d := &pb.ServiceDesc{Id: uint32(id), Name: s.name, Description: s.description, Actor: s.pid != nil}
		cmds := slices.SortedStableFunc(slices.Values(s.commands), func(a, b CommandInfo) int { return cmp.Compare(a.ID, b.ID) })
		for _, c := range cmds {
			d.Commands = append(d.Commands, &pb.CommandDesc{Id: uint32(c.ID), Name: c.Name, Description: c.Description})
		}
		l.Services = append(l.Services, d)
	}
	return l
}

// serveServices answers SysServices.
func (n *Node) serveServices() ([]byte, error) {
	return gproto.Marshal(n.serviceList())
}
