package pb

import (
	"errors"
	"fmt"
	"io"
	"net"

	"github.com/switchboard-ipc/switchboard/shm"
	"golang.org/x/sys/unix"
	gproto "google.golang.org/protobuf/proto"
)

// MaxControl is the largest Control message body, in bytes.
const MaxControl = 64 << 10

// WriteControl sends m on the socket as one KindControl frame, with the
// descriptors fds attached (SCM_RIGHTS) if there are any.
func WriteControl(c *net.UnixConn, m *Control, fds []int) error {
	_, err := WriteControlN(c, m, fds)
	return err
}

// WriteControlN is WriteControl that also reports how many bytes of the
// frame were written: after an error (a write deadline), a frame written
// in part leaves the stream out of step.
func WriteControlN(c *net.UnixConn, m *Control, fds []int) (int, error) {
	body, err := gproto.Marshal(m)
	if err != nil {
		return 0, err
	}
	frame := shm.AppendFrame(nil, shm.Header{Kind: KindControl}, body)
	if len(fds) > 0 {
		return shm.SendFdsN(c, frame, fds...)
	}
	return c.Write(frame)
}

// ReadControl reads one control frame from the socket, and no byte more.
func ReadControl(c *net.UnixConn) (*Control, error) {
	hdr := make([]byte, shm.HeaderSize)
	if _, err := io.ReadFull(c, hdr); err != nil {
		return nil, err
	}
	return finishControl(c, hdr)
}

// ReadControlFds is ReadControl for a frame that may carry descriptors (the
// Welcome): it returns those received with it too, at most maxFds. On an
// error, the descriptors are closed.
func ReadControlFds(c *net.UnixConn, maxFds int) (*Control, []int, error) {
	hdr := make([]byte, shm.HeaderSize)
	n, fds, err := shm.RecvFds(c, hdr, maxFds)
	if err != nil {
		return nil, nil, err
	}
	if _, err := io.ReadFull(c, hdr[n:]); err != nil {
		closeFds(fds)
		return nil, nil, unexpectedEOF(err)
	}
	m, err := finishControl(c, hdr)
	if err != nil {
		closeFds(fds)
		return nil, nil, err
	}
	return m, fds, nil
}

func closeFds(fds []int) {
	for _, fd := range fds {
		unix.Close(fd)
	}
}

// unexpectedEOF turns the end of the stream inside a frame into
// io.ErrUnexpectedEOF: only a close between frames is a clean io.EOF.
func unexpectedEOF(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// finishControl reads the rest of a control frame whose header is in hdr.
func finishControl(c io.Reader, hdr []byte) (*Control, error) {
	_, _, err := shm.DecodeFrame(hdr, MaxControl)
	if err != nil && !errors.Is(err, shm.ErrIncomplete) {
		return nil, err
	}
	n := int(uint32(hdr[0]) | uint32(hdr[1])<<8 | uint32(hdr[2])<<16 | uint32(hdr[3])<<24)
	buf := make([]byte, shm.FrameSize(n))
	copy(buf, hdr)
	if _, err := io.ReadFull(c, buf[len(hdr):]); err != nil {
		return nil, unexpectedEOF(err)
	}
	f, _, err := shm.DecodeFrame(buf, MaxControl)
	if err != nil {
		return nil, err
	}
	return DecodeControl(f)
}

// DecodeControl decodes the Control message of a KindControl frame.
func DecodeControl(f shm.Frame) (*Control, error) {
	if f.Kind != KindControl {
		return nil, fmt.Errorf("switchboard: frame kind %d, want a control frame", f.Kind)
	}
	var m Control
	if err := gproto.Unmarshal(f.Body, &m); err != nil {
		return nil, err
	}
	return &m, nil
}
