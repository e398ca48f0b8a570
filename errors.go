package switchboard

import (
	"context"
	"errors"
	"strconv"
	"strings"

	pb "github.com/switchboard-ipc/switchboard/proto"
)

// Error is an error with a code the wire carries: one the node or a peer
// sent, or one this end found itself. errors.Is matches it by code, so an
// error with a reason attached still matches its sentinel
// (errors.Is(err, ErrRefused)); errors.As gives the code and the reason.
type Error struct {
	Code   Code   // never CodeOK
	Reason string // detail for a person; may be empty
}

// Error returns "switchboard: " and the code's name, then ": " and the
// reason if there is one: "switchboard: unknown service: no service 7".
func (e *Error) Error() string {
	s := "switchboard: " + e.Code.String()
	if e.Reason != "" && e.Reason != e.Code.String() {
		s += ": " + e.Reason
	}
	return s
}

// Is reports whether target is an *Error with the same code.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && e != nil && t != nil && t.Code == e.Code
}

// Code says what went wrong. Its values are the wire's (see WIRE.md).
type Code int32

// Codes. Each error sentinel below has one; CodeOK is no error.
const (
	CodeOK               Code = Code(pb.Code_CODE_OK)
	CodeUnknownService   Code = Code(pb.Code_CODE_UNKNOWN_SERVICE)
	CodeUnknownCommand   Code = Code(pb.Code_CODE_UNKNOWN_COMMAND)
	CodeTooLarge         Code = Code(pb.Code_CODE_TOO_LARGE)
	CodeInternal         Code = Code(pb.Code_CODE_INTERNAL)
	CodeRefused          Code = Code(pb.Code_CODE_REFUSED)
	CodeNodeGone         Code = Code(pb.Code_CODE_NODE_SHUTTING_DOWN)
	CodeCanceled         Code = Code(pb.Code_CODE_CANCELED)
	CodeDeadlineExceeded Code = Code(pb.Code_CODE_DEADLINE_EXCEEDED)
	CodeProtocol         Code = Code(pb.Code_CODE_PROTOCOL_VIOLATION)
	CodeVersionMismatch  Code = Code(pb.Code_CODE_VERSION_MISMATCH)
	CodeHandler          Code = Code(pb.Code_CODE_HANDLER_ERROR)
	CodeSlowConsumer     Code = Code(pb.Code_CODE_SLOW_CONSUMER)
	CodeNotAuthentic     Code = Code(pb.Code_CODE_NOT_AUTHENTIC)
	CodeUndeliverable    Code = Code(pb.Code_CODE_UNDELIVERABLE)
	CodePeerGone         Code = Code(pb.Code_CODE_PEER_GONE)
	CodeTooManyPending   Code = Code(pb.Code_CODE_TOO_MANY_PENDING)
	CodeInvalidArgument  Code = Code(pb.Code_CODE_INVALID_ARGUMENT)
	CodeLimitExceeded    Code = Code(pb.Code_CODE_LIMIT_EXCEEDED)
)

// String returns the code's name in words ("unknown service"), or "code N"
// for a value this package does not know.
func (c Code) String() string {
	name, ok := pb.Code_name[int32(c)]
	if !ok {
		return "code " + strconv.Itoa(int(c))
	}
	return strings.ReplaceAll(strings.ToLower(strings.TrimPrefix(name, "CODE_")), "_", " ")
}

// Errors a caller can test for with errors.Is.
var (
	// ErrRefused: the node refused the connection (credentials, policy) or
	// the service refused the caller. The error's text has the reason.
	ErrRefused error = &Error{Code: CodeRefused}
	// ErrNotAuthentic: the process serving the socket is not running as the
	// expected user (see WithNodeUID).
	ErrNotAuthentic error = &Error{Code: CodeNotAuthentic}
	// ErrTooLarge: the message exceeds the negotiated maximum. Nothing was
	// sent; the connection is still usable.
	ErrTooLarge error = &Error{Code: CodeTooLarge}
	// ErrUnknownService: no handler serves the service.
	ErrUnknownService error = &Error{Code: CodeUnknownService}
	// ErrUnknownCommand: the service does not know the command.
	ErrUnknownCommand error = &Error{Code: CodeUnknownCommand}
	// ErrNodeGone: the node closed the connection, shut down or died.
	ErrNodeGone error = &Error{Code: CodeNodeGone}
	// ErrInternal: the handler panicked, or the node failed serving the call.
	ErrInternal error = &Error{Code: CodeInternal}
	// ErrHandler: the handler returned an error; the text is its message.
	ErrHandler error = &Error{Code: CodeHandler}
	// ErrVersionMismatch: the node and the client speak different protocol versions.
	ErrVersionMismatch error = &Error{Code: CodeVersionMismatch}
	// ErrProtocol: the peer broke the protocol.
	ErrProtocol error = &Error{Code: CodeProtocol}
	// ErrSlowConsumer: the node disconnected this client for not reading its events.
	ErrSlowConsumer error = &Error{Code: CodeSlowConsumer}
	// ErrUndeliverable: a request, or a message sent with WantAnswer, found
	// no recipient (unknown address, unowned name, empty group).
	ErrUndeliverable error = &Error{Code: CodeUndeliverable}
	// ErrPeerGone: the peer of a request disconnected before it replied.
	ErrPeerGone error = &Error{Code: CodePeerGone}
	// ErrTooManyPending: the connection already waits for as many replies
	// from peers as the node allows (see WithMaxPending), or as many calls
	// waiting for actor handlers (WithMaxActorCalls).
	ErrTooManyPending error = &Error{Code: CodeTooManyPending}
	// ErrInvalidArgument: a malformed group, name or address.
	ErrInvalidArgument error = &Error{Code: CodeInvalidArgument}
	// ErrLimitExceeded: the node holds as many connections, or handshakes
	// in progress, for this uid as its limits allow (see WithUIDLimits);
	// the connection was refused, and a later try may succeed.
	ErrLimitExceeded error = &Error{Code: CodeLimitExceeded}
)

// ErrClosed is returned by a Conn or Node used after Close.
var ErrClosed = errors.New("switchboard: closed")

// How a connection ended, as Conn.Err tells it, beyond ErrClosed (this
// end closed it). Each of the first two also matches ErrNodeGone, so code
// written before them still sees the node go; an eviction matches
// ErrNodeGone and the code the node gave (ErrSlowConsumer, ErrProtocol).
var (
	// ErrNodeShutdown: the node shut down, and said so (its Goodbye):
	// a restarted node may take the connection again.
	ErrNodeShutdown = errors.New("switchboard: node shut down")
	// ErrNodeLost: the connection's socket ended without a word from the
	// node: it died, was killed, or the socket failed.
	ErrNodeLost = errors.New("switchboard: node lost")
	// ErrNodeNotReady: Dial found no node listening on the socket (no
	// socket file, or one nobody accepts on, ENOENT or ECONNREFUSED; or a
	// full backlog, EAGAIN). It is worth retrying; see WithWaitForNode.
	// The error also matches the system's (fs.ErrNotExist,
	// syscall.ECONNREFUSED).
	ErrNodeNotReady = errors.New("switchboard: node not ready")
)

// codeError returns the error for a wire code and reason (nil for OK).
func codeError(code pb.Code, reason string) error {
	if code == pb.Code_CODE_OK {
		return nil
	}
	return &Error{Code: Code(code), Reason: reason}
}

// replyError turns a reply's code and text into the caller's error: the
// context's errors for a deadline or a cancellation the other end saw
// first, else an *Error.
func replyError(code pb.Code, text string) error {
	switch code {
	case pb.Code_CODE_DEADLINE_EXCEEDED:
		return context.DeadlineExceeded
	case pb.Code_CODE_CANCELED:
		return context.Canceled
	}
	return codeError(code, text)
}

// wireError turns an error into a wire code and text: an *Error keeps
// its code and reason, the context's errors become their codes, and any
// other error is a handler error with its text.
func wireError(err error) (pb.Code, string) {
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return pb.Code_CODE_DEADLINE_EXCEEDED, ""
	case errors.Is(err, context.Canceled):
		return pb.Code_CODE_CANCELED, ""
	}
	var e *Error
	if errors.As(err, &e) && e.Code != CodeOK {
		return pb.Code(e.Code), e.Reason
	}
	return pb.Code_CODE_HANDLER_ERROR, err.Error()
}

// wrapErr is the package's error for what failed because of err: its
// text, "switchboard: WHAT: ERR", gives err's own text without the
// "switchboard: " that the package's errors start with (said once is
// enough); it matches err and also.
func wrapErr(what string, err error, also ...error) error {
	return &endError{text: "switchboard: " + what + ": " + strings.TrimPrefix(err.Error(), "switchboard: "), errs: append([]error{err}, also...)}
}
