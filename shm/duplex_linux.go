package shm

import (
	"fmt"
	"sync"

	"golang.org/x/sys/unix"
)

// Duplex is one side of a two-way link with one peer process: a segment of
// two rings of equal capacity, a Producer for one direction, a Consumer for
// the other, and the four doorbells that wake them. The creator sends Fds
// to the peer (SendFds), which opens its side with OpenDuplex.
//
// Tx and Rx follow their own concurrency rules (one goroutine each). Close
// wakes every wait and releases everything; it waits for nothing, so the
// owner stops its goroutines (they see ErrClosed) before the memory goes:
// call Shutdown first, wait for them, then Close.
type Duplex struct {
	Seg *Segment
	Tx  *Producer
	Rx  *Consumer

	bells    [4]*Doorbell // ring 0 data, ring 0 space, ring 1 data, ring 1 space
	shutOnce sync.Once
	once     sync.Once
}

// NewDuplex creates a segment of two rings of the given capacity and the
// creator's side of the link: it writes ring 0 and reads ring 1.
func NewDuplex(name string, capacity int, opts ...Option) (*Duplex, error) {
	seg, err := CreateSegment(name, capacity, capacity)
	if err != nil {
		return nil, err
	}
	d := &Duplex{Seg: seg}
	for i := range d.bells {
		fd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
		if err != nil {
			d.Close()
			return nil, &OpError{Op: "eventfd", Err: err}
		}
		if waitsOn(0, i) {
			d.bells[i], err = newDoorbell(fd)
		} else {
			d.bells[i] = &Doorbell{fd: fd}
		}
		if err != nil {
			d.Close()
			return nil, err
		}
	}
	if err := d.attach(0, 1, opts); err != nil {
		d.Close()
		return nil, err
	}
	return d, nil
}

// Fds returns the descriptors the peer needs, in the order OpenDuplex
// takes them: the segment, then the four doorbells.
func (d *Duplex) Fds() []int {
	return []int{d.Seg.Fd(), d.bells[0].Fd(), d.bells[1].Fd(), d.bells[2].Fd(), d.bells[3].Fd()}
}

// OpenDuplex opens the peer's side of a link from the descriptors sent by
// the creator: it reads ring 0 and writes ring 1. It takes ownership of
// fds, closing them all on error.
func OpenDuplex(fds []int, opts ...Option) (*Duplex, error) {
	if len(fds) != 5 {
		closeFds(fds)
		return nil, fmt.Errorf("shm: a duplex needs 5 descriptors, got %d", len(fds))
	}
	seg, err := OpenSegment(fds[0])
	if err != nil {
		closeFds(fds[1:])
		return nil, err
	}
	d := &Duplex{Seg: seg}
	for i := range d.bells {
		if waitsOn(1, i) {
			d.bells[i], err = DoorbellFromFd(fds[1+i])
		} else {
			d.bells[i], err = RingerFromFd(fds[1+i])
		}
		if err != nil {
			closeFds(fds[2+i:])
			d.Close()
			return nil, err
		}
	}
	if seg.NumRings() != 2 {
		d.Close()
		return nil, &SegmentError{Reason: fmt.Sprintf("a duplex has 2 rings, this segment %d", seg.NumRings())}
	}
	if err := d.attach(1, 0, opts); err != nil {
		d.Close()
		return nil, err
	}
	return d, nil
}

// waitsOn reports whether side (0 creator, 1 peer) waits on bell i: the
// creator waits for ring 0 space and ring 1 data, the peer for ring 0 data
// and ring 1 space. Each side registers only those with its netpoller and
// rings the others through a bare descriptor.
func waitsOn(side, i int) bool {
	ring, space := i/2, i%2 == 1
	writes := ring == side // the side that writes ring r waits for its space
	return writes == space
}

func (d *Duplex) attach(tx, rx int, opts []Option) error {
	var err error
	popts := append([]Option{WithDoorbells(d.bells[2*tx], d.bells[2*tx+1])}, opts...)
	if d.Tx, err = NewProducer(d.Seg.Ring(tx), popts...); err != nil {
		return err
	}
	copts := append([]Option{WithDoorbells(d.bells[2*rx], d.bells[2*rx+1])}, opts...)
	d.Rx, err = NewConsumer(d.Seg.Ring(rx), copts...)
	return err
}

// Rescued returns how many of this side's waits were ended by a re-check
// instead of the ring that should have woken them (see Doorbell.WaitUntil).
func (d *Duplex) Rescued() uint64 {
	var n uint64
	for _, b := range d.bells {
		if b != nil {
			n += b.Rescued()
		}
	}
	return n
}

// Shutdown closes the doorbells: every wait on Tx or Rx ends with ErrClosed.
// The rings stay mapped. It is idempotent.
func (d *Duplex) Shutdown() {
	d.shutOnce.Do(func() {
		for _, b := range d.bells {
			if b != nil {
				b.Close()
			}
		}
	})
}

// Close shuts down and unmaps the segment. Nothing may touch Tx, Rx or
// frames read from them afterwards. It is idempotent.
func (d *Duplex) Close() error {
	d.Shutdown()
	var err error
	d.once.Do(func() {
		if d.Seg != nil {
			err = d.Seg.Close()
		}
	})
	return err
}

func closeFds(fds []int) {
	for _, fd := range fds {
		closeFd(fd)
	}
}
