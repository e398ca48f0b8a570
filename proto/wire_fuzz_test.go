package pb

import (
	"bytes"
	"testing"

	"github.com/switchboard-ipc/switchboard/shm"
	"google.golang.org/protobuf/proto"
)

// FuzzControlFrame feeds arbitrary bytes to the node's control-frame
// reader: it must fail cleanly, never panic.
func FuzzControlFrame(f *testing.F) {
	hello, _ := proto.Marshal(&Control{Msg: &Control_Hello{Hello: &Hello{ProtocolVersion: 1, ClientName: "x"}}})
	f.Add(shm.AppendFrame(nil, shm.Header{Kind: KindControl}, hello))
	f.Add(shm.AppendFrame(nil, shm.Header{Kind: KindCall}, hello))
	f.Add([]byte{})
	f.Add(make([]byte, 24))
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) < shm.HeaderSize {
			return
		}
		m, err := finishControl(bytes.NewReader(b[shm.HeaderSize:]), b[:shm.HeaderSize])
		if err == nil && m == nil {
			t.Fatal("nil message without error")
		}
	})
}

// FuzzDecodeMsg: the client's decoding of bus message bodies from shared
// memory never panics and never returns more than it was given.
func FuzzDecodeMsg(f *testing.F) {
	f.Add([]byte("\x05:n1.1\x01gpayload"), true)
	f.Add([]byte{}, false)
	f.Add([]byte("\xff"), false)
	f.Fuzz(func(t *testing.T, b []byte, request bool) {
		from, to, h, p, err := DecodeMsg(b, request)
		if err != nil {
			return
		}
		if n := len(from) + len(to) + len(h) + len(p) + 2; n != len(b) {
			t.Fatalf("parts add up to %d of %d bytes", n, len(b))
		}
		if request && len(h) != ReplyHandleSize {
			t.Fatalf("handle of %d bytes", len(h))
		}
		dest, rest, err := CutDest(b)
		if err == nil && len(dest)+len(rest)+1 != len(b) {
			t.Fatal("CutDest lost bytes")
		}
	})
}
