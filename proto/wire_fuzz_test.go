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

// FuzzDecodeRequest: a request's body with its deadline (FEATURE_PEER_CONTEXT)
// decodes without panicking into parts that add up to it; what decodes
// re-encodes to the same bytes, and loses exactly its deadline when made
// for a client without the feature.
func FuzzDecodeRequest(f *testing.F) {
	handle := bytes.Repeat([]byte{7}, ReplyHandleSize)
	f.Add(AppendRequest(nil, ":n1.1", "svc", handle, 1500000, []byte("payload")))
	f.Add(AppendRequest(nil, "", "", handle, 0, nil))
	f.Add(AppendMsg(nil, ":n1.1", "svc", handle, nil)) // no room for the deadline
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		from, to, h, micros, p, err := DecodeRequest(b)
		if err != nil {
			if _, err := WithoutDeadline(b); err == nil {
				t.Fatal("WithoutDeadline takes what DecodeRequest refuses")
			}
			return
		}
		if n := len(from) + len(to) + len(h) + DeadlineSize + len(p) + 2; n != len(b) {
			t.Fatalf("parts add up to %d of %d bytes", n, len(b))
		}
		if !bytes.Equal(AppendRequest(nil, string(from), string(to), h, micros, p), b) {
			t.Fatal("re-encoding differs")
		}
		old, err := WithoutDeadline(b)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(old, AppendMsg(nil, string(from), string(to), h, p)) {
			t.Fatalf("without deadline: %q", old)
		}
	})
}

// FuzzDecodeCancel: a MsgCancel body decodes only at its exact size, and
// re-encodes to the same bytes.
func FuzzDecodeCancel(f *testing.F) {
	f.Add(AppendCancel(nil, bytes.Repeat([]byte{1}, ReplyHandleSize), Code_CODE_CANCELED))
	f.Add(AppendCancel(nil, make([]byte, ReplyHandleSize), Code(1<<30)))
	f.Add([]byte{})
	f.Add(make([]byte, CancelSize+1))
	f.Fuzz(func(t *testing.T, b []byte) {
		h, why, err := DecodeCancel(b)
		if err != nil {
			if len(b) == CancelSize {
				t.Fatalf("%d bytes refused: %v", len(b), err)
			}
			return
		}
		if !bytes.Equal(AppendCancel(nil, h, why), b) {
			t.Fatal("re-encoding differs")
		}
	})
}
