package appservice

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"go.mau.fi/util/dbutil"
	"go.mau.fi/util/random"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/switchboard-im/switchboard/homeserver/notifier"
	"github.com/switchboard-im/switchboard/homeserver/rooms"
	"github.com/switchboard-im/switchboard/homeserver/storage"
)

// Renderer turns stored events into the client-server format that
// transactions carry (rooms.Service does).
type Renderer interface {
	Render(ctx context.Context, events []*storage.Event, viewer rooms.Viewer, withRoomID bool) []*rooms.ClientEvent
}

const (
	// MaxTxnEvents caps the events of one transaction.
	MaxTxnEvents = 100
	// DefaultMinBackoff and DefaultMaxBackoff bound the wait between
	// attempts at a failing transaction: it doubles from the first to the
	// second, with ±25% jitter.
	DefaultMinBackoff = time.Second
	DefaultMaxBackoff = 5 * time.Minute
	// RequestTimeout bounds one PUT.
	RequestTimeout = 30 * time.Second

	scanPage = 500  // events read per query while building a transaction
	maxScan  = 5000 // events looked at per build before sending (or skipping) what was found
	// The lease on a queue lasts leaseDuration and is renewed every
	// leaseRenew, and before each request, so that it outlasts the request
	// (RequestTimeout). A process that dies without releasing it is
	// replaced within leaseDuration+leaseRenew.
	leaseDuration = time.Minute
	leaseRenew    = 15 * time.Second
	// skipPersistEvery bounds how often moving past uninteresting events
	// is written (losing it on a crash only means scanning them again).
	skipPersistEvery = 10 * time.Second
	dbRetry          = 5 * time.Second
)

// Pusher delivers events to appservices: the homeserver side of the
// application service API's transactions (spec: "Pushing events").
//
// Each appservice with a URL gets a goroutine and a queue row in the
// database (storage.AppserviceStream). The row is the queue: a cursor in the
// server's one event stream (acked_pos) and the transaction in flight. An
// appservice seen for the first time starts at the stream position of that
// moment: it receives what happens from then on, not the history before it.
// An appservice that is unregistered and later registered again keeps its
// row and resumes where it stopped.
//
// The goroutine reads the stream after the cursor, keeps the events the
// appservice is interested in (see interest), and sends them in stream order
// as PUT {url}/_matrix/app/v1/transactions/{txnId} with the hs_token in the
// Authorization header, at most MaxTxnEvents per transaction and one
// transaction at a time. Before a transaction is sent, its ID and the
// stream positions of its events are written to the row; only a 2xx answer
// moves the cursor past them. So a failed request, a homeserver crash or
// restart mid-send, or an appservice that is down for days loses nothing
// and changes nothing: the same events go again under the same txnId, which
// the appservice deduplicates (spec: "AS ACK Lost"). Failures back off
// exponentially (MinBackoff doubling to MaxBackoff); the logs say once that
// an appservice became unreachable and once that it recovered.
//
// With several homeserver processes on one PostgreSQL database, one process
// holds a lease on each queue and pushes; the others stand by and take over
// when the lease lapses (within about a minute and a quarter of a crash; at
// once after Stop), so there is still one transaction in flight per
// appservice. On SQLite, with its single process, Start takes every lease.
//
// An appservice with receive_ephemeral also gets receipts, presence,
// typing and its users' to-device messages (see ephemeral.go); one with
// org.matrix.msc3202 device-list changes and its devices' one-time key
// counts (see e2ee.go).
type Pusher struct {
	// MinBackoff and MaxBackoff override the retry waits; set them before
	// Start (tests shorten them).
	MinBackoff, MaxBackoff time.Duration
	// Typing is where typing notifications come from (nil: none are
	// sent); set it before Start.
	Typing Typing

	db         *storage.DB
	rooms      Renderer
	n          *notifier.Notifier
	serverName string
	log        zerolog.Logger
	client     *http.Client
	owner      string // this process's lease owner ID

	mu      sync.Mutex
	ctx     context.Context // set by Start; nil before
	cancel  context.CancelFunc
	stopped bool
	reg     *Registry
	workers map[string]*worker
}

// NewPusher returns a pusher for the appservices of reg. client may be nil
// (a plain client is used; every request has RequestTimeout anyway).
func NewPusher(db *storage.DB, rooms Renderer, reg *Registry, n *notifier.Notifier, serverName string,
	log zerolog.Logger, client *http.Client) *Pusher {
	if client == nil {
		client = &http.Client{Timeout: RequestTimeout}
	}
	return &Pusher{
		MinBackoff: DefaultMinBackoff,
		MaxBackoff: DefaultMaxBackoff,
		db:         db,
		rooms:      rooms,
		n:          n,
		serverName: serverName,
		log:        log,
		client:     client,
		owner:      random.String(16),
		reg:        reg,
		workers:    map[string]*worker{},
	}
}

// Start creates the queue rows of appservices seen for the first time (at
// the current stream position) and starts pushing. It returns once every
// appservice has its row, so events written after Start returns reach a
// new appservice. Stop, or the end of ctx, stops the pusher.
func (p *Pusher) Start(ctx context.Context) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ctx != nil || p.stopped {
		return errors.New("appservice pusher: already started")
	}
	for _, as := range p.reg.All() {
		if as.Registration.URL != "" {
			if err := p.ensureRow(ctx, as); err != nil {
				return err
			}
		}
	}
	if p.db.Dialect == dbutil.SQLite {
		// One process per SQLite database: leases left by a process that
		// crashed are this process's to take at once.
		if err := p.db.ClearAppserviceLeases(ctx); err != nil {
			return err
		}
	}
	p.ctx, p.cancel = context.WithCancel(ctx)
	p.apply(p.reg)
	return nil
}

// SetRegistry swaps in a reloaded registry: appservices that are new (or
// gained a URL) start, removed ones (or those whose URL is now empty) stop,
// and the others keep their queue and continue with the new registration
// (URL, token and namespaces apply from their next transaction; one in
// flight is resent as it was).
func (p *Pusher) SetRegistry(reg *Registry) {
	var stopped []*worker
	p.mu.Lock()
	p.reg = reg
	if p.ctx != nil && !p.stopped {
		for asID, w := range p.workers {
			if as := reg.ByID(asID); as == nil || as.Registration.URL == "" {
				w.cancel()
				stopped = append(stopped, w)
				delete(p.workers, asID)
			}
		}
		for _, as := range reg.All() {
			if as.Registration.URL != "" && p.workers[as.ID()] == nil {
				if err := p.ensureRow(p.ctx, as); err != nil {
					// The worker tries again when it starts.
					p.log.Warn().Err(err).Str("as_id", as.ID()).Msg("Failed to create appservice queue")
				}
			}
		}
		p.apply(reg)
	}
	p.mu.Unlock()
	for _, w := range stopped {
		<-w.done
	}
}

// apply starts workers for reg's appservices and updates running ones.
// p.mu is held.
func (p *Pusher) apply(reg *Registry) {
	for _, as := range reg.All() {
		if as.Registration.URL == "" {
			continue
		}
		if w := p.workers[as.ID()]; w != nil {
			w.as.Store(as)
			w.poke()
			continue
		}
		w := newWorker(p, as)
		p.workers[as.ID()] = w
		ctx, cancel := context.WithCancel(p.ctx)
		w.cancel = cancel
		go w.run(ctx)
	}
}

func (p *Pusher) ensureRow(ctx context.Context, as *AppService) error {
	pos, err := p.db.CurrentStreamPos(ctx)
	if err != nil {
		return fmt.Errorf("appservice %s: %w", as.ID(), err)
	}
	created, err := p.db.EnsureAppserviceStream(ctx, as.ID(), pos)
	if err != nil {
		return fmt.Errorf("appservice %s: %w", as.ID(), err)
	}
	if created {
		p.log.Info().Str("as_id", as.ID()).Int64("stream_pos", pos).
			Msg("New appservice: it receives events from this stream position on")
	}
	return nil
}

// Stop stops every appservice's goroutine (a request in flight is
// abandoned and resent with the same txnId on the next start) and releases
// the queues for other processes. The pusher cannot be restarted.
func (p *Pusher) Stop() {
	p.mu.Lock()
	if p.stopped || p.ctx == nil {
		p.stopped = true
		p.mu.Unlock()
		return
	}
	p.stopped = true
	p.cancel()
	workers := p.workers
	p.workers = map[string]*worker{}
	p.mu.Unlock()
	for _, w := range workers {
		<-w.done
	}
}

// Retry makes a failing appservice's next attempt happen now instead of
// after its backoff (for example when the appservice pings the homeserver).
func (p *Pusher) Retry(asID string) {
	p.mu.Lock()
	w := p.workers[asID]
	p.mu.Unlock()
	if w != nil {
		w.poke()
	}
}

// State is what Stats says about an appservice's delivery.
type State string

const (
	StateStarting State = "starting" // no queue loaded yet
	StateUp       State = "up"       // the last attempt succeeded (or none failed yet)
	StateDown     State = "down"     // the last attempt failed; retrying with backoff
	StateStandby  State = "standby"  // another homeserver process pushes to it
	StateNoURL    State = "no_url"   // the registration has no URL: nothing is sent
)

// Stat is one appservice's delivery state, for metrics and
// `switchboard appservice list`.
type Stat struct {
	ID    string
	State State
	// AckedPos is the stream position up to which the appservice has
	// everything it is interested in.
	AckedPos int64
	// Lag is the number of stream positions after AckedPos: an upper bound
	// on the queue (only the events the appservice is interested in among
	// them are sent).
	Lag int64
	// InFlight is the number of events in the transaction being sent.
	InFlight int
	// TxnID is the in-flight transaction's ID, or the next one's.
	TxnID       int64
	LastSuccess time.Time // zero: never (by this or an earlier process)
	// Failures counts consecutive failed attempts; DownSince is when the
	// first of them happened, LastError what went wrong last.
	Failures  int
	DownSince time.Time
	LastError string
	// Since this process started:
	TotalFailures, Transactions, Events uint64
}

// Stats returns every registered appservice's delivery state, by ID. It
// reads memory only.
func (p *Pusher) Stats() []Stat {
	p.mu.Lock()
	reg := p.reg
	workers := make(map[string]*worker, len(p.workers))
	for k, v := range p.workers {
		workers[k] = v
	}
	p.mu.Unlock()
	head := p.n.Pos()
	var out []Stat
	for _, as := range reg.All() {
		w := workers[as.ID()]
		if as.Registration.URL == "" || w == nil {
			s := Stat{ID: as.ID(), State: StateNoURL}
			if as.Registration.URL != "" {
				s.State = StateStarting
			}
			out = append(out, s)
			continue
		}
		out = append(out, w.stat(head))
	}
	return out
}

// worker pushes to one appservice.
type worker struct {
	p      *Pusher
	as     atomic.Pointer[AppService]
	log    zerolog.Logger
	cancel context.CancelFunc
	done   chan struct{}
	pokeCh chan struct{} // retry now / registration changed

	// Owned by the run goroutine.
	row            *storage.AppserviceStream // nil until ensured and claimed
	owned          bool
	lastClaim      time.Time
	persistedAcked int64
	lastSkipWrite  time.Time
	backoff        time.Duration
	down           bool
	// typingSeen is the typing serial up to which the appservice has every
	// change; typingSent the serial of the in-flight transaction's typing
	// (0: it carries none, or was built by an earlier process).
	typingSeen, typingSent int64
	// keysSent is the key state of its devices that the appservice has
	// acknowledged (MSC3202); nil: not known, the next transaction carries
	// every device. keysRead is when the key state was last read, at
	// stream position keysCur (see keyChanges).
	keysSent map[deviceRef]keyState
	keysRead time.Time
	keysCur  int64

	mu sync.Mutex
	st Stat  // snapshot for Stats
	hd int64 // the newest stream position read
}

func newWorker(p *Pusher, as *AppService) *worker {
	w := &worker{
		p:      p,
		log:    p.log.With().Str("as_id", as.ID()).Logger(),
		done:   make(chan struct{}),
		pokeCh: make(chan struct{}, 1),
		st:     Stat{ID: as.ID(), State: StateStarting},
	}
	w.as.Store(as)
	return w
}

func (w *worker) poke() {
	select {
	case w.pokeCh <- struct{}{}:
	default:
	}
}

func (w *worker) stat(head int64) Stat {
	w.mu.Lock()
	defer w.mu.Unlock()
	s := w.st
	head = max(head, w.hd)
	if head > s.AckedPos && s.State != StateStarting {
		s.Lag = head - s.AckedPos
	}
	return s
}

// update changes the Stats snapshot.
func (w *worker) update(f func(s *Stat)) {
	w.mu.Lock()
	f(&w.st)
	w.mu.Unlock()
}

// syncStat copies the row into the snapshot.
func (w *worker) syncStat() {
	r := w.row
	w.update(func(s *Stat) {
		s.AckedPos, s.TxnID, s.InFlight = r.AckedPos, r.TxnID, len(r.TxnEvents)
		s.Failures, s.LastError = r.Failures, r.LastError
		s.LastSuccess, s.DownSince = msTime(r.LastSuccessTS), msTime(r.DownSinceTS)
		switch {
		case !w.owned:
			s.State = StateStandby
		case w.down:
			s.State = StateDown
		default:
			s.State = StateUp
		}
	})
}

func msTime(ms int64) time.Time {
	if ms == 0 {
		return time.Time{}
	}
	return time.UnixMilli(ms)
}

func (w *worker) run(ctx context.Context) {
	defer close(w.done)
	// Subscribe before the first read so no wake-up is missed; typing and
	// key-count changes (outside the stream) wake only a worker that sends
	// them.
	outsideWanted := w.wantsOutside()
	stream, unsubscribe := w.p.n.SubscribeStream(outsideWanted)
	defer func() { unsubscribe() }()
	if w.p.Typing != nil {
		w.typingSeen = w.p.Typing.Serial()
	}
	defer w.shutdown()
	renew := time.NewTicker(leaseRenew)
	defer renew.Stop()
	for ctx.Err() == nil {
		if wanted := w.wantsOutside(); wanted != outsideWanted {
			// A reload turned receive_ephemeral or MSC3202 on or off.
			unsubscribe()
			outsideWanted = wanted
			stream, unsubscribe = w.p.n.SubscribeStream(outsideWanted)
			if w.p.Typing != nil {
				w.typingSeen = w.p.Typing.Serial()
			}
		}
		owned, err := w.claim(ctx)
		if err != nil {
			w.dbError(ctx, err, renew.C)
			continue
		}
		if !owned {
			// Standing by: another process pushes. Try again on the
			// lease timer, not on every stream position.
			w.waitFor(ctx, nil, renew.C)
			continue
		}
		if !w.row.InFlight() {
			more, err := w.build(ctx)
			if err != nil {
				w.dbError(ctx, err, renew.C)
				continue
			}
			if !w.owned {
				continue
			}
			if !w.row.InFlight() {
				if more {
					continue
				}
				w.persistSkip(ctx, false)
				w.waitFor(ctx, stream, renew.C)
				continue
			}
		}
		w.deliver(ctx, renew.C)
	}
}

func (w *worker) wantsTyping() bool {
	return w.p.Typing != nil && w.as.Load().ReceivesEphemeral()
}

// wantsOutside: the worker sends data that changes outside the stream.
func (w *worker) wantsOutside() bool {
	return w.wantsTyping() || w.as.Load().ReceivesE2EE()
}

// claim ensures this process holds the lease on the queue, renewing it
// every leaseRenew, and loads the row when the lease is (re)gained.
func (w *worker) claim(ctx context.Context) (bool, error) {
	if w.owned && time.Since(w.lastClaim) < leaseRenew {
		return true, nil
	}
	if w.row == nil {
		if err := w.p.ensureRow(ctx, w.as.Load()); err != nil {
			return false, err
		}
	}
	asID := w.as.Load().ID()
	now := time.Now()
	ok, err := w.p.db.ClaimAppserviceStream(ctx, asID, w.p.owner, now.UnixMilli(), now.Add(leaseDuration).UnixMilli())
	if err != nil {
		return false, err
	}
	if !ok {
		w.lostLease()
		row, err := w.p.db.GetAppserviceStream(ctx, asID)
		if err == nil {
			w.row = row
			w.syncStat()
		}
		return false, nil
	}
	w.lastClaim = now
	if w.owned && w.row != nil {
		return true, nil
	}
	row, err := w.p.db.GetAppserviceStream(ctx, asID)
	if err != nil {
		return false, err
	}
	ev := w.log.Info().Str("url", redactURL(w.as.Load().Registration.URL)).
		Int64("acked_pos", row.AckedPos).Int64("txn_id", row.TxnID)
	if row.InFlight() {
		ev = ev.Int("resending_events", len(row.TxnEvents))
	}
	if row.Failures > 0 {
		ev = ev.Int("failures", row.Failures).Str("last_error", row.LastError)
	}
	ev.Msg("Pushing transactions to appservice")
	w.row, w.owned, w.persistedAcked = row, true, row.AckedPos
	w.down = row.Failures > 0
	w.syncStat()
	return true, nil
}

// lostLease forgets the queue after another process claimed it.
func (w *worker) lostLease() {
	if w.owned {
		w.log.Info().Msg("Another homeserver process took over pushing to this appservice")
	}
	w.owned, w.row, w.keysSent = false, nil, nil
	w.update(func(s *Stat) { s.State = StateStandby })
}

// build reads the stream after the cursor and either records the next
// transaction (row.InFlight afterwards) or moves the cursor past events the
// appservice is not interested in. more reports that it stopped early
// (maxScan) with stream left to read.
func (w *worker) build(ctx context.Context) (more bool, err error) {
	cur, err := w.p.db.CurrentStreamPos(ctx)
	if err != nil {
		return false, err
	}
	w.mu.Lock()
	w.hd = max(w.hd, cur)
	w.mu.Unlock()
	acked := w.row.AckedPos
	as := w.as.Load()
	typingSerial := int64(0)
	if w.wantsTyping() {
		typingSerial = w.p.Typing.Serial()
	}
	keys, keysChanged, err := w.keyChanges(ctx, as, cur)
	if err != nil {
		return false, err
	}
	if cur <= acked && typingSerial <= w.typingSeen && len(keysChanged) == 0 {
		return false, nil
	}
	in := newInterest(w.p.db, as)
	var picked []int64
	upto, scanned := acked, 0
scan:
	for cur > acked {
		page, err := w.p.db.StreamEvents(ctx, upto, cur, scanPage)
		if err != nil {
			return false, err
		}
		for _, e := range page {
			ok, err := in.event(ctx, e)
			if err != nil {
				return false, err
			}
			upto = e.StreamPos
			if ok {
				picked = append(picked, e.StreamPos)
				if len(picked) == MaxTxnEvents {
					more = true
					break scan
				}
			}
		}
		scanned += len(page)
		if len(page) < scanPage {
			upto = cur // the rest of the range holds no events
			break
		}
		if scanned >= maxScan {
			more = true
			break
		}
	}
	eph := &ephemeralBatch{}
	if as.ReceivesEphemeral() {
		if upto > acked {
			var cut int64
			if eph, cut, err = gatherEphemeral(ctx, w.p.db, in, acked, upto); err != nil {
				return false, err
			}
			if cut < upto {
				upto, more = cut, true
				picked = slices.DeleteFunc(picked, func(pos int64) bool { return pos > upto })
			}
		}
		if typingSerial > w.typingSeen {
			if err := eph.addTyping(ctx, w.p.Typing, in, w.typingSeen); err != nil {
				return false, err
			}
		}
	}
	if as.ReceivesE2EE() {
		// After the ephemeral data, which may have moved upto back.
		if eph.DeviceLists, err = gatherDeviceLists(ctx, w.p.db, in, acked, upto); err != nil {
			return false, err
		}
		eph.addKeys(keys, keysChanged)
	}
	if len(picked) == 0 && eph.empty() {
		w.row.AckedPos = upto
		w.typingSeen = max(w.typingSeen, typingSerial)
		w.update(func(s *Stat) { s.AckedPos = upto })
		return more, nil
	}
	var ephJSON json.RawMessage
	if !eph.empty() {
		if ephJSON, err = json.Marshal(eph); err != nil {
			return false, err
		}
	}
	ok, err := w.p.db.StartAppserviceTxn(ctx, w.row.ASID, w.p.owner, acked, upto, picked, ephJSON)
	if err != nil {
		return false, err
	}
	if !ok {
		w.lostLease()
		return false, nil
	}
	w.row.Sending, w.row.TxnUpto, w.row.TxnEvents, w.row.TxnEphemeral = true, upto, picked, ephJSON
	w.typingSent = typingSerial
	w.persistedAcked, w.lastSkipWrite = acked, time.Now()
	w.syncStat()
	return more, nil
}

// persistSkip writes a cursor moved past uninteresting events: at most every
// skipPersistEvery unless force.
func (w *worker) persistSkip(ctx context.Context, force bool) {
	if !w.owned || w.row == nil || w.row.InFlight() || w.row.AckedPos <= w.persistedAcked {
		return
	}
	if !force && time.Since(w.lastSkipWrite) < skipPersistEvery {
		return
	}
	ok, err := w.p.db.SkipAppserviceStream(ctx, w.row.ASID, w.p.owner, w.row.AckedPos)
	if err != nil {
		w.log.Warn().Err(err).Msg("Failed to save appservice stream position")
		return
	}
	if !ok {
		w.lostLease()
		return
	}
	w.persistedAcked, w.lastSkipWrite = w.row.AckedPos, time.Now()
}

// deliver sends the in-flight transaction once; on failure it waits out
// the backoff.
func (w *worker) deliver(ctx context.Context, renew <-chan time.Time) {
	as := w.as.Load()
	txnID := w.row.TxnID
	events, err := w.p.db.EventsAtStreamPositions(ctx, w.row.TxnEvents)
	if err != nil {
		w.dbError(ctx, err, renew)
		return
	}
	var eph ephemeralBatch
	if len(w.row.TxnEphemeral) > 0 {
		if err := json.Unmarshal(w.row.TxnEphemeral, &eph); err != nil {
			// Written by this code; unreadable means a corrupt row, which
			// retrying cannot fix: send the events without it.
			w.log.Error().Err(err).Int64("txn_id", txnID).Msg("Unreadable ephemeral data of appservice transaction; sending its events only")
			eph = ephemeralBatch{}
		}
	}
	body := txnBody{Events: w.p.rooms.Render(ctx, events, rooms.Viewer{}, true)}
	if as.Registration.EphemeralEvents {
		body.Ephemeral = eph.Ephemeral
		if body.Ephemeral == nil {
			body.Ephemeral = []json.RawMessage{}
		}
	}
	if as.Registration.SoruEphemeralEvents {
		body.MSC2409Ephemeral = eph.Ephemeral
	}
	body.MSC2409ToDevice = eph.ToDevice
	if as.ReceivesE2EE() {
		body.MSC3202DeviceLists, body.MSC3202OTKCounts, body.MSC3202FallbackKeys = eph.DeviceLists, eph.OTKCounts, eph.FallbackKeys
	}
	start := time.Now()
	err = w.put(ctx, as, txnID, &body)
	if ctx.Err() != nil {
		return // shutting down: the transaction stays in flight for the next start
	}
	if err == nil {
		if w.delivered(ctx, txnID, len(events)+len(eph.Ephemeral)+len(eph.ToDevice), eph.ToDevicePos, time.Since(start), renew) {
			w.keysSentWith(&eph)
		}
		return
	}
	w.failed(ctx, txnID, err, renew)
}

// delivered records a transaction's acknowledgement; it reports whether
// it was written.
func (w *worker) delivered(ctx context.Context, txnID int64, n int, toDevice []int64, took time.Duration, renew <-chan time.Time) bool {
	now := time.Now()
	ok, err := w.p.db.AckAppserviceTxn(ctx, w.row.ASID, w.p.owner, txnID, now.UnixMilli(), toDevice)
	if err != nil {
		// The appservice has the events; until the acknowledgement is
		// written they are resent under the same txnId, which it ignores.
		w.dbError(ctx, err, renew)
		return false
	}
	if !ok {
		w.lostLease()
		return false
	}
	if w.down {
		w.log.Info().Int("failed_attempts", w.row.Failures).
			Dur("down_for", now.Sub(msTime(w.row.DownSinceTS))).
			Msg("Appservice reachable again; delivering queued events")
	}
	w.log.Debug().Int64("txn_id", txnID).Int("events", n).Dur("took", took).Msg("Sent appservice transaction")
	r := w.row
	r.AckedPos, r.TxnID, r.Sending, r.TxnUpto, r.TxnEvents, r.TxnEphemeral = r.TxnUpto, r.TxnID+1, false, 0, nil, nil
	w.typingSeen, w.typingSent = max(w.typingSeen, w.typingSent), 0
	r.LastSuccessTS, r.Failures, r.DownSinceTS, r.LastError = now.UnixMilli(), 0, 0, ""
	w.persistedAcked, w.down, w.backoff = r.AckedPos, false, 0
	w.syncStat()
	w.update(func(s *Stat) { s.Transactions++; s.Events += uint64(n) })
	return true
}

func (w *worker) failed(ctx context.Context, txnID int64, sendErr error, renew <-chan time.Time) {
	now := time.Now()
	msg := sendErr.Error()
	r := w.row
	if ok, err := w.p.db.AppserviceTxnFailed(ctx, r.ASID, w.p.owner, now.UnixMilli(), msg); err != nil {
		w.log.Warn().Err(err).Msg("Failed to record appservice failure")
	} else if !ok {
		w.lostLease()
		return
	}
	r.Failures++
	r.LastError = msg
	if r.DownSinceTS == 0 {
		r.DownSinceTS = now.UnixMilli()
	}
	w.backoff = min(max(2*w.backoff, w.p.MinBackoff), w.p.MaxBackoff)
	if !w.down {
		w.down = true
		w.log.Warn().Str("error", msg).Int64("txn_id", txnID).Str("url", redactURL(w.as.Load().Registration.URL)).
			Msg("Appservice unreachable; queueing its events and retrying with backoff (logged once until it recovers)")
	} else {
		w.log.Debug().Str("error", msg).Int64("txn_id", txnID).Int("failures", r.Failures).Dur("backoff", w.backoff).
			Msg("Appservice transaction failed again")
	}
	w.syncStat()
	w.update(func(s *Stat) { s.TotalFailures++ })
	w.sleep(ctx, jitter(w.backoff), renew)
}

func jitter(d time.Duration) time.Duration {
	return d*3/4 + rand.N(d/2+1)
}

// sleep waits d, renewing the lease meanwhile; a poke ends it early.
func (w *worker) sleep(ctx context.Context, d time.Duration, renew <-chan time.Time) {
	t := time.NewTimer(d)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			return
		case <-w.pokeCh:
			return
		case <-renew:
			if owned, err := w.claim(ctx); err != nil || !owned {
				return
			}
		}
	}
}

// waitFor waits for a new stream position (stream may be nil), a poke or
// the lease timer.
func (w *worker) waitFor(ctx context.Context, stream <-chan struct{}, renew <-chan time.Time) {
	select {
	case <-ctx.Done():
	case <-stream:
	case <-w.pokeCh:
	case <-renew:
	}
}

func (w *worker) dbError(ctx context.Context, err error, renew <-chan time.Time) {
	if ctx.Err() != nil {
		return
	}
	w.log.Warn().Err(err).Msg("Appservice pusher: database error; retrying")
	w.sleep(ctx, dbRetry, renew)
}

// shutdown saves the cursor and releases the lease. It releases even when
// the worker does not think it holds the lease: a claim may have reached
// the database just as the worker was stopped.
func (w *worker) shutdown() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	w.persistSkip(ctx, true)
	if err := w.p.db.ReleaseAppserviceStream(ctx, w.as.Load().ID(), w.p.owner); err != nil {
		w.log.Warn().Err(err).Msg("Failed to release appservice queue")
	}
}

// txnBody is the transaction's JSON (spec: PUT /transactions/{txnId}).
type txnBody struct {
	Events    []*rooms.ClientEvent `json:"events"`
	Ephemeral []json.RawMessage    `json:"ephemeral,omitzero"`
	// The unstable keys of MSC2409, which appservices written against
	// Synapse still read.
	MSC2409Ephemeral []json.RawMessage `json:"de.sorunome.msc2409.ephemeral,omitempty"`
	MSC2409ToDevice  []json.RawMessage `json:"de.sorunome.msc2409.to_device,omitempty"`
	// MSC3202's unstable keys (e2ee.go), which mautrix-go reads.
	MSC3202DeviceLists  *deviceLists                                 `json:"org.matrix.msc3202.device_lists,omitempty"`
	MSC3202OTKCounts    map[id.UserID]map[id.DeviceID]map[string]int `json:"org.matrix.msc3202.device_one_time_keys_count,omitempty"`
	MSC3202FallbackKeys map[id.UserID]map[id.DeviceID][]string       `json:"org.matrix.msc3202.device_unused_fallback_key_types,omitempty"`
}

// put sends one transaction; any answer but 2xx is an error.
func (w *worker) put(ctx context.Context, as *AppService, txnID int64, body *txnBody) error {
	data, err := json.Marshal(body)
	if err != nil {
		return fmt.Errorf("encode transaction: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, RequestTimeout)
	defer cancel()
	target := strings.TrimRight(as.Registration.URL, "/") + "/_matrix/app/v1/transactions/" + strconv.FormatInt(txnID, 10)
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, target, bytes.NewReader(data))
	if err != nil {
		return fmt.Errorf("build request: %w", err)
	}
	req.Header.Set("Authorization", "Bearer "+as.Registration.ServerToken)
	req.Header.Set("Content-Type", "application/json")
	resp, err := w.p.client.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			return ue.Err // without the URL: the log line names it once
		}
		return err
	}
	defer resp.Body.Close()
	snippet, _ := io.ReadAll(io.LimitReader(resp.Body, 256))
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode/100 != 2 {
		msg := fmt.Sprintf("HTTP %d", resp.StatusCode)
		if s := strings.TrimSpace(string(snippet)); s != "" {
			msg += ": " + s
		}
		return errors.New(msg)
	}
	return nil
}

// redactURL hides a password in a URL's user info.
func redactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "(invalid URL)"
	}
	return u.Redacted()
}

// interest decides which events an appservice receives (spec:
// "Registration", namespaces): those sent by a user in its user namespaces
// (or by its sender), membership events about such a user, and every event
// of a room whose ID is in its room namespaces, that has an alias (local,
// or in its m.room.canonical_alias) in its alias namespaces, or where one
// of its users is joined. Room facts are taken from the current state when
// the transaction is built and cached for that build.
type interest struct {
	db     *storage.DB
	as     *AppService
	rooms  map[id.RoomID]bool
	users  map[id.UserID]bool // presence interest, by user
	joined map[id.RoomID]bool // one of its users is joined (device lists)
}

func newInterest(db *storage.DB, as *AppService) *interest {
	return &interest{db: db, as: as, rooms: map[id.RoomID]bool{}}
}

func (in *interest) event(ctx context.Context, e *storage.Event) (bool, error) {
	if in.as.IsInterestedInUser(e.Sender) {
		return true, nil
	}
	if e.Type == event.StateMember.Type && e.StateKey != nil && in.as.IsInterestedInUser(id.UserID(*e.StateKey)) {
		return true, nil
	}
	return in.roomCached(ctx, e.RoomID)
}

func (in *interest) roomCached(ctx context.Context, roomID id.RoomID) (bool, error) {
	if v, ok := in.rooms[roomID]; ok {
		return v, nil
	}
	v, err := in.room(ctx, roomID)
	if err != nil {
		return false, err
	}
	in.rooms[roomID] = v
	return v, nil
}

func (in *interest) room(ctx context.Context, roomID id.RoomID) (bool, error) {
	if in.as.IsInterestedInRoomID(roomID) {
		return true, nil
	}
	if len(in.as.aliases) > 0 {
		local, err := in.db.RoomAliases(ctx, roomID)
		if err != nil {
			return false, err
		}
		canonical, err := in.db.CanonicalAliases(ctx, roomID)
		if err != nil {
			return false, err
		}
		for _, a := range append(local, canonical...) {
			if in.as.IsInterestedInAlias(a) {
				return true, nil
			}
		}
	}
	members, err := in.db.RoomMembers(ctx, roomID, string(event.MembershipJoin))
	if err != nil {
		return false, err
	}
	for _, m := range members {
		if in.as.IsInterestedInUser(m.UserID) {
			return true, nil
		}
	}
	return false, nil
}

// Collector exports Stats as Prometheus metrics labelled by appservice.
func (p *Pusher) Collector() prometheus.Collector { return collector{p} }

type collector struct{ p *Pusher }

var (
	labels      = []string{"appservice"}
	descUp      = prometheus.NewDesc("switchboard_appservice_up", "1 if the last transaction to the appservice succeeded (or none failed yet), 0 if it is failing.", labels, nil)
	descLag     = prometheus.NewDesc("switchboard_appservice_queue_lag", "Stream positions not yet delivered to the appservice (an upper bound on its queue).", labels, nil)
	descFlight  = prometheus.NewDesc("switchboard_appservice_inflight_events", "Events in the transaction being sent.", labels, nil)
	descFails   = prometheus.NewDesc("switchboard_appservice_consecutive_failures", "Failed attempts since the last success.", labels, nil)
	descSuccess = prometheus.NewDesc("switchboard_appservice_last_success_timestamp_seconds", "When a transaction last succeeded (0: never).", labels, nil)
	descFailTot = prometheus.NewDesc("switchboard_appservice_failures_total", "Failed transaction attempts by this process.", labels, nil)
	descTxns    = prometheus.NewDesc("switchboard_appservice_transactions_total", "Transactions delivered by this process.", labels, nil)
	descEvents  = prometheus.NewDesc("switchboard_appservice_events_total", "Events delivered by this process.", labels, nil)
)

func (c collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descUp, descLag, descFlight, descFails, descSuccess, descFailTot, descTxns, descEvents} {
		ch <- d
	}
}

func (c collector) Collect(ch chan<- prometheus.Metric) {
	for _, s := range c.p.Stats() {
		if s.State == StateNoURL || s.State == StateStandby {
			continue // nothing to report from this process
		}
		up := 1.0
		if s.State == StateDown {
			up = 0
		}
		var success float64
		if !s.LastSuccess.IsZero() {
			success = float64(s.LastSuccess.UnixMilli()) / 1000
		}
		for _, m := range []struct {
			d *prometheus.Desc
			t prometheus.ValueType
			v float64
		}{
			{descUp, prometheus.GaugeValue, up},
			{descLag, prometheus.GaugeValue, float64(s.Lag)},
			{descFlight, prometheus.GaugeValue, float64(s.InFlight)},
			{descFails, prometheus.GaugeValue, float64(s.Failures)},
			{descSuccess, prometheus.GaugeValue, success},
			{descFailTot, prometheus.CounterValue, float64(s.TotalFailures)},
			{descTxns, prometheus.CounterValue, float64(s.Transactions)},
			{descEvents, prometheus.CounterValue, float64(s.Events)},
		} {
			ch <- prometheus.MustNewConstMetric(m.d, m.t, m.v, s.ID)
		}
	}
}
