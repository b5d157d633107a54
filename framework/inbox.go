package framework

// The inbox: how transactions become handled events, exactly once across
// retries and restarts.
//
// PUT /transactions/{txnId} writes, in one database transaction, the
// txnId (framework_txns) and every event of the transaction
// (framework_inbox, numbered in arrival order), and only then answers 200.
// A txnId already recorded is answered 200 at once: the homeserver resends
// a transaction whose answer it missed, and mautrix's in-memory cache of
// 128 IDs would forget it across a restart.
//
// Accepted events go to Config.Workers workers by room (all events of a
// room to the same worker, so a room's events are handled in order). A
// handled event is deleted from the inbox in batches (every flushEvery or
// flushBatch events); Start first hands the workers whatever the previous
// run left there. So: a graceful Stop loses and repeats nothing; a crash
// repeats at most the events handled in the last flushEvery before it, and
// loses nothing.

import (
	"context"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/tidwall/gjson"
	"go.mau.fi/util/dbutil"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

const (
	// maxTxnBody bounds a transaction's body (100 events of up to 64 KiB
	// each, plus ephemeral data, fit comfortably).
	maxTxnBody  = 64 << 20
	flushEvery  = 100 * time.Millisecond
	flushBatch  = 500
	txnRetained = 7 * 24 * time.Hour
	workerQueue = 256
)

// drainTimeout is how long Stop lets handlers finish accepted events
// before cancelling their context (a variable for tests).
var drainTimeout = 30 * time.Second

// Inbox kinds, as stored in framework_inbox.kind.
const (
	kindTimeline  = 0
	kindEphemeral = 1
	kindToDevice  = 2
)

type inboxEntry struct {
	seq    int64
	roomID id.RoomID
	kind   int
	raw    []byte
}

func (e *inboxEntry) GetMassInsertValues() [4]any {
	return [4]any{e.seq, string(e.roomID), e.kind, string(e.raw)}
}

var insertInbox = dbutil.NewMassInsertBuilder[*inboxEntry, [0]any](
	`INSERT INTO framework_inbox (seq, room_id, kind, event) VALUES ($1, $2, $3, $4)`, "($%d, $%d, $%d, $%d)")

type inbox struct {
	a *Appservice

	// mu serialises accepting transactions: sequence numbers and the order
	// events reach the workers follow the order transactions were accepted.
	mu      sync.Mutex
	nextSeq int64

	workers []chan *inboxEntry
	wg      sync.WaitGroup
	ctx     context.Context
	cancel  context.CancelFunc

	done    chan int64 // handled sequence numbers, for the flusher
	flushed chan struct{}
}

func newInbox(a *Appservice) *inbox {
	return &inbox{a: a}
}

// rawTxn is a transaction's body with its events kept as sent.
type rawTxn struct {
	Events           []json.RawMessage `json:"events"`
	Ephemeral        []json.RawMessage `json:"ephemeral"`
	MSC2409Ephemeral []json.RawMessage `json:"de.sorunome.msc2409.ephemeral"`
	ToDevice         []json.RawMessage `json:"to_device"`
	MSC2409ToDevice  []json.RawMessage `json:"de.sorunome.msc2409.to_device"`
}

// entries lists the transaction's events in handling order: timeline, then
// ephemeral, then to-device (each under its stable key if present, else
// the unstable one, like mautrix).
func (t *rawTxn) entries() []*inboxEntry {
	var out []*inboxEntry
	add := func(list []json.RawMessage, kind int) {
		for _, raw := range list {
			out = append(out, &inboxEntry{roomID: id.RoomID(gjson.GetBytes(raw, "room_id").Str), kind: kind, raw: raw})
		}
	}
	add(t.Events, kindTimeline)
	if t.Ephemeral != nil {
		add(t.Ephemeral, kindEphemeral)
	} else {
		add(t.MSC2409Ephemeral, kindEphemeral)
	}
	if t.ToDevice != nil {
		add(t.ToDevice, kindToDevice)
	} else {
		add(t.MSC2409ToDevice, kindToDevice)
	}
	return out
}

// start loads the inbox left by the previous run and starts the workers
// and the flusher; the leftovers are queued before any new transaction.
func (ib *inbox) start(ctx context.Context) error {
	db := ib.a.DB
	if err := ib.pruneTxns(ctx); err != nil {
		return err
	}
	rows, err := db.Query(ctx, `SELECT seq, room_id, kind, event FROM framework_inbox ORDER BY seq`)
	if err != nil {
		return fmt.Errorf("load inbox: %w", err)
	}
	var pending []*inboxEntry
	for rows.Next() {
		e := &inboxEntry{}
		var raw string
		if err := rows.Scan(&e.seq, &e.roomID, &e.kind, &raw); err != nil {
			rows.Close()
			return fmt.Errorf("load inbox: %w", err)
		}
		e.raw = []byte(raw)
		pending = append(pending, e)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("load inbox: %w", err)
	}
	if n := len(pending); n > 0 {
		ib.nextSeq = pending[n-1].seq + 1
		ib.a.Log.Info().Int("events", n).Msg("Handling events accepted before the last stop")
	}
	ib.ctx, ib.cancel = context.WithCancel(ib.a.Log.WithContext(context.WithoutCancel(ctx)))
	ib.done = make(chan int64, flushBatch*4)
	ib.flushed = make(chan struct{})
	go ib.flusher()
	ib.workers = make([]chan *inboxEntry, ib.a.Config.Workers)
	for i := range ib.workers {
		ch := make(chan *inboxEntry, workerQueue)
		ib.workers[i] = ch
		ib.wg.Add(1)
		go ib.work(ch)
	}
	// Leftovers may exceed the queues: queue them from a goroutine, under
	// mu so that new transactions come after them.
	if len(pending) > 0 {
		ib.mu.Lock()
		go func() {
			defer ib.mu.Unlock()
			ib.enqueue(pending)
		}()
	}
	return nil
}

func (ib *inbox) enqueue(entries []*inboxEntry) {
	for _, e := range entries {
		h := fnv.New32a()
		h.Write([]byte(e.roomID))
		ib.workers[h.Sum32()%uint32(len(ib.workers))] <- e
	}
}

func (ib *inbox) work(ch <-chan *inboxEntry) {
	defer ib.wg.Done()
	for e := range ch {
		if ib.ctx.Err() != nil {
			continue // stopping: left in the inbox for the next start
		}
		evt, err := parseEvent(e)
		if err != nil {
			ib.a.Log.Warn().Err(err).Int64("seq", e.seq).Msg("Dropping an event that does not parse")
		} else {
			ib.a.dispatch(ib.ctx, evt)
			if ib.ctx.Err() != nil {
				continue // interrupted by Stop: handled again after the next start
			}
		}
		ib.done <- e.seq
	}
}

// parseEvent decodes an inbox entry the way mautrix's appservice package
// does, so handlers see the same *event.Event either way.
func parseEvent(e *inboxEntry) (*event.Event, error) {
	evt := &event.Event{}
	if err := json.Unmarshal(e.raw, evt); err != nil {
		return nil, err
	}
	evt.Mautrix.ReceivedAt = time.Now()
	switch {
	case e.kind == kindEphemeral:
		evt.Mautrix.EventSource = event.SourceEphemeral
		evt.Type.Class = event.EphemeralEventType
	case e.kind == kindToDevice:
		evt.Mautrix.EventSource = event.SourceToDevice
		evt.Type.Class = event.ToDeviceEventType
	case evt.StateKey != nil:
		evt.Mautrix.EventSource = event.SourceTimeline | event.SourceJoin
		evt.Type.Class = event.StateEventType
	default:
		evt.Mautrix.EventSource = event.SourceTimeline
		evt.Type.Class = event.MessageEventType
	}
	// Unknown types keep their raw content; a malformed known one too
	// (handlers read what they can), as mautrix does.
	_ = evt.Content.ParseRaw(evt.Type)
	return evt, nil
}

// flusher deletes handled events from the inbox in batches.
func (ib *inbox) flusher() {
	defer close(ib.flushed)
	tick := time.NewTicker(flushEvery)
	defer tick.Stop()
	prune := time.NewTicker(6 * time.Hour)
	defer prune.Stop()
	var batch []int64
	flush := func() {
		for len(batch) > 0 {
			n := min(len(batch), flushBatch)
			if err := ib.deleteHandled(batch[:n]); err != nil {
				// Kept for the next tick; handled again only after a crash.
				ib.a.Log.Warn().Err(err).Msg("Failed to record handled events")
				return
			}
			batch = batch[n:]
		}
	}
	for {
		select {
		case seq, ok := <-ib.done:
			if !ok {
				flush()
				return
			}
			batch = append(batch, seq)
			if len(batch) >= flushBatch {
				flush()
			}
		case <-tick.C:
			flush()
		case <-prune.C:
			if err := ib.pruneTxns(context.Background()); err != nil {
				ib.a.Log.Warn().Err(err).Msg("Failed to prune old transaction IDs")
			}
		}
	}
}

// pruneTxns forgets transaction IDs older than txnRetained: the homeserver
// resends a transaction only until it gets an answer.
func (ib *inbox) pruneTxns(ctx context.Context) error {
	_, err := ib.a.DB.Exec(ctx, `DELETE FROM framework_txns WHERE received_at < $1`, time.Now().Add(-txnRetained).UnixMilli())
	if err != nil {
		return fmt.Errorf("prune transactions: %w", err)
	}
	return nil
}

func (ib *inbox) deleteHandled(seqs []int64) error {
	ph := make([]string, len(seqs))
	args := make([]any, len(seqs))
	for i, s := range seqs {
		ph[i] = fmt.Sprintf("$%d", i+1)
		args[i] = s
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := ib.a.DB.Exec(ctx, `DELETE FROM framework_inbox WHERE seq IN (`+strings.Join(ph, ",")+`)`, args...)
	return err
}

// stop waits for the workers to handle what was accepted (cancelling the
// handlers' context after drainTimeout) and records it.
func (ib *inbox) stop() {
	ib.mu.Lock() // no transaction is being accepted, leftovers are queued
	for _, ch := range ib.workers {
		close(ch)
	}
	ib.mu.Unlock()
	finished := make(chan struct{})
	go func() {
		ib.wg.Wait()
		close(finished)
	}()
	select {
	case <-finished:
	case <-time.After(drainTimeout):
		ib.a.Log.Warn().Msg("Event handlers did not finish in time; cancelling them")
		ib.cancel()
		<-finished
	}
	ib.cancel()
	close(ib.done)
	<-ib.flushed
}

// accept records a transaction and its events; fresh is false when the
// transaction was accepted before.
func (ib *inbox) accept(ctx context.Context, txnID string, entries []*inboxEntry) (fresh bool, err error) {
	db := ib.a.DB
	err = db.DoTxn(ctx, nil, func(ctx context.Context) error {
		res, err := db.Exec(ctx, `INSERT INTO framework_txns (txn_id, received_at) VALUES ($1, $2) ON CONFLICT (txn_id) DO NOTHING`,
			txnID, time.Now().UnixMilli())
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil {
			return err
		} else if n == 0 {
			return nil
		}
		fresh = true
		for i, e := range entries {
			e.seq = ib.nextSeq + int64(i)
		}
		const perInsert = 200
		for start := 0; start < len(entries); start += perInsert {
			query, args := insertInbox.Build([0]any{}, entries[start:min(start+perInsert, len(entries))])
			if _, err := db.Exec(ctx, query, args...); err != nil {
				return err
			}
		}
		return nil
	})
	if err == nil && fresh {
		ib.nextSeq += int64(len(entries))
	}
	return fresh, err
}

// putTransaction is PUT /_matrix/app/v1/transactions/{txnId}.
func (ib *inbox) putTransaction(w http.ResponseWriter, r *http.Request) {
	// The hs_token was checked by Appservice.checkToken.
	txnID := r.PathValue("txnID")
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxTxnBody))
	if err != nil {
		mautrix.MTooLarge.WithMessage("Transaction body too large or unreadable").Write(w)
		return
	}
	var txn rawTxn
	if err := json.Unmarshal(body, &txn); err != nil {
		mautrix.MNotJSON.WithMessage("Transaction body is not a JSON object: %v", err).Write(w)
		return
	}
	entries := txn.entries()
	ib.mu.Lock()
	fresh, err := ib.accept(r.Context(), txnID, entries)
	if err == nil && fresh {
		// Queue while holding mu, so the next transaction's events come
		// after these; a full queue holds the homeserver's request, which
		// is the backpressure we want.
		ib.enqueue(entries)
	}
	ib.mu.Unlock()
	ib.a.Metrics.observeTransaction(entries, fresh, err)
	if err != nil {
		ib.a.Log.Error().Err(err).Str("txn_id", txnID).Msg("Failed to store transaction; the homeserver will retry it")
		mautrix.MUnknown.WithMessage("Failed to store the transaction").WithStatus(http.StatusInternalServerError).Write(w)
		return
	}
	if !fresh {
		ib.a.Log.Debug().Str("txn_id", txnID).Msg("Transaction received again; already accepted")
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write([]byte("{}"))
}
