package ircx

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/switchboard-im/switchboard/framework"
)

// Dialer paces new connections to one network across every Conn that
// shares it (Config.Dialer), so that thousands of puppets coming back
// after a netsplit or a restart do not storm the server (and trip its
// connection throttling, which would ban the bridge's address). Safe for
// concurrent use.
type Dialer struct {
	limiter *framework.Limiter
}

// NewDialer allows perSecond new connections a second after a burst of
// burst; perSecond <= 0 means no limit.
func NewDialer(perSecond float64, burst int) *Dialer {
	return &Dialer{limiter: framework.NewLimiter(perSecond, burst)}
}

// Wait takes one connection slot, waiting for it. It fails at once when
// the slot would come after ctx's deadline: give Connect a context
// without a deadline, or a long one, when many Conns reconnect together.
func (d *Dialer) Wait(ctx context.Context) error {
	if err := d.limiter.Wait(ctx); err != nil {
		return fmt.Errorf("connection rate: %w", err)
	}
	return nil
}

// Backoff is an exponential backoff with jitter for reconnecting one
// Conn: the n-th delay is drawn at random from [d/2, d] where d is
// Min·2ⁿ capped at Max, so that Conns that dropped together do not come
// back together. The zero value uses the defaults. Safe for concurrent
// use.
type Backoff struct {
	// Min is the first delay's ceiling (0: 2 s) and Max the cap (0: 5 min).
	Min, Max time.Duration

	mu sync.Mutex
	n  int
}

// Next returns the delay before the next attempt and counts the attempt.
func (b *Backoff) Next() time.Duration {
	b.mu.Lock()
	n := b.n
	b.n++
	b.mu.Unlock()
	lo, hi := b.Min, b.Max
	if lo <= 0 {
		lo = 2 * time.Second
	}
	if hi <= 0 {
		hi = 5 * time.Minute
	}
	d := hi
	if n < 62 && lo <= hi>>n {
		d = min(lo<<n, hi)
	}
	return d/2 + rand.N(d/2+1)
}

// Attempts returns how many delays Next handed out since the last Reset.
func (b *Backoff) Attempts() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.n
}

// Reset starts over from Min.
func (b *Backoff) Reset() {
	b.mu.Lock()
	b.n = 0
	b.mu.Unlock()
}
