package main

import (
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"golang.org/x/sys/unix"
)

// Output rules. On a terminal, tables are fitted to its width (cells
// ellipsized with "…", as busctl does; the least useful columns of a wide
// table left out when even that is not enough) and binary payloads are
// shown as a hex dump. Piped, tables are complete and payloads are the
// raw bytes. SWITCHBOARD_TTY=1 (or 0) says stdout is (or is not) a
// terminal whatever it is; COLUMNS gives the width, else the terminal's.

// terminal reports whether stdout is to be treated as a terminal.
func terminal(std stdio) bool {
	switch os.Getenv("SWITCHBOARD_TTY") {
	case "1":
		return true
	case "0":
		return false
	}
	f, ok := std.stdout.(*os.File)
	return ok && isTerminal(f)
}

// termWidth is the width tables fit into: 0 (no limit) when stdout is not
// a terminal; else $COLUMNS, the terminal's width, or 80.
func termWidth(std stdio) int {
	if !terminal(std) {
		return 0
	}
	if n, err := strconv.Atoi(os.Getenv("COLUMNS")); err == nil && n > 0 {
		return n
	}
	if f, ok := std.stdout.(*os.File); ok {
		if ws, err := unix.IoctlGetWinsize(int(f.Fd()), unix.TIOCGWINSZ); err == nil && ws.Col > 0 {
			return int(ws.Col)
		}
	}
	return 80
}

// widthFlag registers --width: -1 (the default) means termWidth.
type widthFlag struct{ n int }

func (w *widthFlag) register(fs *flag.FlagSet) {
	w.n = -1
	fs.Var(w, "width", "fit tables into `N` columns, 0 for no limit (default: the terminal's width; no limit when piped)")
}

// String and Set make widthFlag a flag.Value: --width takes no negative
// number (-1, the default, is not one to give).
func (w *widthFlag) String() string {
	if w == nil {
		return "-1"
	}
	return strconv.Itoa(w.n)
}

func (w *widthFlag) Set(s string) error {
	n, err := strconv.Atoi(s)
	switch {
	case err != nil:
		return errors.New("not a number")
	case n < 0:
		return errors.New("must not be negative")
	}
	w.n = n
	return nil
}

func (w *widthFlag) get(std stdio) int {
	if w.n >= 0 {
		return w.n
	}
	return termWidth(std)
}

// column describes a table column. min > 0 lets the column be
// ellipsized down to min characters; drop > 0 lets it be left out on a
// narrow terminal, the highest first.
type column struct {
	name string
	min  int
	drop int
}

// table is rows of cells under a header (printed unless noHeader).
type table struct {
	cols     []column
	rows     [][]string
	noHeader bool
	note     string // printed alone, instead of the table (a listing with nothing to tabulate)
}

// add adds a row; its cells are cleaned (see clean): what a table shows
// comes from the node and its clients.
func (t *table) add(cells ...string) {
	row := make([]string, len(cells))
	for i, c := range cells {
		row[i] = clean(c)
	}
	t.rows = append(t.rows, row)
}

func runeLen(s string) int { return utf8.RuneCountInString(s) }

// ellipsize cuts s to w characters, the last one "…".
func ellipsize(s string, w int) string {
	if runeLen(s) <= w {
		return s
	}
	if w <= 0 {
		return ""
	}
	r := []rune(s)
	return string(r[:w-1]) + "…"
}

// write prints the table fitted into width characters (0: no limit):
// columns two spaces apart, the last one unpadded.
func (t *table) write(w io.Writer, width int) {
	if t.note != "" {
		fmt.Fprintln(w, t.note)
		return
	}
	n := len(t.cols)
	widths := make([]int, n)
	show := make([]bool, n)
	for i, c := range t.cols {
		show[i] = true
		if !t.noHeader {
			widths[i] = runeLen(c.name)
		}
		for _, r := range t.rows {
			if i < len(r) {
				widths[i] = max(widths[i], runeLen(r[i]))
			}
		}
	}
	least := func(i int) int { // the narrowest column i may become
		if m := t.cols[i].min; m > 0 {
			return min(widths[i], m)
		}
		return widths[i]
	}
	total := func(f func(int) int) int {
		sum, shown := 0, 0
		for i := range n {
			if show[i] {
				sum += f(i)
				shown++
			}
		}
		return sum + 2*max(shown-1, 0)
	}
	if width > 0 {
		for total(least) > width { // leave out columns until the rest can fit
			drop := -1
			for i, c := range t.cols {
				if show[i] && c.drop > 0 && (drop < 0 || c.drop > t.cols[drop].drop) {
					drop = i
				}
			}
			if drop < 0 {
				break
			}
			show[drop] = false
		}
		for excess := total(func(i int) int { return widths[i] }) - width; excess > 0; excess-- {
			widest := -1 // narrow the widest column that may shrink, one character at a time
			for i := range n {
				if show[i] && widths[i] > least(i) && (widest < 0 || widths[i] > widths[widest]) {
					widest = i
				}
			}
			if widest < 0 {
				break
			}
			widths[widest]--
		}
	}
	line := func(cells []string) {
		var b strings.Builder
		last := -1
		for i := range n {
			if show[i] {
				last = i
			}
		}
		for i := range n {
			if !show[i] {
				continue
			}
			cell := ""
			if i < len(cells) {
				cell = ellipsize(cells[i], widths[i])
			}
			b.WriteString(cell)
			if i != last {
				b.WriteString(strings.Repeat(" ", widths[i]-runeLen(cell)+2))
			}
		}
		fmt.Fprintln(w, b.String())
	}
	if !t.noHeader {
		names := make([]string, n)
		for i, c := range t.cols {
			names[i] = c.name
		}
		line(names)
	}
	for _, r := range t.rows {
		line(r)
	}
}

// isText reports whether p reads as text: UTF-8, printable, with tabs
// and line ends.
func isText(p []byte) bool {
	if !utf8.Valid(p) {
		return false
	}
	for _, r := range string(p) {
		if !unicode.IsPrint(r) && r != '\t' && r != '\n' && r != '\r' {
			return false
		}
	}
	return true
}

// outputFlag is --output for a payload: auto, raw, hex or text.
type outputFlag struct{ mode string }

func (o *outputFlag) register(fs *flag.FlagSet) {
	fs.StringVar(&o.mode, "output", "auto", "how to print the payload: `raw` bytes, hex (a dump, like hexdump -C), text (escaped), auto (a terminal: text, or hex if binary; piped: raw)")
}

func (o *outputFlag) valid() bool {
	switch o.mode {
	case "auto", "raw", "hex", "text":
		return true
	}
	return false
}

// writePayload prints a reply's payload as --output says.
func writePayload(std stdio, p []byte, mode string) {
	if mode == "auto" {
		switch {
		case !terminal(std):
			mode = "raw"
		case isText(p):
			mode = "text"
		default:
			mode = "hex"
		}
	}
	switch mode {
	case "raw":
		std.stdout.Write(p)
	case "hex":
		io.WriteString(std.stdout, hex.Dump(p))
	case "text":
		s := escapeText(p)
		if s != "" && !strings.HasSuffix(s, "\n") {
			s += "\n"
		}
		io.WriteString(std.stdout, s)
	}
}

// escapeText is p with what is not text written as Go escapes (\x00).
func escapeText(p []byte) string {
	return escape(p, func(r rune) bool { return unicode.IsPrint(r) || r == '\t' || r == '\n' || r == '\r' })
}

// clean is s made safe to print on the operator's terminal: control
// characters (escape sequences, line ends, bidirectional overrides) and
// bytes that are not UTF-8 written as Go escapes (\x1b, \n, \u202e),
// printable Unicode as it is. Every string that came from the node or a
// client (client names, groups, names, addresses, services, errors) is
// cleaned before it is printed as text; JSON is escaped by encoding/json.
func clean(s string) string {
	safe := true
	for _, r := range s {
		if !unicode.IsPrint(r) || r == utf8.RuneError {
			safe = false
			break
		}
	}
	if safe {
		return s
	}
	return escape([]byte(s), unicode.IsPrint)
}

// escape is p with the runes keep refuses, and bytes that are not UTF-8,
// written as Go escapes.
func escape(p []byte, keep func(rune) bool) string {
	var b strings.Builder
	for len(p) > 0 {
		r, size := utf8.DecodeRune(p)
		switch {
		case r == utf8.RuneError && size <= 1:
			fmt.Fprintf(&b, `\x%02x`, p[0])
		case keep(r):
			b.WriteRune(r)
		default:
			q := strconv.QuoteRuneToASCII(r)
			b.WriteString(q[1 : len(q)-1])
		}
		p = p[size:]
	}
	return b.String()
}

// payloadJSON is a payload in the JSON the commands print: its size, its
// bytes in base64, and its text when it is text.
type payloadJSON struct {
	Size    int    `json:"size"`
	Payload []byte `json:"payload"`
	Text    string `json:"text,omitempty"`
}

func payloadOf(p []byte) payloadJSON {
	pj := payloadJSON{Size: len(p), Payload: p}
	if pj.Payload == nil {
		pj.Payload = []byte{}
	}
	if utf8.Valid(p) {
		pj.Text = string(p)
	}
	return pj
}
