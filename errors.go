package switchboard

import (
	"context"
	"errors"

	"github.com/switchboard-ipc/switchboard/actors/conn"
	pb "github.com/switchboard-ipc/switchboard/proto"
)

// Errors a caller can test for with errors.Is. Each compares by its wire
// code, so an error from the node with a reason attached still matches.
var (
	// ErrRefused: the node refused the connection (credentials, policy) or
	// the service refused the caller. The error's text has the reason.
	ErrRefused error = &pb.Error{Code: pb.Code_CODE_REFUSED}
	// ErrNotAuthentic: the process serving the socket is not running as the
	// expected user (see WithNodeUID).
	ErrNotAuthentic error = &pb.Error{Code: pb.Code_CODE_NOT_AUTHENTIC}
	// ErrTooLarge: the message exceeds the negotiated maximum. Nothing was
	// sent; the connection is still usable.
	ErrTooLarge error = &pb.Error{Code: pb.Code_CODE_TOO_LARGE}
	// ErrUnknownService: no handler serves the service.
	ErrUnknownService error = &pb.Error{Code: pb.Code_CODE_UNKNOWN_SERVICE}
	// ErrUnknownCommand: the service does not know the command.
	ErrUnknownCommand error = &pb.Error{Code: pb.Code_CODE_UNKNOWN_COMMAND}
	// ErrNodeGone: the node closed the connection, shut down or died.
	ErrNodeGone error = &pb.Error{Code: pb.Code_CODE_NODE_SHUTTING_DOWN}
	// ErrInternal: the handler panicked, or the node failed serving the call.
	ErrInternal error = &pb.Error{Code: pb.Code_CODE_INTERNAL}
	// ErrHandler: the handler returned an error; the text is its message.
	ErrHandler error = &pb.Error{Code: pb.Code_CODE_HANDLER_ERROR}
	// ErrVersionMismatch: the node and the client speak different protocol versions.
	ErrVersionMismatch error = &pb.Error{Code: pb.Code_CODE_VERSION_MISMATCH}
	// ErrProtocol: the peer broke the protocol.
	ErrProtocol error = &pb.Error{Code: pb.Code_CODE_PROTOCOL_VIOLATION}
	// ErrSlowConsumer: the node disconnected this client for not reading its events.
	ErrSlowConsumer error = &pb.Error{Code: pb.Code_CODE_SLOW_CONSUMER}
	// ErrUndeliverable: a request, or a message sent with WantAnswer, found
	// no recipient (unknown address, unowned name, empty group).
	ErrUndeliverable error = &pb.Error{Code: pb.Code_CODE_UNDELIVERABLE}
	// ErrPeerGone: the peer of a request disconnected before it replied.
	ErrPeerGone error = &pb.Error{Code: pb.Code_CODE_PEER_GONE}
	// ErrTooManyPending: the connection already waits for as many replies
	// from peers as the node allows (see WithMaxPending).
	ErrTooManyPending error = &pb.Error{Code: pb.Code_CODE_TOO_MANY_PENDING}
	// ErrInvalidArgument: a malformed group, name or address.
	ErrInvalidArgument error = &pb.Error{Code: pb.Code_CODE_INVALID_ARGUMENT}
)

// ErrClosed is returned by a Conn or Node used after Close.
var ErrClosed = errors.New("switchboard: closed")

// codeError returns the error for a wire code and reason.
func codeError(code pb.Code, reason string) error { return code.Err(reason) }

// replyError turns a reply's code and text into the caller's error.
func replyError(code pb.Code, text string) error {
	switch code {
	case pb.Code_CODE_DEADLINE_EXCEEDED: // the handler saw the deadline first
		return context.DeadlineExceeded
	case pb.Code_CODE_CANCELED:
		return context.Canceled
	}
	return codeError(code, text)
}

// result turns a handler's return values into a wire result.
func result(payload []byte, err error) conn.Result {
	if err == nil {
		return conn.Result{Payload: payload}
	}
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return conn.Result{Code: pb.Code_CODE_DEADLINE_EXCEEDED}
	case errors.Is(err, context.Canceled):
		return conn.Result{Code: pb.Code_CODE_CANCELED}
	}
	var pe *pb.Error
	if errors.As(err, &pe) {
		return conn.Result{Code: pe.Code, Payload: []byte(pe.Reason)}
	}
	return conn.Result{Code: pb.Code_CODE_HANDLER_ERROR, Payload: []byte(err.Error())}
}
