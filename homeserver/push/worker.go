package push

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/rs/zerolog"
	"github.com/tidwall/gjson"
	"go.mau.fi/util/dbutil"
	"go.mau.fi/util/random"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/federation/pdu"
	"maunium.net/go/mautrix/id"

	"github.com/switchboard-im/switchboard/homeserver/notifier"
	"github.com/switchboard-im/switchboard/homeserver/storage"
)

// RoomState is what the worker reads of rooms (rooms.Service does it).
type RoomState interface {
	State(ctx context.Context, roomID id.RoomID) (map[storage.StateKey]*pdu.PDU, id.RoomVersion, error)
	PowerLevels(ctx context.Context, roomID id.RoomID) (*event.PowerLevelsEventContent, error)
}

const (
	// evalBatch is how many events one evaluation pass reads.
	evalBatch = 200
	// The lease on the worker lasts leaseDuration and is renewed every
	// leaseRenew; a process that dies holding it is replaced within
	// leaseDuration+leaseRenew.
	leaseDuration = time.Minute
	leaseRenew    = 15 * time.Second
	dbRetry       = 5 * time.Second
	// NotificationRetention is how long notifications are kept for
	// GET /notifications (and for pushers that are behind).
	NotificationRetention = 30 * 24 * time.Hour
	pruneEvery            = time.Hour
	// pushableTTL is how long the worker trusts what it read about which
	// users get push evaluation (deactivation is rare).
	pushableTTL = 10 * time.Minute
)

// Service is the homeserver's push worker. It follows the event stream
// (as the appservice pusher does) and, for every event, evaluates the push
// rules of each local member of the room but the sender (spec: "Server
// behaviour"); each notification is stored (GET /notifications) and handed
// to the user's pushers, which POST it to their push gateways (pusher.go).
//
// Evaluating after commit, not in the send path, keeps sending fast: a
// message to a room of thousands costs the sender nothing, and /sync's
// unread counts are computed at sync time from the same rules (syncapi),
// so they appear in the same sync as the event, as the spec requires. The
// worker's position is stored with the notifications it wrote, so after a
// restart it continues with the first event it had not finished; pushers
// keep their own position in the user's notifications, so deliveries that
// were pending (or being retried) resume too.
//
// Membership is taken at the event (current membership corrected by the
// membership changes after it), so a user is never notified of events from
// before their join or after their leave. Display names, power levels and
// room names are the room's current ones.
//
// With several homeserver processes on one PostgreSQL database, one holds
// a lease and does all of this; the others stand by.
type Service struct {
	db         *storage.DB
	rooms      RoomState
	n          *notifier.Notifier
	serverName string
	log        zerolog.Logger
	client     *http.Client
	rules      *Cache
	owner      string

	mu          sync.Mutex
	minBackoff  time.Duration
	maxBackoff  time.Duration
	giveUpAfter time.Duration
	cancel      context.CancelFunc
	done        chan struct{}
	// deliverCtx is set while this process holds the lease.
	deliverCtx    context.Context
	deliverCancel context.CancelFunc
	deliveries    map[pusherKey]*delivery
	wg            sync.WaitGroup
	// lastUnread is the unread count each pusher was sent last (badge
	// updates are sent only when it changes).
	lastUnread map[pusherKey]int

	// Owned by the run goroutine.
	roomInfos    map[id.RoomID]*roomInfo
	pushable     map[id.UserID]bool
	pushableRead time.Time
	receiptPos   int64 // read receipts up to here were looked at
	failPos      int64
	failCount    int
}

// NewService returns the push worker. client delivers to the gateways
// (NewGatewayClient); nil is NewGatewayClient(nil), which reaches public
// addresses only.
func NewService(db *storage.DB, rooms RoomState, n *notifier.Notifier, serverName string, log zerolog.Logger, client *http.Client) *Service {
	if client == nil {
		client, _ = NewGatewayClient(nil) // nothing to parse: no error
	}
	return &Service{
		db: db, rooms: rooms, n: n, serverName: serverName, log: log, client: client,
		rules: NewCache(db), owner: random.String(16),
		minBackoff: DefaultMinBackoff, maxBackoff: DefaultMaxBackoff, giveUpAfter: DefaultGiveUpAfter,
		deliveries: map[pusherKey]*delivery{}, lastUnread: map[pusherKey]int{}, roomInfos: map[id.RoomID]*roomInfo{}, pushable: map[id.UserID]bool{},
	}
}

// SetRetryPolicy changes how failed pushes are retried: the wait starts at
// minBackoff and doubles up to maxBackoff; a notification still failing
// after giveUpAfter is dropped.
func (s *Service) SetRetryPolicy(minBackoff, maxBackoff, giveUpAfter time.Duration) {
	s.mu.Lock()
	s.minBackoff, s.maxBackoff, s.giveUpAfter = minBackoff, maxBackoff, giveUpAfter
	s.mu.Unlock()
}

func (s *Service) retryPolicy() (time.Duration, time.Duration, time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.minBackoff, s.maxBackoff, s.giveUpAfter
}

// Start starts the worker; Stop, or the end of ctx, stops it.
func (s *Service) Start(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.done != nil {
		return errors.New("push worker: already started")
	}
	if s.db.Dialect == dbutil.SQLite {
		// One process per SQLite database: a lease left by a crashed
		// predecessor is this process's to take.
		if err := s.db.ClearPushWorkerLease(ctx); err != nil {
			return err
		}
	}
	ctx, s.cancel = context.WithCancel(ctx)
	s.done = make(chan struct{})
	go s.run(ctx)
	return nil
}

// Stop stops evaluation and delivery (a push in flight is abandoned and
// sent again after the next start) and releases the lease.
func (s *Service) Stop() {
	s.mu.Lock()
	cancel, done := s.cancel, s.done
	s.mu.Unlock()
	if cancel == nil {
		return
	}
	cancel()
	<-done
}

func (s *Service) run(ctx context.Context) {
	defer close(s.done)
	wake, unsubscribe := s.n.SubscribeStream(false)
	defer unsubscribe()
	var owned bool
	var lastClaim, lastPrune time.Time
	defer func() {
		s.stopDelivering()
		if owned {
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			if err := s.db.ReleasePushWorker(rctx, s.owner); err != nil {
				s.log.Warn().Err(err).Msg("Failed to release the push worker lease")
			}
			cancel()
		}
	}()
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		wait := leaseRenew
		if time.Since(lastClaim) >= leaseRenew {
			now := time.Now()
			ok, err := s.db.ClaimPushWorker(ctx, s.owner, now.UnixMilli(), now.Add(leaseDuration).UnixMilli())
			switch {
			case err != nil:
				if ctx.Err() != nil {
					return
				}
				s.log.Warn().Err(err).Msg("Failed to claim the push worker lease")
				ok = owned // keep the state until the database answers
			case ok && !owned:
				s.log.Debug().Msg("Push worker lease taken: evaluating and delivering here")
				if err := s.watchReceipts(ctx); err != nil {
					s.log.Warn().Err(err).Msg("Failed to read the stream position; badge updates start with the next read")
				}
				s.startDelivering(ctx)
			case !ok && owned:
				s.log.Info().Msg("Push worker lease lost to another process")
				s.stopDelivering()
			}
			owned, lastClaim = ok, now
		}
		if owned {
			if time.Since(lastPrune) >= pruneEvery {
				lastPrune = time.Now()
				if n, err := s.db.PruneNotifications(ctx, time.Now().Add(-NotificationRetention).UnixMilli()); err != nil {
					s.log.Warn().Err(err).Msg("Failed to prune old notifications")
				} else if n > 0 {
					s.log.Debug().Int64("count", n).Msg("Pruned old notifications")
				}
			}
			caughtUp, err := s.evaluate(ctx)
			switch {
			case ctx.Err() != nil:
				return
			case errors.Is(err, errLeaseLost):
				s.log.Info().Msg("Push worker lease lost to another process")
				s.stopDelivering()
				owned = false
			case err != nil:
				s.log.Err(err).Msg("Push evaluation failed; retrying")
				wait = dbRetry
			case !caughtUp:
				wait = 0
			}
		}
		if wait == 0 {
			continue
		}
		timer.Reset(wait)
		select {
		case <-ctx.Done():
			return
		case <-wake:
		case <-timer.C:
		}
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
	}
}

var errLeaseLost = errors.New("push worker lease lost")

// evaluate evaluates the next batch of events; it reports whether it
// reached the head of the stream.
func (s *Service) evaluate(ctx context.Context) (bool, error) {
	pos, err := s.db.PushWorkerPos(ctx)
	if err != nil {
		return false, err
	}
	head, err := s.db.CurrentStreamPos(ctx)
	if err != nil {
		return false, err
	}
	if err := s.readReceipts(ctx, head); err != nil && ctx.Err() == nil {
		s.log.Warn().Err(err).Msg("Failed to read receipts for badge updates")
	}
	if pos >= head {
		return true, nil
	}
	events, err := s.db.StreamEvents(ctx, pos, head, evalBatch)
	if err != nil {
		return false, err
	}
	upto := head
	if len(events) == evalBatch {
		upto = events[len(events)-1].StreamPos
	}
	var notes []storage.Notification
	if len(events) > 0 {
		if err := s.rules.Refresh(ctx); err != nil {
			return false, err
		}
		changes, err := s.db.MembershipsAfter(ctx, events[0].StreamPos)
		if err != nil {
			return false, err
		}
		now := time.Now().UnixMilli()
		for _, e := range events {
			found, err := s.evaluateEvent(ctx, e, changes, now)
			if err != nil && ctx.Err() == nil && s.failedBefore(e.StreamPos) {
				// The same event failed on every try: skip it rather than
				// hold up every notification after it.
				s.log.Err(err).Stringer("event_id", e.EventID).Msg("Skipping an event the push worker cannot evaluate")
				continue
			} else if err != nil {
				return false, fmt.Errorf("event %s: %w", e.EventID, err)
			}
			notes = append(notes, found...)
		}
	}
	ok, err := s.db.CommitPushEvaluation(ctx, s.owner, upto, notes)
	if err != nil {
		return false, err
	} else if !ok {
		return false, errLeaseLost
	}
	if len(notes) > 0 {
		s.notified(ctx, notes)
	}
	return upto >= head, nil
}

// maxEventAttempts is how often the worker tries an event that fails to
// evaluate before skipping it.
const maxEventAttempts = 3

// failedBefore records a failure to evaluate the event at pos and reports
// whether it has now failed maxEventAttempts times in a row.
func (s *Service) failedBefore(pos int64) bool {
	if s.failPos != pos {
		s.failPos, s.failCount = pos, 0
	}
	s.failCount++
	return s.failCount >= maxEventAttempts
}

// evaluateEvent returns the notifications one event gives.
func (s *Service) evaluateEvent(ctx context.Context, e *storage.Event, changes []storage.Membership, now int64) ([]storage.Notification, error) {
	if e.RedactedBy != "" {
		return nil, nil
	}
	info, err := s.roomInfo(ctx, e, changes)
	if err != nil {
		return nil, err
	}
	targets := info.targets
	if e.Type == event.StateMember.Type && e.StateKey != nil && gjson.GetBytes(e.PDU, "content.membership").Str == string(event.MembershipInvite) {
		// The invitee is not in the room yet, but .m.rule.invite_for_me
		// is for them.
		if invitee := id.UserID(*e.StateKey); invitee.Homeserver() == s.serverName {
			ok, err := s.isPushable(ctx, []id.UserID{invitee})
			if err != nil {
				return nil, err
			}
			if ok[invitee] {
				targets = append(targets[:len(targets):len(targets)], invitee)
			}
		}
	}
	if len(targets) == 0 {
		return nil, nil
	}
	rules, err := s.rules.Lookup(ctx, targets)
	if err != nil {
		return nil, err
	}
	ev := NewEvent(e)
	thread := threadOf(e)
	var out []storage.Notification
	for _, u := range targets {
		res := rules[u].Evaluate(ev, info.room, &Member{UserID: u, DisplayName: info.displayNames[u]})
		if res == nil || !res.Notify {
			continue
		}
		out = append(out, storage.Notification{
			UserID: u, StreamPos: e.StreamPos, RoomID: e.RoomID, EventID: e.EventID, ThreadID: thread,
			EventType: e.Type, Actions: res.Actions, Highlight: res.Highlight, TS: now,
		})
	}
	return out, nil
}

// threadOf is the thread an event belongs to: the root of its m.thread
// relation, else "main".
func threadOf(e *storage.Event) string {
	if e.RelType == string(event.RelThread) && e.RelatesTo != "" {
		return string(e.RelatesTo)
	}
	return "main"
}

// roomInfo is what evaluation needs of a room as of one state group: the
// local users joined then who get push evaluation, the joined member
// count, display names and power levels.
type roomInfo struct {
	group        int64
	targets      []id.UserID
	displayNames map[id.UserID]string
	room         *Room
}

// roomInfo returns the room's info as of the event. Events with the same
// state group have the same members, so it is computed once per group.
func (s *Service) roomInfo(ctx context.Context, e *storage.Event, changes []storage.Membership) (*roomInfo, error) {
	if info := s.roomInfos[e.RoomID]; info != nil && info.group == e.StateAfter {
		return info, nil
	}
	state, _, err := s.rooms.State(ctx, e.RoomID)
	if err != nil {
		return nil, err
	}
	joined := map[id.UserID]bool{}
	names := map[id.UserID]string{}
	for k, p := range state {
		if k.Type != event.StateMember.Type {
			continue
		}
		user := id.UserID(k.StateKey)
		if gjson.GetBytes(p.Content, "membership").Str == string(event.MembershipJoin) {
			joined[user] = true
		}
		if user.Homeserver() == s.serverName {
			if name := gjson.GetBytes(p.Content, "displayname").Str; name != "" {
				names[user] = name
			}
		}
	}
	// Undo the membership changes after the event: the membership at the
	// event is the last change at or before it.
	later := map[id.UserID]bool{}
	for _, m := range changes {
		if m.RoomID == e.RoomID && m.StreamPos > e.StreamPos {
			later[m.UserID] = true
		}
	}
	for user := range later {
		membership := ""
		for _, m := range changes {
			if m.RoomID == e.RoomID && m.UserID == user && m.StreamPos <= e.StreamPos {
				membership = m.Membership
			}
		}
		if membership == "" {
			if membership, err = s.db.MembershipAt(ctx, e.RoomID, user, e.StreamPos); err != nil {
				return nil, err
			}
		}
		if membership == string(event.MembershipJoin) {
			joined[user] = true
		} else {
			delete(joined, user)
		}
	}
	var local []id.UserID
	for user := range joined {
		if user.Homeserver() == s.serverName {
			local = append(local, user)
		}
	}
	ok, err := s.isPushable(ctx, local)
	if err != nil {
		return nil, err
	}
	info := &roomInfo{group: e.StateAfter, displayNames: names, room: &Room{MemberCount: len(joined)}}
	for _, u := range local {
		if ok[u] {
			info.targets = append(info.targets, u)
		}
	}
	// In key order, the notifications' inserts walk the index in order.
	slices.Sort(info.targets)
	if info.room.PowerLevels, err = s.rooms.PowerLevels(ctx, e.RoomID); err != nil {
		return nil, err
	}
	var plContent []byte
	if p := state[storage.StateKey{Type: event.StatePowerLevels.Type}]; p != nil {
		plContent = p.Content
	}
	info.room.NotificationLevels = NotificationLevels(plContent)
	if len(s.roomInfos) > 10_000 {
		s.roomInfos = map[id.RoomID]*roomInfo{}
	}
	s.roomInfos[e.RoomID] = info
	return info, nil
}

// isPushable says which of the local users get push evaluation (see
// storage.PushableUsers), from memory when it can.
func (s *Service) isPushable(ctx context.Context, users []id.UserID) (map[id.UserID]bool, error) {
	if time.Since(s.pushableRead) > pushableTTL {
		s.pushable, s.pushableRead = map[id.UserID]bool{}, time.Now()
	}
	out := make(map[id.UserID]bool, len(users))
	var unknown []id.UserID
	for _, u := range users {
		if ok, known := s.pushable[u]; known {
			out[u] = ok
		} else {
			unknown = append(unknown, u)
		}
	}
	if len(unknown) == 0 {
		return out, nil
	}
	found, err := s.db.PushableUsers(ctx, unknown)
	if err != nil {
		return nil, err
	}
	for _, u := range unknown {
		s.pushable[u], out[u] = found[u], found[u]
	}
	return out, nil
}
