package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/switchboard-ipc/switchboard"
)

// parseArgs is parseFlags for commands with arguments: flags may come
// before, between or after them (`node publish chat hi --want-answer`);
// "--" ends the flags. It returns the arguments in order.
func parseArgs(fs *flag.FlagSet, args []string, std stdio) (rest []string, code int, ok bool) {
	for {
		if code, ok := parseFlags(fs, args, std); !ok {
			return nil, code, false
		}
		left := fs.Args()
		if used := args[:len(args)-len(left)]; len(used) > 0 && used[len(used)-1] == "--" {
			return append(rest, left...), exitOK, true
		}
		if len(left) == 0 {
			return rest, exitOK, true
		}
		rest = append(rest, left[0])
		args = left[1:]
	}
}

// readPayload reads a message payload given as text, @FILE or - (standard
// input).
func readPayload(std stdio, arg string) ([]byte, error) {
	switch {
	case arg == "-":
		return io.ReadAll(std.stdin)
	case strings.HasPrefix(arg, "@"):
		return os.ReadFile(arg[1:])
	}
	return []byte(arg), nil
}

// failed reports an operation's error and returns its exit code: 3 if
// the node went away, 1 for anything else (refused, undeliverable, peer
// gone, timed out).
func failed(std stdio, err error) int {
	fmt.Fprintf(std.stderr, "node: %v\n", err)
	if errors.Is(err, switchboard.ErrNodeGone) || errors.Is(err, switchboard.ErrClosed) {
		return exitUnavail
	}
	return exitFailure
}

// payloadText is a payload as one line: the text if it is printable
// UTF-8, else its first bytes in hex and its length.
func payloadText(p []byte) string {
	if printable(p) {
		return string(p)
	}
	const max = 32
	if len(p) > max {
		return fmt.Sprintf("hex:%x… (%d bytes)", p[:max], len(p))
	}
	return fmt.Sprintf("hex:%x (%d bytes)", p, len(p))
}

func printable(p []byte) bool {
	if !utf8.Valid(p) {
		return false
	}
	for _, r := range string(p) {
		if !unicode.IsPrint(r) && r != '\t' {
			return false
		}
	}
	return true
}

// connect dials with ctx bounded by the command's timeout and reports a
// failure like dial does.
func (f *clientFlags) connect(ctx context.Context, std stdio, opts ...switchboard.DialOption) (*switchboard.Conn, int) {
	dctx, cancel := context.WithTimeout(ctx, f.timeout)
	defer cancel()
	opts = append([]switchboard.DialOption{switchboard.WithSocket(f.socket), switchboard.WithClientName("node-cli")}, opts...)
	c, err := switchboard.Dial(dctx, opts...)
	if err != nil {
		fmt.Fprintf(std.stderr, "node: %v\n", err)
		if errors.Is(err, switchboard.ErrRefused) {
			return nil, exitFailure
		}
		return nil, exitUnavail
	}
	return c, exitOK
}
