package shm

import (
	"encoding/binary"
	"errors"
	"os"
	"slices"
	"strings"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

func listDir(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		if os.IsNotExist(err) {
			return nil
		}
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

// dupFd returns a second descriptor for the same open file, as a peer
// receiving it over SCM_RIGHTS would hold.
func dupFd(t *testing.T, fd int) int {
	t.Helper()
	nfd, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	return nfd
}

func TestSegmentCreateOpen(t *testing.T) {
	// A temporary directory of this test's own: other test processes
	// create files in the shared one meanwhile.
	t.Setenv("TMPDIR", t.TempDir())
	shmBefore, tmpBefore := listDir(t, "/dev/shm"), listDir(t, os.TempDir())
	seg, err := CreateSegment("test", 4096, 1<<16)
	if err != nil {
		t.Fatal(err)
	}
	defer seg.Close()
	ctl0, data0 := seg.Ring(0)
	ctl1, data1 := seg.Ring(1)
	if seg.NumRings() != 2 || len(data0) != 4096 || len(data1) != 1<<16 || len(ctl0) != ringCtlSize || len(ctl1) != ringCtlSize {
		t.Fatalf("geometry: %d rings", seg.NumRings())
	}
	// The control blocks share the header page; the data areas follow,
	// page-aligned, with nothing else.
	if seg.Size() != pageSize+4096+1<<16 {
		t.Fatalf("segment of %d bytes, want %d", seg.Size(), pageSize+4096+1<<16)
	}
	base := uintptr(unsafe.Pointer(&seg.mem[0]))
	for i, b := range [][]byte{ctl0, ctl1} {
		p := uintptr(unsafe.Pointer(&b[0]))
		if p < base+segOffDesc+MaxRings*segDescSize || p+ringCtlSize > base+pageSize || p%cacheLine != 0 {
			t.Fatalf("ring %d's control block at offset %d, not in the header page after the descriptors", i, p-base)
		}
	}
	for i, b := range [][]byte{data0, data1} {
		if p := uintptr(unsafe.Pointer(&b[0])); (p-base)%pageSize != 0 || p-base < pageSize {
			t.Fatalf("ring %d's data at offset %d", i, p-base)
		}
	}
	// Nothing appears in any file system.
	for _, name := range listDir(t, "/dev/shm") { // others may use /dev/shm: look for ours
		if !slices.Contains(shmBefore, name) && strings.Contains(name, "test") {
			t.Errorf("/dev/shm has a new %s", name)
		}
	}
	if got := listDir(t, os.TempDir()); !slices.Equal(got, tmpBefore) {
		t.Errorf("%s changed", os.TempDir())
	}
	// The peer sees the same memory.
	peer, err := OpenSegment(dupFd(t, seg.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	if peer.NumRings() != 2 || peer.Size() != seg.Size() {
		t.Fatalf("peer geometry differs")
	}
	p, err := NewProducerAt(seg.Ring(1))
	if err != nil {
		t.Fatal(err)
	}
	c, err := NewConsumerAt(peer.Ring(1))
	if err != nil {
		t.Fatal(err)
	}
	if err := p.TryWrite(Header{Kind: 1, ID: 99}, []byte("across mappings")); err != nil {
		t.Fatal(err)
	}
	f, err := c.Next()
	if err != nil || f.ID != 99 || string(f.Body) != "across mappings" {
		t.Fatalf("%+v %v", f, err)
	}
	// Close is idempotent.
	if err := peer.Close(); err != nil {
		t.Fatal(err)
	}
	if err := peer.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestSegmentSealedAgainstResize(t *testing.T) {
	seg, err := CreateSegment("sealed", 4096)
	if err != nil {
		t.Fatal(err)
	}
	defer seg.Close()
	peer := dupFd(t, seg.Fd())
	defer unix.Close(peer)
	for _, size := range []int64{0, int64(seg.Size()) / 2, int64(seg.Size()) * 2} {
		if err := unix.Ftruncate(peer, size); !errors.Is(err, unix.EPERM) {
			t.Errorf("peer ftruncate to %d: %v, want EPERM", size, err)
		}
	}
	if _, err := unix.FcntlInt(uintptr(peer), unix.F_ADD_SEALS, unix.F_SEAL_WRITE); !errors.Is(err, unix.EPERM) {
		t.Errorf("peer added a seal: %v, want EPERM", err)
	}
}

// rawSegment returns a memfd of size bytes with the given seals and a
// header written by fill, as a hostile or buggy peer could send.
func rawSegment(t *testing.T, size int, seals int, fill func(mem []byte)) int {
	t.Helper()
	fd, err := unix.MemfdCreate("raw", unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Ftruncate(fd, int64(size)); err != nil {
		t.Fatal(err)
	}
	mem, err := unix.Mmap(fd, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	fill(mem)
	unix.Munmap(mem)
	if seals != 0 {
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_ADD_SEALS, seals); err != nil {
			t.Fatal(err)
		}
	}
	return fd
}

func validHeader(size uint64, rings ...ringDesc) func([]byte) {
	return func(mem []byte) {
		binary.LittleEndian.PutUint64(mem[segOffMagic:], segMagic)
		binary.LittleEndian.PutUint32(mem[segOffVersion:], SegmentVersion)
		binary.LittleEndian.PutUint32(mem[segOffRings:], uint32(len(rings)))
		binary.LittleEndian.PutUint64(mem[segOffSize:], size)
		for i, r := range rings {
			d := mem[segOffDesc+i*segDescSize:]
			binary.LittleEndian.PutUint64(d[0:], r.off)
			binary.LittleEndian.PutUint32(d[8:], uint32(r.capacity))
			binary.LittleEndian.PutUint32(d[12:], r.flags)
		}
	}
}

func TestOpenSegmentRefuses(t *testing.T) {
	const size = 3 * pageSize
	good := ringDesc{off: pageSize, capacity: 4096}
	both := func(fill func([]byte), edits ...func([]byte)) func([]byte) {
		return func(m []byte) {
			fill(m)
			for _, e := range edits {
				e(m)
			}
		}
	}
	cases := []struct {
		name  string
		seals int
		fill  func([]byte)
	}{
		{"unsealed", 0, validHeader(size, good)},
		{"no grow seal", unix.F_SEAL_SHRINK | unix.F_SEAL_SEAL, validHeader(size, good)},
		{"write-sealed", requiredSeals | unix.F_SEAL_WRITE, validHeader(size, good)},
		{"wrong magic", requiredSeals, both(validHeader(size, good), func(m []byte) { m[0] ^= 1 })},
		{"wrong version", requiredSeals, both(validHeader(size, good), func(m []byte) { m[segOffVersion]++ })},
		{"size mismatch", requiredSeals, validHeader(size+pageSize, good)},
		{"no rings", requiredSeals, validHeader(size)},
		{"too many rings", requiredSeals, both(validHeader(size, good), func(m []byte) { m[segOffRings] = MaxRings + 1 })},
		{"capacity not a power of two", requiredSeals, validHeader(size, ringDesc{off: pageSize, capacity: 3000})},
		{"ring past the end", requiredSeals, validHeader(size, ringDesc{off: 2 * pageSize, capacity: 8192})},
		{"ring over the header", requiredSeals, validHeader(size, ringDesc{off: 0, capacity: 4096})},
		{"rings overlap", requiredSeals, validHeader(size, good, good)},
		{"offset overflow", requiredSeals, validHeader(size, ringDesc{off: 1<<64 - pageSize, capacity: 4096})},
		{"unknown ring flags", requiredSeals, validHeader(size, ringDesc{off: pageSize, capacity: 4096, flags: 1 << 30})},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := openFds(t)
			fd := rawSegment(t, size, tc.seals, tc.fill)
			seg, err := OpenSegment(fd)
			if err == nil {
				seg.Close()
				t.Fatal("accepted")
			}
			var se *SegmentError
			if !errors.As(err, &se) || !errors.Is(err, ErrBadSegment) {
				t.Fatalf("error %v is not a *SegmentError", err)
			}
			if after := openFds(t); after != before {
				t.Fatalf("fd leaked: %d before, %d after", before, after)
			}
		})
	}
	// The same layout, sealed and consistent, is accepted.
	seg, err := OpenSegment(rawSegment(t, size, requiredSeals, validHeader(size, good)))
	if err != nil {
		t.Fatalf("valid raw segment refused: %v", err)
	}
	seg.Close()
	// Not a memfd at all.
	f, err := os.Open("/dev/null")
	if err != nil {
		t.Fatal(err)
	}
	fd, _ := unix.Dup(int(f.Fd()))
	f.Close()
	if _, err := OpenSegment(fd); !errors.Is(err, ErrBadSegment) {
		t.Fatalf("/dev/null accepted: %v", err)
	}
}

func TestCreateSegmentRejectsBadGeometry(t *testing.T) {
	for _, caps := range [][]int{nil, {100}, {-1}, {4096, 4096, 4096, 4096, 4096}, {MaxRingCapacity * 2}} {
		if seg, err := CreateSegment("bad", caps...); err == nil {
			seg.Close()
			t.Errorf("capacities %v accepted", caps)
		}
	}
}

// TestSegmentDropFd: the creator can drop its descriptor once the peer has
// its own: the mapping stays usable, the peer's copy opens the segment,
// and Close after DropFd closes nothing twice.
func TestSegmentDropFd(t *testing.T) {
	seg, err := CreateSegment("drop", 4096)
	if err != nil {
		t.Fatal(err)
	}
	defer seg.Close()
	dup, err := unix.Dup(seg.Fd())
	if err != nil {
		t.Fatal(err)
	}
	seg.DropFd()
	seg.DropFd() // idempotent
	if seg.Fd() != -1 {
		t.Fatalf("Fd after DropFd: %d", seg.Fd())
	}
	ringData(seg, 0)[0] = 42 // still mapped
	peer, err := OpenSegment(dup)
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	if ringData(peer, 0)[0] != 42 {
		t.Fatal("the peer does not see the creator's memory")
	}
	// Another descriptor takes the dropped number: Close must not close it.
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	if err := seg.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write([]byte("x")); err != nil {
		t.Fatalf("Close after DropFd closed another descriptor: %v", err)
	}
}

// A retired segment no longer shares memory with its peer, yet a view
// taken before keeps working (reading zeros) until Close.
func TestSegmentRetire(t *testing.T) {
	seg, err := CreateSegment("retire", 4096)
	if err != nil {
		t.Fatal(err)
	}
	peer, err := OpenSegment(dupFd(t, seg.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	view := ringData(seg, 0)[100:108] // what a handler would hold
	ringData(peer, 0)[100] = 7
	if view[0] != 7 {
		t.Fatal("the view does not see the peer's write")
	}
	if err := seg.Retire(); err != nil {
		t.Fatal(err)
	}
	if err := seg.Retire(); err != nil { // idempotent
		t.Fatal(err)
	}
	if seg.Fd() != -1 {
		t.Fatalf("Fd after Retire: %d", seg.Fd())
	}
	if view[0] != 0 {
		t.Fatalf("the view reads %d after Retire, want the placeholder's zero", view[0])
	}
	view[1] = 9 // writable, and private: the peer does not see it
	ringData(peer, 0)[102] = 5
	if ringData(peer, 0)[101] != 0 || view[2] != 0 {
		t.Fatal("a retired segment still shares memory with its peer")
	}
	if ringData(peer, 0)[100] != 7 {
		t.Fatal("Retire changed the peer's memory")
	}
	// The mapping is no longer the memfd's.
	maps, err := os.ReadFile("/proc/self/maps")
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(maps), "memfd:retire"); n != 1 {
		t.Fatalf("%d mappings of the memfd after Retire, want the peer's alone:\n%s", n, maps)
	}
	if err := seg.Close(); err != nil {
		t.Fatal(err)
	}
	if err := seg.Retire(); err != nil { // after Close: nothing to do
		t.Fatal(err)
	}
}

// ringData returns ring i's data area.
func ringData(s *Segment, i int) []byte {
	_, data := s.Ring(i)
	return data
}
