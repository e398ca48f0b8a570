package registry

import (
	"slices"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/switchboard-ipc/switchboard/actors/conn"
)

// Entry describes a live connection.
type Entry struct {
	ID      uint64
	Address string
	Since   time.Time
	PID     *actor.PID // the connection's actor, watched by the registry
	Conn    *conn.Conn // name, credentials, counters (nil in tests)
}

// Messages the registry accepts.
type (
	// Register adds a connection.
	Register struct{ Entry Entry }
	// Unregister removes a connection.
	Unregister struct{ ID uint64 }
	// List asks for every entry, in id order, on Reply (buffered, one).
	List struct{ Reply chan<- []Entry }
	// Lookup asks for one entry on Reply (buffered, one); ok is false if
	// there is none.
	Lookup struct {
		ID    uint64
		Reply chan<- LookupResult
	}
	// LookupResult answers Lookup.
	LookupResult struct {
		Entry Entry
		OK    bool
	}
)

// Registry is the registry actor's state.
type Registry struct {
	byID  map[uint64]Entry
	byPID map[string]uint64 // actor id -> connection id, for Terminated
}

// New returns a registry actor, for actor.PropsFromProducer.
func New() actor.Actor {
	return &Registry{byID: map[uint64]Entry{}, byPID: map[string]uint64{}}
}

// Receive handles one message.
func (r *Registry) Receive(c actor.Context) {
	switch m := c.Message().(type) {
	case *Register:
		r.byID[m.Entry.ID] = m.Entry
		if pid := m.Entry.PID; pid != nil {
			r.byPID[pid.Id] = m.Entry.ID
			c.Watch(pid)
		}
	case *Unregister:
		r.remove(c, m.ID)
	case *actor.Terminated:
		if id, ok := r.byPID[m.Who.Id]; ok {
			r.remove(c, id)
		}
	case *List:
		out := make([]Entry, 0, len(r.byID))
		for _, e := range r.byID {
			out = append(out, e)
		}
		slices.SortFunc(out, func(a, b Entry) int {
			switch {
			case a.ID < b.ID:
				return -1
			case a.ID > b.ID:
				return 1
			}
			return 0
		})
		m.Reply <- out
	case *Lookup:
		e, ok := r.byID[m.ID]
		m.Reply <- LookupResult{e, ok}
	}
}

func (r *Registry) remove(c actor.Context, id uint64) {
	e, ok := r.byID[id]
	if !ok {
		return
	}
	delete(r.byID, id)
	if pid := e.PID; pid != nil {
		delete(r.byPID, pid.Id)
		c.Unwatch(pid)
	}
}
