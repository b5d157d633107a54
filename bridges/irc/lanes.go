package irc

import (
	"hash/fnv"
	"sync"
)

// lanes run work in order per key and in parallel across keys: the IRC
// events of one channel reach Matrix in the order IRC sent them, while a
// slow channel does not hold the others up. A lane's goroutine exists only
// while it has work, so idle channels cost nothing.
type lanes struct {
	mu     sync.Mutex
	queues map[string]*[]func()
	wg     sync.WaitGroup
	closed bool
}

func newLanes() *lanes { return &lanes{queues: map[string]*[]func(){}} }

// do queues f on key's lane. After close it does nothing.
func (l *lanes) do(key string, f func()) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return
	}
	if q := l.queues[key]; q != nil {
		*q = append(*q, f)
		return
	}
	q := &[]func(){f}
	l.queues[key] = q
	l.wg.Add(1)
	go l.run(key, q)
}

func (l *lanes) run(key string, q *[]func()) {
	defer l.wg.Done()
	for {
		l.mu.Lock()
		if len(*q) == 0 {
			delete(l.queues, key)
			l.mu.Unlock()
			return
		}
		f := (*q)[0]
		(*q)[0] = nil
		*q = (*q)[1:]
		l.mu.Unlock()
		f()
	}
}

// close refuses new work and waits for the queued work to finish.
func (l *lanes) close() {
	l.mu.Lock()
	l.closed = true
	l.mu.Unlock()
	l.wg.Wait()
}

// pending is how many pieces of work wait, for metrics and tests.
func (l *lanes) pending() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, q := range l.queues {
		n += len(*q)
	}
	return n
}

// ghostLocks serialise the first use of each ghost. The framework's
// EnsureGhost (mautrix's IntentAPI.EnsureRegistered) is not safe for
// concurrent calls on one ghost, and the lanes of two channels may show
// the same IRC user at once (a nick change, a netjoin): the bridge
// registers a ghost under its lock before handing it to the framework,
// whose later calls then only read. Striped, so no lock per ghost.
type ghostLocks struct {
	stripes [64]sync.Mutex
	ready   sync.Map // RemoteUser.ID → the Name it was made ready with
}

func (g *ghostLocks) lock(key string) *sync.Mutex {
	h := fnv.New32a()
	h.Write([]byte(key))
	return &g.stripes[h.Sum32()%uint32(len(g.stripes))]
}
