package shm

import (
	"fmt"
	"sync"

	"golang.org/x/sys/unix"
)

// Link is one side of a set of rings shared with one peer process: a
// segment, a Producer for each ring this side writes, a Consumer for each
// ring it reads, and the doorbells named by the rings' specs (each ring has
// a data doorbell, rung by the producer for a sleeping consumer, and a
// space doorbell, rung by the consumer for a waiting producer; rings waited
// for by the same goroutine can share one). Every doorbell is waited on by
// exactly one side; each side registers with its netpoller only those, and
// rings the others through a bare descriptor.
//
// The creator sends Fds to the peer (SendFds), which opens its side with
// OpenLink. Producers and Consumers follow their own concurrency rules (one
// goroutine each). Shutdown wakes every wait with ErrClosed; Close also
// unmaps, so the owner stops its goroutines between the two.
type Link struct {
	Seg *Segment // nil for a local link

	specs    []RingSpec
	ctls     [][]byte // each ring's control block
	datas    [][]byte // each ring's data area
	creator  bool
	prod     []*Producer // by ring number; nil where this side reads
	cons     []*Consumer // by ring number; nil where this side writes
	bells    []*Doorbell // 2 per ring: data, space
	shutOnce sync.Once
	once     sync.Once
}

// NewLink creates a segment with the given rings and the creator's side of
// the link.
func NewLink(name string, rings []RingSpec, opts ...Option) (*Link, error) {
	seg, err := CreateSegmentSpec(name, rings...)
	if err != nil {
		return nil, err
	}
	l := &Link{Seg: seg, creator: true}
	l.fromSegment()
	nbells, err := l.checkBells()
	if err != nil {
		seg.Close()
		return nil, err
	}
	l.bells = make([]*Doorbell, nbells)
	for i := range l.bells {
		fd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
		if err != nil {
			l.Close()
			return nil, &OpError{Op: "eventfd", Err: err}
		}
		if l.waitsOn(i) {
			l.bells[i], err = newDoorbell(fd)
		} else {
			l.bells[i] = &Doorbell{fd: fd}
		}
		if err != nil {
			l.Close()
			return nil, err
		}
	}
	if err := l.attach(opts); err != nil {
		l.Close()
		return nil, err
	}
	return l, nil
}

// Fds returns the descriptors the peer needs, in the order OpenLink takes
// them: the segment, then the doorbells. A local link has none.
func (l *Link) Fds() []int {
	if l.Seg == nil {
		return nil
	}
	fds := []int{l.Seg.Fd()}
	for _, b := range l.bells {
		fds = append(fds, b.Fd())
	}
	return fds
}

// OpenLink opens the peer's side of a link from the descriptors sent by the
// creator, close-on-exec as RecvFds receives them. It takes ownership of
// fds, closing them all on error.
func OpenLink(fds []int, opts ...Option) (*Link, error) {
	return OpenLinkSide(fds, false, opts...)
}

// OpenLinkSide is OpenLink for either side: with creator true, the side
// that writes the rings the segment's creator writes. A third party that
// created a link for two others (the node brokering a direct channel
// between two clients) hands one the creator's side this way, and the
// other the peer's.
func OpenLinkSide(fds []int, creator bool, opts ...Option) (*Link, error) {
	if len(fds) < 3 {
		closeFds(fds)
		return nil, fmt.Errorf("shm: a link needs at least 3 descriptors, got %d", len(fds))
	}
	seg, err := OpenSegment(fds[0])
	if err != nil {
		closeFds(fds[1:])
		return nil, err
	}
	l := &Link{Seg: seg, creator: creator}
	l.fromSegment()
	nbells, err := l.checkBells()
	if err == nil && len(fds) != 1+nbells {
		err = &SegmentError{Reason: fmt.Sprintf("%d doorbells named, %d descriptors received", nbells, len(fds)-1)}
	}
	if err != nil {
		closeFds(fds[1:])
		seg.Close()
		return nil, err
	}
	l.bells = make([]*Doorbell, nbells)
	for i := range l.bells {
		if l.waitsOn(i) {
			l.bells[i], err = doorbellFromFd(fds[1+i])
		} else {
			l.bells[i], err = ringerFromFd(fds[1+i])
		}
		if err != nil {
			closeFds(fds[2+i:])
			l.Close()
			return nil, err
		}
	}
	if err := l.attach(opts); err != nil {
		l.Close()
		return nil, err
	}
	return l, nil
}

// fromSegment takes the link's geometry from its segment's header.
func (l *Link) fromSegment() {
	n := l.Seg.NumRings()
	l.specs, l.ctls, l.datas = make([]RingSpec, n), make([][]byte, n), make([][]byte, n)
	for r := range n {
		data, space := l.Seg.Bells(r)
		l.ctls[r], l.datas[r] = l.Seg.Ring(r)
		l.specs[r] = RingSpec{Capacity: len(l.datas[r]), CreatorWrites: l.Seg.CreatorWrites(r), DataBell: data, SpaceBell: space}
	}
}

// NewLocalLink returns both sides of a link whose rings live in this
// process's memory: a transport for a peer that cannot map shared memory,
// whose frames a bridge moves between the rings and a socket, so that the
// code on each side sees the same rings either way. Shutdown or Close of
// either side wakes and ends the other's waits too.
func NewLocalLink(rings []RingSpec, opts ...Option) (creator, peer *Link, err error) {
	creator = &Link{creator: true, specs: rings}
	peer = &Link{specs: rings}
	nbells, err := creator.checkBells()
	if err != nil {
		return nil, nil, err
	}
	bells := make([]*Doorbell, nbells)
	for i := range bells {
		if bells[i], err = NewDoorbell(); err != nil {
			for _, b := range bells[:i] {
				b.Close()
			}
			return nil, nil, err
		}
	}
	ctls, datas := make([][]byte, len(rings)), make([][]byte, len(rings))
	for r, sp := range rings {
		if sp.Capacity < 0 {
			return nil, nil, checkCapacity(0)
		}
		if err := checkCapacity(uint64(sp.Capacity)); err != nil {
			return nil, nil, err
		}
		region := AlignedBuffer(RingRegionSize(sp.Capacity))
		ctls[r], datas[r] = region[:ringCtlSize:ringCtlSize], region[ringCtlSize:]
	}
	for _, l := range []*Link{creator, peer} {
		l.bells, l.ctls, l.datas = bells, ctls, datas
		if err := l.attach(opts); err != nil {
			creator.Close()
			return nil, nil, err
		}
	}
	return creator, peer, nil
}

// writes reports whether this side produces ring r.
func (l *Link) writes(r int) bool { return l.specs[r].CreatorWrites == l.creator }

// checkBells returns the number of doorbells the rings name, after
// checking that they are numbered from 0 without gaps and that each is
// waited on by one side only: the data bell of a ring waits on its
// consumer, the space bell on its producer.
func (l *Link) checkBells() (int, error) {
	waiter := map[int]bool{} // bell -> does the creator wait on it
	use := func(bell int, creatorWaits bool) error {
		if bell < 0 || bell > 0xff {
			return &SegmentError{Reason: fmt.Sprintf("doorbell index %d out of range", bell)}
		}
		if w, ok := waiter[bell]; ok && w != creatorWaits {
			return &SegmentError{Reason: fmt.Sprintf("doorbell %d is waited on by both sides", bell)}
		}
		waiter[bell] = creatorWaits
		return nil
	}
	for r := range l.specs {
		data, space := l.specs[r].DataBell, l.specs[r].SpaceBell
		cw := l.specs[r].CreatorWrites
		if err := use(data, !cw); err != nil {
			return 0, err
		}
		if err := use(space, cw); err != nil {
			return 0, err
		}
	}
	for i := range len(waiter) {
		if _, ok := waiter[i]; !ok {
			return 0, &SegmentError{Reason: fmt.Sprintf("doorbell %d of %d is not used", i, len(waiter))}
		}
	}
	return len(waiter), nil
}

// waitsOn reports whether this side waits on bell i.
func (l *Link) waitsOn(i int) bool {
	for r := range l.specs {
		data, space := l.specs[r].DataBell, l.specs[r].SpaceBell
		if data == i {
			return !l.writes(r)
		}
		if space == i {
			return l.writes(r)
		}
	}
	return false
}

// Bell returns doorbell i, as the rings' specs number them.
func (l *Link) Bell(i int) *Doorbell { return l.bells[i] }

func (l *Link) attach(opts []Option) error {
	n := len(l.specs)
	l.prod, l.cons = make([]*Producer, n), make([]*Consumer, n)
	for r := range n {
		data, space := l.specs[r].DataBell, l.specs[r].SpaceBell
		ropts := append([]Option{WithDoorbells(l.bells[data], l.bells[space])}, opts...)
		var err error
		if l.writes(r) {
			l.prod[r], err = NewProducerAt(l.ctls[r], l.datas[r], ropts...)
		} else {
			l.cons[r], err = NewConsumerAt(l.ctls[r], l.datas[r], ropts...)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// Producer returns the producer of ring r, or nil if this side reads it.
func (l *Link) Producer(r int) *Producer { return l.prod[r] }

// Consumer returns the consumer of ring r, or nil if this side writes it.
func (l *Link) Consumer(r int) *Consumer { return l.cons[r] }

// Rescued returns how many of this side's waits were ended by a re-check
// instead of the ring that should have woken them (see Doorbell.WaitUntil).
func (l *Link) Rescued() uint64 {
	var n uint64
	for _, b := range l.bells {
		if b != nil {
			n += b.Rescued()
		}
	}
	return n
}

// Shutdown closes the doorbells: every wait on the link's rings ends with
// ErrClosed. The rings stay mapped. It is idempotent.
func (l *Link) Shutdown() {
	l.shutOnce.Do(func() {
		for _, b := range l.bells {
			if b != nil {
				b.Close()
			}
		}
	})
}

// Retire shuts down and gives the shared memory back while views of the
// rings may still be in use (see Segment.Retire): they read zeros from
// then on. The link's rings must not be used afterwards except through
// such views; Close unmaps them. A local link's rings are this process's
// own memory, which the garbage collector frees once no view remains.
// Retire must not run concurrently with Close.
func (l *Link) Retire() error {
	l.Shutdown()
	if l.Seg != nil {
		return l.Seg.Retire()
	}
	return nil
}

// Close shuts down and unmaps the segment. Nothing may touch the link's
// rings or frames read from them afterwards. It is idempotent.
func (l *Link) Close() error {
	l.Shutdown()
	var err error
	l.once.Do(func() {
		if l.Seg != nil {
			err = l.Seg.Close()
		}
	})
	return err
}

// Duplex is a Link of two rings of equal capacity: Tx carries frames from
// this side to the peer, Rx from the peer to this side.
type Duplex struct {
	*Link
	Tx *Producer
	Rx *Consumer
}

// NewDuplex creates a two-ring link: the creator writes ring 0 and reads
// ring 1.
func NewDuplex(name string, capacity int, opts ...Option) (*Duplex, error) {
	l, err := NewLink(name, []RingSpec{
		{Capacity: capacity, CreatorWrites: true, DataBell: 0, SpaceBell: 1},
		{Capacity: capacity, DataBell: 2, SpaceBell: 3},
	}, opts...)
	if err != nil {
		return nil, err
	}
	return &Duplex{Link: l, Tx: l.Producer(0), Rx: l.Consumer(1)}, nil
}

// OpenDuplex opens the peer's side of a duplex: it reads ring 0 and writes
// ring 1. Like OpenLink, it takes fds close-on-exec, and takes ownership
// of them, closing them all on error.
func OpenDuplex(fds []int, opts ...Option) (*Duplex, error) {
	l, err := OpenLink(fds, opts...)
	if err != nil {
		return nil, err
	}
	if len(l.specs) != 2 || l.Consumer(0) == nil || l.Producer(1) == nil {
		l.Close()
		return nil, &SegmentError{Reason: "not a duplex: want ring 0 from the creator and ring 1 to it"}
	}
	return &Duplex{Link: l, Tx: l.Producer(1), Rx: l.Consumer(0)}, nil
}

func closeFds(fds []int) {
	for _, fd := range fds {
		closeFd(fd)
	}
}

// NumRings returns the number of rings in the link.
func (l *Link) NumRings() int { return len(l.specs) }

// Spec returns the geometry of ring r.
func (l *Link) Spec(r int) RingSpec { return l.specs[r] }
