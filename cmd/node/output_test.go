package main

import (
	"bytes"
	"strings"
	"testing"
)

// TestTableFits: a table is complete with no width; at a narrower width
// the shrinkable cells end in "…", never below their minimum, and the
// droppable columns go highest first once ellipsizing is not enough.
func TestTableFits(t *testing.T) {
	mk := func() *table {
		tb := &table{cols: []column{{name: "ADDRESS"}, {name: "DESCRIPTION", min: 5}, {name: "N", drop: 1}, {name: "M", drop: 2}}}
		tb.add(":n1.abc.1", "a rather long description of it", "1", "2")
		tb.add(":n1.abc.22", "short", "3", "4")
		return tb
	}
	render := func(width int) string {
		var b bytes.Buffer
		mk().write(&b, width)
		return b.String()
	}
	full := "ADDRESS     DESCRIPTION                      N  M\n" +
		":n1.abc.1   a rather long description of it  1  2\n" +
		":n1.abc.22  short                            3  4\n"
	if got := render(0); got != full {
		t.Errorf("no limit:\n%s\nwant:\n%s", got, full)
	}
	if got := render(200); got != full {
		t.Errorf("wide:\n%s", got)
	}
	want := "ADDRESS     DESCRIPTION  N  M\n" +
		":n1.abc.1   a rather l…  1  2\n" +
		":n1.abc.22  short        3  4\n"
	if got := render(29); got != want {
		t.Errorf("29 columns:\n%s\nwant:\n%s", got, want)
	}
	// ADDRESS (10) + DESCRIPTION at least 5 + N + M + gaps is 23: at 23
	// the description shrinks to 5; at 20, M goes too.
	want = "ADDRESS     DESC…  N  M\n" +
		":n1.abc.1   a ra…  1  2\n" +
		":n1.abc.22  short  3  4\n"
	if got := render(23); got != want {
		t.Errorf("23 columns:\n%s\nwant:\n%s", got, want)
	}
	want = "ADDRESS     DESC…  N\n" +
		":n1.abc.1   a ra…  1\n" +
		":n1.abc.22  short  3\n"
	if got := render(20); got != want {
		t.Errorf("20 columns:\n%s\nwant:\n%s", got, want)
	}
	for _, line := range strings.Split(strings.TrimSpace(render(20)), "\n") {
		if n := runeLen(line); n > 20 {
			t.Errorf("line %q is %d wide", line, n)
		}
	}
}

func TestEllipsizeAndEscape(t *testing.T) {
	for _, tc := range []struct {
		s    string
		w    int
		want string
	}{{"hello", 5, "hello"}, {"hello", 4, "hel…"}, {"héllo", 3, "hé…"}, {"x", 0, "x"}, {"xy", 1, "…"}} {
		if got := ellipsize(tc.s, tc.w); got != tc.want && !(tc.w == 0 && got == "") {
			t.Errorf("ellipsize(%q, %d) = %q, want %q", tc.s, tc.w, got, tc.want)
		}
	}
	if got := escapeText([]byte("a\x00b\xffc\té\n")); got != `a\x00b\xffc`+"\t"+"é\n" {
		t.Errorf("escapeText: %q", got)
	}
	if !isText([]byte("two\nlines\r\n")) || isText([]byte{0, 1}) || isText([]byte{0xff}) {
		t.Error("isText")
	}
}

func TestClean(t *testing.T) {
	for in, want := range map[string]string{
		"plain.name":               "plain.name",
		"héllo, 世界 …":              "héllo, 世界 …",
		"\x1b]0;pwn\x07evil\nname": `\x1b]0;pwn\aevil\nname`,
		"tab\there\r":              `tab\there\r`,
		"bad\xffutf8":              `bad\xffutf8`,
		"\u202eevil\u009b":         `\u202eevil\u009b`,
		"":                         "",
	} {
		if got := clean(in); got != want {
			t.Errorf("clean(%q) = %q, want %q", in, got, want)
		}
	}
	tb := &table{cols: []column{{name: "A"}}, noHeader: true}
	tb.add("x\x1by")
	var b strings.Builder
	tb.write(&b, 0)
	if b.String() != `x\x1by`+"\n" {
		t.Errorf("table cell printed as %q", b.String())
	}
}
