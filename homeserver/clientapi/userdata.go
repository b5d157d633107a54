package clientapi

// Per-user data endpoints: account data (global and per room), room tags,
// send-to-device and presence.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/rs/zerolog"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/switchboard-im/switchboard/homeserver/storage"
)

// registerUserData mounts the account data, tag, to-device and presence
// endpoints on a client API prefix group.
func (a *API) registerUserData(g gin.IRouter) {
	g.GET("/user/:userID/account_data/:type", a.authed(a.getAccountData))
	g.PUT("/user/:userID/account_data/:type", a.authed(a.putAccountData))
	g.GET("/user/:userID/rooms/:roomID/account_data/:type", a.authed(a.getAccountData))
	g.PUT("/user/:userID/rooms/:roomID/account_data/:type", a.authed(a.putAccountData))

	g.GET("/user/:userID/rooms/:roomID/tags", a.authed(a.getTags))
	g.PUT("/user/:userID/rooms/:roomID/tags/:tag", a.authed(a.putTag))
	g.DELETE("/user/:userID/rooms/:roomID/tags/:tag", a.authed(a.deleteTag))

	g.PUT("/sendToDevice/:eventType/:txnID", a.authed(a.putSendToDevice))

	g.GET("/presence/:userID/status", a.authed(a.getPresence))
	g.PUT("/presence/:userID/status", a.authed(a.putPresence))
}

// serverManagedAccountData are the types the spec reserves for the server:
// clients may read them but not set them through the account data API.
var serverManagedAccountData = map[string]bool{
	"m.fully_read": true,
	"m.push_rules": true,
}

// maxTagBytes is the spec's limit on a tag name.
const maxTagBytes = 255

// maxRoomIDBytes is the spec's limit on room IDs (and every other ID).
const maxRoomIDBytes = 255

// maxTypeBytes bounds account data and to-device event types as the spec
// bounds event types; maxTxnIDBytes bounds transaction IDs. Both end up in
// primary keys, which PostgreSQL cannot index beyond about 2.7 KB.
const (
	maxTypeBytes  = 255
	maxTxnIDBytes = 255
)

// txnKeyEscaper makes "eventType/txnId" unambiguous when either contains '/'.
var txnKeyEscaper = strings.NewReplacer("%", "%25", "/", "%2F")

// tagEventType is the room account data type that holds a room's tags.
const tagEventType = "m.tag"

// wakeForUserData tells waiting syncs of users about data committed at pos.
func (a *API) wakeForUserData(pos int64, users ...id.UserID) {
	if a.notifier != nil && pos > 0 && len(users) > 0 {
		a.notifier.Wake(pos, users, nil)
	}
}

// ownUserParam checks that the path's userID is the caller: per-user data
// is only ever read and written by its owner.
func ownUserParam(c *gin.Context, sess *storage.Session, what string) bool {
	if id.UserID(c.Param("userID")) != sess.UserID {
		fail(c, mautrix.MForbidden.WithMessage("Cannot access %s of other users", what))
		return false
	}
	return true
}

// roomIDParam returns the path's roomID ("" for routes without one) after
// checking its syntax. Membership is not required: account data and tags
// may be set on any room ID.
func roomIDParam(c *gin.Context) (id.RoomID, bool) {
	raw, present := c.Params.Get("roomID")
	if !present {
		return "", true
	}
	if len(raw) < 2 || raw[0] != '!' || len(raw) > maxRoomIDBytes {
		fail(c, mautrix.MInvalidParam.WithMessage("%q is not a valid room ID", raw))
		return "", false
	}
	return id.RoomID(raw), true
}

// compactJSON encodes a decoded JSON object compactly, without the HTML
// escaping encoding/json applies by default.
func compactJSON(v any) (json.RawMessage, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimRight(buf.Bytes(), "\n"), nil
}

func (a *API) failAccountDataTooLarge(c *gin.Context) {
	fail(c, mautrix.MTooLarge.WithMessage("Account data content is limited to %d bytes", storage.MaxAccountDataBytes))
}

// accountDataPath validates the common path of the account data endpoints.
func (a *API) accountDataPath(c *gin.Context, sess *storage.Session) (id.RoomID, string, bool) {
	if !ownUserParam(c, sess, "account data") {
		return "", "", false
	}
	roomID, ok := roomIDParam(c)
	if !ok {
		return "", "", false
	}
	eventType := c.Param("type")
	if eventType == "" || len(eventType) > maxTypeBytes {
		fail(c, mautrix.MInvalidParam.WithMessage("Account data types must be 1 to %d bytes", maxTypeBytes))
		return "", "", false
	}
	return roomID, eventType, true
}

func (a *API) getAccountData(c *gin.Context, sess *storage.Session) {
	roomID, eventType, ok := a.accountDataPath(c, sess)
	if !ok {
		return
	}
	content, err := a.db.GetAccountData(c.Request.Context(), sess.UserID, roomID, eventType)
	if errors.Is(err, storage.ErrNotFound) {
		if roomID != "" {
			fail(c, mautrix.MNotFound.WithMessage("Room account data not found"))
		} else {
			fail(c, mautrix.MNotFound.WithMessage("Account data not found"))
		}
		return
	} else if err != nil {
		a.internalError(c, err)
		return
	}
	c.Data(http.StatusOK, "application/json", content)
}

func (a *API) putAccountData(c *gin.Context, sess *storage.Session) {
	roomID, eventType, ok := a.accountDataPath(c, sess)
	if !ok {
		return
	}
	if serverManagedAccountData[eventType] {
		fail(c, mautrix.MBadJSON.WithStatus(http.StatusMethodNotAllowed).
			WithMessage("Cannot set %s through this API", eventType))
		return
	}
	raw, ok := a.readJSON(c, nil)
	if !ok {
		return
	}
	content, err := compactJSON(raw)
	if err != nil {
		a.internalError(c, err)
		return
	}
	if len(content) > storage.MaxAccountDataBytes {
		a.failAccountDataTooLarge(c)
		return
	}
	pos, err := a.db.SetAccountData(c.Request.Context(), sess.UserID, roomID, eventType, content)
	if errors.Is(err, storage.ErrAccountDataTooLarge) {
		a.failAccountDataTooLarge(c)
		return
	} else if err != nil {
		a.internalError(c, err)
		return
	}
	a.wakeForUserData(pos, sess.UserID)
	c.JSON(http.StatusOK, gin.H{})
}

// tagPath validates the common path of the tag endpoints.
func (a *API) tagPath(c *gin.Context, sess *storage.Session) (id.RoomID, bool) {
	if !ownUserParam(c, sess, "tags") {
		return "", false
	}
	roomID, ok := roomIDParam(c)
	if !ok {
		return "", false
	}
	if tag, present := c.Params.Get("tag"); present && (tag == "" || len(tag) > maxTagBytes) {
		fail(c, mautrix.MInvalidParam.WithMessage("Tag names must be 1 to %d bytes", maxTagBytes))
		return "", false
	}
	return roomID, true
}

// decodeTags splits an m.tag content into its other keys and its tags. A
// malformed content (which only a raw account data write can produce)
// counts as no tags.
func decodeTags(content json.RawMessage) (map[string]json.RawMessage, map[string]json.RawMessage) {
	var obj map[string]json.RawMessage
	if json.Unmarshal(content, &obj) != nil || obj == nil {
		obj = map[string]json.RawMessage{}
	}
	var tags map[string]json.RawMessage
	if json.Unmarshal(obj["tags"], &tags) != nil || tags == nil {
		tags = map[string]json.RawMessage{}
	}
	// Only objects are valid tag values.
	for name, v := range tags {
		if v = bytes.TrimSpace(v); len(v) == 0 || v[0] != '{' {
			delete(tags, name)
		}
	}
	return obj, tags
}

func (a *API) getTags(c *gin.Context, sess *storage.Session) {
	roomID, ok := a.tagPath(c, sess)
	if !ok {
		return
	}
	content, err := a.db.GetAccountData(c.Request.Context(), sess.UserID, roomID, tagEventType)
	if err != nil && !errors.Is(err, storage.ErrNotFound) {
		a.internalError(c, err)
		return
	}
	_, tags := decodeTags(content)
	c.JSON(http.StatusOK, gin.H{"tags": tags})
}

// updateTags rewrites a room's m.tag with change applied to its tags map;
// change reports whether it changed anything.
func (a *API) updateTags(c *gin.Context, sess *storage.Session, roomID id.RoomID, change func(tags map[string]json.RawMessage) bool) {
	pos, err := a.db.UpdateAccountData(c.Request.Context(), sess.UserID, roomID, tagEventType,
		func(old json.RawMessage) (json.RawMessage, bool, error) {
			obj, tags := decodeTags(old)
			if !change(tags) {
				return nil, false, nil
			}
			encoded, err := compactJSON(tags)
			if err != nil {
				return nil, false, err
			}
			obj["tags"] = encoded
			content, err := compactJSON(obj)
			return content, true, err
		})
	if errors.Is(err, storage.ErrAccountDataTooLarge) {
		a.failAccountDataTooLarge(c)
		return
	} else if err != nil {
		a.internalError(c, err)
		return
	}
	a.wakeForUserData(pos, sess.UserID)
	c.JSON(http.StatusOK, gin.H{})
}

func (a *API) putTag(c *gin.Context, sess *storage.Session) {
	roomID, ok := a.tagPath(c, sess)
	if !ok {
		return
	}
	raw, ok := a.readJSON(c, nil)
	if !ok {
		return
	}
	if order, present := raw["order"]; present {
		// json.Number also takes a quoted number, which is not a number.
		var n json.Number
		if order = bytes.TrimSpace(order); len(order) == 0 || order[0] == '"' || json.Unmarshal(order, &n) != nil || n == "" {
			fail(c, mautrix.MBadJSON.WithMessage("order must be a number"))
			return
		}
		f, err := strconv.ParseFloat(string(n), 64)
		if err != nil || f < 0 || f > 1 {
			fail(c, mautrix.MInvalidParam.WithMessage("order must be a number between 0 and 1"))
			return
		}
	}
	value, err := compactJSON(raw)
	if err != nil {
		a.internalError(c, err)
		return
	}
	tag := c.Param("tag")
	a.updateTags(c, sess, roomID, func(tags map[string]json.RawMessage) bool {
		if bytes.Equal(tags[tag], value) {
			return false
		}
		tags[tag] = value
		return true
	})
}

func (a *API) deleteTag(c *gin.Context, sess *storage.Session) {
	roomID, ok := a.tagPath(c, sess)
	if !ok {
		return
	}
	tag := c.Param("tag")
	a.updateTags(c, sess, roomID, func(tags map[string]json.RawMessage) bool {
		if _, present := tags[tag]; !present {
			return false
		}
		delete(tags, tag)
		return true
	})
}

// emptyResponse is the body of every sendToDevice success.
var emptyResponse = json.RawMessage(`{}`)

func (a *API) putSendToDevice(c *gin.Context, sess *storage.Session) {
	eventType, txnID := c.Param("eventType"), c.Param("txnID")
	if eventType == "" || len(eventType) > maxTypeBytes {
		fail(c, mautrix.MInvalidParam.WithMessage("Event types must be 1 to %d bytes", maxTypeBytes))
		return
	}
	if txnID == "" || len(txnID) > maxTxnIDBytes {
		fail(c, mautrix.MInvalidParam.WithMessage("Transaction IDs must be 1 to %d bytes", maxTxnIDBytes))
		return
	}
	var req struct {
		Messages map[string]map[string]json.RawMessage `json:"messages"`
	}
	raw, ok := a.readJSON(c, &req)
	if !ok {
		return
	}
	if _, present := raw["messages"]; !present {
		fail(c, errMissingParam.WithMessage("Body must contain messages"))
		return
	} else if req.Messages == nil {
		fail(c, mautrix.MBadJSON.WithMessage("messages must be an object"))
		return
	}
	log := zerolog.Ctx(c.Request.Context())
	local := map[id.UserID]map[id.DeviceID]json.RawMessage{}
	for user, byDevice := range req.Messages {
		userID := id.UserID(user)
		_, server, err := userID.Parse()
		if err != nil {
			fail(c, mautrix.MInvalidParam.WithMessage("%q is not a valid user ID", user))
			return
		}
		if byDevice == nil {
			fail(c, mautrix.MBadJSON.WithMessage("messages[%q] must be an object", user))
			return
		}
		contents := make(map[id.DeviceID]json.RawMessage, len(byDevice))
		for device, content := range byDevice {
			content = bytes.TrimSpace(content)
			if len(content) == 0 || content[0] != '{' {
				fail(c, mautrix.MBadJSON.WithMessage("messages[%q][%q] must be an object", user, device))
				return
			}
			var buf bytes.Buffer
			if err := json.Compact(&buf, content); err != nil {
				fail(c, mautrix.MBadJSON.WithMessage("messages[%q][%q] must be an object", user, device))
				return
			}
			contents[id.DeviceID(device)] = buf.Bytes()
		}
		if server != a.cfg.ServerName {
			// Delivery to other servers arrives with federation.
			log.Debug().Stringer("recipient", userID).Str("event_type", eventType).
				Msg("Dropping to-device messages for a remote user")
			continue
		}
		local[userID] = contents
	}
	res, err := a.db.SendToDevice(c.Request.Context(), &storage.ToDeviceRequest{
		Sender:       sess.UserID,
		SenderDevice: sess.DeviceID,
		// Retransmission means the same path: event type and txnId.
		TxnID:    txnKeyEscaper.Replace(eventType) + "/" + txnKeyEscaper.Replace(txnID),
		Type:     eventType,
		Messages: local,
		Response: emptyResponse,
	})
	if err != nil {
		a.internalError(c, err)
		return
	}
	a.wakeForUserData(res.StreamPos, res.Recipients...)
	c.Data(http.StatusOK, "application/json", res.Response)
}

// presenceStates are the presence values a client may set.
var presenceStates = map[event.Presence]bool{
	event.PresenceOnline:      true,
	event.PresenceUnavailable: true,
	event.PresenceOffline:     true,
}

func (a *API) putPresence(c *gin.Context, sess *storage.Session) {
	if id.UserID(c.Param("userID")) != sess.UserID {
		fail(c, mautrix.MForbidden.WithMessage("Cannot set the presence of other users"))
		return
	}
	var req struct {
		Presence  *string `json:"presence"`
		StatusMsg *string `json:"status_msg"`
	}
	if _, ok := a.readJSON(c, &req); !ok {
		return
	}
	if req.Presence == nil {
		fail(c, errMissingParam.WithMessage("Body must contain presence"))
		return
	}
	state := event.Presence(*req.Presence)
	if !presenceStates[state] {
		fail(c, mautrix.MInvalidParam.WithMessage("presence must be online, unavailable or offline"))
		return
	}
	pos, err := a.db.SetPresence(c.Request.Context(), sess.UserID, state, req.StatusMsg)
	if err != nil {
		a.internalError(c, err)
		return
	}
	// An explicit change must be overridden by the next syncing client.
	for _, st := range []event.Presence{event.PresenceOnline, event.PresenceUnavailable} {
		a.presenceSeen.Delete(string(sess.UserID) + "|" + string(st))
	}
	a.wakePresence(c.Request.Context(), pos, sess.UserID)
	c.JSON(http.StatusOK, gin.H{})
}

// wakePresence wakes the user and everyone sharing a joined room with
// them: their syncs carry the presence change.
func (a *API) wakePresence(ctx context.Context, pos int64, userID id.UserID) {
	if a.notifier == nil {
		return
	}
	var joined []id.RoomID
	if memberships, err := a.db.UserRooms(ctx, userID); err == nil {
		for _, m := range memberships {
			if m.Membership == string(event.MembershipJoin) {
				joined = append(joined, m.RoomID)
			}
		}
	}
	a.notifier.Wake(pos, []id.UserID{userID}, joined)
}

func (a *API) getPresence(c *gin.Context, sess *storage.Session) {
	userID := id.UserID(c.Param("userID"))
	_, server, err := userID.Parse()
	if err != nil {
		fail(c, mautrix.MInvalidParam.WithMessage("Invalid user ID"))
		return
	}
	notFound := func() { fail(c, mautrix.MNotFound.WithMessage("No presence state for this user")) }
	if server != a.cfg.ServerName {
		// Remote presence arrives with federation.
		notFound()
		return
	}
	ctx := c.Request.Context()
	p, err := a.db.GetPresence(ctx, userID)
	if errors.Is(err, storage.ErrNotFound) {
		// A local user who never set presence is offline.
		if _, err := a.db.GetUser(ctx, userID); errors.Is(err, storage.ErrNotFound) {
			notFound()
			return
		} else if err != nil {
			a.internalError(c, err)
			return
		}
		c.JSON(http.StatusOK, storage.PresenceContent{Presence: event.PresenceOffline})
		return
	} else if err != nil {
		a.internalError(c, err)
		return
	}
	c.JSON(http.StatusOK, p.Content(time.Now().UnixMilli()))
}
