package media

import (
	"context"
	"sync"
)

// flight runs one call per key at a time: callers that ask for a key whose
// call is running wait for its result instead of starting their own (a
// thumbnail requested by every member of a room at once is generated once).
type flight[K comparable, V any] struct {
	mu    sync.Mutex
	calls map[K]*flightCall[V]
}

type flightCall[V any] struct {
	done chan struct{}
	val  V
	err  error
}

// Do returns fn's result for key, running fn unless a call for key is
// already running. A waiter whose ctx ends stops waiting; the call goes on
// for the others (fn should not depend on the first caller's ctx).
func (f *flight[K, V]) Do(ctx context.Context, key K, fn func() (V, error)) (V, error) {
	f.mu.Lock()
	if c, ok := f.calls[key]; ok {
		f.mu.Unlock()
		select {
		case <-c.done:
			return c.val, c.err
		case <-ctx.Done():
			var zero V
			return zero, ctx.Err()
		}
	}
	if f.calls == nil {
		f.calls = make(map[K]*flightCall[V])
	}
	c := &flightCall[V]{done: make(chan struct{})}
	f.calls[key] = c
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		delete(f.calls, key)
		f.mu.Unlock()
		close(c.done)
	}()
	c.val, c.err = fn()
	return c.val, c.err
}
