package alert

import "sync"

// Queue is a bounded FIFO of alerts that never blocks its producer: when
// it is full, Push drops the oldest alert to make room. The newest alerts
// are the ones an operator needs; the audit trail keeps the rest.
type Queue struct {
	mu      sync.Mutex
	items   []queued
	max     int
	dropped uint64
	ready   chan struct{} // holds a token while items is not empty
}

// queued is an alert with its encoded body.
type queued struct {
	alert Alert
	body  []byte
}

// NewQueue returns a queue holding at most size alerts (at least 1).
func NewQueue(size int) *Queue {
	return &Queue{max: max(size, 1), ready: make(chan struct{}, 1)}
}

// push adds q, dropping the oldest entry when full; it reports whether
// one was dropped.
func (q *Queue) push(e queued) (dropped bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.items) >= q.max {
		q.items[0] = queued{}
		q.items = q.items[1:]
		q.dropped++
		dropped = true
	}
	q.items = append(q.items, e)
	select {
	case q.ready <- struct{}{}:
	default:
	}
	return dropped
}

// Push adds a; it reports whether the oldest alert was dropped for it.
func (q *Queue) Push(a Alert) (dropped bool) { return q.push(queued{alert: a}) }

// pop takes the oldest entry, if any.
func (q *Queue) pop() (queued, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.items) == 0 {
		return queued{}, false
	}
	e := q.items[0]
	q.items[0] = queued{}
	q.items = q.items[1:]
	if len(q.items) > 0 {
		select {
		case q.ready <- struct{}{}:
		default:
		}
	}
	return e, true
}

// Pop takes the oldest alert, if any.
func (q *Queue) Pop() (Alert, bool) {
	e, ok := q.pop()
	return e.alert, ok
}

// Ready receives when the queue may hold an alert: wait on it, then Pop
// until it reports none.
func (q *Queue) Ready() <-chan struct{} { return q.ready }

// Len is how many alerts wait.
func (q *Queue) Len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.items)
}

// Dropped is how many alerts were dropped for newer ones.
func (q *Queue) Dropped() uint64 {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.dropped
}

// LogDrop reports whether the n-th drop should be logged: the first, the
// second, the fourth and so on, so that a flood of drops writes a few log
// lines, each with the running count, rather than one per alert.
func LogDrop(n uint64) bool { return n > 0 && n&(n-1) == 0 }
