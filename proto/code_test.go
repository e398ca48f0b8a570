package pb

import (
	"errors"
	"fmt"
	"testing"
)

func TestCodeErr(t *testing.T) {
	tests := []struct {
		name   string
		err    error // under test
		target error
		is     bool
		text   string // want err.Error()
	}{
		{
			name:   "same code, same reason",
			err:    Code_CODE_UNKNOWN_SERVICE.Err(`no service "kv"`),
			target: Code_CODE_UNKNOWN_SERVICE.Err(`no service "kv"`),
			is:     true,
			text:   `switchboard: unknown service: no service "kv"`,
		},
		{
			name:   "same code, other reason",
			err:    Code_CODE_CANCELED.Err("client went away"),
			target: Code_CODE_CANCELED.Err(""),
			is:     true,
			text:   "switchboard: canceled: client went away",
		},
		{
			name:   "same text, other code",
			err:    &Error{Code: Code_CODE_REFUSED, Reason: "x"},
			target: errors.New("switchboard: refused: x"),
			is:     false,
			text:   "switchboard: refused: x",
		},
		{
			name:   "other code, same reason",
			err:    Code_CODE_DEADLINE_EXCEEDED.Err("slow"),
			target: Code_CODE_CANCELED.Err("slow"),
			is:     false,
			text:   "switchboard: deadline exceeded: slow",
		},
		{
			name:   "wrapped",
			err:    fmt.Errorf("call kv.get: %w", Code_CODE_NODE_SHUTTING_DOWN.Err("")),
			target: Code_CODE_NODE_SHUTTING_DOWN.Err("draining"),
			is:     true,
			text:   "call kv.get: switchboard: node shutting down",
		},
		{
			name:   "nil target",
			err:    Code_CODE_INTERNAL.Err("panic"),
			target: nil,
			is:     false,
			text:   "switchboard: internal: panic",
		},
		{
			name:   "typed nil target",
			err:    Code_CODE_INTERNAL.Err(""),
			target: (*Error)(nil),
			is:     false,
			text:   "switchboard: internal",
		},
		{
			name:   "unknown code",
			err:    Code(99).Err("from a newer node"),
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

func TestCodeErrOK(t *testing.T) {
	if err := Code_CODE_OK.Err("ignored"); err != nil {
		t.Fatalf("CODE_OK.Err = %#v, want nil", err)
	}
}

// TestCodeNames checks that every code has a readable name, so no code's
// error text falls back to "code N".
func TestCodeNames(t *testing.T) {
	for v, name := range Code_name {
		c := Code(v)
		if c == Code_CODE_OK {
			continue
		}
		want := "switchboard: "
		if got := c.Err("").Error(); got == want+"code "+fmt.Sprint(v) || got == want {
			t.Errorf("%s: error text %q has no readable name", name, got)
		}
	}
}
