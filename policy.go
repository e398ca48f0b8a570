package switchboard

import (
	"fmt"
)

// Cred is a process's identity as the kernel recorded it when its socket
// connected (SO_PEERCRED), not as the process claims it.
//
// A connection on another node of a cluster (WithFederation) has the
// credentials its own node checked, and Node names that node: its uid is
// another host's, distinct from the same number here (the default policy
// and WithAuthorize never take it for root or the node's uid); a Policy
// that admits remote connections matches on Node.
type Cred struct {
	PID  int32
	UID  uint32
	GID  uint32
	Node string // "" for a process of this node; else the node it is connected to
}

// Action is something a client does that the node's [Policy] may refuse.
type Action int

const (
	// ActionConnect: a process connects (target "").
	ActionConnect Action = iota
	// ActionCall: a call or send to a node service (target: the service id
	// in decimal, e.g. "7").
	ActionCall
	// ActionSend: a message or request to a peer's address (target: the
	// address, e.g. ":n1.mx2z3pcd1ldw.42"), or to a name (target: the name,
	// then its owner's address).
	ActionSend
	// ActionPublish: a publication or group request (target: the group).
	ActionPublish
	// ActionSubscribe: a subscription (target: the group).
	ActionSubscribe
	// ActionOwn: claiming a well-known name (target: the name).
	ActionOwn
	// ActionList: a listing of connections, groups, names or a group's
	// members (target: the group for Members, else "").
	ActionList
	// ActionMonitor: a live tail of the bus's traffic (target "").
	ActionMonitor
)

var actionNames = [...]string{"connect", "call", "send", "publish", "subscribe", "own", "list", "monitor"}

// String returns the action's name in lower case ("publish").
func (a Action) String() string {
	if a >= 0 && int(a) < len(actionNames) {
		return actionNames[a]
	}
	return fmt.Sprintf("action(%d)", int(a))
}

// ParseAction is the inverse of Action.String.
func ParseAction(s string) (Action, error) {
	for i, n := range actionNames {
		if n == s {
			return Action(i), nil
		}
	}
	return 0, fmt.Errorf("switchboard: unknown action %q", s)
}

// Policy decides whether a client, known by its kernel-checked
// credentials, may do something. A non-nil error refuses the action; its
// text reaches the client. The node asks on every path that leads to the
// action (a direct send, a name, a group, a listing), so a policy needs
// only to answer for the action and its target. Allow is called
// concurrently from many goroutines and must not block.
type Policy interface {
	Allow(who Cred, what Action, target string) error
}

// PolicyFunc adapts a function to [Policy].
type PolicyFunc func(who Cred, what Action, target string) error

// Allow calls f.
func (f PolicyFunc) Allow(who Cred, what Action, target string) error { return f(who, what, target) }
