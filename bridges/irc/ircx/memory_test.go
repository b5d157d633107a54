package ircx_test

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/switchboard-im/switchboard/bridges/irc/ircx"
	"github.com/switchboard-im/switchboard/bridges/irc/ircx/ircxtest"
)

// idleFigures is what idle connections cost this process.
type idleFigures struct {
	conns                     int
	heapPerConn, stackPerConn float64 // bytes
	goroutinesPerConn         float64
	connectAll                time.Duration
}

func (f idleFigures) perConn() float64 { return f.heapPerConn + f.stackPerConn }

func (f idleFigures) String() string {
	return fmt.Sprintf("ircx idle connections: conns=%d bytes_per_conn=%.0f heap_per_conn=%.0f stack_per_conn=%.0f goroutines_per_conn=%.2f connect_all=%s",
		f.conns, f.perConn(), f.heapPerConn, f.stackPerConn, f.goroutinesPerConn, f.connectAll.Round(time.Millisecond))
}

// measureIdle connects n Conns (registered, no channel), lets them idle
// and measures the heap and goroutine stacks they hold, then closes them.
func measureIdle(tb testing.TB, addr string, useTLS bool, n int) idleFigures {
	tb.Helper()
	settle := func() runtime.MemStats {
		var ms runtime.MemStats
		for range 3 {
			runtime.GC()
			time.Sleep(20 * time.Millisecond)
		}
		runtime.ReadMemStats(&ms)
		return ms
	}
	before, goroutinesBefore := settle(), runtime.NumGoroutine()

	conns := make([]*ircx.Conn, n)
	start := time.Now()
	var wg sync.WaitGroup
	next := make(chan int)
	for range 32 {
		wg.Go(func() {
			for i := range next {
				c := ircx.New(ircx.Config{Addr: addr, Nick: fmt.Sprintf("idle%d", i), TLS: useTLS, TLSInsecure: useTLS})
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				if err := c.Connect(ctx); err != nil {
					tb.Errorf("connection %d: %v", i, err)
				}
				cancel()
				conns[i] = c
			}
		})
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	connectAll := time.Since(start)
	if tb.Failed() {
		tb.FailNow()
	}

	after, goroutinesAfter := settle(), runtime.NumGoroutine()
	f := idleFigures{
		conns:             n,
		heapPerConn:       float64(int64(after.HeapAlloc)-int64(before.HeapAlloc)) / float64(n),
		stackPerConn:      float64(int64(after.StackInuse)-int64(before.StackInuse)) / float64(n),
		goroutinesPerConn: float64(goroutinesAfter-goroutinesBefore) / float64(n),
		connectAll:        connectAll,
	}
	for _, c := range conns {
		if !c.Connected() {
			tb.Errorf("%s dropped while idle: %v", c.Nick(), c.Err())
		}
		c.Close()
	}
	runtime.KeepAlive(conns)
	return f
}

// TestIdleConnectionMemory: the bridge holds thousands of puppets, so an
// idle connection must stay within 64 KiB of this process's memory, with
// or without TLS.
func TestIdleConnectionMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("500 connections: not in -short")
	}
	srv := ircxtest.Start(t, &ircxtest.Options{TLS: true})
	for _, useTLS := range []bool{false, true} {
		t.Run(map[bool]string{false: "plain", true: "TLS"}[useTLS], func(t *testing.T) {
			addr := srv.Addr
			if useTLS {
				addr = srv.TLSAddr
			}
			f := measureIdle(t, addr, useTLS, 500)
			t.Log(f)
			if raceEnabled {
				t.Skip("the race detector inflates memory: not asserting")
			}
			if f.perConn() > 64<<10 {
				t.Errorf("%.0f bytes per idle connection, want ≤ 64 KiB", f.perConn())
			}
			if f.goroutinesPerConn > 1.01 {
				t.Errorf("%.2f goroutines per idle connection, want 1", f.goroutinesPerConn)
			}
		})
	}
}

// BenchmarkIdleConnections reports the memory of 500 idle connections,
// plain and TLS:
//
//	go test -run '^$' -bench IdleConnections -benchtime 1x ./bridges/irc/ircx/
func BenchmarkIdleConnections(b *testing.B) {
	srv := ircxtest.Start(b, &ircxtest.Options{TLS: true})
	for _, useTLS := range []bool{false, true} {
		b.Run(map[bool]string{false: "plain", true: "TLS"}[useTLS], func(b *testing.B) {
			addr := srv.Addr
			if useTLS {
				addr = srv.TLSAddr
			}
			var f idleFigures
			for b.Loop() {
				f = measureIdle(b, addr, useTLS, 500)
			}
			b.ReportMetric(f.perConn(), "bytes/conn")
			b.ReportMetric(f.heapPerConn, "heap-bytes/conn")
			b.ReportMetric(f.stackPerConn, "stack-bytes/conn")
			b.ReportMetric(float64(f.connectAll.Milliseconds()), "ms-connect-500")
			b.Log(f)
		})
	}
}
