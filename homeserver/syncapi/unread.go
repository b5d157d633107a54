package syncapi

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"runtime"
	"slices"
	"strings"
	"sync"

	"github.com/tidwall/gjson"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/switchboard-im/switchboard/homeserver/push"
	"github.com/switchboard-im/switchboard/homeserver/storage"
)

// UnreadScanLimit caps how many of a room's newest events one unread count
// reads. Counts are computed at sync time rather than stored per event, so
// they are always consistent with the timeline in the same response (spec:
// the count from a new event appears in the same /sync as the event); the
// price is the scan, and a room with more unread events than this reports
// the notifications among its newest UnreadScanLimit events only.
const UnreadScanLimit = 500

// unreadPage is how many events one query of the scan reads.
const unreadPage = 100

// mainThread is the thread ID of the main timeline (spec: "Threading").
const mainThread = "main"

// unread fills unread_notifications of every joined room in the response
// (spec: "Receiving notifications"): the events after the user's read
// receipt, from other users, that the user's push rules (the server
// defaults merged with the user's own, see package push) make notify, and
// of those the ones that highlight.
//
//   - The read position is the furthest of the user's m.read and
//     m.read.private receipts; threaded receipts (spec: "Threaded read
//     receipts") move it for their thread ("main" or a thread root) only.
//   - The user's own event counts as reading up to it: one in the main
//     timeline (their join included) ends the scan, one in a thread moves
//     that thread's position.
//   - Redacted events do not count; push conditions are evaluated against
//     the room's current state (member count, display name, power levels).
//
// With unread_thread_notifications set in the timeline filter,
// unread_notifications counts the main timeline only and the returned map
// holds each room's per-thread counts (threads without notifications left
// out) for unread_thread_notifications; otherwise the map is empty and the
// counts cover the whole room.
func (s *Syncer) unread(ctx context.Context, req Request, resp *Response, upto int64) (map[id.RoomID]map[id.EventID]Unread, error) {
	threads := map[id.RoomID]map[id.EventID]Unread{}
	if len(resp.Rooms.Join) == 0 {
		return threads, nil
	}
	rules, version, err := s.pushCache().ForUser(ctx, req.User)
	if err != nil {
		return nil, err
	}
	perThread := timelineFilter(req).UnreadThreadNotifications
	// Counting is CPU-bound (push rules on every unread event), and an
	// initial sync counts every room: spread the rooms over the cores.
	all := make(map[id.RoomID]map[string]Unread, len(resp.Rooms.Join))
	var mu sync.Mutex
	var firstErr error
	work := make(chan id.RoomID)
	var wg sync.WaitGroup
	for range min(runtime.GOMAXPROCS(0), len(resp.Rooms.Join)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for roomID := range work {
				counts, err := s.cachedUnreadCounts(ctx, rules, version, req.User, roomID, upto)
				mu.Lock()
				if err != nil && firstErr == nil {
					firstErr = err
				}
				all[roomID] = counts
				mu.Unlock()
			}
		}()
	}
	for roomID := range resp.Rooms.Join {
		work <- roomID
	}
	close(work)
	wg.Wait()
	if firstErr != nil {
		return nil, firstErr
	}
	for roomID, jr := range resp.Rooms.Join {
		counts := all[roomID]
		if !perThread {
			var total Unread
			for _, c := range counts {
				total.NotificationCount += c.NotificationCount
				total.HighlightCount += c.HighlightCount
			}
			jr.UnreadNotifications = total
			continue
		}
		jr.UnreadNotifications = counts[mainThread]
		for thread, c := range counts {
			if thread == mainThread || c.NotificationCount == 0 {
				continue
			}
			if threads[roomID] == nil {
				threads[roomID] = map[id.EventID]Unread{}
			}
			threads[roomID][id.EventID(thread)] = c
		}
	}
	return threads, nil
}

// unreadScan is the result of counting one range of a room's events.
type unreadScan struct {
	counts map[string]Unread
	// ownMain: the user's own main-timeline event ended the scan, so the
	// counts are final for the whole room (nothing older counts).
	ownMain bool
	// ownThreads are threads where the user's own event was found: older
	// events of those threads no longer count.
	ownThreads map[string]bool
	// redaction: the range holds a redaction, which may cancel an older
	// event's count.
	redaction bool
	// complete: the scan reached the lower bound (not the scan limit).
	complete bool
}

// scanUnread counts the events in (from, upto], newest first.
func (s *Syncer) scanUnread(ctx context.Context, rules *push.Compiled, user id.UserID, roomID id.RoomID, read map[string]int64, from, upto int64) (*unreadScan, error) {
	read = maps.Clone(read)
	out := &unreadScan{counts: map[string]Unread{}, ownThreads: map[string]bool{}}
	var room *pushRoom
	cursor, scanned := upto, 0
	for scanned < UnreadScanLimit && cursor > from {
		want := min(unreadPage, UnreadScanLimit-scanned)
		page, err := s.DB.RoomEvents(ctx, roomID, from, cursor, want, true)
		if err != nil {
			return nil, err
		}
		for _, e := range page {
			cursor = e.StreamPos - 1
			scanned++
			if e.Type == event.EventRedaction.Type {
				out.redaction = true
			}
			thread := threadOf(e)
			if e.Sender == user {
				if thread == mainThread {
					out.ownMain, out.complete = true, true
					return out, nil
				}
				read[thread] = max(read[thread], e.StreamPos)
				out.ownThreads[thread] = true
				continue
			}
			if e.StreamPos <= read[thread] || e.RedactedBy != "" {
				continue
			}
			if room == nil {
				if room, err = s.pushRoom(ctx, roomID, user); err != nil {
					return nil, err
				}
			}
			res := rules.Evaluate(push.NewEvent(e), room.room, &push.Member{UserID: user, DisplayName: room.displayName})
			if res == nil || !res.Notify {
				continue
			}
			c := out.counts[thread]
			c.NotificationCount++
			if res.Highlight {
				c.HighlightCount++
			}
			out.counts[thread] = c
		}
		if len(page) < want {
			cursor = from // nothing older in the range
			break
		}
	}
	out.complete = cursor <= from
	return out, nil
}

// unreadCache remembers each (user, room)'s counts as of a stream
// position, read position and push rules version, so a sync only evaluates the push rules on
// events that are new since the last sync — a woken long-poll otherwise
// re-scans every unread event of the room on every message.
type unreadCache struct {
	mu      sync.Mutex
	entries map[string]*unreadEntry
}

type unreadEntry struct {
	upto    int64
	readSig string
	counts  map[string]Unread
}

// maxUnreadEntries bounds the cache; past it, it starts over.
const maxUnreadEntries = 200_000

func readSignature(read map[string]int64) string {
	keys := slices.Sorted(maps.Keys(read))
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, "%s=%d;", k, read[k])
	}
	return b.String()
}

// cachedUnreadCounts is unreadCounts, extending the cached counts by the
// events since they were computed when nothing invalidates them (a new
// receipt, a change of the user's push rules, or a redaction among the new
// events, recounts from scratch).
func (s *Syncer) cachedUnreadCounts(ctx context.Context, rules *push.Compiled, rulesVersion int64, user id.UserID, roomID id.RoomID, upto int64) (map[string]Unread, error) {
	read, err := s.DB.ReadUpTo(ctx, roomID, user)
	if err != nil {
		return nil, err
	}
	key, sig := string(user)+"|"+string(roomID), fmt.Sprintf("rules=%d;", rulesVersion)+readSignature(read)
	s.unreadMu().Lock()
	prev := s.unreadMemo.entries[key]
	s.unreadMu().Unlock()

	var counts map[string]Unread
	var complete bool
	if prev != nil && prev.readSig == sig && prev.upto <= upto {
		scan, err := s.scanUnread(ctx, rules, user, roomID, read, max(read[""], prev.upto), upto)
		if err != nil {
			return nil, err
		}
		switch {
		case scan.redaction || !scan.complete:
			prev = nil // recount below
		case scan.ownMain:
			counts, complete = scan.counts, true
		default:
			counts, complete = maps.Clone(prev.counts), true
			for thread := range scan.ownThreads {
				delete(counts, thread)
			}
			for thread, c := range scan.counts {
				old := counts[thread]
				counts[thread] = Unread{NotificationCount: old.NotificationCount + c.NotificationCount, HighlightCount: old.HighlightCount + c.HighlightCount}
			}
		}
	}
	if counts == nil {
		scan, err := s.scanUnread(ctx, rules, user, roomID, read, read[""], upto)
		if err != nil {
			return nil, err
		}
		counts, complete = scan.counts, scan.complete
	}
	if complete {
		s.unreadMu().Lock()
		if len(s.unreadMemo.entries) >= maxUnreadEntries {
			s.unreadMemo.entries = map[string]*unreadEntry{}
		}
		s.unreadMemo.entries[key] = &unreadEntry{upto: upto, readSig: sig, counts: counts}
		s.unreadMu().Unlock()
	}
	return counts, nil
}

func (s *Syncer) unreadMu() *sync.Mutex {
	s.cacheOnce.Do(s.initCaches)
	return &s.unreadMemo.mu
}

// pushCache returns the cache of users' compiled push rules.
func (s *Syncer) pushCache() *push.Cache {
	s.cacheOnce.Do(s.initCaches)
	return s.pushRules
}

func (s *Syncer) initCaches() {
	s.unreadMemo.entries = map[string]*unreadEntry{}
	s.pushRules = push.NewCache(s.DB)
}

// threadOf is the thread an event belongs to: the root of its m.thread
// relation, else the main timeline. (Events related to a thread event by
// other relations — reactions, edits — count as main timeline; the default
// rules never notify for them.)
func threadOf(e *storage.Event) string {
	if e.RelType == string(event.RelThread) && e.RelatesTo != "" {
		return string(e.RelatesTo)
	}
	return mainThread
}

// pushRoom is what push conditions need to know about a room and the
// user in it, from its current state.
type pushRoom struct {
	room        *push.Room
	displayName string
}

func (s *Syncer) pushRoom(ctx context.Context, roomID id.RoomID, user id.UserID) (*pushRoom, error) {
	state, _, err := s.Rooms.State(ctx, roomID)
	if err != nil {
		return nil, err
	}
	r := &pushRoom{room: &push.Room{}}
	for k, p := range state {
		if k.Type != event.StateMember.Type {
			continue
		}
		if gjson.GetBytes(p.Content, "membership").Str == string(event.MembershipJoin) {
			r.room.MemberCount++
		}
		if id.UserID(k.StateKey) == user {
			r.displayName = gjson.GetBytes(p.Content, "displayname").Str
		}
	}
	if r.room.PowerLevels, err = s.Rooms.PowerLevels(ctx, roomID); err != nil {
		return nil, err
	}
	var plContent []byte
	if p := state[storage.StateKey{Type: event.StatePowerLevels.Type}]; p != nil {
		plContent = p.Content
	}
	r.room.NotificationLevels = push.NotificationLevels(plContent)
	return r, nil
}

// pushRulesAccountData puts the user's current push rules into the
// response's m.push_rules account data: on an initial sync always, on an
// incremental one when they changed (their change writes the account data
// entry, whose content is replaced here by the ruleset as it is now, so
// that a new server version's defaults show).
func (s *Syncer) pushRulesAccountData(ctx context.Context, user id.UserID, resp *Response, since int64) error {
	at := -1
	for i, raw := range resp.AccountData.Events {
		if gjson.GetBytes(raw, "type").Str == storage.PushRulesType {
			at = i
		}
	}
	if at < 0 && since > 0 {
		return nil
	}
	rows, err := s.DB.PushRules(ctx, user)
	if err != nil {
		return err
	}
	raw, err := json.Marshal(map[string]any{"type": storage.PushRulesType, "content": push.Assemble(user, rows).AccountDataContent()})
	if err != nil {
		return err
	}
	if at < 0 {
		resp.AccountData.Events = append(resp.AccountData.Events, raw)
	} else {
		resp.AccountData.Events[at] = raw
	}
	return nil
}
