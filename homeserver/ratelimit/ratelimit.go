// Package ratelimit provides keyed token buckets (per client IP, per
// account) for the endpoints an attacker would hammer: login, registration,
// shared-secret registration.
package ratelimit

import (
	"math"
	"sync"
	"time"

	"github.com/switchboard-im/switchboard/homeserver/config"
)

// maxKeys bounds memory under a flood of distinct keys (spoofed sources):
// when reached, full buckets are dropped first, then everything.
const maxKeys = 100_000

// Limiter is a set of token buckets, one per key. A zero rate disables it.
type Limiter struct {
	rate  float64 // tokens per second
	burst float64

	mu      sync.Mutex
	buckets map[string]*bucket
	now     func() time.Time
}

type bucket struct {
	tokens float64
	last   time.Time
}

// New returns a limiter for the configured rate.
func New(rl config.RateLimit) *Limiter {
	return &Limiter{rate: rl.PerSecond, burst: float64(rl.Burst), buckets: map[string]*bucket{}, now: time.Now}
}

// Allow takes one token for key. When none is left it returns false and how
// long until one will be.
func (l *Limiter) Allow(key string) (ok bool, retryAfter time.Duration) {
	if l == nil || l.rate <= 0 {
		return true, 0
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	b := l.refill(key, now)
	if b.tokens >= 1 {
		b.tokens--
		return true, 0
	}
	wait := (1 - b.tokens) / l.rate
	return false, time.Duration(math.Ceil(wait*1000)) * time.Millisecond
}

// Peek reports whether key has a token without taking it.
func (l *Limiter) Peek(key string) (ok bool, retryAfter time.Duration) {
	if l == nil || l.rate <= 0 {
		return true, 0
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.refill(key, l.now())
	if b.tokens >= 1 {
		return true, 0
	}
	return false, time.Duration(math.Ceil((1-b.tokens)/l.rate*1000)) * time.Millisecond
}

func (l *Limiter) refill(key string, now time.Time) *bucket {
	b, ok := l.buckets[key]
	if !ok {
		if len(l.buckets) >= maxKeys {
			l.evict(now)
		}
		b = &bucket{tokens: l.burst, last: now}
		l.buckets[key] = b
		return b
	}
	b.tokens = math.Min(l.burst, b.tokens+now.Sub(b.last).Seconds()*l.rate)
	b.last = now
	return b
}

func (l *Limiter) evict(now time.Time) {
	for k, b := range l.buckets {
		if b.tokens+now.Sub(b.last).Seconds()*l.rate >= l.burst {
			delete(l.buckets, k)
		}
	}
	if len(l.buckets) >= maxKeys {
		clear(l.buckets)
	}
}
