package shm

import (
	"errors"
	"io"
	"sync"
)

// FrameReader reads frames from a byte stream, as AppendFrame encodes
// them: the socket transport, where a connection's frames travel on its
// Unix socket instead of through shared memory. It reads straight into one
// buffer of 64 KiB, which grows once, to hold the largest frame allowed,
// when a larger frame comes.
type FrameReader struct {
	r       io.Reader
	maxBody int
	buf     []byte // bytes read; buf[start:] not yet returned
	start   int
}

// NewFrameReader returns a reader of frames from r that refuses bodies
// over maxBody bytes.
func NewFrameReader(r io.Reader, maxBody int) *FrameReader {
	return &FrameReader{r: r, maxBody: maxBody, buf: make([]byte, 0, 64<<10)}
}

// Next returns the next frame. Its body is a view of the reader's buffer,
// valid until the next call. A frame that breaks the rules gives a
// *FrameError (the stream cannot be resynchronized); a read error is
// returned as it is: io.EOF when the peer closed the stream between
// frames, io.ErrUnexpectedEOF inside one.
func (fr *FrameReader) Next() (Frame, error) {
	for {
		if fr.start < len(fr.buf) {
			f, size, err := DecodeFrame(fr.buf[fr.start:], fr.maxBody)
			if err == nil {
				fr.start += size
				return f, nil
			}
			if !errors.Is(err, ErrIncomplete) {
				return Frame{}, err
			}
		}
		n := copy(fr.buf[:cap(fr.buf)], fr.buf[fr.start:])
		fr.buf, fr.start = fr.buf[:n], 0
		if n == cap(fr.buf) { // a frame larger than the buffer: make room for all of it
			fr.buf = append(fr.buf, make([]byte, max(n, FrameSize(fr.maxBody)-n))...)[:n]
		}
		m, err := fr.r.Read(fr.buf[n:cap(fr.buf)])
		fr.buf = fr.buf[:n+m]
		if m == 0 && err != nil {
			if err == io.EOF && n > 0 {
				err = io.ErrUnexpectedEOF // the stream ended inside a frame
			}
			return Frame{}, err
		}
	}
}

// SendFrames moves the frames published in the consumers to w, as
// AppendFrame encodes them, a batch of up to 256 KiB per write, sleeping on
// bell while they are empty: the writing half of the socket transport. It
// releases the frames of a batch only once it is written, so that their
// producer's Consumed counts only frames that reached w. It
// holds mu, if not nil, for each write, so that other writers of w (a
// control frame) do not interleave. It returns the error of a failed
// write or of a broken ring, or nil once bell is closed.
func SendFrames(w io.Writer, mu *sync.Mutex, bell *Doorbell, cons ...*Consumer) error {
	ready := func() bool {
		for _, c := range cons {
			if c.Ready() {
				return true
			}
		}
		return false
	}
	parker := NewParker(bell)
	conds := make([]Cond, len(cons))
	for i, c := range cons {
		conds[i] = c
	}
	var buf []byte
	for {
		buf = AppendFrames(buf[:0], 256<<10, cons...)
		if len(buf) == 0 {
			for _, c := range cons {
				if err := c.Err(); err != nil {
					return err // a broken ring: Ready would stay true, and we would spin
				}
			}
		}
		if len(buf) > 0 {
			if mu != nil {
				mu.Lock()
			}
			_, err := w.Write(buf)
			if mu != nil {
				mu.Unlock()
			}
			if err != nil {
				return err // unreleased: the producer does not count them handed on
			}
			for _, c := range cons {
				c.Release()
			}
			continue
		}
		for _, c := range cons {
			c.Arm()
		}
		if err := parker.Park(ready, conds...); err != nil {
			return nil
		}
	}
}
