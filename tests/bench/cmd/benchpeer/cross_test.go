package main

import (
	"strings"
	"testing"
)

// TestSeqSubscriber: the cross-node subscriber counts messages and bytes,
// acknowledges each full window, and reports an error naming the first
// break when a message is missing, repeated or out of order.
func TestSeqSubscriber(t *testing.T) {
	var sent [][]byte
	pub := stamped(func(p []byte) error { sent = append(sent, append([]byte(nil), p...)); return nil })
	p := make([]byte, 64)
	for range 10 {
		pub(p)
	}
	run := func(order []int) (*result, error, int) {
		acks := 0
		s := &seqSubscriber{subscriber: subscriber{window: 5, ack: func() error { acks++; return nil }}}
		for _, i := range order {
			s.receivedSeq(sent[i])
		}
		r, err := s.report()
		return r, err, acks
	}
	r, err, acks := run([]int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9})
	if err != nil || r.Ops != 10 || r.Bytes != 640 || acks != 2 {
		t.Fatalf("in order: %+v, %v, %d acks; want 10 messages, 640 bytes, 2 acks, no error", r, err, acks)
	}
	for _, tc := range []struct {
		order []int
		first string
	}{
		{[]int{0, 1, 3, 4}, "message 2 carries sequence number 3"}, // one lost
		{[]int{0, 1, 1, 2}, "message 2 carries sequence number 1"}, // one twice
		{[]int{0, 2, 1, 3}, "message 1 carries sequence number 2"}, // reordered
		{[]int{1, 2, 3}, "message 0 carries sequence number 1"},    // the first lost
	} {
		_, err, _ := run(tc.order)
		if err == nil || !strings.Contains(err.Error(), tc.first) {
			t.Errorf("order %v: %v, want an error naming %q", tc.order, err, tc.first)
		}
	}
	s := &seqSubscriber{subscriber: subscriber{window: 5, ack: func() error { return nil }}}
	s.receivedSeq([]byte{1, 2})
	if _, err := s.report(); err == nil {
		t.Error("a message shorter than its sequence number: no error")
	}
}
