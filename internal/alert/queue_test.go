package alert

import (
	"testing"
	"time"
)

func TestQueueDropsTheOldestWhenFull(t *testing.T) {
	q := NewQueue(3)
	var ids []string
	for i := range 5 {
		a := New(Denials, "s", "", time.Unix(int64(i), 0))
		ids = append(ids, a.ID)
		dropped := q.Push(a)
		if dropped != (i >= 3) {
			t.Fatalf("push %d: dropped = %v", i, dropped)
		}
	}
	if q.Len() != 3 || q.Dropped() != 2 {
		t.Fatalf("len %d dropped %d, want 3 and 2", q.Len(), q.Dropped())
	}
	select {
	case <-q.Ready():
	default:
		t.Fatal("a queue holding alerts is not ready")
	}
	for _, want := range ids[2:] {
		a, ok := q.Pop()
		if !ok || a.ID != want {
			t.Fatalf("pop = %v %v, want %s (the newest three, oldest first)", a.ID, ok, want)
		}
	}
	if _, ok := q.Pop(); ok {
		t.Fatal("pop from an empty queue")
	}
}

func TestSenderNeverBlocksOnAFullQueue(t *testing.T) {
	// No Run: nothing drains, and Send must still return every time.
	s := NewSender([]Receiver{{Name: "r", URL: "http://127.0.0.1:1/", Secret: []byte("0123456789abcdef")}}, Options{QueueSize: 4})
	for range 1000 {
		s.Send(New(Denials, "s", "", time.Now()))
	}
	if got := s.Dropped()["r"]; got != 996 {
		t.Fatalf("dropped %d, want 996", got)
	}
}
