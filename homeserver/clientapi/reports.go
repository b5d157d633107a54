package clientapi

import (
	"context"
	"encoding/json"
	"errors"
	"math"
	"net/http"
	"strconv"

	"github.com/gin-gonic/gin"
	"github.com/tidwall/gjson"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/switchboard-im/switchboard/homeserver/ratelimit"
	"github.com/switchboard-im/switchboard/homeserver/storage"
)

// Content reports (spec: "Reporting Content"): users report events, rooms
// and users to the server admins, who list them through Synapse's admin
// API (/_synapse/admin/v1/event_reports, which synapse-admin shows) and
// its counterparts for room and user reports.

type reports struct {
	*API
	limit *ratelimit.Limiter // per reporting user (rate_limits.report)
}

func (a *API) registerReports(r gin.IRouter) {
	rep := &reports{API: a, limit: ratelimit.New(a.cfg.RateLimits.Report)}
	for _, prefix := range clientPrefixes {
		r.POST(prefix+"/rooms/:roomID/report/:eventID", a.authed(rep.postEventReport))
		r.POST(prefix+"/rooms/:roomID/report", a.authed(rep.postRoomReport))
		r.POST(prefix+"/users/:userID/report", a.authed(rep.postUserReport))
	}
	admin := r.Group("/_synapse/admin/v1")
	admin.GET("/event_reports", a.admin(rep.listReports(storage.ReportEvent)))
	admin.GET("/event_reports/:reportID", a.admin(rep.getEventReport))
	admin.GET("/room_reports", a.admin(rep.listReports(storage.ReportRoom)))
	admin.GET("/user_reports", a.admin(rep.listReports(storage.ReportUser)))
}

// reportBody is the body of all three report endpoints. Score is what
// clients of spec versions before v1.18 send with event reports.
type reportBody struct {
	Reason *string         `json:"reason"`
	Score  json.RawMessage `json:"score"`
}

func (rep *reports) readReport(c *gin.Context, sess *storage.Session, reasonRequired bool) (*reportBody, bool) {
	if !limit(c, rep.limit, string(sess.UserID)) {
		return nil, false
	}
	var body reportBody
	if _, ok := rep.readJSON(c, &body); !ok {
		return nil, false
	}
	if reasonRequired && body.Reason == nil {
		fail(c, errMissingParam.WithMessage("reason is required"))
		return nil, false
	}
	return &body, true
}

// readRoomReport reads the room of the path, then the report.
func (rep *reports) readRoomReport(c *gin.Context, sess *storage.Session, reasonRequired bool) (id.RoomID, *reportBody, bool) {
	roomID, ok := roomIDFromPath(c)
	if !ok {
		return "", nil, false
	}
	body, ok := rep.readReport(c, sess, reasonRequired)
	return roomID, body, ok
}

func (rep *reports) store(c *gin.Context, r *storage.Report) {
	reportID, err := rep.db.InsertReport(c.Request.Context(), r)
	if err != nil {
		rep.internalError(c, err)
		return
	}
	zerologFromGin(c).Info().Int64("report_id", reportID).Str("kind", string(r.Kind)).
		Stringer("room_id", r.RoomID).Stringer("event_id", r.EventID).Stringer("reported_user_id", r.UserID).
		Msg("Content reported")
	c.JSON(http.StatusOK, gin.H{})
}

func (rep *reports) postEventReport(c *gin.Context, sess *storage.Session) {
	roomID, body, ok := rep.readRoomReport(c, sess, false)
	if !ok {
		return
	}
	var score *int64
	if len(body.Score) > 0 && string(body.Score) != "null" {
		var f float64
		if err := json.Unmarshal(body.Score, &f); err != nil {
			fail(c, mautrix.MBadJSON.WithMessage("score must be a number"))
			return
		}
		n, err := strconv.ParseInt(string(body.Score), 10, 64)
		if err != nil || n < -100 || n > 0 {
			fail(c, mautrix.MInvalidParam.WithMessage("score must be an integer from -100 to 0"))
			return
		}
		score = &n
	}
	ctx := c.Request.Context()
	// The reporter must be joined to the room (spec, since v1.8) and able
	// to see the event; anything else looks like a missing event.
	notFound := mautrix.MNotFound.WithMessage("The event was not found or you are not joined to the room")
	h, err := rep.rooms.HistoryFor(ctx, roomID, sess.UserID)
	if err != nil {
		rep.internalError(c, err)
		return
	}
	if h.MembershipAt(math.MaxInt64) != event.MembershipJoin {
		fail(c, notFound)
		return
	}
	e, err := rep.db.GetEvent(ctx, id.EventID(c.Param("eventID")))
	if errors.Is(err, storage.ErrNotFound) || (err == nil && (e.RoomID != roomID || !h.CanSee(e.StreamPos))) {
		fail(c, notFound)
		return
	} else if err != nil {
		rep.internalError(c, err)
		return
	}
	rep.store(c, &storage.Report{Kind: storage.ReportEvent, Reporter: sess.UserID, RoomID: roomID, EventID: e.EventID,
		UserID: e.Sender, Reason: body.Reason, Score: score})
}

func (rep *reports) postRoomReport(c *gin.Context, sess *storage.Session) {
	roomID, body, ok := rep.readRoomReport(c, sess, true)
	if !ok {
		return
	}
	// Anyone may report a room, member or not (spec, since v1.13): rooms
	// reach users through directories and invites too.
	if _, err := rep.db.GetRoom(c.Request.Context(), roomID, false); errors.Is(err, storage.ErrNotFound) {
		fail(c, mautrix.MNotFound.WithMessage("The room was not found"))
		return
	} else if err != nil {
		rep.internalError(c, err)
		return
	}
	rep.store(c, &storage.Report{Kind: storage.ReportRoom, Reporter: sess.UserID, RoomID: roomID, Reason: body.Reason})
}

func (rep *reports) postUserReport(c *gin.Context, sess *storage.Session) {
	userID := id.UserID(c.Param("userID"))
	if _, _, err := userID.ParseAndValidateRelaxed(); err != nil {
		fail(c, mautrix.MInvalidParam.WithMessage("Invalid user ID"))
		return
	}
	body, ok := rep.readReport(c, sess, true)
	if !ok {
		return
	}
	// Anyone may report a user, sharing a room or not (spec, since v1.14).
	known, err := rep.db.UserKnown(c.Request.Context(), userID)
	if err != nil {
		rep.internalError(c, err)
		return
	} else if !known {
		fail(c, mautrix.MNotFound.WithMessage("The user was not found"))
		return
	}
	rep.store(c, &storage.Report{Kind: storage.ReportUser, Reporter: sess.UserID, UserID: userID, Reason: body.Reason})
}

// queryInt reads a non-negative integer query parameter.
func queryInt(c *gin.Context, name string, def int) (int, bool) {
	raw, present := c.GetQuery(name)
	if !present {
		return def, true
	}
	n, err := strconv.Atoi(raw)
	if err != nil || n < 0 {
		fail(c, mautrix.MInvalidParam.WithMessage("%s must be a non-negative integer", name))
		return 0, false
	}
	return n, true
}

// listReports lists reports of one kind as Synapse's event_reports does:
// from (an offset), limit (default 100), dir (b: newest first, the
// default; f), and filters room_id and user_id (the reporter), plus
// event_sender_user_id for event reports and target_user_id for user
// reports. next_token is the from of the next page, if any.
func (rep *reports) listReports(kind storage.ReportKind) func(*gin.Context, *storage.Session) {
	return func(c *gin.Context, _ *storage.Session) {
		q := storage.ReportQuery{Kind: kind, RoomID: id.RoomID(c.Query("room_id")), Reporter: id.UserID(c.Query("user_id"))}
		switch kind {
		case storage.ReportEvent:
			q.UserID = id.UserID(c.Query("event_sender_user_id"))
		case storage.ReportUser:
			q.UserID = id.UserID(c.Query("target_user_id"))
		}
		var ok bool
		if q.Offset, ok = queryInt(c, "from", 0); !ok {
			return
		}
		if q.Limit, ok = queryInt(c, "limit", 100); !ok {
			return
		}
		switch c.DefaultQuery("dir", "b") {
		case "b":
		case "f":
			q.Forwards = true
		default:
			fail(c, mautrix.MInvalidParam.WithMessage("dir must be b or f"))
			return
		}
		ctx := c.Request.Context()
		list, total, err := rep.db.ListReports(ctx, q)
		if err != nil {
			rep.internalError(c, err)
			return
		}
		names := roomNames{}
		items := make([]gin.H, 0, len(list))
		for _, r := range list {
			item, err := rep.reportJSON(ctx, r, names)
			if err != nil {
				rep.internalError(c, err)
				return
			}
			items = append(items, item)
		}
		resp := gin.H{string(kind) + "_reports": items, "total": total}
		if q.Offset+len(list) < total && len(list) > 0 {
			resp["next_token"] = q.Offset + len(list)
		}
		c.JSON(http.StatusOK, resp)
	}
}

func (rep *reports) getEventReport(c *gin.Context, _ *storage.Session) {
	reportID, err := strconv.ParseInt(c.Param("reportID"), 10, 64)
	if err != nil || reportID < 0 {
		fail(c, mautrix.MInvalidParam.WithMessage("The report ID must be a non-negative integer"))
		return
	}
	ctx := c.Request.Context()
	r, err := rep.db.GetReport(ctx, storage.ReportEvent, reportID)
	if errors.Is(err, storage.ErrNotFound) {
		fail(c, mautrix.MNotFound.WithMessage("Event report not found"))
		return
	} else if err != nil {
		rep.internalError(c, err)
		return
	}
	item, err := rep.reportJSON(ctx, r, roomNames{})
	if err != nil {
		rep.internalError(c, err)
		return
	}
	// The event as stored, redacted if it since was.
	if e, err := rep.db.GetEvent(ctx, r.EventID); err == nil {
		item["event_json"] = json.RawMessage(e.PDU)
	} else if !errors.Is(err, storage.ErrNotFound) {
		rep.internalError(c, err)
		return
	}
	c.JSON(http.StatusOK, item)
}

// roomNames caches a room's name and canonical alias over one listing.
type roomNames map[id.RoomID][2]*string

func (rep *reports) roomName(ctx context.Context, roomID id.RoomID, cache roomNames) ([2]*string, error) {
	if v, ok := cache[roomID]; ok {
		return v, nil
	}
	var out [2]*string
	for i, k := range []struct{ evtType, field string }{{event.StateRoomName.Type, "name"}, {event.StateCanonicalAlias.Type, "alias"}} {
		content, err := rep.db.CurrentStateContent(ctx, roomID, k.evtType, "")
		if errors.Is(err, storage.ErrNotFound) {
			continue
		} else if err != nil {
			return out, err
		}
		if v := gjson.GetBytes(content, k.field); v.Type == gjson.String && v.Str != "" {
			out[i] = &v.Str
		}
	}
	cache[roomID] = out
	return out, nil
}

// reportJSON renders a report as Synapse's admin API does.
func (rep *reports) reportJSON(ctx context.Context, r *storage.Report, names roomNames) (gin.H, error) {
	item := gin.H{"id": r.ID, "received_ts": r.ReceivedTS, "user_id": r.Reporter, "reason": r.Reason}
	if r.Kind == storage.ReportEvent || r.Kind == storage.ReportRoom {
		name, err := rep.roomName(ctx, r.RoomID, names)
		if err != nil {
			return nil, err
		}
		item["room_id"], item["name"], item["canonical_alias"] = r.RoomID, name[0], name[1]
	}
	switch r.Kind {
	case storage.ReportEvent:
		item["event_id"], item["sender"], item["score"] = r.EventID, r.UserID, r.Score
	case storage.ReportUser:
		item["target_user_id"] = r.UserID
	}
	return item, nil
}
