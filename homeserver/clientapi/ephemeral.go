package clientapi

// Typing notifications, receipts and read markers: what a user tells the
// room (or only their own clients) about their reading and typing, outside
// the room's event graph.

import (
	"encoding/json"
	"errors"
	"net/http"
	"time"

	"github.com/gin-gonic/gin"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/switchboard-im/switchboard/homeserver/rooms"
	"github.com/switchboard-im/switchboard/homeserver/storage"
	"github.com/switchboard-im/switchboard/homeserver/typing"
)

// ephemeralAPI serves the typing, receipt and read marker endpoints.
type ephemeralAPI struct {
	*API
	// typing may be nil: typing requests are then accepted and dropped.
	typing *typing.Tracker
}

// registerEphemeral mounts the typing, receipt and read marker endpoints
// on a client API prefix group; tracker holds the typing state.
func (a *API) registerEphemeral(g gin.IRouter, tracker *typing.Tracker) {
	e := &ephemeralAPI{API: a, typing: tracker}
	g.PUT("/rooms/:roomID/typing/:userID", a.authed(e.putTyping))
	g.POST("/rooms/:roomID/receipt/:receiptType/:eventID", a.authed(e.postReceipt))
	g.POST("/rooms/:roomID/read_markers", a.authed(e.postReadMarkers))
}

// requireJoined answers 403 unless the user is joined to the room (an
// unknown room is answered the same, so it reveals nothing).
func (e *ephemeralAPI) requireJoined(c *gin.Context, roomID id.RoomID, userID id.UserID) bool {
	m, err := e.rooms.Membership(c.Request.Context(), roomID, userID)
	if err != nil && !errors.Is(err, rooms.ErrRoomNotFound) {
		e.roomError(c, err)
		return false
	}
	if m != event.MembershipJoin {
		fail(c, mautrix.MForbidden.WithMessage("You are not joined to this room"))
		return false
	}
	return true
}

func (e *ephemeralAPI) putTyping(c *gin.Context, sess *storage.Session) {
	roomID, ok := roomIDFromPath(c)
	if !ok {
		return
	}
	if id.UserID(c.Param("userID")) != sess.UserID {
		fail(c, mautrix.MForbidden.WithMessage("Cannot set the typing state of other users"))
		return
	}
	var body struct {
		Typing  *bool  `json:"typing"`
		Timeout *int64 `json:"timeout"`
	}
	if _, ok := e.readJSON(c, &body); !ok {
		return
	}
	if body.Typing == nil {
		fail(c, errMissingParam.WithMessage("typing is required"))
		return
	}
	if !e.requireJoined(c, roomID, sess.UserID) {
		return
	}
	if e.typing != nil {
		if *body.Typing {
			timeout := typing.DefaultTimeout
			if body.Timeout != nil && *body.Timeout > 0 {
				timeout = time.Duration(min(*body.Timeout, typing.MaxTimeout.Milliseconds())) * time.Millisecond
			}
			e.typing.SetTyping(roomID, sess.UserID, timeout)
		} else {
			e.typing.StopTyping(roomID, sess.UserID)
		}
	}
	c.JSON(http.StatusOK, gin.H{})
}

// validEventID checks the shape of an event ID from a request.
func validEventID(eventID id.EventID) bool {
	return len(eventID) >= 2 && eventID[0] == '$' && len(eventID) <= 255
}

// markRequest is one receipt or fully read marker to set.
type markRequest struct {
	kind     event.ReceiptType // m.read, m.read.private or m.fully_read
	eventID  id.EventID
	threadID string
}

const receiptTypeFullyRead = event.ReceiptType(storage.FullyReadType)

func (e *ephemeralAPI) postReceipt(c *gin.Context, sess *storage.Session) {
	roomID, ok := roomIDFromPath(c)
	if !ok {
		return
	}
	kind := event.ReceiptType(c.Param("receiptType"))
	switch kind {
	case event.ReceiptTypeRead, event.ReceiptTypeReadPrivate, receiptTypeFullyRead:
	default:
		fail(c, mautrix.MInvalidParam.WithMessage("Receipt type must be m.read, m.read.private or m.fully_read"))
		return
	}
	eventID := id.EventID(c.Param("eventID"))
	if !validEventID(eventID) {
		fail(c, mautrix.MInvalidParam.WithMessage("Invalid event ID"))
		return
	}
	raw, ok := e.readOptionalJSON(c, nil)
	if !ok {
		return
	}
	req := markRequest{kind: kind, eventID: eventID}
	if rawThread, present := raw["thread_id"]; present {
		if json.Unmarshal(rawThread, &req.threadID) != nil || req.threadID == "" {
			fail(c, mautrix.MInvalidParam.WithMessage("thread_id field must be a non-empty string"))
			return
		}
		if kind == receiptTypeFullyRead {
			fail(c, mautrix.MInvalidParam.WithMessage("thread_id is not allowed for m.fully_read"))
			return
		}
		if req.threadID != "main" && !validEventID(id.EventID(req.threadID)) {
			fail(c, mautrix.MInvalidParam.WithMessage("thread_id must be \"main\" or a thread root's event ID"))
			return
		}
	}
	e.applyMarks(c, sess, roomID, []markRequest{req})
}

func (e *ephemeralAPI) postReadMarkers(c *gin.Context, sess *storage.Session) {
	roomID, ok := roomIDFromPath(c)
	if !ok {
		return
	}
	var body struct {
		FullyRead   *id.EventID `json:"m.fully_read"`
		Read        *id.EventID `json:"m.read"`
		ReadPrivate *id.EventID `json:"m.read.private"`
	}
	if _, ok := e.readJSON(c, &body); !ok {
		return
	}
	var reqs []markRequest
	for _, m := range []struct {
		kind event.ReceiptType
		id   *id.EventID
	}{{receiptTypeFullyRead, body.FullyRead}, {event.ReceiptTypeRead, body.Read}, {event.ReceiptTypeReadPrivate, body.ReadPrivate}} {
		if m.id == nil {
			continue
		}
		if !validEventID(*m.id) {
			fail(c, mautrix.MInvalidParam.WithMessage("%s must be an event ID", m.kind))
			return
		}
		reqs = append(reqs, markRequest{kind: m.kind, eventID: *m.id})
	}
	e.applyMarks(c, sess, roomID, reqs)
}

// applyMarks checks that the user is joined and may see every event named,
// then sets the receipts and markers and wakes whoever sees them: the room
// for m.read, only the user for m.read.private and m.fully_read.
func (e *ephemeralAPI) applyMarks(c *gin.Context, sess *storage.Session, roomID id.RoomID, reqs []markRequest) {
	ctx := c.Request.Context()
	if !e.requireJoined(c, roomID, sess.UserID) {
		return
	}
	eventPos := make([]int64, len(reqs))
	for i, r := range reqs {
		evt, err := e.rooms.GetEvent(ctx, roomID, r.eventID, sess.UserID)
		if err != nil {
			e.roomError(c, err)
			return
		}
		// A receipt in a thread must not point at another thread's event.
		if r.threadID != "" && evt.RelType == string(event.RelThread) && string(evt.RelatesTo) != r.threadID {
			fail(c, mautrix.MInvalidParam.WithMessage("Event %s is not in thread %s", r.eventID, r.threadID))
			return
		}
		eventPos[i] = evt.StreamPos
	}
	var roomPos, userPos int64
	for i, r := range reqs {
		var pos int64
		var err error
		if r.kind == receiptTypeFullyRead {
			pos, err = e.db.SetFullyRead(ctx, sess.UserID, roomID, r.eventID, eventPos[i])
		} else {
			pos, err = e.db.SetReceipt(ctx, roomID, r.kind, sess.UserID, r.threadID, r.eventID, eventPos[i])
		}
		if err != nil {
			e.internalError(c, err)
			return
		}
		if r.kind == event.ReceiptTypeRead {
			roomPos = max(roomPos, pos)
		} else {
			userPos = max(userPos, pos)
		}
	}
	if e.notifier != nil {
		if roomPos > 0 {
			e.notifier.Wake(roomPos, nil, []id.RoomID{roomID})
		}
		if userPos > 0 {
			e.notifier.Wake(userPos, []id.UserID{sess.UserID}, nil)
		}
	}
	c.JSON(http.StatusOK, gin.H{})
}
