package main

import (
	"bytes"
	"flag"
	"slices"
	"testing"

	"github.com/switchboard-ipc/switchboard"
)

func TestParseArgsInterspersed(t *testing.T) {
	for _, tc := range []struct {
		args []string
		rest []string
		n    int
		b    bool
	}{
		{[]string{"chat", "hi", "--want", "--n", "3"}, []string{"chat", "hi"}, 3, false},
		{[]string{"--n=2", "chat", "-b", "x"}, []string{"chat", "x"}, 2, true},
		{[]string{"chat", "--", "--n", "-"}, []string{"chat", "--n", "-"}, 0, false},
		{[]string{"-", "@f"}, []string{"-", "@f"}, 0, false},
		{nil, nil, 0, false},
	} {
		fs := flag.NewFlagSet("t", flag.ContinueOnError)
		n := fs.Int("n", 0, "")
		b := fs.Bool("b", false, "")
		fs.Bool("want", false, "")
		var out, errb bytes.Buffer
		rest, code, ok := parseArgs(fs, tc.args, stdio{stdout: &out, stderr: &errb})
		if !ok || code != 0 || !slices.Equal(rest, tc.rest) || *n != tc.n || *b != tc.b {
			t.Errorf("%q: rest %q n %d b %v (ok %v code %d %s); want %q %d %v", tc.args, rest, *n, *b, ok, code, errb.String(), tc.rest, tc.n, tc.b)
		}
	}
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	var errb bytes.Buffer
	if _, code, ok := parseArgs(fs, []string{"chat", "--bogus"}, stdio{stdout: &errb, stderr: &errb}); ok || code != exitUsage {
		t.Errorf("unknown flag after an argument: ok %v code %d", ok, code)
	}
}

func TestPayloadText(t *testing.T) {
	for in, want := range map[string]string{
		"hello, chat":            "hello, chat",
		"tab\tok":                "tab\tok",
		"":                       "",
		"héllo":                  "héllo",
		"two\nlines":             "hex:74776f0a6c696e6573 (9 bytes)",
		"\x00\x01\x02\xff":       "hex:000102ff (4 bytes)",
		string(make([]byte, 40)): "hex:" + string(bytes.Repeat([]byte("00"), 32)) + "… (40 bytes)",
	} {
		if got := payloadText([]byte(in)); got != want {
			t.Errorf("payloadText(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestNoticeText(t *testing.T) {
	m := switchboard.Member{Address: ":n1.mx2z3pcd1ldw.4", ClientName: "app", Cred: switchboard.Cred{PID: 99, UID: 1000}}
	for _, tc := range []struct {
		n    switchboard.Notice
		want string
	}{
		{switchboard.Notice{Kind: switchboard.NoticeConnected, Member: m}, "connected :n1.mx2z3pcd1ldw.4 (app) pid 99 uid 1000"},
		{switchboard.Notice{Kind: switchboard.NoticeDisconnected, Member: m, Reason: switchboard.DisconnectEvicted}, "disconnected :n1.mx2z3pcd1ldw.4 (app): evicted"},
		{switchboard.Notice{Kind: switchboard.NoticeSubscribed, Member: m, Group: "chat"}, ":n1.mx2z3pcd1ldw.4 (app) subscribed to chat"},
		{switchboard.Notice{Kind: switchboard.NoticeUnsubscribed, Member: m, Group: "chat", Reason: switchboard.DisconnectLost}, ":n1.mx2z3pcd1ldw.4 (app) unsubscribed from chat: lost"},
		{switchboard.Notice{Kind: switchboard.NoticeNameOwnerChanged, Name: "svc", NewOwner: ":n1.mx2z3pcd1ldw.4"}, "name svc: owner nobody -> :n1.mx2z3pcd1ldw.4"},
	} {
		if got := noticeText(tc.n); got != tc.want {
			t.Errorf("noticeText = %q, want %q", got, tc.want)
		}
	}
}
