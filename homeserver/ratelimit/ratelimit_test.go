package ratelimit

import (
	"testing"
	"time"

	"github.com/switchboard-im/switchboard/homeserver/config"
)

func TestTokenBucket(t *testing.T) {
	now := time.Unix(1000, 0)
	l := New(config.RateLimit{PerSecond: 2, Burst: 3})
	l.now = func() time.Time { return now }
	for i := 0; i < 3; i++ {
		if ok, _ := l.Allow("ip"); !ok {
			t.Fatalf("request %d of the burst refused", i+1)
		}
	}
	ok, retry := l.Allow("ip")
	if ok || retry != 500*time.Millisecond {
		t.Fatalf("4th request: ok=%v retry=%v, want refused with 500ms", ok, retry)
	}
	if ok, _ := l.Allow("other-ip"); !ok {
		t.Fatal("keys are not independent")
	}
	now = now.Add(500 * time.Millisecond)
	if ok, _ := l.Peek("ip"); !ok {
		t.Fatal("bucket did not refill")
	}
	if ok, _ := l.Allow("ip"); !ok {
		t.Fatal("refilled token refused")
	}
	now = now.Add(time.Hour)
	for i := 0; i < 3; i++ {
		if ok, _ := l.Allow("ip"); !ok {
			t.Fatal("bucket exceeds burst after long idle? refused within burst")
		}
	}
	if ok, _ := l.Allow("ip"); ok {
		t.Fatal("bucket grew beyond its burst")
	}
}

func TestDisabled(t *testing.T) {
	l := New(config.RateLimit{})
	for i := 0; i < 1000; i++ {
		if ok, _ := l.Allow("x"); !ok {
			t.Fatal("disabled limiter refused")
		}
	}
}

func TestEvictionBoundsMemory(t *testing.T) {
	l := New(config.RateLimit{PerSecond: 1, Burst: 1})
	for i := 0; i < maxKeys+10; i++ {
		l.Allow(string(rune(i)))
	}
	if len(l.buckets) > maxKeys {
		t.Fatalf("%d buckets, want ≤ %d", len(l.buckets), maxKeys)
	}
}
