package shm

import (
	"testing"
	"time"
)

// A reply spinner's give-up changes nothing by itself; the wait that
// follows judges it: a reply soon after restores the whole budget, a late
// one halves it, down to a microsecond. A win doubles it, up to max.
func TestReplySpinnerJudgedByWait(t *testing.T) {
	const most = 100 * time.Microsecond
	s := NewReplySpinner(most)
	never := func() bool { return false }
	if s.Spin(never) {
		t.Fatal("a spin on a condition never true won")
	}
	if got := s.Budget(); got != most {
		t.Fatalf("budget %v after a give-up alone, want %v unchanged", got, most)
	}
	want := most
	for range 12 { // replies a millisecond after each give-up: halved each time
		s.Spin(never)
		s.Woke(time.Millisecond)
		want = max(want/2, minSpin)
		if got := s.Budget(); got != want {
			t.Fatalf("budget %v after a late reply, want %v", got, want)
		}
	}
	if want != minSpin {
		t.Fatalf("budget %v after 12 late replies, want %v", want, minSpin)
	}
	s.Spin(never)
	s.Woke(10 * time.Microsecond) // soon after: a longer spin would have won
	if got := s.Budget(); got != most {
		t.Fatalf("budget %v after a reply soon after a give-up, want %v", got, most)
	}
	s.Woke(time.Millisecond)
	s.Woke(time.Millisecond)
	if !s.Spin(func() bool { return true }) {
		t.Fatal("a spin on a true condition lost")
	}
	if got := s.Budget(); got != most/2 {
		t.Fatalf("budget %v after a win at %v, want it doubled to %v", got, most/4, most/2)
	}
}
