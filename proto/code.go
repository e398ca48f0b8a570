package pb

import (
	"strconv"
	"strings"
)

// Error is an error received from, or to be sent to, the other side of a
// node connection as a [Code] and a reason. Match it by code, never by text:
//
//	if errors.Is(err, pb.CODE_NODE_SHUTTING_DOWN.Err("")) { … }
type Error struct {
	Code   Code   // what went wrong; never CODE_OK
	Reason string // human-readable detail, may be empty
}

// Error returns "switchboard: " followed by the code's name in lower case
// and, if there is one, ": " and the reason; for example
// "switchboard: unknown service: no service \"kv\"".
func (e *Error) Error() string {
	s := "switchboard: " + e.Code.readable()
	if e.Reason != "" {
		s += ": " + e.Reason
	}
	return s
}

// Is reports whether target is an *Error with the same code, whatever its
// reason, so that errors.Is(err, pb.CODE_CANCELED.Err("")) matches any
// canceled call.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && e != nil && t != nil && t.Code == e.Code
}

// Err returns an *Error with code c and the given reason, or nil if c is
// CODE_OK. The result is a plain error, so a nil result compares equal to nil.
func (c Code) Err(reason string) error {
	if c == Code_CODE_OK {
		return nil
	}
	return &Error{Code: c, Reason: reason}
}

// readable returns the code's name without the CODE_ prefix, in lower case
// with spaces ("unknown service"), or "code N" for a value this package does
// not know.
func (c Code) readable() string {
	name, ok := Code_name[int32(c)]
	if !ok {
		return "code " + strconv.Itoa(int(c))
	}
	return strings.ReplaceAll(strings.ToLower(strings.TrimPrefix(name, "CODE_")), "_", " ")
}
