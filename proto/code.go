package pb

import (
	"strconv"
	"strings"
)

// Error is a protocol error inside the wire engine, as a [Code] and a
// reason (a malformed bus message, say). Applications never see it: the
// root package turns codes into its own switchboard.Error. Match it by
// code, never by text:
//
//	if errors.Is(err, pb.Code_CODE_PROTOCOL_VIOLATION.Err("")) { … }
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
// reason, so that errors.Is(err, pb.Code_CODE_CANCELED.Err("")) matches any
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

// PeerCode returns code if a client may answer a peer's request with it,
// else CODE_HANDLER_ERROR: a client may not pretend to be the node (say,
// that the node is shutting down, or that the peer is gone).
func PeerCode(code Code) Code {
	switch code {
	case Code_CODE_OK, Code_CODE_HANDLER_ERROR, Code_CODE_INVALID_ARGUMENT, Code_CODE_DEADLINE_EXCEEDED,
		Code_CODE_CANCELED, Code_CODE_UNKNOWN_COMMAND, Code_CODE_INTERNAL, Code_CODE_TOO_LARGE:
		return code
	}
	return Code_CODE_HANDLER_ERROR
}
