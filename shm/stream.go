package shm

import (
	"errors"
	"io"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
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
	// raw, for a reader of a socket (NewSocketFrameReader), waits for it
	// to be readable while no frame is in part read, with no buffer held.
	raw    syscall.RawConn
	pooled *[]byte // the pool's buffer buf was taken from, while held
}

// readBufSize is the buffer a FrameReader reads into, unless a larger
// frame comes.
const readBufSize = 64 << 10

// readBufs holds the buffers of socket readers between frames, shared by
// every connection: an idle one holds none.
var readBufs = sync.Pool{New: func() any {
	b := make([]byte, 0, readBufSize)
	return &b
}}

// NewFrameReader returns a reader of frames from r that refuses bodies
// over maxBody bytes.
func NewFrameReader(r io.Reader, maxBody int) *FrameReader {
	return &FrameReader{r: r, maxBody: maxBody, buf: make([]byte, 0, readBufSize)}
}

// NewSocketFrameReader is NewFrameReader for a socket that is mostly idle
// (a connection's control socket): between frames it holds no buffer.
// It waits for the socket to be readable with none, and takes a buffer
// from a pool shared by all such readers only to read; once every byte
// read has been returned as frames, the next call gives the buffer back
// before it waits again.
func NewSocketFrameReader(c interface {
	io.Reader
	syscall.Conn
}, maxBody int) (*FrameReader, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return nil, err
	}
	return &FrameReader{r: c, maxBody: maxBody, raw: raw}, nil
}

// waitReadable blocks until the socket has bytes to read, an end or an
// error, peeking at one byte (on the stack, never kept).
func (fr *FrameReader) waitReadable() error {
	return fr.raw.Read(func(fd uintptr) bool {
		var b [1]byte
		_, _, err := unix.Recvfrom(int(fd), b[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
		return err != unix.EAGAIN && err != unix.EINTR
	})
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
		if fr.raw != nil && fr.start == len(fr.buf) {
			// Nothing in part read: idle with no buffer.
			fr.putBuf()
			if err := fr.waitReadable(); err != nil {
				return Frame{}, err
			}
			fr.pooled = readBufs.Get().(*[]byte)
			fr.buf = (*fr.pooled)[:0]
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
			if fr.raw != nil {
				fr.putBuf() // the stream is over
			}
			return Frame{}, err
		}
	}
}

// putBuf gives a socket reader's buffer back. (A buffer grown for a large
// frame goes to the collector; the pool's own, which *pooled still holds,
// goes back.)
func (fr *FrameReader) putBuf() {
	if fr.pooled != nil {
		readBufs.Put(fr.pooled)
	}
	fr.buf, fr.start, fr.pooled = nil, 0, nil
}

// frameMark is where a frame SendFrames wrote ends, in its batch and in its
// ring.
type frameMark struct {
	end  int    // in the batch
	cons int    // which consumer
	pos  uint64 // that consumer's Position after the frame
}

// SendFrames moves the frames published in the consumers to w, as
// AppendFrame encodes them, a batch of up to 256 KiB per write, sleeping on
// bell while they are empty: the writing half of the socket transport. It
// releases the frames of a batch only once they are written, so that their
// producer's Consumed counts only frames that reached w: after a write that
// failed partway, exactly the frames written whole. It
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
	var marks []frameMark
	for {
		buf, marks = buf[:0], marks[:0]
		for i, c := range cons {
			for len(buf) < 256<<10 {
				f, err := c.Next()
				if err != nil {
					break
				}
				buf = AppendFrame(buf, f.Header, f.Body)
				marks = append(marks, frameMark{end: len(buf), cons: i, pos: c.Position()})
			}
		}
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
			n, err := w.Write(buf)
			if mu != nil {
				mu.Unlock()
			}
			if err != nil {
				// The frames written whole are handed on (the reader
				// serves them); the rest, a cut frame included, stay
				// unreleased: the producer does not count them.
				for _, m := range marks {
					if m.end > n {
						break
					}
					cons[m.cons].ReleaseTo(m.pos)
				}
				return err
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
