package clientapi

import (
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"strings"

	"github.com/gin-gonic/gin"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/switchboard-im/switchboard/homeserver/rooms"
	"github.com/switchboard-im/switchboard/homeserver/storage"
	"github.com/switchboard-im/switchboard/homeserver/syncapi"
)

// topoToken is a point in a room's (depth, stream) order, just after the
// event with that key. It is written "t{depth}_{pos}".
type topoToken struct{ depth, pos int64 }

func (t topoToken) String() string { return fmt.Sprintf("t%d_%d", t.depth, t.pos) }

// before is the point just before event e.
func before(e *storage.Event) topoToken { return topoToken{e.Depth, e.StreamPos - 1} }

// after is the point just after event e.
func after(e *storage.Event) topoToken { return topoToken{e.Depth, e.StreamPos} }

func (t topoToken) less(o topoToken) bool {
	return t.depth < o.depth || (t.depth == o.depth && t.pos < o.pos)
}

// parsePaginationToken accepts topological tokens and sync stream tokens
// ("s{pos}…", as in prev_batch and next_batch), mapping the latter to the
// point after the room's last event at that stream position.
func (a *API) parsePaginationToken(c *gin.Context, roomID id.RoomID, raw string) (topoToken, bool) {
	if strings.HasPrefix(raw, "t") {
		d, p, ok := strings.Cut(raw[1:], "_")
		depth, err1 := strconv.ParseInt(d, 10, 64)
		pos, err2 := strconv.ParseInt(p, 10, 64)
		if ok && err1 == nil && err2 == nil {
			return topoToken{depth, pos}, true
		}
	} else if st, err := syncapi.ParseToken(raw); err == nil {
		events, err := a.db.RoomEvents(c.Request.Context(), roomID, 0, st.Pos, 1, true)
		if err != nil {
			a.internalError(c, err)
			return topoToken{}, false
		}
		if len(events) == 0 {
			return topoToken{}, true
		}
		return after(events[0]), true
	}
	fail(c, mautrix.MInvalidParam.WithMessage("Invalid pagination token %q", raw))
	return topoToken{}, false
}

// paginationRange reads the from and to query parameters: from defaults to
// the end of the room for backwards paging and its start otherwise; to is
// nil when absent.
func (a *API) paginationRange(c *gin.Context, roomID id.RoomID, backwards bool) (from topoToken, to *topoToken, ok bool) {
	from = topoToken{math.MaxInt64, math.MaxInt64}
	if !backwards {
		from = topoToken{0, 0}
	}
	if raw := c.Query("from"); raw != "" {
		if from, ok = a.parsePaginationToken(c, roomID, raw); !ok {
			return from, nil, false
		}
	}
	if raw := c.Query("to"); raw != "" {
		t, ok := a.parsePaginationToken(c, roomID, raw)
		if !ok {
			return from, nil, false
		}
		to = &t
	}
	return from, to, true
}

// parseEventFilter reads a RoomEventFilter query parameter.
func parseEventFilter(c *gin.Context) (*mautrix.FilterPart, bool) {
	raw := c.Query("filter")
	if raw == "" {
		return &mautrix.FilterPart{}, true
	}
	var f mautrix.FilterPart
	if err := json.Unmarshal([]byte(raw), &f); err != nil {
		fail(c, mautrix.MBadJSON.WithMessage("filter is not a valid RoomEventFilter: %v", err))
		return nil, false
	}
	return &f, true
}

func (a *API) getMessages(c *gin.Context, sess *storage.Session) {
	roomID, ok := roomIDFromPath(c)
	if !ok {
		return
	}
	ctx := c.Request.Context()
	dir := c.Query("dir")
	if dir != "b" && dir != "f" {
		fail(c, mautrix.MInvalidParam.WithMessage("dir must be b or f"))
		return
	}
	backwards := dir == "b"
	limit := 10
	if l := c.Query("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 0 {
			fail(c, mautrix.MInvalidParam.WithMessage("limit must be a non-negative integer"))
			return
		}
		limit = min(n, 1000)
	}
	filter, ok := parseEventFilter(c)
	if !ok {
		return
	}
	if filter.Limit > 0 {
		limit = min(limit, filter.Limit)
	}
	if _, err := a.rooms.Version(ctx, roomID); err != nil {
		a.roomError(c, err)
		return
	}
	h, err := a.rooms.HistoryFor(ctx, roomID, sess.UserID)
	if err != nil {
		a.roomError(c, err)
		return
	}
	from, to, ok := a.paginationRange(c, roomID, backwards)
	if !ok {
		return
	}

	// Read in pages until limit visible, matching events are found: hidden
	// and filtered-out events must not shorten the answer.
	var chunk []*storage.Event
	cursor, exhausted, seenAny := from, false, false
	for len(chunk) < limit && !exhausted {
		page, err := a.db.RoomEventsTopological(ctx, roomID, cursor.depth, cursor.pos, max(limit, 50), backwards)
		if err != nil {
			a.internalError(c, err)
			return
		}
		short := len(page) < max(limit, 50)
		stoppedEarly := false
		for i, e := range page {
			key := after(e)
			if to != nil && ((backwards && !to.less(key)) || (!backwards && to.less(key))) {
				exhausted = true
				break
			}
			if backwards {
				cursor = before(e)
			} else {
				cursor = key
			}
			if !h.CanSee(e.StreamPos) {
				continue
			}
			seenAny = true
			if !syncapi.MatchFilter(filter, e) {
				continue
			}
			chunk = append(chunk, e)
			if len(chunk) == limit {
				stoppedEarly = i < len(page)-1
				break
			}
		}
		// A short page read to its end means the room has no more events
		// in this direction; stopping at the limit inside it does not.
		if short && !stoppedEarly {
			exhausted = true
		}
	}
	if !seenAny && len(chunk) == 0 && !h.CanSee(math.MaxInt64) && h.MembershipAt(math.MaxInt64) != event.MembershipJoin && h.LastLeave() == 0 {
		fail(c, mautrix.MForbidden.WithMessage("You are not allowed to read this room's history"))
		return
	}
	viewer := rooms.Viewer{UserID: sess.UserID, DeviceID: sess.DeviceID}
	resp := gin.H{"start": from.String(), "chunk": a.rooms.Render(ctx, chunk, viewer, true)}
	if !exhausted {
		resp["end"] = cursor.String()
	}
	if filter.LazyLoadMembers && len(chunk) > 0 {
		members, err := a.membersForSenders(c, chunk, sess.UserID)
		if err != nil {
			a.internalError(c, err)
			return
		}
		resp["state"] = a.rooms.Render(ctx, members, viewer, true)
	}
	c.JSON(http.StatusOK, resp)
}

// membersForSenders returns the member events (as of the oldest event) of
// the senders of events, for lazy-loading clients.
func (a *API) membersForSenders(c *gin.Context, events []*storage.Event, self id.UserID) ([]*storage.Event, error) {
	ctx := c.Request.Context()
	oldest := events[0]
	for _, e := range events {
		if e.StreamPos < oldest.StreamPos {
			oldest = e
		}
	}
	state, err := a.rooms.StateAt(ctx, oldest, false)
	if err != nil {
		return nil, err
	}
	wanted := storage.StateMap{}
	for _, e := range events {
		k := storage.StateKey{Type: event.StateMember.Type, StateKey: string(e.Sender)}
		if eid, ok := state[k]; ok {
			wanted[k] = eid
		}
	}
	return a.rooms.StateEvents(ctx, wanted)
}
