package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"sort"
	"sync"
	"time"

	"maunium.net/go/mautrix"
)

// phaseResult gathers one load phase's outcome across clients.
type phaseResult struct {
	elapsed   time.Duration
	latencies []time.Duration // successful requests only
	errors    int
	errorMsgs map[string]int // distinct error texts, for the report
}

func (r *phaseResult) ok() int { return len(r.latencies) }

func (r *phaseResult) perSecond() float64 {
	if r.elapsed <= 0 {
		return 0
	}
	return float64(r.ok()) / r.elapsed.Seconds()
}

// percentileMS is the nearest-rank percentile of successful latencies.
func (r *phaseResult) percentileMS(p float64) float64 {
	if len(r.latencies) == 0 {
		return 0
	}
	i := int(float64(len(r.latencies))*p/100+0.5) - 1
	i = max(0, min(i, len(r.latencies)-1))
	return float64(r.latencies[i].Microseconds()) / 1000
}

// printErrors lists the distinct errors, most frequent first: a count alone
// would hide what went wrong.
func (r *phaseResult) printErrors(w io.Writer, phase string) {
	msgs := make([]string, 0, len(r.errorMsgs))
	for m := range r.errorMsgs {
		msgs = append(msgs, m)
	}
	sort.Slice(msgs, func(i, j int) bool { return r.errorMsgs[msgs[i]] > r.errorMsgs[msgs[j]] })
	for _, m := range msgs {
		fmt.Fprintf(w, "switchboard-bench: %s error (×%d): %s\n", phase, r.errorMsgs[m], m)
	}
}

// worker is one client's share of a phase.
type worker struct {
	latencies []time.Duration
	errors    int
	errorMsgs map[string]int
}

func (w *worker) record(start time.Time, err error) {
	if err != nil {
		w.errors++
		if w.errorMsgs == nil {
			w.errorMsgs = map[string]int{}
		}
		if len(w.errorMsgs) < 10 {
			w.errorMsgs[err.Error()]++
		}
		return
	}
	w.latencies = append(w.latencies, time.Since(start))
}

// runPhase runs fn on every client in a loop until the duration is over (a
// request in flight at the deadline completes and counts) and merges the
// results. elapsed runs until the last client finished.
func (b *bench) runPhase(ctx context.Context, clients []*mautrix.Client, fn func(context.Context, int, *mautrix.Client) error) *phaseResult {
	workers := make([]worker, len(clients))
	start := time.Now()
	deadline := start.Add(b.opts.duration)
	var wg sync.WaitGroup
	for i, cli := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w := &workers[i]
			for ctx.Err() == nil && time.Now().Before(deadline) {
				t := time.Now()
				w.record(t, fn(ctx, i, cli))
			}
		}()
	}
	wg.Wait()
	return mergeWorkers(workers, time.Since(start))
}

// mergeWorkers gathers the clients' shares of a phase that took elapsed.
func mergeWorkers(workers []worker, elapsed time.Duration) *phaseResult {
	res := &phaseResult{elapsed: elapsed, errorMsgs: map[string]int{}}
	for _, w := range workers {
		res.latencies = append(res.latencies, w.latencies...)
		res.errors += w.errors
		for m, n := range w.errorMsgs {
			res.errorMsgs[m] += n
		}
	}
	slices.Sort(res.latencies)
	return res
}

// newClients makes one mautrix client per bench client, sharing a transport
// that keeps a connection per client alive (as real clients would).
func (b *bench) newClients() ([]*mautrix.Client, error) {
	transport := &http.Transport{
		Proxy:               nil, // loopback only, never through a proxy
		DialContext:         (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:        2 * b.opts.clients,
		MaxIdleConnsPerHost: 2 * b.opts.clients,
		IdleConnTimeout:     90 * time.Second,
	}
	httpClient := &http.Client{Transport: transport, Timeout: 60 * time.Second}
	clients := make([]*mautrix.Client, b.opts.clients)
	for i := range clients {
		cli, err := mautrix.NewClient(b.srv.baseURL, "", "")
		if err != nil {
			return nil, fmt.Errorf("mautrix client: %w", err)
		}
		cli.Client = httpClient
		cli.UserAgent = "switchboard-bench"
		cli.DefaultHTTPRetries = 0
		cli.IgnoreRateLimit = true // a 429 is an error here, not a pause
		clients[i] = cli
	}
	return clients, nil
}

func loginRequest(u benchUser, store bool) *mautrix.ReqLogin {
	return &mautrix.ReqLogin{
		Type:                     mautrix.AuthTypePassword,
		Identifier:               mautrix.UserIdentifier{Type: mautrix.IdentifierTypeUser, User: u.name},
		Password:                 u.password,
		InitialDeviceDisplayName: "switchboard-bench",
		StoreCredentials:         store,
	}
}

// loginPhase: every client logs in with m.login.password over and over.
// Each login hashes the password (argon2id) and creates a device.
func (b *bench) loginPhase(ctx context.Context, users []benchUser) *phaseResult {
	clients, err := b.newClients()
	if err != nil {
		return &phaseResult{errors: 1, errorMsgs: map[string]int{err.Error(): 1}}
	}
	return b.runPhase(ctx, clients, func(ctx context.Context, i int, cli *mautrix.Client) error {
		_, err := cli.Login(ctx, loginRequest(users[i%len(users)], false))
		return err
	})
}

// whoamiPhase: every client logs in once (not timed), then calls
// /account/whoami over and over: the cost of an authenticated request.
func (b *bench) whoamiPhase(ctx context.Context, users []benchUser) *phaseResult {
	clients, err := b.newClients()
	if err != nil {
		return &phaseResult{errors: 1, errorMsgs: map[string]int{err.Error(): 1}}
	}
	var wg sync.WaitGroup
	loginErrs := make([]error, len(clients))
	for i, cli := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, loginErrs[i] = cli.Login(ctx, loginRequest(users[i%len(users)], true))
		}()
	}
	wg.Wait()
	res := &phaseResult{errorMsgs: map[string]int{}}
	var ready []*mautrix.Client
	for i, err := range loginErrs {
		if err != nil {
			res.errors++
			res.errorMsgs["login before whoami: "+err.Error()]++
			continue
		}
		ready = append(ready, clients[i])
	}
	if len(ready) == 0 {
		return res
	}
	phase := b.runPhase(ctx, ready, func(ctx context.Context, _ int, cli *mautrix.Client) error {
		resp, err := cli.Whoami(ctx)
		if err == nil && resp.UserID != cli.UserID {
			return fmt.Errorf("whoami answered %s, want %s", resp.UserID, cli.UserID)
		}
		return err
	})
	phase.errors += res.errors
	for m, n := range res.errorMsgs {
		phase.errorMsgs[m] += n
	}
	return phase
}
