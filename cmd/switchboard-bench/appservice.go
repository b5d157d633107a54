package main

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// The appservice suite measures transaction delivery to one application
// service on a fresh server. The bench itself is the appservice: an HTTP
// receiver on a free loopback port that answers PUT
// /_matrix/app/v1/transactions/{txnId}, registered (before the server
// starts) in DATA/appservices/bench.yaml with the user namespace @bench_.*.
// One of its ghosts is joined to a public room; --clients ordinary users in
// that room send messages, and every message reaches the appservice because
// the ghost is a member. Lines:
//
//	bench appservice db=sqlite delivered_events_per_sec=… latency_p50_ms=… latency_p99_ms=… senders=32 … errors=0 …
//	bench appservice db=sqlite backlog_events=20000 drain_s=… drain_events_per_sec=… … errors=0 …
//
// The live phase: the senders send back to back for --duration; latency runs
// from the start of a sender's PUT /send to the moment the transaction that
// carries the event has been read by the receiver. The backlog phase: the
// receiver answers 503 while --as-backlog messages are sent as fast as
// possible, then answers again (and sends the server SIGHUP, which ends the
// pusher's backoff wait); the time until the last of them arrived is pure
// transaction throughput, independent of how fast clients send.

// asMsgKey carries a message's bench ID in its content.
const asMsgKey = "fi.switchboard.bench.as_msg"

// asGhost is the appservice's ghost that makes the room interesting to it.
const asGhost = "bench_ghost"

// backlogDrainTimeout bounds the wait for the backlog to arrive.
const backlogDrainTimeout = 60 * time.Second

type appserviceOptions struct {
	backlog int
}

func addAppserviceFlags(fs *flag.FlagSet, o *appserviceOptions) {
	fs.IntVar(&o.backlog, "as-backlog", 20000, "appservice: messages queued while the appservice is down, then drained")
}

func (o appserviceOptions) validate() error {
	if o.backlog < 1 {
		return errors.New("--as-backlog must be ≥ 1")
	}
	return nil
}

// reportAppservice prints one appservice figure line.
func (b *bench) reportAppservice(format string, args ...any) {
	fmt.Fprintf(b.out, "bench appservice db=%s "+format+"\n", append([]any{b.label}, args...)...)
}

// asReceiver is the appservice: it records when each bench message arrives.
type asReceiver struct {
	hsToken string
	refuse  atomic.Bool // answer 503 (the appservice is "down")
	changed chan struct{}

	nextID atomic.Int64

	mu       sync.Mutex
	txnSeen  map[string]bool
	sentAt   map[int64]time.Time // send start, by message ID
	sendErr  map[int64]bool      // the send failed
	recvAt   map[int64]time.Time // first arrival
	joined   map[string]bool     // state keys of join events received
	dupes    int                 // messages that arrived again in another transaction
	txns     int                 // transactions accepted (new txnIds)
	retried  int                 // accepted txnIds sent again (answered, ignored)
	refused  int                 // attempts answered 503
	badAuth  int                 // requests without the hs_token
	badTxn   int                 // bodies that did not decode
	msgTxns  int                 // accepted transactions with bench messages
	msgCount int                 // bench messages in accepted transactions
	txnTimes []time.Time         // arrivals of the accepted transactions with bench messages
}

func newASReceiver(hsToken string) *asReceiver {
	return &asReceiver{
		hsToken: hsToken,
		changed: make(chan struct{}, 1),
		txnSeen: map[string]bool{},
		sentAt:  map[int64]time.Time{},
		sendErr: map[int64]bool{},
		recvAt:  map[int64]time.Time{},
		joined:  map[string]bool{},
	}
}

// asTxn is the part of a transaction the receiver reads.
type asTxn struct {
	Events []struct {
		Type     string  `json:"type"`
		StateKey *string `json:"state_key"`
		Content  struct {
			Membership string `json:"membership"`
			Msg        *int64 `json:"fi.switchboard.bench.as_msg"`
		} `json:"content"`
	} `json:"events"`
}

const txnPrefix = "/_matrix/app/v1/transactions/"

func (r *asReceiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	if req.Method != http.MethodPut || !strings.HasPrefix(req.URL.Path, txnPrefix) {
		w.WriteHeader(http.StatusNotFound)
		io.WriteString(w, `{"errcode":"M_UNRECOGNIZED","error":"not a transaction"}`)
		return
	}
	body, err := io.ReadAll(req.Body)
	now := time.Now()
	if err != nil {
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	if subtle.ConstantTimeCompare([]byte(req.Header.Get("Authorization")), []byte("Bearer "+r.hsToken)) != 1 {
		r.mu.Lock()
		r.badAuth++
		r.mu.Unlock()
		w.WriteHeader(http.StatusForbidden)
		io.WriteString(w, `{"errcode":"M_FORBIDDEN","error":"bad hs_token"}`)
		return
	}
	if r.refuse.Load() {
		r.mu.Lock()
		r.refused++
		r.mu.Unlock()
		w.WriteHeader(http.StatusServiceUnavailable)
		io.WriteString(w, `{"errcode":"M_UNKNOWN","error":"bench: appservice down"}`)
		return
	}
	txnID := strings.TrimPrefix(req.URL.Path, txnPrefix)
	var txn asTxn
	if err := json.Unmarshal(body, &txn); err != nil {
		r.mu.Lock()
		r.badTxn++
		r.mu.Unlock()
		w.WriteHeader(http.StatusBadRequest)
		io.WriteString(w, `{"errcode":"M_NOT_JSON","error":"bad transaction"}`)
		return
	}
	r.mu.Lock()
	if r.txnSeen[txnID] {
		r.retried++
		r.mu.Unlock()
		io.WriteString(w, "{}")
		return
	}
	r.txnSeen[txnID] = true
	r.txns++
	msgs := 0
	for _, e := range txn.Events {
		switch {
		case e.Content.Msg != nil:
			msgs++
			if _, ok := r.recvAt[*e.Content.Msg]; ok {
				r.dupes++
			} else {
				r.recvAt[*e.Content.Msg] = now
			}
		case e.Type == event.StateMember.Type && e.StateKey != nil && e.Content.Membership == string(event.MembershipJoin):
			r.joined[*e.StateKey] = true
		}
	}
	if msgs > 0 {
		r.txnTimes = append(r.txnTimes, now)
		r.msgTxns++
		r.msgCount += msgs
	}
	r.mu.Unlock()
	select {
	case r.changed <- struct{}{}:
	default:
	}
	io.WriteString(w, "{}")
}

// counters is a snapshot of the receiver's transaction counters.
type asCounters struct{ txns, retried, refused, badAuth, badTxn, msgTxns, msgCount, dupes int }

func (r *asReceiver) counters() asCounters {
	r.mu.Lock()
	defer r.mu.Unlock()
	return asCounters{r.txns, r.retried, r.refused, r.badAuth, r.badTxn, r.msgTxns, r.msgCount, r.dupes}
}

func (c asCounters) sub(o asCounters) asCounters {
	return asCounters{c.txns - o.txns, c.retried - o.retried, c.refused - o.refused, c.badAuth - o.badAuth,
		c.badTxn - o.badTxn, c.msgTxns - o.msgTxns, c.msgCount - o.msgCount, c.dupes - o.dupes}
}

// eventsPerTxn is the mean number of bench messages per transaction that had any.
func (c asCounters) eventsPerTxn() float64 {
	if c.msgTxns == 0 {
		return 0
	}
	return float64(c.msgCount) / float64(c.msgTxns)
}

// txnCadence describes the transactions that arrived in [from, to): how
// many, and the median and longest gap between consecutive ones (the
// pusher's cycle: build, record, render, PUT, acknowledge).
func (r *asReceiver) txnCadence(from, to time.Time) string {
	r.mu.Lock()
	var gaps []time.Duration
	n := 0
	var prev time.Time
	for _, t := range r.txnTimes {
		if t.Before(from) || !t.Before(to) {
			continue
		}
		if n > 0 {
			gaps = append(gaps, t.Sub(prev))
		}
		prev = t
		n++
	}
	r.mu.Unlock()
	slices.Sort(gaps)
	g := &phaseResult{latencies: gaps}
	return fmt.Sprintf("%d transactions, gap p50 %.1f ms, max %.1f ms", n, g.percentileMS(50), g.percentileMS(100))
}

// sending records a message's send start; the result follows with sent.
func (r *asReceiver) sending(msgID int64, t time.Time) {
	r.mu.Lock()
	r.sentAt[msgID] = t
	r.mu.Unlock()
}

func (r *asReceiver) sent(msgID int64, err error) {
	if err == nil {
		return
	}
	r.mu.Lock()
	r.sendErr[msgID] = true
	r.mu.Unlock()
}

// waitFor waits until every successfully sent message with an ID in
// [lo, hi) has arrived, or until deadline. It reports whether all did.
func (r *asReceiver) waitFor(ctx context.Context, lo, hi int64, deadline time.Time) bool {
	r.mu.Lock()
	var pending []int64
	for msgID := lo; msgID < hi; msgID++ {
		if _, ok := r.sentAt[msgID]; !ok || r.sendErr[msgID] {
			continue
		}
		if _, ok := r.recvAt[msgID]; !ok {
			pending = append(pending, msgID)
		}
	}
	r.mu.Unlock()
	timer := time.NewTimer(time.Until(deadline))
	defer timer.Stop()
	for {
		r.mu.Lock()
		pending = slices.DeleteFunc(pending, func(msgID int64) bool {
			_, ok := r.recvAt[msgID]
			return ok
		})
		r.mu.Unlock()
		if len(pending) == 0 {
			return true
		}
		select {
		case <-r.changed:
		case <-timer.C:
			return false
		case <-ctx.Done():
			return false
		}
	}
}

// asPhase is what arrived of the messages with IDs in [lo, hi).
type asPhase struct {
	sent, sendErrors    int             // sends answered 200 / failed
	received            int             // distinct messages of successful sends that arrived
	strays              int             // messages whose send failed but which arrived anyway
	missing             int             // successful sends that did not arrive
	latencies           []time.Duration // arrival − send start, sorted
	firstRecv, lastRecv time.Time
	recvTimes           []time.Time // every arrival, for windows
}

func (r *asReceiver) phase(lo, hi int64) *asPhase {
	r.mu.Lock()
	defer r.mu.Unlock()
	p := &asPhase{}
	for msgID := lo; msgID < hi; msgID++ {
		start, ok := r.sentAt[msgID]
		if !ok {
			continue
		}
		at, got := r.recvAt[msgID]
		if got {
			p.recvTimes = append(p.recvTimes, at)
			if p.firstRecv.IsZero() || at.Before(p.firstRecv) {
				p.firstRecv = at
			}
			if at.After(p.lastRecv) {
				p.lastRecv = at
			}
		}
		switch {
		case r.sendErr[msgID]:
			p.sendErrors++
			if got {
				p.strays++
			}
		case got:
			p.sent++
			p.received++
			p.latencies = append(p.latencies, at.Sub(start))
		default:
			p.sent++
			p.missing++
		}
	}
	slices.Sort(p.latencies)
	return p
}

// receivedBetween counts the arrivals in [from, to).
func (p *asPhase) receivedBetween(from, to time.Time) int {
	n := 0
	for _, t := range p.recvTimes {
		if !t.Before(from) && t.Before(to) {
			n++
		}
	}
	return n
}

func (p *asPhase) percentileMS(q float64) float64 {
	return (&phaseResult{latencies: p.latencies}).percentileMS(q)
}

// runAppservice is the appservice suite, on its own server and data dir.
func (b *bench) runAppservice(ctx context.Context) (err error) {
	// The appservice: listening before the server starts, so that the
	// pusher finds it up from its first transaction.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("appservice listener: %w", err)
	}
	asToken, hsToken := randomHex(16), randomHex(16)
	recv := newASReceiver(hsToken)
	hs := &http.Server{Handler: recv, ReadHeaderTimeout: 10 * time.Second}
	go hs.Serve(ln)
	defer hs.Close()
	idle, done, err := b.startSuite(ctx, "appservice", func() error {
		return writeASRegistration(b.srv.dataDir, "http://"+ln.Addr().String(), asToken, hsToken)
	})
	if err != nil {
		return err
	}
	defer done()
	backlog := b.opts.appservice.backlog
	b.reportAppservice("senders=%d duration=%s backlog_events=%d cpus=%d load_1m=%s",
		b.opts.clients, b.opts.duration, backlog, runtime.NumCPU(), loadAvg())

	setupStart := time.Now()
	users, err := b.srv.createUsers(ctx, b.opts.clients)
	if err != nil {
		return err
	}
	senders, err := b.loginAll(ctx, users)
	if err != nil {
		return err
	}
	roomID, err := setupRoom(ctx, senders[0], senders[1:], "appservice")
	if err != nil {
		return err
	}
	ghost, err := b.joinGhost(ctx, senders[0].http, asToken, roomID)
	if err != nil {
		return err
	}
	// The ghost's join reaching the appservice shows the pipeline works
	// (and opens the pusher's connection) before anything is timed.
	if !waitUntil(ctx, recv, 10*time.Second, func() bool { return recv.joined[ghost.String()] }) {
		b.srv.printLogTail(b.errOut)
		return fmt.Errorf("the appservice did not receive its ghost's join within 10s (counters %+v)", recv.counters())
	}
	fmt.Fprintf(b.errOut, "switchboard-bench: appservice: %d senders and ghost %s in %s, set up in %.1fs\n",
		len(senders), ghost, roomID, time.Since(setupStart).Seconds())

	var problems []string

	// Live: senders back to back for --duration, the appservice answering.
	stopPerf := b.perfPhase("appservice")
	before := recv.counters()
	m := b.startMeter()
	lo := recv.nextID.Load()
	start := time.Now()
	sendEnd := start.Add(b.opts.duration)
	send := b.asSendPhase(ctx, senders, oneRoom(roomID), recv, func() bool { return time.Now().Before(sendEnd) })
	hi := recv.nextID.Load()
	allArrived := recv.waitFor(ctx, lo, hi, time.Now().Add(deliveryTimeout))
	cpu := m.stop()
	stopPerf()
	live := recv.phase(lo, hi)
	c := recv.counters().sub(before)
	wall := live.lastRecv.Sub(start)
	var delivered, steady float64
	if wall > 0 {
		delivered = float64(live.received+live.strays) / wall.Seconds()
	}
	// Steady state: arrivals while every sender was sending, after the
	// first tenth of the phase (at most a second).
	warm := min(time.Second, b.opts.duration/10)
	if window := sendEnd.Sub(start.Add(warm)); window > 0 {
		steady = float64(live.receivedBetween(start.Add(warm), sendEnd)) / window.Seconds()
	}
	liveErrors := live.sendErrors + live.missing + c.dupes + c.badAuth + c.badTxn
	b.reportAppservice("delivered_events_per_sec=%.1f steady_delivered_events_per_sec=%.1f latency_p50_ms=%.2f latency_p99_ms=%.2f latency_max_ms=%.2f senders=%d sent_events_per_sec=%.1f events=%d txns=%d events_per_txn=%.1f errors=%d %s server_cpu_ms_per_event=%.3f load_1m=%s",
		delivered, steady, live.percentileMS(50), live.percentileMS(99), live.percentileMS(100), len(senders),
		float64(live.sent)/send.elapsed.Seconds(), live.received, c.msgTxns, c.eventsPerTxn(), liveErrors,
		cpu, cpu.serverMSPer(live.received), loadAvg())
	send.printErrors(b.errOut, "appservice send")
	fmt.Fprintf(b.errOut, "switchboard-bench: appservice: send p50 %.2f ms, p99 %.2f ms; delivery p99.9 %.2f ms; %d sent, %d arrived, %d missing, %d duplicates, %d arrived despite a failed send, %d transactions resent after a 200\n",
		send.percentileMS(50), send.percentileMS(99), live.percentileMS(99.9), live.sent, live.received, live.missing, c.dupes, live.strays, c.retried)
	fmt.Fprintf(b.errOut, "switchboard-bench: appservice: while sending: %s; after: %s\n",
		recv.txnCadence(start, sendEnd), recv.txnCadence(sendEnd, time.Now()))
	if !allArrived && live.missing > 0 {
		fmt.Fprintf(b.errOut, "switchboard-bench: appservice: %d of %d messages did not arrive within %s\n", live.missing, live.sent, deliveryTimeout)
	}
	if live.received == 0 {
		problems = append(problems, "no message of the live phase reached the appservice")
	}

	// Backlog: the appservice is down while the messages are sent; then it
	// answers again and the queue drains.
	if ctx.Err() == nil {
		dr, errs := b.asBacklogPhase(ctx, senders, roomID, recv, backlog)
		b.reportAppservice("backlog_events=%d drain_s=%.2f drain_events_per_sec=%.1f first_txn_ms=%.1f txns=%d events_per_txn=%.1f fill_s=%.2f fill_events_per_sec=%.1f refused_attempts=%d errors=%d %s server_cpu_ms_per_event=%.3f load_1m=%s",
			dr.backlog, dr.drain.Seconds(), dr.perSecond(), ms(dr.firstTxn), dr.counters.msgTxns, dr.counters.eventsPerTxn(),
			dr.fill.Seconds(), float64(dr.backlog)/dr.fill.Seconds(), dr.refused, dr.errors, dr.cpu, dr.cpu.serverMSPer(dr.arrived), loadAvg())
		problems = append(problems, errs...)
	}

	after, err := readProcStatus(b.srv.pid())
	if err != nil {
		return err
	}
	b.reportAppservice("rss_idle_mb=%.1f rss_after_mb=%.1f rss_peak_mb=%.1f", mib(idle.rssKiB), mib(after.rssKiB), mib(after.hwmKiB))

	return b.endSuite(ctx, b.reportAppservice, problems)
}

// writeASRegistration writes the bench appservice's registration into the
// data dir, where the server loads it at start.
func writeASRegistration(dataDir, url, asToken, hsToken string) error {
	reg := fmt.Sprintf(`id: bench
url: %q
as_token: %s
hs_token: %s
sender_localpart: bench_bot
rate_limited: false
namespaces:
  users:
    - exclusive: true
      regex: "@bench_.*"
`, url, asToken, hsToken)
	dir := filepath.Join(dataDir, "appservices")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("appservice registration: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "bench.yaml"), []byte(reg), 0o600); err != nil {
		return fmt.Errorf("appservice registration: %w", err)
	}
	return nil
}

// joinGhost registers the appservice's ghost and joins it to the room,
// masquerading with ?user_id=.
func (b *bench) joinGhost(ctx context.Context, httpClient *http.Client, asToken string, roomID id.RoomID) (id.UserID, error) {
	cli, err := mautrix.NewClient(b.srv.baseURL, "", asToken)
	if err != nil {
		return "", err
	}
	cli.Client = httpClient
	cli.UserAgent = "switchboard-bench"
	cli.DefaultHTTPRetries = 0
	cli.StateStore = nil
	resp, _, err := cli.Register(ctx, &mautrix.ReqRegister[any]{Username: asGhost, Type: mautrix.AuthTypeAppservice, InhibitLogin: true})
	if err != nil {
		return "", fmt.Errorf("register ghost %s: %w", asGhost, err)
	}
	cli.UserID, cli.SetAppServiceUserID = resp.UserID, true
	if _, err := cli.JoinRoomByID(ctx, roomID); err != nil {
		return "", fmt.Errorf("join ghost %s: %w", resp.UserID, err)
	}
	return resp.UserID, nil
}

// waitUntil polls cond (called with the receiver locked) on every
// transaction until it holds or timeout passes.
func waitUntil(ctx context.Context, r *asReceiver, timeout time.Duration, cond func() bool) bool {
	deadline := time.After(timeout)
	for {
		r.mu.Lock()
		ok := cond()
		r.mu.Unlock()
		if ok {
			return true
		}
		select {
		case <-r.changed:
		case <-deadline:
			return false
		case <-ctx.Done():
			return false
		}
	}
}

// asSendPhase: every sender sends messages back to back into its room
// (roomFor(sender index)) while more() holds; each message carries its ID
// (and the send start in its body).
func (b *bench) asSendPhase(ctx context.Context, senders []*messagingClient, roomFor func(int) id.RoomID, r *asReceiver, more func() bool) *phaseResult {
	workers := make([]worker, len(senders))
	start := time.Now()
	var wg sync.WaitGroup
	for i, cli := range senders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w := &workers[i]
			roomID := roomFor(i)
			for ctx.Err() == nil && more() {
				msgID := r.nextID.Add(1) - 1
				t := time.Now()
				r.sending(msgID, t)
				content := map[string]any{
					"msgtype": "m.text",
					"body":    "appservice bench " + strconv.FormatInt(msgID, 10) + " sent " + t.Format(time.RFC3339Nano),
					asMsgKey:  msgID,
				}
				_, err := cli.SendMessageEvent(ctx, roomID, event.EventMessage, content)
				r.sent(msgID, err)
				w.record(t, err)
			}
		}()
	}
	wg.Wait()
	return mergeWorkers(workers, time.Since(start))
}

// oneRoom sends every sender to the same room.
func oneRoom(roomID id.RoomID) func(int) id.RoomID { return func(int) id.RoomID { return roomID } }

// backlogResult is the backlog phase's outcome.
type backlogResult struct {
	backlog  int           // messages sent (successfully) while the appservice was down
	fill     time.Duration // how long sending them took
	firstTxn time.Duration // from answering again to the first of them arriving
	drain    time.Duration // from answering again to the last of them arriving
	arrived  int
	refused  int // transaction attempts answered 503
	errors   int
	counters asCounters // of the drain
	cpu      cpuUsage   // of the drain
}

func (r *backlogResult) perSecond() float64 {
	if r.drain <= 0 {
		return 0
	}
	return float64(r.arrived) / r.drain.Seconds()
}

// asBacklogPhase queues n messages while the appservice answers 503, then
// lets it answer and times the drain.
func (b *bench) asBacklogPhase(ctx context.Context, senders []*messagingClient, roomID id.RoomID, r *asReceiver, n int) (*backlogResult, []string) {
	res := &backlogResult{}
	var problems []string
	refusedBefore := r.counters().refused
	r.refuse.Store(true)
	lo := r.nextID.Load()
	var claimed atomic.Int64
	fillStart := time.Now()
	send := b.asSendPhase(ctx, senders, oneRoom(roomID), r, func() bool { return claimed.Add(1) <= int64(n) })
	res.fill = time.Since(fillStart)
	hi := r.nextID.Load()
	send.printErrors(b.errOut, "appservice backlog send")

	stopPerf := b.perfPhase("drain")
	before := r.counters()
	m := b.startMeter()
	resume := time.Now()
	r.refuse.Store(false)
	// The pusher is waiting out its backoff after the 503s; a reload of
	// the registrations (SIGHUP) pokes it, as an operator would.
	if err := b.srv.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		problems = append(problems, "SIGHUP: "+err.Error())
	}
	all := r.waitFor(ctx, lo, hi, time.Now().Add(backlogDrainTimeout))
	res.cpu = m.stop()
	stopPerf()
	res.counters = r.counters().sub(before)
	res.refused = before.refused - refusedBefore

	p := r.phase(lo, hi)
	res.backlog, res.arrived = p.sent, p.received+p.strays
	if !p.firstRecv.IsZero() {
		res.firstTxn = p.firstRecv.Sub(resume)
		res.drain = p.lastRecv.Sub(resume)
	}
	res.errors = p.sendErrors + p.missing + res.counters.dupes + res.counters.badAuth + res.counters.badTxn
	fmt.Fprintf(b.errOut, "switchboard-bench: appservice backlog: %d sent in %.1fs (send p50 %.2f ms, p99 %.2f ms), %d arrived, %d missing, %d duplicates, %d transaction attempts refused while down\n",
		p.sent, res.fill.Seconds(), send.percentileMS(50), send.percentileMS(99), res.arrived, p.missing, res.counters.dupes, res.refused)
	if !all && p.missing > 0 {
		fmt.Fprintf(b.errOut, "switchboard-bench: appservice backlog: %d of %d messages did not arrive within %s of answering again\n", p.missing, p.sent, backlogDrainTimeout)
	}
	if p.sent == 0 {
		problems = append(problems, "every send of the backlog phase failed")
	} else if res.arrived == 0 {
		problems = append(problems, "no message of the backlog reached the appservice")
	}
	return res, problems
}
