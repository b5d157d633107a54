package rooms

import (
	"context"
	stdjson "encoding/json"
	"encoding/json/jsontext"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/tidwall/gjson"
	"maunium.net/go/mautrix/crypto/canonicaljson"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/federation/eventauth"
	"maunium.net/go/mautrix/federation/pdu"
	"maunium.net/go/mautrix/id"

	"github.com/switchboard-im/switchboard/homeserver/storage"
)

// EventRequest is an event a local user (or the server for them) sends.
type EventRequest struct {
	Type     string
	StateKey *string
	Sender   id.UserID
	// Content is marshalled with encoding/json; json.RawMessage passes through.
	Content any
	// Redacts is the target of an m.room.redaction.
	Redacts id.EventID
	// TS overrides origin_server_ts (appservice timestamp massaging).
	TS       int64
	DeviceID id.DeviceID
	TxnID    string
	// TxnScope is the request path the transaction ID belongs to (the
	// spec counts a retransmission only on the same path).
	TxnScope string
}

// work is one write transaction on one room: events appended in order,
// each authorised against the state the previous one left.
type work struct {
	s      *Service
	rs     *roomState
	added  []*storage.Event
	wakeUs []id.UserID
}

// write runs fn with the room locked (in this process by a mutex, across
// processes by the room row lock) inside a transaction; the events fn
// appends are committed together or not at all. Syncs are woken after
// commit.
//
// Writes to one room that arrive while another is being committed are
// group-committed: the next batch runs them one after another in a single
// transaction, each inside its own savepoint (a refused event rolls back
// alone), so a busy room pays for one fsync per batch instead of one per
// event. Every caller still returns only once its events are durable.
func (s *Service) write(ctx context.Context, roomID id.RoomID, fn func(ctx context.Context, w *work) error) ([]*storage.Event, error) {
	req := &writeReq{fn: fn, done: make(chan struct{})}
	q := s.writeQueue(roomID)
	q.mu.Lock()
	q.pending = append(q.pending, req)
	leader := !q.running
	q.running = true
	q.mu.Unlock()
	if leader {
		// The batch must not die with this caller's request: others ride on it.
		bctx := context.WithoutCancel(ctx)
		for {
			q.mu.Lock()
			batch := q.pending
			q.pending = nil
			if len(batch) == 0 {
				q.running = false
				q.mu.Unlock()
				break
			}
			q.mu.Unlock()
			s.runBatch(bctx, roomID, batch)
		}
	}
	<-req.done
	return req.added, req.err
}

// writeReq is one caller's part of a group commit.
type writeReq struct {
	fn    func(ctx context.Context, w *work) error
	done  chan struct{}
	added []*storage.Event
	err   error
}

// writeQueue holds the writes waiting for a room's next batch.
type writeQueue struct {
	mu      sync.Mutex
	pending []*writeReq
	running bool
}

func (s *Service) writeQueue(roomID id.RoomID) *writeQueue {
	s.mu.Lock()
	defer s.mu.Unlock()
	q := s.queues[roomID]
	if q == nil {
		q = &writeQueue{}
		s.queues[roomID] = q
	}
	return q
}

// runBatch commits a batch of writes in one transaction.
func (s *Service) runBatch(ctx context.Context, roomID id.RoomID, batch []*writeReq) {
	lock := s.roomLock(roomID)
	lock.Lock()
	defer lock.Unlock()
	defer func() {
		for _, r := range batch {
			close(r.done)
		}
	}()
	var w *work
	err := s.db.DoTxn(ctx, nil, func(ctx context.Context) error {
		rs, err := s.load(ctx, roomID, true)
		if err != nil {
			return err
		}
		w = &work{s: s, rs: rs.clone()}
		for _, r := range batch {
			r.added, r.err = nil, nil
			if len(batch) == 1 {
				if r.err = r.fn(ctx, w); r.err != nil {
					return r.err
				}
				r.added = w.added
				break
			}
			if err := w.inSavepoint(ctx, r); err != nil {
				return err
			}
		}
		return w.finish(ctx)
	})
	if err != nil {
		// The cache may hold state from before a failed load; drop it.
		if !isClientError(err) {
			s.forget(roomID)
		}
		for _, r := range batch {
			if r.err == nil {
				r.err = err
			}
			r.added = nil
		}
		return
	}
	s.commit(w)
}

// inSavepoint runs one write of a batch so that its failure undoes only
// its own rows and in-memory changes. The returned error is a database
// failure that dooms the whole batch; the write's own error is in r.err.
func (w *work) inSavepoint(ctx context.Context, r *writeReq) error {
	snapshot, nAdded, nWake := w.rs.clone(), len(w.added), len(w.wakeUs)
	if _, err := w.s.db.Exec(ctx, "SAVEPOINT room_write"); err != nil {
		return fmt.Errorf("savepoint: %w", err)
	}
	if r.err = r.fn(ctx, w); r.err != nil {
		if _, err := w.s.db.Exec(ctx, "ROLLBACK TO SAVEPOINT room_write"); err != nil {
			return fmt.Errorf("rollback to savepoint: %w", err)
		}
		w.rs, w.added, w.wakeUs = snapshot, w.added[:nAdded], w.wakeUs[:nWake]
	} else {
		r.added = w.added[nAdded:]
	}
	if _, err := w.s.db.Exec(ctx, "RELEASE SAVEPOINT room_write"); err != nil {
		return fmt.Errorf("release savepoint: %w", err)
	}
	return nil
}

func (s *Service) commit(w *work) {
	if len(w.added) == 0 {
		return
	}
	s.store(w.rs)
	if s.notifier != nil {
		s.notifier.Wake(w.rs.lastPos, w.wakeUs, []id.RoomID{w.rs.roomID})
	}
}

func isClientError(err error) bool {
	var fe *ForbiddenError
	return errors.As(err, &fe) || errors.Is(err, ErrTooLarge) || errors.Is(err, ErrBadContent) || errors.Is(err, ErrRoomNotFound)
}

func (w *work) finish(ctx context.Context) error {
	if len(w.added) == 0 {
		return nil
	}
	if err := w.s.db.SetExtremities(ctx, w.rs.roomID, w.rs.extremities); err != nil {
		return err
	}
	return w.s.db.SetRoomLastPos(ctx, w.rs.roomID, w.rs.lastPos)
}

// append builds, signs, authorises and stores one event.
func (w *work) append(ctx context.Context, req EventRequest) (*storage.Event, error) {
	rs := w.rs
	p, err := w.s.buildPDU(rs, req)
	if err != nil {
		return nil, err
	}
	eventID, err := p.GetEventID(rs.version)
	if err != nil {
		return nil, fmt.Errorf("compute event ID: %w", err)
	}
	p.InternalMeta.EventID = eventID
	raw, err := canonicaljson.Marshal(p)
	if err != nil {
		return nil, fmt.Errorf("encode PDU: %w", err)
	}
	if len(raw) > MaxEventBytes {
		return nil, fmt.Errorf("%w: %d bytes, the limit is %d", ErrTooLarge, len(raw), MaxEventBytes)
	}
	if err := eventauth.Authorize(rs.version, p, nil, w.getEvents(ctx), w.s.getKey); err != nil {
		return nil, &ForbiddenError{Reason: authReason(err)}
	}
	pos, err := w.s.db.AllocStreamPos(ctx, 1)
	if err != nil {
		return nil, err
	}
	e := &storage.Event{
		StreamPos: pos, EventID: eventID, RoomID: rs.roomID, Type: p.Type, StateKey: p.StateKey,
		Sender: p.Sender, Depth: p.Depth, OriginServerTS: p.OriginServerTS, StateBefore: rs.group,
		StateAfter: rs.group, PDU: raw, DeviceID: req.DeviceID, TxnID: req.TxnID,
	}
	if rel := gjson.GetBytes(p.Content, `m\.relates_to`); rel.IsObject() {
		e.RelType, e.RelatesTo = rel.Get("rel_type").Str, id.EventID(rel.Get("event_id").Str)
		if e.RelType == "" && rel.Get(`m\.in_reply_to.event_id`).Exists() {
			e.RelType, e.RelatesTo = "m.in_reply_to", id.EventID(rel.Get(`m\.in_reply_to.event_id`).Str)
		}
		e.RelKey = rel.Get("key").Str
	}
	if p.StateKey != nil {
		key := storage.StateKey{Type: p.Type, StateKey: *p.StateKey}
		e.ReplacesState = rs.ids[key]
		rs.ids[key] = eventID
		rs.state[key] = p
		group, err := w.s.db.InsertStateGroup(ctx, rs.roomID, rs.group, rs.chain, storage.StateMap{key: eventID}, rs.ids)
		if err != nil {
			return nil, err
		}
		if rs.group == 0 || rs.chain+1 > storage.MaxStateChain {
			rs.chain = 0
		} else {
			rs.chain++
		}
		rs.group, e.StateAfter = group, group
		membership := ""
		if p.Type == event.StateMember.Type {
			membership = gjsonString(p.Content, "membership")
		}
		// v12 create events have no room_id in the PDU; the row holds it.
		if err := w.s.db.InsertEvent(ctx, e); err != nil {
			return nil, err
		}
		if err := w.s.db.UpsertCurrentState(ctx, rs.roomID, key, eventID, membership, pos); err != nil {
			return nil, err
		}
		if membership != "" {
			if err := w.s.db.InsertMembership(ctx, pos, rs.roomID, id.UserID(*p.StateKey), membership, p.Sender); err != nil {
				return nil, err
			}
			w.wakeUs = append(w.wakeUs, id.UserID(*p.StateKey))
		}
	} else if err := w.s.db.InsertEvent(ctx, e); err != nil {
		return nil, err
	}
	rs.lastPos, rs.depth, rs.extremities = pos, p.Depth, []id.EventID{eventID}
	w.added = append(w.added, e)
	return e, nil
}

// buildPDU fills in everything but the event ID and signs the event.
func (s *Service) buildPDU(rs *roomState, req EventRequest) (*pdu.PDU, error) {
	content, err := stdjson.Marshal(req.Content)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadContent, err)
	}
	if req.Content == nil || len(content) == 0 || content[0] != '{' {
		return nil, fmt.Errorf("%w: content must be an object", ErrBadContent)
	}
	ts := req.TS
	if ts == 0 {
		ts = time.Now().UnixMilli()
	}
	p := &pdu.PDU{
		Type:           req.Type,
		StateKey:       req.StateKey,
		Sender:         req.Sender,
		Content:        jsontext.Value(content),
		OriginServerTS: ts,
		PrevEvents:     append([]id.EventID{}, rs.extremities...),
		Depth:          rs.depth + 1,
		AuthEvents:     []id.EventID{},
	}
	if !(req.Type == event.StateCreate.Type && rs.version.RoomIDIsCreateEventID()) {
		p.RoomID = rs.roomID
	}
	if req.Redacts != "" && !rs.version.RedactsInContent() {
		redacts := req.Redacts
		p.Redacts = &redacts
	}
	for _, key := range p.AuthEventSelection(rs.version) {
		if eid, ok := rs.ids[storage.StateKey(key)]; ok {
			p.AuthEvents = append(p.AuthEvents, eid)
		}
	}
	if err := p.Sign(rs.version, s.serverName, s.key.ID, s.key.Priv); err != nil {
		return nil, fmt.Errorf("sign event: %w", err)
	}
	return p, nil
}

// getEvents serves eventauth's lookups from the working state, then the
// database.
func (w *work) getEvents(ctx context.Context) eventauth.GetEventsFunc {
	return func(ids []id.EventID) ([]*pdu.PDU, error) {
		out := make([]*pdu.PDU, len(ids))
		var missing []id.EventID
		byID := make(map[id.EventID]*pdu.PDU, len(w.rs.state))
		for _, p := range w.rs.state {
			byID[p.InternalMeta.EventID] = p
		}
		for i, eid := range ids {
			if p := byID[eid]; p != nil {
				out[i] = p
			} else {
				missing = append(missing, eid)
			}
		}
		if len(missing) > 0 {
			events, err := w.s.db.GetEvents(ctx, missing)
			if err != nil {
				return nil, err
			}
			found := map[id.EventID]*pdu.PDU{}
			for _, e := range events {
				p, err := parsePDU(e.PDU)
				if err != nil {
					return nil, err
				}
				p.InternalMeta.EventID = e.EventID
				found[e.EventID] = p
			}
			for i, eid := range ids {
				if out[i] == nil {
					out[i] = found[eid]
				}
			}
		}
		return out, nil
	}
}

// getKey answers signature checks the auth rules make (restricted joins
// must carry the authorising server's signature). Until federation lands
// only our own key is known.
func (s *Service) getKey(serverName string, keyID id.KeyID, _ time.Time) (id.SigningKey, time.Time, error) {
	if serverName == s.serverName && keyID == s.key.ID {
		return s.key.Pub, time.Now().Add(24 * time.Hour), nil
	}
	return "", time.Time{}, fmt.Errorf("unknown signing key %s of %s", keyID, serverName)
}

// authReason turns an eventauth error into a sentence for the client.
func authReason(err error) string {
	var afe eventauth.AuthFailError
	if errors.As(err, &afe) {
		return "Event not allowed by the room's auth rules: " + afe.Message
	}
	return "Event not allowed by the room's auth rules: " + err.Error()
}

func gjsonString(content []byte, path string) string {
	return gjson.GetBytes(content, path).Str
}
