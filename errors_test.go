package switchboard

import (
	"context"
	"errors"
	"fmt"
	"testing"

	pb "github.com/switchboard-ipc/switchboard/proto"
)

func TestError(t *testing.T) {
	tests := []struct {
		name   string
		err    error // under test
		target error
		is     bool
		text   string // want err.Error()
	}{
		{
			name:   "same code, same reason",
			err:    codeError(pb.Code_CODE_UNKNOWN_SERVICE, `no service "kv"`),
			target: codeError(pb.Code_CODE_UNKNOWN_SERVICE, `no service "kv"`),
			is:     true,
			text:   `switchboard: unknown service: no service "kv"`,
		},
		{
			name:   "a reason that only repeats the code",
			err:    codeError(pb.Code_CODE_NODE_SHUTTING_DOWN, CodeNodeGone.String()),
			target: codeError(pb.Code_CODE_NODE_SHUTTING_DOWN, ""),
			is:     true,
			text:   "switchboard: " + CodeNodeGone.String(),
		},
		{
			name:   "same code, other reason",
			err:    codeError(pb.Code_CODE_CANCELED, "client went away"),
			target: codeError(pb.Code_CODE_CANCELED, ""),
			is:     true,
			text:   "switchboard: canceled: client went away",
		},
		{
			name:   "same text, other code",
			err:    &Error{Code: CodeRefused, Reason: "x"},
			target: errors.New("switchboard: refused: x"),
			is:     false,
			text:   "switchboard: refused: x",
		},
		{
			name:   "other code, same reason",
			err:    codeError(pb.Code_CODE_DEADLINE_EXCEEDED, "slow"),
			target: codeError(pb.Code_CODE_CANCELED, "slow"),
			is:     false,
			text:   "switchboard: deadline exceeded: slow",
		},
		{
			name:   "wrapped",
			err:    fmt.Errorf("call kv.get: %w", codeError(pb.Code_CODE_NODE_SHUTTING_DOWN, "")),
			target: codeError(pb.Code_CODE_NODE_SHUTTING_DOWN, "draining"),
			is:     true,
			text:   "call kv.get: switchboard: node shutting down",
		},
		{
			name:   "nil target",
			err:    codeError(pb.Code_CODE_INTERNAL, "panic"),
			target: nil,
			is:     false,
			text:   "switchboard: internal: panic",
		},
		{
			name:   "typed nil target",
			err:    codeError(pb.Code_CODE_INTERNAL, ""),
			target: (*Error)(nil),
			is:     false,
			text:   "switchboard: internal",
		},
		{
			name:   "unknown code",
			err:    codeError(pb.Code(99), "from a newer node"),
			target: &Error{Code: 99},
			is:     true,
			text:   "switchboard: code 99: from a newer node",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := errors.Is(tt.err, tt.target); got != tt.is {
				t.Errorf("errors.Is(%q, %v) = %v, want %v", tt.err, tt.target, got, tt.is)
			}
			if got := tt.err.Error(); got != tt.text {
				t.Errorf("Error() = %q, want %q", got, tt.text)
			}
		})
	}
}

// TestCodeNames checks that every code has a readable name, so no code's
// error text falls back to "code N".
func TestCodeNames(t *testing.T) {
	for v, name := range pb.Code_name {
		if pb.Code(v) == pb.Code_CODE_OK {
			continue
		}
		want := "switchboard: "
		if got := codeError(pb.Code(v), "").Error(); got == want+"code "+fmt.Sprint(v) || got == want {
			t.Errorf("%s: error text %q has no readable name", name, got)
		}
	}
}

func TestCodeErrorOK(t *testing.T) {
	if err := codeError(pb.Code_CODE_OK, "ignored"); err != nil {
		t.Fatalf("codeError(CODE_OK) = %#v, want nil", err)
	}
}

// TestWireErrorRoundTrip: an error crosses the wire and comes back as the
// same sentinel, with its reason; the context's errors stay themselves.
func TestWireErrorRoundTrip(t *testing.T) {
	for _, sentinel := range []error{ErrRefused, ErrNotAuthentic, ErrTooLarge, ErrUnknownService, ErrUnknownCommand,
		ErrNodeGone, ErrInternal, ErrHandler, ErrVersionMismatch, ErrProtocol, ErrSlowConsumer, ErrUndeliverable,
		ErrPeerGone, ErrTooManyPending, ErrInvalidArgument, ErrLimitExceeded} {
		in := fmt.Errorf("while serving: %w", &Error{Code: sentinel.(*Error).Code, Reason: "why"})
		out := replyError(wireError(in))
		var e *Error
		if !errors.Is(out, sentinel) || !errors.As(out, &e) || e.Reason != "why" {
			t.Errorf("%v: came back as %v", sentinel, out)
		}
	}
	for _, ctxErr := range []error{context.Canceled, context.DeadlineExceeded} {
		if out := replyError(wireError(ctxErr)); out != ctxErr {
			t.Errorf("%v: came back as %v", ctxErr, out)
		}
	}
	if code, text := wireError(errors.New("plain")); code != pb.Code_CODE_HANDLER_ERROR || text != "plain" {
		t.Errorf("a plain error goes as %v %q, want a handler error with its text", code, text)
	}
}
