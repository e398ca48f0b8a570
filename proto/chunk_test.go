package pb

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/switchboard-ipc/switchboard/shm"
)

// chunkRing is the capacity of the rings the chunking tests write to:
// small, so that a message of a few hundred bytes needs several frames.
const chunkRing = shm.MinRingCapacity

// newChunkRing returns the response ring of a local link of rings of the
// given capacity: the node's producer and the client's consumer.
func newChunkRing(t testing.TB, capacity int) (*shm.Producer, *shm.Consumer) {
	t.Helper()
	creator, peer, err := shm.NewLocalLink(ConnRings([3]int{capacity, capacity, capacity}), shm.WithSpin(0))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		creator.Close()
		peer.Close()
	})
	return creator.Producer(RingResponse), peer.Consumer(RingResponse)
}

// repeatParts returns n parts of size bytes each, of distinct contents.
func repeatParts(n, size int) [][]byte {
	parts := make([][]byte, n)
	for i := range parts {
		parts[i] = bytes.Repeat([]byte{byte(i + 1)}, size)
	}
	return parts
}

// seq returns n bytes counting up from start, so that a misplaced byte
// shows.
func seq(start, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(start + i*7 + i/251)
	}
	return b
}

// cloneParts copies parts, the slice and every part, to check later that
// WriteMessage changed neither.
func cloneParts(parts [][]byte) [][]byte {
	c := make([][]byte, len(parts))
	for i, p := range parts {
		c[i] = bytes.Clone(p)
	}
	return c
}

func checkPartsUnchanged(t *testing.T, parts, want [][]byte, ptrs []*byte, lens, caps []int) {
	t.Helper()
	if len(parts) != len(want) {
		t.Fatalf("parts has %d elements, had %d", len(parts), len(want))
	}
	for i := range parts {
		var p *byte
		if cap(parts[i]) > 0 {
			p = &parts[i][:1][0]
		}
		if p != ptrs[i] || len(parts[i]) != lens[i] || cap(parts[i]) != caps[i] {
			t.Fatalf("part %d was resliced: len %d cap %d, was len %d cap %d", i, len(parts[i]), cap(parts[i]), lens[i], caps[i])
		}
		if !bytes.Equal(parts[i], want[i]) {
			t.Fatalf("part %d was modified", i)
		}
	}
}

// partShape records the slice headers of parts.
func partShape(parts [][]byte) (ptrs []*byte, lens, caps []int) {
	for _, p := range parts {
		var ptr *byte
		if cap(p) > 0 {
			ptr = &p[:1][0]
		}
		ptrs, lens, caps = append(ptrs, ptr), append(lens, len(p)), append(caps, cap(p))
	}
	return ptrs, lens, caps
}

// collect reads frames from c until one completes a message in r. It
// returns copies of the frames, the message (its body copied) and whether
// the message's body was a view of the last frame instead of a copy.
func collect(t *testing.T, ctx context.Context, c *shm.Consumer, r *Reassembly) (frames []shm.Frame, msg Message, view bool) {
	t.Helper()
	for {
		f, err := c.Next()
		if err == shm.ErrRingEmpty {
			if err := c.Wait(ctx); err != nil {
				t.Fatalf("waiting for frame %d: %v", len(frames), err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("frame %d: %v", len(frames), err)
		}
		frames = append(frames, shm.Frame{Header: f.Header, Body: bytes.Clone(f.Body)})
		m, whole, err := r.Add(f)
		if err != nil {
			t.Fatalf("Add of frame %d: %v", len(frames)-1, err)
		}
		if !whole {
			if f.Flags&FlagMore == 0 {
				t.Fatalf("frame %d has no FlagMore and did not complete the message", len(frames)-1)
			}
			continue
		}
		view = len(m.Body) > 0 && len(f.Body) > 0 && &m.Body[0] == &f.Body[0]
		m.Body = bytes.Clone(m.Body)
		c.Release()
		return frames, m, view
	}
}

// writeAndCollect writes a message with WriteMessage in a goroutine
// (flushing it after, with batch) while it reads it back, so that a
// message larger than the ring goes through. It checks that nothing follows
// the message in the ring.
func writeAndCollect(t *testing.T, p *shm.Producer, c *shm.Consumer, h shm.Header, batch bool, parts [][]byte) ([]shm.Frame, Message, bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	errc := make(chan error, 1)
	go func() {
		err := WriteMessage(ctx, ctx, p, h, batch, parts...)
		if batch {
			p.Flush()
		}
		errc <- err
	}()
	r := Reassembly{MaxSize: 1 << 30}
	frames, msg, view := collect(t, ctx, c, &r)
	if err := <-errc; err != nil {
		t.Fatalf("WriteMessage: %v", err)
	}
	if f, err := c.Next(); err != shm.ErrRingEmpty {
		t.Fatalf("frame after the message: %+v, %v", f.Header, err)
	}
	if r.Pending(h.ID) {
		t.Fatalf("message %d still pending after its last chunk", h.ID)
	}
	return frames, msg, view
}

// chunkCases are messages, as parts, for the ring of chunkRing bytes
// (MaxBody 488): they seed the fuzzer too.
var chunkCases = []struct {
	name  string
	parts [][]byte
}{
	{"empty", nil},
	{"one empty part", [][]byte{{}}},
	{"one byte", [][]byte{{42}}},
	{"prefix and payload in one frame", [][]byte{seq(0, 16), seq(1, 100)}},
	{"exactly one frame", [][]byte{seq(0, 16), seq(3, 488-16)}},
	{"one byte over a frame", [][]byte{seq(0, 16), seq(3, 488-15)}},
	{"prefix and payload over three frames", [][]byte{seq(0, 16), seq(5, 1000)}},
	{"exactly two frames", [][]byte{seq(0, 2*488)}},
	{"part boundary on the chunk boundary", [][]byte{seq(0, 488), seq(9, 488), seq(4, 10)}},
	{"part boundary one before the chunk boundary", [][]byte{seq(0, 487), seq(9, 2), seq(4, 600)}},
	{"empty parts everywhere", [][]byte{nil, {}, seq(0, 300), {}, nil, seq(1, 300), {}, seq(2, 488), nil}},
	{"many small parts", repeatParts(300, 7)},
	{"single bytes", repeatParts(1000, 1)},
	{"larger than the ring", [][]byte{seq(0, 16), seq(11, 5000)}},
	{"max frame parts", repeatParts(4, 488)},
}

func concat(parts [][]byte) []byte {
	var b []byte
	for _, p := range parts {
		b = append(b, p...)
	}
	return b
}

// checkChunks checks the frames of a message of body bytes written with
// header h to a ring of frames of max bytes at most, and its reassembly.
func checkChunks(t *testing.T, h shm.Header, body []byte, max int, frames []shm.Frame, msg Message, view bool) {
	t.Helper()
	wantFrames := (len(body) + max - 1) / max
	if wantFrames == 0 {
		wantFrames = 1
	}
	if len(frames) != wantFrames {
		t.Fatalf("%d frames for a body of %d bytes (max %d), want %d", len(frames), len(body), max, wantFrames)
	}
	want := h
	want.Flags &^= FlagMore
	off := 0
	for i, f := range frames {
		last := i == len(frames)-1
		if f.Kind != h.Kind || f.ID != h.ID {
			t.Fatalf("frame %d: kind %d id %d, want kind %d id %d", i, f.Kind, f.ID, h.Kind, h.ID)
		}
		if more := f.Flags&FlagMore != 0; more == last {
			t.Fatalf("frame %d of %d: FlagMore %v", i, len(frames), more)
		}
		if f.Flags&^FlagMore != want.Flags {
			t.Fatalf("frame %d: flags %#x, want %#x besides FlagMore", i, f.Flags, want.Flags)
		}
		n := min(max, len(body)-off)
		if !bytes.Equal(f.Body, body[off:off+n]) {
			t.Fatalf("frame %d: body of %d bytes differs from body[%d:%d]", i, len(f.Body), off, off+n)
		}
		off += n
	}
	first := frames[0].Header
	first.Flags &^= FlagMore
	if first != want {
		t.Fatalf("first frame header %+v, want %+v", first, want)
	}
	if msg.Header != want {
		t.Fatalf("message header %+v, want %+v", msg.Header, want)
	}
	if !bytes.Equal(msg.Body, body) {
		t.Fatalf("reassembled body of %d bytes differs from the %d written", len(msg.Body), len(body))
	}
	chunked := len(frames) > 1
	if msg.Owned != chunked {
		t.Fatalf("Owned %v for a message of %d frames", msg.Owned, len(frames))
	}
	if chunked && msg.Since.IsZero() {
		t.Fatal("chunked message without Since")
	}
	if !chunked && (view != (len(body) > 0) || !msg.Since.IsZero()) {
		t.Fatalf("single frame: view %v, Since %v; want a view of the ring and no Since", view, msg.Since)
	}
}

func TestWriteMessageChunks(t *testing.T) {
	for _, tt := range chunkCases {
		for _, batch := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/batch=%v", tt.name, batch), func(t *testing.T) {
				p, c := newChunkRing(t, chunkRing)
				if p.MaxBody() != 488 {
					t.Fatalf("MaxBody %d: the cases assume 488", p.MaxBody())
				}
				h := shm.Header{Kind: KindPeerSend, Flags: FlagWantAnswer | FlagEcho, Service: 3, Command: 4, Aux: 5, ID: 77}
				orig := cloneParts(tt.parts)
				ptrs, lens, caps := partShape(tt.parts)
				frames, msg, view := writeAndCollect(t, p, c, h, batch, tt.parts)
				checkPartsUnchanged(t, tt.parts, orig, ptrs, lens, caps)
				checkChunks(t, h, concat(orig), p.MaxBody(), frames, msg, view)
			})
		}
	}
}

// TestWriteMessageClearsFlagMore: a caller's FlagMore must not turn a
// message of one frame into the first chunk of one that never ends.
func TestWriteMessageClearsFlagMore(t *testing.T) {
	for _, size := range []int{10, 1000} {
		p, c := newChunkRing(t, chunkRing)
		h := shm.Header{Kind: KindCall, Flags: FlagMore | FlagEcho, ID: 9}
		body := seq(0, size)
		frames, msg, view := writeAndCollect(t, p, c, h, false, [][]byte{body})
		checkChunks(t, h, body, p.MaxBody(), frames, msg, view)
	}
}

// TestWriteMessageBatch: with batch, a message of one frame that fits is
// only appended: the consumer sees it at the producer's Flush, together
// with the rest of the batch.
func TestWriteMessageBatch(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	p, c := newChunkRing(t, 4096)
	for i := range 3 {
		h := shm.Header{Kind: KindReply, ID: uint64(i)}
		if err := WriteMessage(ctx, ctx, p, h, true, seq(i, 10), seq(i+1, 20)); err != nil {
			t.Fatal(err)
		}
		if f, err := c.Next(); err != shm.ErrRingEmpty {
			t.Fatalf("message %d visible before Flush: %+v, %v", i, f.Header, err)
		}
	}
	if !p.Buffered() {
		t.Fatal("batch not buffered")
	}
	p.Flush()
	for i := range 3 {
		f, err := c.Next()
		if err != nil || f.ID != uint64(i) || f.Flags&FlagMore != 0 || !bytes.Equal(f.Body, append(seq(i, 10), seq(i+1, 20)...)) {
			t.Fatalf("message %d after Flush: %+v %q, %v", i, f.Header, f.Body, err)
		}
	}
	c.Release()
	// Without batch, a message is visible at once.
	if err := WriteMessage(ctx, ctx, p, shm.Header{Kind: KindReply, ID: 10}, false, seq(0, 5)); err != nil {
		t.Fatal(err)
	}
	if f, err := c.Next(); err != nil || f.ID != 10 {
		t.Fatalf("unbatched message: %+v, %v", f.Header, err)
	}
	c.Release()
	if p.Buffered() {
		t.Fatal("unbatched message left buffered")
	}
	// A chunked message is flushed frame by frame even with batch.
	body := seq(0, 3000)
	if err := WriteMessage(ctx, ctx, p, shm.Header{Kind: KindReply, ID: 11}, true, body); err != nil {
		t.Fatal(err)
	}
	if p.Buffered() {
		t.Fatal("chunked message left buffered")
	}
	r := Reassembly{MaxSize: 1 << 30}
	frames, msg, view := collect(t, ctx, c, &r)
	checkChunks(t, shm.Header{Kind: KindReply, ID: 11}, body, p.MaxBody(), frames, msg, view)
}

// TestWriteMessageBatchFull: with batch, a message of one frame that does
// not fit now is written as without batch: it waits for room and is
// flushed, the batch before it too.
func TestWriteMessageBatchFull(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	p, c := newChunkRing(t, chunkRing)
	// Four appended frames of 256 bytes fill the ring; none is flushed.
	for i := range 4 {
		if err := p.Append(shm.Header{Kind: KindEvent, ID: uint64(i)}, seq(i, 256-shm.HeaderSize)); err != nil {
			t.Fatal(i, err)
		}
	}
	errc := make(chan error, 1)
	go func() { errc <- WriteMessage(ctx, ctx, p, shm.Header{Kind: KindEvent, ID: 4}, true, seq(4, 100)) }()
	// The batch and the message arrive without a Flush by this side.
	for i := range 5 {
		for {
			f, err := c.Next()
			if err == shm.ErrRingEmpty {
				if err := c.Wait(ctx); err != nil {
					t.Fatalf("waiting for frame %d: %v", i, err)
				}
				continue
			}
			if err != nil || f.ID != uint64(i) {
				t.Fatalf("frame %d: %+v, %v", i, f.Header, err)
			}
			if i == 4 && !bytes.Equal(f.Body, seq(4, 100)) {
				t.Fatalf("message body %q", f.Body)
			}
			break
		}
		c.Release()
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if p.Buffered() {
		t.Fatal("message left buffered")
	}
}

// TestWriteMessageContext: the wait for room ends with ctx.
func TestWriteMessageContext(t *testing.T) {
	p, _ := newChunkRing(t, chunkRing)
	for p.TryWrite(shm.Header{Kind: KindReply}, seq(0, 100)) == nil {
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	for _, size := range []int{100, 2000} {
		if err := WriteMessage(ctx, ctx, p, shm.Header{Kind: KindReply, ID: 1}, true, seq(0, size)); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("%d bytes into a full ring: %v", size, err)
		}
	}
}

// TestWriteMessageFinishesWhatItBegan: a context that ends between two
// chunks does not leave half a message in the ring, which the reader would
// hold as in flight for ever: the rest follows once there is room.
func TestWriteMessageFinishesWhatItBegan(t *testing.T) {
	p, c := newChunkRing(t, chunkRing)
	max := p.MaxBody()
	// Room for the first chunk only: a filler takes the rest of the ring.
	filler := chunkRing - shm.FrameSize(max)
	if err := p.TryWrite(shm.Header{Kind: KindReply, ID: 99}, make([]byte, filler-shm.HeaderSize)); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	body := seq(0, 2*max+10)
	done := make(chan error, 1)
	go func() {
		done <- WriteMessage(ctx, context.Background(), p, shm.Header{Kind: KindCall, ID: 1}, false, body)
	}()
	<-ctx.Done() // the deadline passes while the second chunk waits for room
	r := Reassembly{MaxSize: 1 << 30}
	var got []byte
	deadline := time.After(5 * time.Second)
	for got == nil {
		f, err := c.Next()
		if err == shm.ErrRingEmpty {
			c.Release()
			select {
			case <-deadline:
				t.Fatal("the rest of the message never came")
			case <-time.After(time.Millisecond):
			}
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		if f.ID == 99 {
			continue
		}
		m, whole, err := r.Add(f)
		if err != nil {
			t.Fatal(err)
		}
		if whole {
			got = m.Body
		}
	}
	c.Release()
	if err := <-done; err != nil {
		t.Fatalf("WriteMessage: %v", err)
	}
	if !bytes.Equal(got, body) || r.Pending(1) {
		t.Fatalf("reassembled %d bytes (pending %v), want the %d written", len(got), r.Pending(1), len(body))
	}
}

// chunk returns a frame of a chunked message.
func chunk(kind uint16, id uint64, more bool, body string) shm.Frame {
	h := shm.Header{Kind: kind, ID: id}
	if more {
		h.Flags = FlagMore
	}
	return shm.Frame{Header: h, Body: []byte(body)}
}

func TestReassemblySingleFrame(t *testing.T) {
	r := Reassembly{MaxSize: 1 << 30}
	f := shm.Frame{Header: shm.Header{Kind: KindReply, Flags: FlagEcho, Service: 1, Command: 2, Aux: 3, ID: 4}, Body: []byte("whole")}
	m, whole, err := r.Add(f)
	if err != nil || !whole {
		t.Fatalf("Add: whole %v, %v", whole, err)
	}
	if m.Header != f.Header || string(m.Body) != "whole" || m.Owned || !m.Since.IsZero() {
		t.Fatalf("message %+v", m)
	}
	if &m.Body[0] != &f.Body[0] {
		t.Fatal("a message of one frame was copied, want a view")
	}
	if r.Pending(4) {
		t.Fatal("a message of one frame left pending")
	}
}

func TestReassemblyChunks(t *testing.T) {
	r := Reassembly{MaxSize: 1 << 30}
	before := time.Now()
	first := shm.Frame{Header: shm.Header{Kind: KindCall, Flags: FlagMore | FlagWantAnswer, Service: 7, Command: 8, Aux: 9, ID: 5}, Body: []byte("abc")}
	frames := []shm.Frame{
		first,
		{Header: shm.Header{Kind: KindCall, Flags: FlagMore, Aux: 100, ID: 5}, Body: []byte{}},
		{Header: shm.Header{Kind: KindCall, Flags: FlagMore, ID: 5}, Body: []byte("def")},
		{Header: shm.Header{Kind: KindCall, Aux: 200, ID: 5}, Body: []byte("gh")},
	}
	if r.Pending(5) {
		t.Fatal("pending before the first chunk")
	}
	for i, f := range frames[:3] {
		m, whole, err := r.Add(f)
		if err != nil || whole {
			t.Fatalf("chunk %d: %+v, whole %v, %v", i, m, whole, err)
		}
		// Chunks are copied: the ring may reuse their bytes at once.
		for j := range f.Body {
			f.Body[j] = 'X'
		}
		if !r.Pending(5) {
			t.Fatalf("not pending after chunk %d", i)
		}
		if r.Pending(6) {
			t.Fatal("another id pending")
		}
	}
	m, whole, err := r.Add(frames[3])
	if err != nil || !whole {
		t.Fatalf("last chunk: whole %v, %v", whole, err)
	}
	if r.Pending(5) {
		t.Fatal("pending after the last chunk")
	}
	want := first.Header
	want.Flags = FlagWantAnswer
	if m.Header != want {
		t.Fatalf("header %+v, want the first chunk's %+v without FlagMore", m.Header, want)
	}
	if string(m.Body) != "abcdefgh" || !m.Owned {
		t.Fatalf("body %q owned %v", m.Body, m.Owned)
	}
	if m.Since.Before(before) || m.Since.After(time.Now()) {
		t.Fatalf("Since %v not when the first chunk arrived", m.Since)
	}
	// The id is free again: a new message with it starts afresh.
	if _, whole, err := r.Add(chunk(KindSend, 5, true, "new")); err != nil || whole {
		t.Fatalf("reused id: %v, %v", whole, err)
	}
	m, whole, err = r.Add(chunk(KindSend, 5, false, "er"))
	if err != nil || !whole || string(m.Body) != "newer" || m.Kind != KindSend {
		t.Fatalf("reused id: %+v %q, %v, %v", m.Header, m.Body, whole, err)
	}
}

func TestReassemblyLimits(t *testing.T) {
	tests := []struct {
		name   string
		r      Reassembly
		frames []shm.Frame
		err    error // of the last frame; the others succeed
	}{
		{
			name:   "in flight at the limit",
			r:      Reassembly{MaxInFlight: 2, MaxSize: 1 << 20},
			frames: []shm.Frame{chunk(2, 1, true, "a"), chunk(2, 2, true, "b"), chunk(2, 1, true, "c")},
		},
		{
			name:   "in flight over the limit",
			r:      Reassembly{MaxInFlight: 2, MaxSize: 1 << 20},
			frames: []shm.Frame{chunk(2, 1, true, "a"), chunk(2, 2, true, "b"), chunk(2, 3, true, "c")},
			err:    ErrChunksInFlight,
		},
		{
			name:   "a last chunk of a new id over the in-flight limit",
			r:      Reassembly{MaxInFlight: 1, MaxSize: 1 << 20},
			frames: []shm.Frame{chunk(2, 1, true, "a"), chunk(2, 2, false, "b")},
		},
		{
			name:   "room again after a message completes",
			r:      Reassembly{MaxInFlight: 1, MaxSize: 1 << 20},
			frames: []shm.Frame{chunk(2, 1, true, "a"), chunk(2, 1, false, "b"), chunk(2, 2, true, "c")},
		},
		{
			name:   "size at the limit",
			r:      Reassembly{MaxSize: 10},
			frames: []shm.Frame{chunk(2, 1, true, "123456"), chunk(2, 1, true, ""), chunk(2, 1, false, "7890")},
		},
		{
			name:   "size over the limit",
			r:      Reassembly{MaxSize: 10},
			frames: []shm.Frame{chunk(2, 1, true, "123456"), chunk(2, 1, false, "78901")},
			err:    ErrChunkedTooBig,
		},
		{
			name:   "size over the limit in a middle chunk",
			r:      Reassembly{MaxSize: 10},
			frames: []shm.Frame{chunk(2, 1, true, "123456"), chunk(2, 1, true, "78901")},
			err:    ErrChunkedTooBig,
		},
		{
			name:   "first chunk over the limit",
			r:      Reassembly{MaxSize: 10},
			frames: []shm.Frame{chunk(2, 1, true, "12345678901")},
			err:    ErrChunkedTooBig,
		},
		{
			name:   "limits count per message",
			r:      Reassembly{MaxSize: 4},
			frames: []shm.Frame{chunk(2, 1, true, "1234"), chunk(2, 2, true, "1234"), chunk(2, 1, false, ""), chunk(2, 2, false, "")},
		},
		{
			name:   "no size limit set: no chunked message",
			frames: []shm.Frame{chunk(2, 1, true, "a")},
			err:    ErrChunkedTooBig,
		},
		{
			name:   "kind changes in a middle chunk",
			r:      Reassembly{MaxSize: 100},
			frames: []shm.Frame{chunk(2, 1, true, "a"), chunk(3, 1, true, "b")},
			err:    ErrChunkedTooBig,
		},
		{
			name:   "kind changes in the last chunk",
			r:      Reassembly{MaxSize: 100},
			frames: []shm.Frame{chunk(2, 1, true, "a"), chunk(2, 1, true, "b"), chunk(3, 1, false, "c")},
			err:    ErrChunkedTooBig,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := tt.r
			for i, f := range tt.frames {
				_, _, err := r.Add(f)
				last := i == len(tt.frames)-1
				switch {
				case !last && err != nil:
					t.Fatalf("frame %d: %v", i, err)
				case last && !errors.Is(err, tt.err):
					t.Fatalf("last frame: %v, want %v", err, tt.err)
				}
			}
		})
	}
}

// TestReassemblyDefaultInFlight: the zero value takes 64 messages in
// flight, not 65.
func TestReassemblyDefaultInFlight(t *testing.T) {
	r := Reassembly{MaxSize: 1 << 30}
	for id := range uint64(64) {
		if _, _, err := r.Add(chunk(KindCall, id, true, "x")); err != nil {
			t.Fatalf("message %d: %v", id, err)
		}
	}
	if _, _, err := r.Add(chunk(KindCall, 64, true, "x")); !errors.Is(err, ErrChunksInFlight) {
		t.Fatalf("65th message: %v", err)
	}
	for id := range uint64(64) {
		m, whole, err := r.Add(chunk(KindCall, id, false, fmt.Sprint(id)))
		if err != nil || !whole || string(m.Body) != "x"+fmt.Sprint(id) {
			t.Fatalf("message %d: %q, %v, %v", id, m.Body, whole, err)
		}
	}
}

// TestReassemblyInterleaved puts together chunked messages whose chunks
// arrive interleaved, with messages of one frame among them.
func TestReassemblyInterleaved(t *testing.T) {
	r := Reassembly{MaxSize: 1 << 30}
	in := []shm.Frame{
		chunk(KindCall, 1, true, "a1"),
		chunk(KindSend, 2, true, "b1"),
		chunk(KindCall, 3, false, "single"),
		chunk(KindSend, 2, true, "b2"),
		chunk(KindCall, 1, true, "a2"),
		chunk(KindSend, 2, false, "b3"),
		chunk(KindCall, 4, true, "c1"),
		chunk(KindCall, 1, false, "a3"),
		chunk(KindCall, 4, false, "c2"),
	}
	type got struct {
		kind uint16
		id   uint64
		body string
	}
	want := []got{{KindCall, 3, "single"}, {KindSend, 2, "b1b2b3"}, {KindCall, 1, "a1a2a3"}, {KindCall, 4, "c1c2"}}
	var out []got
	for i, f := range in {
		m, whole, err := r.Add(f)
		if err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
		if whole {
			out = append(out, got{m.Kind, m.ID, string(m.Body)})
		}
	}
	if fmt.Sprint(out) != fmt.Sprint(want) {
		t.Fatalf("messages %v, want %v", out, want)
	}
	for id := range uint64(5) {
		if r.Pending(id) {
			t.Fatalf("message %d still pending", id)
		}
	}
}

// FuzzWriteReassemble writes a body as two parts split at a fuzzed point
// through a small ring, which chunks it, and checks the frames and the
// message put back together. The body is cut to two frames, which the
// ring holds whole: one goroutine writes and then reads, so that each
// input covers the same code every time (a reader in a goroutine of its
// own would make the coverage depend on timing, which the fuzzer takes
// for new inputs).
func FuzzWriteReassemble(f *testing.F) {
	for _, tt := range chunkCases {
		body := concat(tt.parts)
		split := 0
		if len(tt.parts) > 0 {
			split = len(tt.parts[0])
		}
		f.Add(body, uint16(split), false)
		f.Add(body, uint16(split), true)
	}
	f.Fuzz(func(t *testing.T, body []byte, split uint16, batch bool) {
		p, c := newChunkRing(t, chunkRing)
		if max := 2 * p.MaxBody(); len(body) > max {
			body = body[:max]
		}
		s := min(int(split), len(body))
		parts := [][]byte{body[:s:s], body[s:]}
		orig := cloneParts(parts)
		h := shm.Header{Kind: KindEvent, Flags: FlagEcho, Service: uint16(split), Aux: uint32(len(body)), ID: uint64(split) << 32}
		if err := WriteMessage(context.Background(), context.Background(), p, h, batch, parts...); err != nil {
			t.Fatal(err)
		}
		if batch {
			p.Flush()
		}
		if !bytes.Equal(parts[0], orig[0]) || !bytes.Equal(parts[1], orig[1]) {
			t.Fatal("parts modified")
		}
		r := Reassembly{MaxSize: 1 << 30}
		var frames []shm.Frame
		for {
			f, err := c.Next()
			if err != nil {
				t.Fatalf("frame %d: %v", len(frames), err)
			}
			frames = append(frames, shm.Frame{Header: f.Header, Body: bytes.Clone(f.Body)})
			m, whole, err := r.Add(f)
			if err != nil {
				t.Fatal(err)
			}
			if whole {
				view := len(m.Body) > 0 && &m.Body[0] == &f.Body[0]
				checkChunks(t, h, body, p.MaxBody(), frames, m, view)
				break
			}
		}
		if _, err := c.Next(); err != shm.ErrRingEmpty {
			t.Fatalf("frame after the message: %v", err)
		}
	})
}
