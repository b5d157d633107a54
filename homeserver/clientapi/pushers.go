package clientapi

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/gin-gonic/gin"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"github.com/switchboard-im/switchboard/homeserver/push"
	"github.com/switchboard-im/switchboard/homeserver/rooms"
	"github.com/switchboard-im/switchboard/homeserver/storage"
)

// registerPushers mounts the pusher endpoints (spec: "Push Notifications",
// "Client behaviour") and GET /notifications ("Listing Notifications").
// Delivery is package push's worker.
func (a *API) registerPushers(g gin.IRouter) {
	g.GET("/pushers", a.authed(a.getPushers))
	g.POST("/pushers/set", a.authed(a.postPushersSet))
	g.GET("/notifications", a.authed(a.getNotifications))
}

// Limits of the spec's pusher fields; the others are bounded like IDs.
const (
	maxPushKeyBytes  = 512
	maxAppIDChars    = 64
	maxPusherField   = 255
	maxPusherDataLen = 4096
)

func (a *API) getPushers(c *gin.Context, sess *storage.Session) {
	pushers, err := a.db.Pushers(c.Request.Context(), sess.UserID)
	if err != nil {
		a.internalError(c, err)
		return
	}
	if pushers == nil {
		pushers = []*storage.Pusher{}
	}
	c.JSON(http.StatusOK, gin.H{"pushers": pushers})
}

func (a *API) postPushersSet(c *gin.Context, sess *storage.Session) {
	var req struct {
		PushKey           *string `json:"pushkey"`
		AppID             *string `json:"app_id"`
		AppDisplayName    *string `json:"app_display_name"`
		DeviceDisplayName *string `json:"device_display_name"`
		ProfileTag        *string `json:"profile_tag"`
		Lang              *string `json:"lang"`
		Append            bool    `json:"append"`
	}
	raw, ok := a.readJSON(c, &req)
	if !ok {
		return
	}
	var missing []string
	for _, f := range []struct {
		name    string
		present bool
	}{{"kind", raw["kind"] != nil}, {"app_id", req.AppID != nil}, {"pushkey", req.PushKey != nil}} {
		if !f.present {
			missing = append(missing, f.name)
		}
	}
	if len(missing) > 0 {
		fail(c, errMissingParam.WithMessage("Missing parameters: %s", strings.Join(missing, ", ")))
		return
	}
	switch {
	case *req.PushKey == "" || len(*req.PushKey) > maxPushKeyBytes:
		fail(c, mautrix.MInvalidParam.WithMessage("pushkey must be 1 to %d bytes", maxPushKeyBytes))
		return
	case *req.AppID == "" || utf8.RuneCountInString(*req.AppID) > maxAppIDChars:
		fail(c, mautrix.MInvalidParam.WithMessage("app_id must be 1 to %d characters", maxAppIDChars))
		return
	}
	ctx := c.Request.Context()
	if bytes.Equal(bytes.TrimSpace(raw["kind"]), []byte("null")) {
		// kind null deletes; deleting what is not there is no error.
		if _, err := a.db.DeletePusher(ctx, sess.UserID, *req.AppID, *req.PushKey); err != nil {
			a.internalError(c, err)
			return
		}
		c.JSON(http.StatusOK, gin.H{})
		return
	}
	var kind string
	if json.Unmarshal(raw["kind"], &kind) != nil {
		fail(c, mautrix.MBadJSON.WithMessage("kind must be a string or null"))
		return
	}
	if kind != "http" {
		fail(c, mautrix.MInvalidParam.WithMessage("Unsupported pusher kind %q: this server has http pushers only", kind))
		return
	}
	for _, f := range []struct {
		name  string
		value *string
	}{{"app_display_name", req.AppDisplayName}, {"device_display_name", req.DeviceDisplayName}, {"lang", req.Lang}} {
		if f.value == nil {
			missing = append(missing, f.name)
		} else if len(*f.value) > maxPusherField {
			fail(c, mautrix.MInvalidParam.WithMessage("%s is limited to %d bytes", f.name, maxPusherField))
			return
		}
	}
	if raw["data"] == nil {
		missing = append(missing, "data")
	}
	if len(missing) > 0 {
		fail(c, errMissingParam.WithMessage("Missing parameters: %s", strings.Join(missing, ", ")))
		return
	}
	if req.ProfileTag != nil && len(*req.ProfileTag) > maxPusherField {
		fail(c, mautrix.MInvalidParam.WithMessage("profile_tag is limited to %d bytes", maxPusherField))
		return
	}
	data, ok := a.pusherData(c, raw["data"])
	if !ok {
		return
	}
	p := &storage.Pusher{
		UserID: sess.UserID, AppID: *req.AppID, PushKey: *req.PushKey, Kind: kind,
		AppDisplayName: *req.AppDisplayName, DeviceDisplayName: *req.DeviceDisplayName, Lang: *req.Lang,
		Data: data, DeviceID: sess.DeviceID, PushKeyTS: time.Now().Unix(),
	}
	if req.ProfileTag != nil {
		p.ProfileTag = *req.ProfileTag
	}
	if err := a.db.SetPusher(ctx, p, req.Append); err != nil {
		a.internalError(c, err)
		return
	}
	c.JSON(http.StatusOK, gin.H{})
}

// pusherData checks an http pusher's data: an object whose url is an HTTP
// or HTTPS URL with the path /_matrix/push/v1/notify, and whose format, if
// given, is event_id_only. (The spec asks clients for HTTPS; plain HTTP is
// accepted for gateways on the same host or network, as Synapse does.)
// A host that is a non-public IP address not in push.allowed_networks is
// refused here; a host name is checked when notifications are sent.
func (a *API) pusherData(c *gin.Context, raw json.RawMessage) (json.RawMessage, bool) {
	var data map[string]json.RawMessage
	if json.Unmarshal(raw, &data) != nil || data == nil {
		fail(c, mautrix.MBadJSON.WithMessage("data must be an object"))
		return nil, false
	}
	if len(raw) > maxPusherDataLen {
		fail(c, mautrix.MTooLarge.WithMessage("data is limited to %d bytes", maxPusherDataLen))
		return nil, false
	}
	var rawURL string
	if data["url"] == nil {
		fail(c, errMissingParam.WithMessage("data.url is required for http pushers"))
		return nil, false
	} else if json.Unmarshal(data["url"], &rawURL) != nil {
		fail(c, mautrix.MBadJSON.WithMessage("data.url must be a string"))
		return nil, false
	}
	u, err := url.Parse(rawURL)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.Path != push.NotifyPath || u.User != nil {
		fail(c, mautrix.MInvalidParam.WithMessage("data.url must be an HTTPS URL with the path %s", push.NotifyPath))
		return nil, false
	}
	guard, err := push.Guard(a.cfg.Push.AllowedNetworks)
	if err != nil {
		a.internalError(c, err)
		return nil, false
	}
	if err := guard.CheckHost(u.Hostname()); err != nil {
		fail(c, mautrix.MInvalidParam.WithMessage("data.url cannot be used: %v", err))
		return nil, false
	}
	if f, present := data["format"]; present {
		var format string
		if json.Unmarshal(f, &format) != nil || format != string(mautrix.PushFormatEventIDOnly) {
			fail(c, mautrix.MInvalidParam.WithMessage("data.format must be %q when given", mautrix.PushFormatEventIDOnly))
			return nil, false
		}
	}
	out, err := compactJSON(data)
	if err != nil {
		fail(c, mautrix.MBadJSON.WithMessage("data must be an object"))
		return nil, false
	}
	return out, true
}

// Limits of GET /notifications.
const (
	defaultNotificationsLimit = 20
	maxNotificationsLimit     = 100
)

// notification is one entry of GET /notifications.
type notification struct {
	Actions json.RawMessage    `json:"actions"`
	Event   *rooms.ClientEvent `json:"event"`
	Read    bool               `json:"read"`
	RoomID  id.RoomID          `json:"room_id"`
	TS      int64              `json:"ts"`
}

// getNotifications pages through the notifications the push worker
// stored, newest first; from is the stream position to continue below.
// read is decided now, from the user's receipts (the furthest of m.read and
// m.read.private, unthreaded or in the notification's thread).
func (a *API) getNotifications(c *gin.Context, sess *storage.Session) {
	var before int64
	if from := c.Query("from"); from != "" {
		n, err := strconv.ParseInt(from, 10, 64)
		if err != nil || n <= 0 {
			fail(c, mautrix.MInvalidParam.WithMessage("Invalid from token"))
			return
		}
		before = n
	}
	limit := defaultNotificationsLimit
	if raw := c.Query("limit"); raw != "" {
		n, err := strconv.Atoi(raw)
		if err != nil || n < 0 {
			fail(c, mautrix.MInvalidParam.WithMessage("limit must be a non-negative integer"))
			return
		}
		limit = min(n, maxNotificationsLimit)
	}
	onlyHighlight := slices.Contains(strings.Split(c.Query("only"), ","), "highlight")
	ctx := c.Request.Context()
	out := gin.H{"notifications": []notification{}}
	if limit == 0 {
		c.JSON(http.StatusOK, out)
		return
	}
	notes, err := a.db.Notifications(ctx, sess.UserID, before, limit+1, onlyHighlight)
	if err != nil {
		a.internalError(c, err)
		return
	}
	more := len(notes) > limit
	notes = notes[:min(len(notes), limit)]
	ids := make([]id.EventID, len(notes))
	for i, n := range notes {
		ids[i] = n.EventID
	}
	events, err := a.db.GetEvents(ctx, ids)
	if err != nil {
		a.internalError(c, err)
		return
	}
	byID := make(map[id.EventID]*storage.Event, len(events))
	for _, e := range events {
		byID[e.EventID] = e
	}
	var shown []storage.Notification
	var shownEvents []*storage.Event
	for _, n := range notes {
		if e := byID[n.EventID]; e != nil {
			shown, shownEvents = append(shown, n), append(shownEvents, e)
		}
	}
	rendered := a.rooms.Render(ctx, shownEvents, rooms.Viewer{UserID: sess.UserID, DeviceID: sess.DeviceID}, false)
	read := map[id.RoomID]map[string]int64{}
	list := make([]notification, 0, len(shown))
	for i, n := range shown {
		r, ok := read[n.RoomID]
		if !ok {
			if r, err = a.db.ReadUpTo(ctx, n.RoomID, sess.UserID); err != nil {
				a.internalError(c, err)
				return
			}
			read[n.RoomID] = r
		}
		list = append(list, notification{
			Actions: n.Actions, Event: rendered[i], RoomID: n.RoomID, TS: n.TS,
			Read: n.StreamPos <= max(r[""], r[n.ThreadID]),
		})
	}
	out["notifications"] = list
	if more && len(notes) > 0 {
		out["next_token"] = strconv.FormatInt(notes[len(notes)-1].StreamPos, 10)
	}
	c.JSON(http.StatusOK, out)
}
