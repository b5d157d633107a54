package clientapi

import (
	"context"
	"errors"
	"math"
	"net/http"
	"strconv"

	"github.com/gin-gonic/gin"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/switchboard-im/switchboard/homeserver/rooms"
	"github.com/switchboard-im/switchboard/homeserver/storage"
	"github.com/switchboard-im/switchboard/homeserver/syncapi"
)

// Limits of the relations, threads and context endpoints. The defaults are
// Synapse's, which clients are tuned to.
const (
	relationsDefaultLimit = 5
	relationsMaxLimit     = 1000
	threadsDefaultLimit   = 5
	threadsMaxLimit       = 100
	contextDefaultLimit   = 10
	contextMaxLimit       = 1000
	// recursionLevels is how deep recurse=true follows relations (the spec
	// asks for at least 3).
	recursionLevels = 3
)

// registerRelations mounts the relations API and /threads (client v1) and
// /context (v3 and r0) on the root router.
func (a *API) registerRelations(r gin.IRouter) {
	v1 := r.Group("/_matrix/client/v1")
	v1.GET("/rooms/:roomID/relations/:eventID", a.authed(a.getRelations))
	v1.GET("/rooms/:roomID/relations/:eventID/:relType", a.authed(a.getRelations))
	v1.GET("/rooms/:roomID/relations/:eventID/:relType/:eventType", a.authed(a.getRelations))
	v1.GET("/rooms/:roomID/threads", a.authed(a.getThreads))
	for _, prefix := range clientPrefixes {
		r.GET(prefix+"/rooms/:roomID/context/:eventID", a.authed(a.getContext))
	}
}

// queryLimit reads an integer "limit" query parameter: def when absent,
// capped at maxLimit, at least minLimit.
func queryLimit(c *gin.Context, def, minLimit, maxLimit int) (int, bool) {
	raw, ok := c.GetQuery("limit")
	if !ok {
		return def, true
	}
	n, err := strconv.Atoi(raw)
	if err != nil || n < minLimit {
		fail(c, mautrix.MInvalidParam.WithMessage("limit must be an integer of at least %d", minLimit))
		return 0, false
	}
	return min(n, maxLimit), true
}

// pageEvents reads events in pages from fetch, starting at from, until
// limit of them pass keep, or the events run out or pass to. It returns the
// kept events, the point to continue from, and whether the events ran out.
func pageEvents(from topoToken, to *topoToken, backwards bool, limit int,
	fetch func(cursor topoToken, n int) ([]*storage.Event, error),
	keep func(*storage.Event) bool) (kept []*storage.Event, cursor topoToken, exhausted bool, err error) {
	cursor = from
	pageSize := max(limit, 50)
	for len(kept) < limit && !exhausted {
		page, err := fetch(cursor, pageSize)
		if err != nil {
			return nil, cursor, false, err
		}
		// A short page means the events run out, unless the limit is
		// reached before its end.
		exhausted = len(page) < pageSize
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
			if !keep(e) {
				continue
			}
			kept = append(kept, e)
			if len(kept) == limit {
				exhausted = exhausted && i == len(page)-1
				break
			}
		}
	}
	return kept, cursor, exhausted, nil
}

// visibleTo keeps the events a user may see and did not ignore.
func visibleTo(h *rooms.History, ignored map[id.UserID]bool) func(*storage.Event) bool {
	return func(e *storage.Event) bool { return h.CanSee(e.StreamPos) && !ignored[e.Sender] }
}

func (a *API) getRelations(c *gin.Context, sess *storage.Session) {
	roomID, ok := roomIDFromPath(c)
	if !ok {
		return
	}
	ctx := c.Request.Context()
	dir := c.DefaultQuery("dir", "b")
	if dir != "b" && dir != "f" {
		fail(c, mautrix.MInvalidParam.WithMessage("dir must be b or f"))
		return
	}
	backwards := dir == "b"
	limit, ok := queryLimit(c, relationsDefaultLimit, 0, relationsMaxLimit)
	if !ok {
		return
	}
	levels := 1
	rawRecurse, recurseGiven := c.GetQuery("recurse")
	if recurseGiven {
		switch rawRecurse {
		case "true":
			levels = recursionLevels
		case "false":
		default:
			fail(c, mautrix.MInvalidParam.WithMessage("recurse must be true or false"))
			return
		}
	}
	parent, h, err := a.rooms.VisibleEvent(ctx, roomID, id.EventID(c.Param("eventID")), sess.UserID)
	if err != nil {
		a.roomError(c, err)
		return
	}
	rawFrom := c.Query("from")
	from, to, ok := a.paginationRange(c, roomID, backwards)
	if !ok {
		return
	}
	ignored, err := a.rooms.IgnoredUsers(ctx, sess.UserID)
	if err != nil {
		a.internalError(c, err)
		return
	}
	q := storage.RelationsQuery{RoomID: roomID, Parent: parent.EventID, RelType: c.Param("relType"),
		EventType: c.Param("eventType"), Levels: levels, Backwards: backwards}
	chunk, cursor, exhausted, err := pageEvents(from, to, backwards, limit, func(cur topoToken, n int) ([]*storage.Event, error) {
		q.Depth, q.Pos, q.Limit = cur.depth, cur.pos, n
		return a.db.RelatedEvents(ctx, q)
	}, visibleTo(h, ignored))
	if err != nil {
		a.internalError(c, err)
		return
	}
	resp := gin.H{"chunk": a.rooms.Render(ctx, chunk, rooms.Viewer{UserID: sess.UserID, DeviceID: sess.DeviceID}, true)}
	if !exhausted {
		resp["next_batch"] = cursor.String()
	}
	if rawFrom != "" {
		resp["prev_batch"] = rawFrom
	}
	if recurseGiven {
		resp["recursion_depth"] = levels
	}
	c.JSON(http.StatusOK, resp)
}

func (a *API) getThreads(c *gin.Context, sess *storage.Session) {
	roomID, ok := roomIDFromPath(c)
	if !ok {
		return
	}
	ctx := c.Request.Context()
	var participant id.UserID
	switch c.DefaultQuery("include", "all") {
	case "all":
	case "participated":
		participant = sess.UserID
	default:
		fail(c, mautrix.MInvalidParam.WithMessage("include must be all or participated"))
		return
	}
	limit, ok := queryLimit(c, threadsDefaultLimit, 1, threadsMaxLimit)
	if !ok {
		return
	}
	h, ok := a.roomHistory(c, roomID, sess.UserID)
	if !ok {
		return
	}
	cursor := topoToken{math.MaxInt64, math.MaxInt64}
	if raw := c.Query("from"); raw != "" {
		if cursor, ok = a.parsePaginationToken(c, roomID, raw); !ok {
			return
		}
	}
	ignored, err := a.rooms.IgnoredUsers(ctx, sess.UserID)
	if err != nil {
		a.internalError(c, err)
		return
	}
	var roots []*storage.Event
	pageSize := max(limit, 20)
	more := true
	for more && len(roots) < limit {
		page, err := a.db.ThreadRoots(ctx, roomID, participant, cursor.depth, cursor.pos, pageSize)
		if err != nil {
			a.internalError(c, err)
			return
		}
		more = len(page) == pageSize
		for i, tr := range page {
			cursor = topoToken{tr.LatestDepth, tr.LatestPos - 1}
			if !h.CanSee(tr.Root.StreamPos) {
				continue
			}
			root := tr.Root
			if ignored[root.Sender] {
				// The spec: a root sent by an ignored user is shown redacted.
				if root, err = a.rooms.Redacted(ctx, root); err != nil {
					a.internalError(c, err)
					return
				}
			}
			roots = append(roots, root)
			if len(roots) == limit {
				more = more || i < len(page)-1
				break
			}
		}
	}
	resp := gin.H{"chunk": a.rooms.Render(ctx, roots, rooms.Viewer{UserID: sess.UserID, DeviceID: sess.DeviceID}, true)}
	if more {
		resp["next_batch"] = cursor.String()
	}
	c.JSON(http.StatusOK, resp)
}

// roomHistory loads the user's history in a room, answering 403 when the
// room does not exist or the user could never see any of it.
func (a *API) roomHistory(c *gin.Context, roomID id.RoomID, userID id.UserID) (*rooms.History, bool) {
	ctx := c.Request.Context()
	if _, err := a.rooms.Version(ctx, roomID); err != nil {
		if errors.Is(err, rooms.ErrRoomNotFound) {
			fail(c, mautrix.MForbidden.WithMessage("You are not allowed to view this room"))
		} else {
			a.roomError(c, err)
		}
		return nil, false
	}
	h, err := a.rooms.HistoryFor(ctx, roomID, userID)
	if err != nil {
		a.roomError(c, err)
		return nil, false
	}
	if !h.CanSee(math.MaxInt64) && h.MembershipAt(math.MaxInt64) != event.MembershipJoin && h.LastLeave() == 0 {
		fail(c, mautrix.MForbidden.WithMessage("You are not allowed to view this room"))
		return nil, false
	}
	return h, true
}

func (a *API) getContext(c *gin.Context, sess *storage.Session) {
	roomID, ok := roomIDFromPath(c)
	if !ok {
		return
	}
	ctx := c.Request.Context()
	limit, ok := queryLimit(c, contextDefaultLimit, 0, contextMaxLimit)
	if !ok {
		return
	}
	filter, ok := parseEventFilter(c)
	if !ok {
		return
	}
	if filter.Limit > 0 {
		limit = min(limit, filter.Limit)
	}
	target, h, err := a.rooms.VisibleEvent(ctx, roomID, id.EventID(c.Param("eventID")), sess.UserID)
	if err != nil {
		a.roomError(c, err)
		return
	}
	ignored, err := a.rooms.IgnoredUsers(ctx, sess.UserID)
	if err != nil {
		a.internalError(c, err)
		return
	}
	visible := visibleTo(h, ignored)
	keep := func(e *storage.Event) bool { return visible(e) && syncapi.MatchFilter(filter, e) }
	fetch := func(backwards bool) func(topoToken, int) ([]*storage.Event, error) {
		return func(cur topoToken, n int) ([]*storage.Event, error) {
			return a.db.RoomEventsTopological(ctx, roomID, cur.depth, cur.pos, n, backwards)
		}
	}
	beforeLimit := limit / 2
	eventsBefore, start, _, err := pageEvents(before(target), nil, true, beforeLimit, fetch(true), keep)
	if err != nil {
		a.internalError(c, err)
		return
	}
	eventsAfter, end, _, err := pageEvents(after(target), nil, false, limit-beforeLimit, fetch(false), keep)
	if err != nil {
		a.internalError(c, err)
		return
	}
	last := target
	if len(eventsAfter) > 0 {
		last = eventsAfter[len(eventsAfter)-1]
	}
	state, err := a.contextState(ctx, last, filter, append(append([]*storage.Event{target}, eventsBefore...), eventsAfter...))
	if err != nil {
		a.internalError(c, err)
		return
	}
	viewer := rooms.Viewer{UserID: sess.UserID, DeviceID: sess.DeviceID}
	c.JSON(http.StatusOK, gin.H{
		"start":         start.String(),
		"end":           end.String(),
		"event":         a.rooms.Render(ctx, []*storage.Event{target}, viewer, true)[0],
		"events_before": a.rooms.Render(ctx, eventsBefore, viewer, true),
		"events_after":  a.rooms.Render(ctx, eventsAfter, viewer, true),
		"state":         a.rooms.Render(ctx, state, viewer, true),
	})
}

// contextState is the room state after the last event /context returns,
// through the filter; with lazy-loading, member events only of the senders
// of the returned events.
func (a *API) contextState(ctx context.Context, last *storage.Event, filter *mautrix.FilterPart, returned []*storage.Event) ([]*storage.Event, error) {
	stateMap, err := a.rooms.StateAt(ctx, last, true)
	if err != nil {
		return nil, err
	}
	senders := map[string]bool{}
	for _, e := range returned {
		senders[string(e.Sender)] = true
	}
	wanted := storage.StateMap{}
	for k, eid := range stateMap {
		if filter.LazyLoadMembers && k.Type == event.StateMember.Type && !senders[k.StateKey] {
			continue
		}
		wanted[k] = eid
	}
	events, err := a.rooms.StateEvents(ctx, wanted)
	if err != nil {
		return nil, err
	}
	out := events[:0]
	for _, e := range events {
		if syncapi.MatchFilter(filter, e) {
			out = append(out, e)
		}
	}
	return out, nil
}

// errDuplicateAnnotation is the spec's answer to a second identical
// annotation; mautrix has no constant for it.
var errDuplicateAnnotation = mautrix.RespError{ErrCode: "M_DUPLICATE_ANNOTATION", StatusCode: http.StatusBadRequest}
