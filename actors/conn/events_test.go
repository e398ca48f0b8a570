package conn

import "testing"

// TestEventQueueCountsParts: an event gathered from parts (KeptParts)
// counts its bytes in the queue's byte bound as one with a payload does,
// so that a member's queue of large events from other nodes stays within
// it.
func TestEventQueueCountsParts(t *testing.T) {
	q := eventQueue{limit: 1024, byteLimit: 8 << 10}
	big := make([]byte, 5<<10)
	q.push(KeptParts(1, 2, []byte("prefix"), big))
	if q.bytes != 6+len(big) || q.full() {
		t.Fatalf("one event of %d bytes: queue counts %d bytes, full %v", 6+len(big), q.bytes, q.full())
	}
	q.push(&Delivery{Payload: big})
	if !q.full() {
		t.Fatalf("%d bytes queued against a bound of %d: not full", q.bytes, q.byteLimit)
	}
	if d := q.dropOldest(); d == nil || q.bytes != len(big) {
		t.Fatalf("after dropping the oldest: %d bytes counted, want %d", q.bytes, len(big))
	}
	q.pop()
	if q.bytes != 0 || q.len() != 0 {
		t.Fatalf("empty queue counts %d bytes, %d events", q.bytes, q.len())
	}
}
