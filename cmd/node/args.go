package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"regexp"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/switchboard-ipc/switchboard"
	"golang.org/x/sys/unix"
)

// newFlagSet returns a flag set for a subcommand whose help is the given
// text (ending in "flags:\n") followed by the flags.
func newFlagSet(name, help string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), help)
		fs.PrintDefaults()
	}
	return fs
}

// parseFlags parses args; ok is false when the command should exit with
// code: 0 after -h or --help (the help goes to stdout, so that it pages),
// 2 after a bad flag or flag value (one line on stderr: what was wrong,
// and where the flags are listed). Under std.describe it hands over the
// flag set and parses nothing.
func parseFlags(fs *flag.FlagSet, args []string, std stdio) (code int, ok bool) {
	if std.describe != nil {
		std.describe(fs)
		return exitOK, false
	}
	var buf bytes.Buffer
	fs.SetOutput(&buf)
	err := fs.Parse(args)
	fs.SetOutput(std.stderr)
	switch {
	case errors.Is(err, flag.ErrHelp):
		fs.SetOutput(std.stdout)
		fs.Usage()
		return exitOK, false
	case err != nil:
		fmt.Fprintf(std.stderr, "%s %s: %s (%s %s --help lists the flags)\n", prog, fs.Name(), flagError(err), prog, fs.Name())
		return exitUsage, false
	}
	return 0, true
}

// flagError words the flag package's errors as the flags are written
// here: "unknown flag --bogus", not "flag provided but not defined: -bogus".
func flagError(err error) string {
	msg := err.Error()
	if name, ok := strings.CutPrefix(msg, "flag provided but not defined: -"); ok {
		return "unknown flag --" + name
	}
	return flagName.ReplaceAllString(msg, "$1 --$2")
}

var flagName = regexp.MustCompile(`(flag|for|argument:) -([A-Za-z0-9][A-Za-z0-9-]*)`)

// parseArgs is parseFlags for commands with arguments: flags may come
// before, between or after them (`switchboard publish chat hi --want-answer`);
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
		p, err := os.ReadFile(arg[1:])
		if pe := (*os.PathError)(nil); errors.As(err, &pe) {
			return nil, fmt.Errorf("cannot read the payload file %s: %v", arg[1:], pe.Err)
		}
		return p, err
	}
	return []byte(arg), nil
}

// fits checks, once connected, that a payload is no larger than the
// node's largest message (c.MaxMessage, which the node announced when c
// connected). Too large is a bad command line, not a failed operation:
// it says so in a line and the command exits 2 before sending anything.
func fits(std stdio, c *switchboard.Conn, payload []byte) (code int, ok bool) {
	if max := c.MaxMessage(); len(payload) > max {
		fmt.Fprintf(std.stderr, "%s: the payload is %d bytes; the node takes at most %d (its max_message)\n", prog, len(payload), max)
		return exitUsage, false
	}
	return exitOK, true
}

// failed reports an operation's error and returns its exit code: 3 if
// the node went away, 1 for anything else (refused, undeliverable, peer
// gone, timed out).
func failed(std stdio, err error) int {
	fmt.Fprintf(std.stderr, "%s: %s\n", prog, errText(err))
	if errors.Is(err, switchboard.ErrNodeGone) || errors.Is(err, switchboard.ErrClosed) {
		return exitUnavail
	}
	return exitFailure
}

// errText is err for a line of prog's: the library's errors start with
// "switchboard: ", which the line has already.
func errText(err error) string {
	return clean(strings.TrimPrefix(err.Error(), "switchboard: "))
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

// connect dials the node with ctx bounded by the command's timeout; on
// failure it says why and returns the exit code: 1 if the node refused,
// 3 if there is no node.
func (f *clientFlags) connect(ctx context.Context, std stdio, opts ...switchboard.DialOption) (*switchboard.Conn, int) {
	dctx, cancel := context.WithTimeout(ctx, f.timeout)
	defer cancel()
	opts = append([]switchboard.DialOption{switchboard.WithSocket(f.socket), switchboard.WithClientName(prog)}, opts...)
	c, err := switchboard.Dial(dctx, opts...)
	if err != nil {
		fmt.Fprintf(std.stderr, "%s: %s\n", prog, errText(err))
		if errors.Is(err, switchboard.ErrRefused) {
			return nil, exitFailure
		}
		return nil, exitUnavail
	}
	return c, exitOK
}

// isTTY reports whether w is a terminal: tcgetattr succeeds on it. (A
// character device is not enough: /dev/null is one.)
func isTTY(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

// announceServing reports whether serve says where it listens in a plain
// line on standard error: when a person watches it (tty) and the log
// would not say so (its level is above info, the default warn) in text
// (a JSON log stays JSON lines). Under systemd standard error is the
// journal, not a terminal, and the info log line says it at the level
// the unit sets.
func announceServing(tty bool, logFormat string, level slog.Level) bool {
	return tty && logFormat == "text" && level > slog.LevelInfo
}
