package shm

import (
	"encoding/binary"
	"errors"
)

// Frame header, 24 bytes, little-endian, at an 8-byte aligned offset:
//
//	offset size field
//	0      4    length   body length in bytes (the header and padding excluded);
//	                     for a pad frame, the bytes it spans to the end of the ring
//	4      2    kind     0 is never valid; KindPad marks padding; the rest are the caller's
//	6      2    flags    the caller's
//	8      2    service  the caller's
//	10     2    command  the caller's
//	12     4    aux      the caller's (status codes, sequence numbers, …)
//	16     8    id       the caller's (correlation id)
//
// The body follows the header; the next frame starts at the next multiple
// of 8. A pad frame needs only its first 8 bytes (length and kind).
const (
	HeaderSize = 24
	offLength  = 0
	offKind    = 4
	offFlags   = 6
	offService = 8
	offCommand = 10
	offAux     = 12
	offID      = 16
	frameAlign = 8
	padMinSize = 8
)

// KindPad is the kind of a pad frame. Callers use kinds 1 to KindPad-1.
const KindPad uint16 = 0xFFFF

// Header is the fixed part of a frame, everything but the body length.
type Header struct {
	Kind    uint16
	Flags   uint16
	Service uint16
	Command uint16
	Aux     uint32
	ID      uint64
}

// Frame is a header and its body. A Frame returned by Consumer.Next is a
// view of shared memory, valid until the next Release.
type Frame struct {
	Header
	Body []byte
}

// FrameSize returns the bytes a frame with an n-byte body occupies: header,
// body and padding to 8 bytes.
func FrameSize(n int) int { return (HeaderSize + n + frameAlign - 1) &^ (frameAlign - 1) }

func frameSize64(n uint64) uint64 { return (HeaderSize + n + frameAlign - 1) &^ (frameAlign - 1) }

// putHeader writes h and the body length n into b[:HeaderSize].
func putHeader(b []byte, h Header, n uint32) {
	_ = b[HeaderSize-1]
	binary.LittleEndian.PutUint32(b[offLength:], n)
	binary.LittleEndian.PutUint16(b[offKind:], h.Kind)
	binary.LittleEndian.PutUint16(b[offFlags:], h.Flags)
	binary.LittleEndian.PutUint16(b[offService:], h.Service)
	binary.LittleEndian.PutUint16(b[offCommand:], h.Command)
	binary.LittleEndian.PutUint32(b[offAux:], h.Aux)
	binary.LittleEndian.PutUint64(b[offID:], h.ID)
}

// getHeader reads the header in b[:HeaderSize], each field once.
func getHeader(b []byte) (Header, uint32) {
	_ = b[HeaderSize-1]
	return Header{
		Kind:    binary.LittleEndian.Uint16(b[offKind:]),
		Flags:   binary.LittleEndian.Uint16(b[offFlags:]),
		Service: binary.LittleEndian.Uint16(b[offService:]),
		Command: binary.LittleEndian.Uint16(b[offCommand:]),
		Aux:     binary.LittleEndian.Uint32(b[offAux:]),
		ID:      binary.LittleEndian.Uint64(b[offID:]),
	}, binary.LittleEndian.Uint32(b[offLength:])
}

// ErrIncomplete is returned by DecodeFrame when b holds only the start of a
// frame: read more bytes and try again.
var ErrIncomplete = errors.New("shm: incomplete frame")

// AppendFrame appends the encoding of one frame (header, body, padding) to
// dst, the same bytes a ring holds. The socket-only transport sends these.
func AppendFrame(dst []byte, h Header, body ...[]byte) []byte {
	n := 0
	for _, b := range body {
		n += len(b)
	}
	start := len(dst)
	size := FrameSize(n)
	dst = append(dst, make([]byte, size)...)
	putHeader(dst[start:], h, uint32(n))
	off := start + HeaderSize
	for _, b := range body {
		off += copy(dst[off:], b)
	}
	return dst
}

// DecodeFrame decodes the frame at the start of b, as written by
// AppendFrame, refusing bodies over maxBody bytes. It returns the frame (its
// body aliases b) and the number of bytes it spans. If b holds only part of
// a frame it returns ErrIncomplete; a frame that breaks the rules gives a
// *FrameError with Pos 0.
func DecodeFrame(b []byte, maxBody int) (Frame, int, error) {
	if len(b) < HeaderSize {
		return Frame{}, 0, ErrIncomplete
	}
	h, n := getHeader(b)
	if h.Kind == 0 || h.Kind == KindPad {
		return Frame{}, 0, &FrameError{Reason: "invalid frame kind"}
	}
	if maxBody < 0 || uint64(n) > uint64(maxBody) {
		return Frame{}, 0, &FrameError{Reason: "frame length exceeds the limit"}
	}
	size := frameSize64(uint64(n))
	if uint64(len(b)) < size {
		return Frame{}, 0, ErrIncomplete
	}
	return Frame{Header: h, Body: b[HeaderSize : HeaderSize+int(n) : HeaderSize+int(n)]}, int(size), nil
}
