package shm

import (
	"os"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

var poolRings = []RingSpec{
	{Capacity: MinRingCapacity, CreatorWrites: true, DataBell: 0, SpaceBell: 1},
	{Capacity: MinRingCapacity, DataBell: 2, SpaceBell: 3},
}

// memfdIno returns the inode of a link's memfd: two links share a segment
// exactly when their memfds share an inode.
func memfdIno(t *testing.T, l *Link) uint64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Fstat(l.Seg.Fd(), &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}

// TestLinkPoolNeverReuses: every link the pool gives out is a segment
// nobody had before, even when the links given out earlier are closed
// (their memory given back) while the peer that had them still maps it.
// A segment handed to a second peer would let the first write into the
// second's rings.
func TestLinkPoolNeverReuses(t *testing.T) {
	p := NewLinkPool("pooltest", poolRings, 3)
	defer p.Close()
	seen := map[uint64]bool{}
	for i := range 200 {
		l, err := p.Get()
		if err != nil {
			t.Fatal(err)
		}
		ino := memfdIno(t, l)
		if seen[ino] {
			t.Fatalf("link %d: segment (inode %d) given out before", i, ino)
		}
		seen[ino] = true
		// A former peer's mapping, kept after it left: it writes into the
		// ring. A later link must not see it.
		peer, err := unix.Mmap(l.Seg.Fd(), 0, l.Seg.Size(), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
		if err != nil {
			t.Fatal(err)
		}
		if r := l.Producer(0); r.r.head.Load() != 0 || r.r.tail.Load() != 0 {
			t.Fatalf("link %d: ring 0 not fresh: head %d tail %d", i, r.r.head.Load(), r.r.tail.Load())
		}
		for j := segHeaderPage; j < len(peer); j += pageSize {
			peer[j] = 0xAA // every ring page, control blocks included
		}
		l.Close()
		defer unix.Munmap(peer)
		if i%7 == 0 {
			time.Sleep(time.Millisecond) // let the filler catch up sometimes
		}
	}
	st := p.Stats()
	if st.Taken == 0 {
		t.Fatalf("no Get was served by a spare: %+v", st)
	}
	if st.Taken+st.Missed != 200 {
		t.Fatalf("stats %+v: taken and missed do not add up to the 200 Gets", st)
	}
}

// TestLinkPoolBounded: the pool makes nothing before the first Get, keeps
// at most its number of spares, and Close gives them all back: no memfd
// or eventfd of the pool stays open.
func TestLinkPoolBounded(t *testing.T) {
	base := countFds(t)
	p := NewLinkPool("pooltest", poolRings, 4)
	time.Sleep(20 * time.Millisecond)
	if got := countFds(t); got != base {
		t.Fatalf("%d descriptors before the first Get, %d before the pool", got, base)
	}
	l, err := p.Get()
	if err != nil {
		t.Fatal(err)
	}
	l.Close()
	deadline := time.Now().Add(10 * time.Second)
	for p.Stats().Spares < 4 {
		if time.Now().After(deadline) {
			t.Fatalf("pool not filled: %+v", p.Stats())
		}
		time.Sleep(time.Millisecond)
	}
	time.Sleep(20 * time.Millisecond)
	// Four spares of a memfd and four eventfds each, no more.
	if got := countFds(t); got != base+4*5 {
		t.Fatalf("%d descriptors with a full pool of 4, want %d", got, base+4*5)
	}
	if st := p.Stats(); st.Made != 4 || st.Spares != 4 {
		t.Fatalf("stats %+v, want 4 made and 4 spares", st)
	}
	p.Close()
	p.Close()
	if got := countFds(t); got != base {
		t.Fatalf("%d descriptors after Close, %d before the pool", got, base)
	}
	// After Close, Get still gives links, made on the spot, and starts
	// nothing.
	l, err = p.Get()
	if err != nil {
		t.Fatal(err)
	}
	l.Close()
	if got := countFds(t); got != base {
		t.Fatalf("%d descriptors after a Get on a closed pool, %d before", got, base)
	}
}

func countFds(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range ents {
		link, err := os.Readlink("/proc/self/fd/" + e.Name())
		if err != nil {
			continue // the directory's own descriptor, closed by now
		}
		if strings.HasPrefix(link, "/memfd:pooltest") || link == "anon_inode:[eventfd]" {
			n++
		}
	}
	return n
}
