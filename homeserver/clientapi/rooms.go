package clientapi

import (
	"encoding/json"
	"errors"
	"net/http"
	"strings"

	"github.com/gin-gonic/gin"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/switchboard-im/switchboard/homeserver/rooms"
	"github.com/switchboard-im/switchboard/homeserver/storage"
)

func (a *API) registerRooms(g gin.IRouter) {
	g.POST("/createRoom", a.authed(a.postCreateRoom))
	g.POST("/join/:roomIDOrAlias", a.authed(a.postJoin))
	g.POST("/rooms/:roomID/join", a.authed(a.postJoin))
	g.POST("/knock/:roomIDOrAlias", a.authed(a.postKnock))
	g.POST("/rooms/:roomID/invite", a.authed(a.postInvite))
	g.POST("/rooms/:roomID/leave", a.authed(a.postMembership(event.MembershipLeave, true)))
	g.POST("/rooms/:roomID/kick", a.authed(a.postMembership(event.MembershipLeave, false)))
	g.POST("/rooms/:roomID/ban", a.authed(a.postMembership(event.MembershipBan, false)))
	g.POST("/rooms/:roomID/unban", a.authed(a.postUnban))
	g.POST("/rooms/:roomID/forget", a.authed(a.postForget))
	g.PUT("/rooms/:roomID/send/:eventType/:txnID", a.authed(a.putSend))
	g.PUT("/rooms/:roomID/redact/:eventID/:txnID", a.authed(a.putRedact))
	// The state key may be empty, with or without a trailing slash.
	g.PUT("/rooms/:roomID/state/:eventType", a.authed(a.putState))
	g.PUT("/rooms/:roomID/state/:eventType/*stateKey", a.authed(a.putState))
	g.GET("/rooms/:roomID/state", a.authed(a.getRoomState))
	g.GET("/rooms/:roomID/state/:eventType", a.authed(a.getStateEvent))
	g.GET("/rooms/:roomID/state/:eventType/*stateKey", a.authed(a.getStateEvent))
	g.GET("/rooms/:roomID/event/:eventID", a.authed(a.getEvent))
	g.GET("/rooms/:roomID/messages", a.authed(a.getMessages))
	g.GET("/rooms/:roomID/members", a.authed(a.getMembers))
	g.GET("/rooms/:roomID/joined_members", a.authed(a.getJoinedMembers))
	g.GET("/joined_rooms", a.authed(a.getJoinedRooms))
	g.GET("/directory/room/:alias", a.getAlias)
	g.PUT("/directory/room/:alias", a.authed(a.putAlias))
	g.DELETE("/directory/room/:alias", a.authed(a.deleteAlias))
	g.GET("/rooms/:roomID/aliases", a.authed(a.getRoomAliases))
}

// roomError maps a rooms error onto the spec's error codes.
func (a *API) roomError(c *gin.Context, err error) {
	var fe *rooms.ForbiddenError
	switch {
	case errors.As(err, &fe):
		fail(c, mautrix.MForbidden.WithMessage("%s", fe.Reason))
	case errors.Is(err, rooms.ErrRoomNotFound):
		fail(c, mautrix.MNotFound.WithMessage("Room not found"))
	case errors.Is(err, rooms.ErrEventNotFound):
		fail(c, mautrix.MNotFound.WithMessage("Event not found"))
	case errors.Is(err, rooms.ErrTooLarge):
		fail(c, mautrix.MTooLarge.WithMessage("%s", err.Error()))
	case errors.Is(err, rooms.ErrBadContent):
		fail(c, mautrix.MBadJSON.WithMessage("%s", err.Error()))
	case errors.Is(err, rooms.ErrUnsupportedVersion):
		fail(c, mautrix.MUnsupportedRoomVersion.WithMessage("%s", err.Error()).WithStatus(http.StatusBadRequest))
	case errors.Is(err, rooms.ErrDuplicateAnnotation):
		fail(c, errDuplicateAnnotation.WithMessage("%s", err.Error()))
	case errors.Is(err, rooms.ErrThreadOnRelation):
		fail(c, mautrix.MUnknown.WithMessage("%s", err.Error()).WithStatus(http.StatusBadRequest))
	case errors.Is(err, rooms.ErrNotBanned):
		fail(c, mautrix.MBadState.WithMessage("User is not banned").WithStatus(http.StatusBadRequest))
	default:
		a.internalError(c, err)
	}
}

// roomIDFromPath validates the :roomID path parameter.
func roomIDFromPath(c *gin.Context) (id.RoomID, bool) {
	roomID := id.RoomID(c.Param("roomID"))
	if !strings.HasPrefix(string(roomID), "!") || len(roomID) > 255 {
		fail(c, mautrix.MInvalidParam.WithMessage("Invalid room ID"))
		return "", false
	}
	return roomID, true
}

// profileFor returns the displayname and avatar_url to put in a member event.
func (a *API) profileFor(c *gin.Context, userID id.UserID) *event.MemberEventContent {
	profile, err := a.db.GetProfile(c.Request.Context(), userID)
	if err != nil {
		return nil
	}
	var content event.MemberEventContent
	_ = json.Unmarshal(profile["displayname"], &content.Displayname)
	var avatar string
	_ = json.Unmarshal(profile["avatar_url"], &avatar)
	content.AvatarURL = id.ContentURIString(avatar)
	return &content
}

type createRoomRequest struct {
	Visibility                string               `json:"visibility"`
	RoomAliasName             string               `json:"room_alias_name"`
	Name                      string               `json:"name"`
	Topic                     string               `json:"topic"`
	Invite                    []id.UserID          `json:"invite"`
	CreationContent           json.RawMessage      `json:"creation_content"`
	InitialState              []rooms.InitialState `json:"initial_state"`
	Preset                    string               `json:"preset"`
	IsDirect                  bool                 `json:"is_direct"`
	PowerLevelContentOverride json.RawMessage      `json:"power_level_content_override"`
	RoomVersion               id.RoomVersion       `json:"room_version"`
	Invite3PID                []map[string]any     `json:"invite_3pid"`
}

func (a *API) postCreateRoom(c *gin.Context, sess *storage.Session) {
	var req createRoomRequest
	if _, ok := a.readJSON(c, &req); !ok {
		return
	}
	ctx := c.Request.Context()
	switch req.Visibility {
	case "", "private", "public":
	default:
		fail(c, mautrix.MInvalidParam.WithMessage("visibility must be public or private"))
		return
	}
	switch req.Preset {
	case "", rooms.PresetPrivateChat, rooms.PresetPublicChat, rooms.PresetTrustedPrivateChat:
	default:
		fail(c, mautrix.MInvalidParam.WithMessage("Unknown preset %q", req.Preset))
		return
	}
	if len(req.Invite3PID) > 0 {
		fail(c, mautrix.MInvalidParam.WithMessage("Third-party invites are not supported"))
		return
	}
	var alias id.RoomAlias
	if req.RoomAliasName != "" {
		// The spec allows any code point but ':' and NUL in an alias's
		// localpart ('#' too: bridges use #irc_#channel); whitespace is
		// refused as by Synapse and by PUT /directory/room.
		alias = id.NewRoomAlias(req.RoomAliasName, a.cfg.ServerName)
		if strings.ContainsAny(req.RoomAliasName, ":\x00 \t\n") || len(alias) > 255 {
			fail(c, mautrix.MInvalidParam.WithMessage("room_alias_name must be a localpart without ':' or whitespace, and the alias at most 255 bytes"))
			return
		}
		if _, _, err := a.db.ResolveAlias(ctx, alias); err == nil {
			fail(c, mautrix.MRoomInUse.WithMessage("Room alias %s is already in use", alias))
			return
		}
	}
	profiles := map[id.UserID]*event.MemberEventContent{}
	for _, u := range req.Invite {
		if _, _, err := u.Parse(); err != nil {
			fail(c, mautrix.MInvalidParam.WithMessage("Invalid user ID %q in invite", u))
			return
		}
		profiles[u] = a.profileFor(c, u)
	}
	roomID, err := a.rooms.CreateRoom(ctx, rooms.CreateRequest{
		Creator: sess.UserID, Visibility: req.Visibility, Preset: req.Preset, Name: req.Name, Topic: req.Topic,
		Alias: alias, Invite: req.Invite, InitialState: req.InitialState,
		PowerLevelContentOverride: req.PowerLevelContentOverride, CreationContent: req.CreationContent,
		IsDirect: req.IsDirect, RoomVersion: req.RoomVersion, CreatorProfile: a.profileFor(c, sess.UserID),
		InviteeProfiles: profiles,
	})
	if err != nil {
		a.roomError(c, err)
		return
	}
	if alias != "" {
		if err := a.db.CreateAlias(ctx, alias, roomID, sess.UserID); errors.Is(err, storage.ErrAliasExists) {
			// Lost a race for the alias after the room was made: the room
			// stands, the canonical alias event points nowhere.
			fail(c, mautrix.MRoomInUse.WithMessage("Room alias %s is already in use", alias))
			return
		} else if err != nil {
			a.internalError(c, err)
			return
		}
	}
	c.JSON(http.StatusOK, gin.H{"room_id": roomID})
}

// resolveRoom turns a room ID or alias path parameter into a room ID.
func (a *API) resolveRoom(c *gin.Context, raw string) (id.RoomID, bool) {
	switch {
	case strings.HasPrefix(raw, "!"):
		return id.RoomID(raw), true
	case strings.HasPrefix(raw, "#"):
		roomID, err := a.ensureAlias(c.Request.Context(), id.RoomAlias(raw))
		if errors.Is(err, storage.ErrNotFound) {
			fail(c, mautrix.MNotFound.WithMessage("Room alias %s not found", raw))
			return "", false
		} else if err != nil {
			a.internalError(c, err)
			return "", false
		}
		return roomID, true
	}
	fail(c, mautrix.MInvalidParam.WithMessage("Expected a room ID or alias"))
	return "", false
}

type membershipBody struct {
	UserID id.UserID `json:"user_id"`
	Reason string    `json:"reason"`
}

func (a *API) readMembershipBody(c *gin.Context, needUser bool) (*membershipBody, bool) {
	var body membershipBody
	if _, ok := a.readOptionalJSON(c, &body); !ok {
		return nil, false
	}
	if needUser {
		if body.UserID == "" {
			fail(c, errMissingParam.WithMessage("user_id is required"))
			return nil, false
		}
		if _, _, err := body.UserID.Parse(); err != nil {
			fail(c, mautrix.MInvalidParam.WithMessage("Invalid user_id"))
			return nil, false
		}
	}
	return &body, true
}

func (a *API) postJoin(c *gin.Context, sess *storage.Session) {
	a.selfMembership(c, sess, event.MembershipJoin)
}

func (a *API) postKnock(c *gin.Context, sess *storage.Session) {
	a.selfMembership(c, sess, event.MembershipKnock)
}

// selfMembership joins or knocks on the room named by ID or alias, with
// the user's profile in the member event.
func (a *API) selfMembership(c *gin.Context, sess *storage.Session, membership event.Membership) {
	raw := c.Param("roomIDOrAlias")
	if raw == "" {
		raw = c.Param("roomID")
	}
	roomID, ok := a.resolveRoom(c, raw)
	if !ok {
		return
	}
	body, ok := a.readMembershipBody(c, false)
	if !ok {
		return
	}
	ctx := c.Request.Context()
	_, err := a.rooms.SetMembership(ctx, roomID, rooms.MembershipRequest{
		Sender: sess.UserID, Target: sess.UserID, Membership: membership, Reason: body.Reason,
		Profile: a.profileFor(c, sess.UserID), DeviceID: sess.DeviceID,
	})
	if err != nil {
		a.roomError(c, err)
		return
	}
	if membership == event.MembershipJoin {
		_ = a.db.UnforgetRoom(ctx, sess.UserID, roomID)
	}
	c.JSON(http.StatusOK, gin.H{"room_id": roomID})
}

func (a *API) postInvite(c *gin.Context, sess *storage.Session) {
	roomID, ok := roomIDFromPath(c)
	if !ok {
		return
	}
	body, ok := a.readMembershipBody(c, true)
	if !ok {
		return
	}
	if body.UserID.Homeserver() == a.cfg.ServerName {
		if exists, err := a.ensureUser(c.Request.Context(), body.UserID); err != nil {
			a.internalError(c, err)
			return
		} else if !exists {
			fail(c, mautrix.MNotFound.WithMessage("User %s does not exist", body.UserID))
			return
		}
	}
	_, err := a.rooms.SetMembership(c.Request.Context(), roomID, rooms.MembershipRequest{
		Sender: sess.UserID, Target: body.UserID, Membership: event.MembershipInvite, Reason: body.Reason,
		Profile: a.profileFor(c, body.UserID), DeviceID: sess.DeviceID,
	})
	if err != nil {
		a.roomError(c, err)
		return
	}
	c.JSON(http.StatusOK, gin.H{})
}

// postMembership leaves (self) or kicks (leave) and bans another user
// (body.user_id).
func (a *API) postMembership(membership event.Membership, self bool) func(*gin.Context, *storage.Session) {
	return func(c *gin.Context, sess *storage.Session) {
		roomID, ok := roomIDFromPath(c)
		if !ok {
			return
		}
		body, ok := a.readMembershipBody(c, !self)
		if !ok {
			return
		}
		target := body.UserID
		if self {
			target = sess.UserID
		}
		_, err := a.rooms.SetMembership(c.Request.Context(), roomID, rooms.MembershipRequest{
			Sender: sess.UserID, Target: target, Membership: membership, Reason: body.Reason, DeviceID: sess.DeviceID,
		})
		if err != nil {
			a.roomError(c, err)
			return
		}
		c.JSON(http.StatusOK, gin.H{})
	}
}

func (a *API) postUnban(c *gin.Context, sess *storage.Session) {
	roomID, ok := roomIDFromPath(c)
	if !ok {
		return
	}
	body, ok := a.readMembershipBody(c, true)
	if !ok {
		return
	}
	if _, err := a.rooms.Unban(c.Request.Context(), roomID, sess.UserID, body.UserID, body.Reason); err != nil {
		a.roomError(c, err)
		return
	}
	c.JSON(http.StatusOK, gin.H{})
}

func (a *API) postForget(c *gin.Context, sess *storage.Session) {
	roomID, ok := roomIDFromPath(c)
	if !ok {
		return
	}
	m, err := a.rooms.Membership(c.Request.Context(), roomID, sess.UserID)
	if err != nil {
		a.roomError(c, err)
		return
	}
	if m == event.MembershipJoin || m == event.MembershipInvite || m == event.MembershipKnock {
		fail(c, mautrix.MUnknown.WithMessage("Leave the room before forgetting it").WithStatus(http.StatusBadRequest))
		return
	}
	if err := a.db.ForgetRoom(c.Request.Context(), sess.UserID, roomID); err != nil {
		a.internalError(c, err)
		return
	}
	c.JSON(http.StatusOK, gin.H{})
}

func (a *API) putSend(c *gin.Context, sess *storage.Session) {
	roomID, ok := roomIDFromPath(c)
	if !ok {
		return
	}
	evtType := c.Param("eventType")
	if evtType == "" || len(evtType) > 255 {
		fail(c, mautrix.MInvalidParam.WithMessage("Invalid event type"))
		return
	}
	raw, ok := a.readJSON(c, nil)
	if !ok {
		return
	}
	content, _ := json.Marshal(raw)
	req := rooms.EventRequest{Type: evtType, Sender: sess.UserID, Content: json.RawMessage(content),
		DeviceID: sess.DeviceID, TxnID: c.Param("txnID"), TxnScope: "send/" + string(roomID) + "/" + evtType,
		TS: massagedTS(c, sess)}
	if evtType == event.EventRedaction.Type {
		var r struct {
			Redacts id.EventID `json:"redacts"`
		}
		_ = json.Unmarshal(content, &r)
		req.Redacts = r.Redacts
	}
	a.sendAndAnswer(c, roomID, req)
}

// sendAndAnswer sends one event and answers with its ID.
func (a *API) sendAndAnswer(c *gin.Context, roomID id.RoomID, req rooms.EventRequest) {
	e, err := a.rooms.Send(c.Request.Context(), roomID, req)
	if err != nil {
		a.roomError(c, err)
		return
	}
	c.JSON(http.StatusOK, gin.H{"event_id": e.EventID})
}

func (a *API) putRedact(c *gin.Context, sess *storage.Session) {
	roomID, ok := roomIDFromPath(c)
	if !ok {
		return
	}
	raw, ok := a.readOptionalJSON(c, nil)
	if !ok {
		return
	}
	target := id.EventID(c.Param("eventID"))
	version, err := a.rooms.Version(c.Request.Context(), roomID)
	if err != nil {
		a.roomError(c, err)
		return
	}
	if version.RedactsInContent() {
		raw["redacts"], _ = json.Marshal(target)
	}
	content, _ := json.Marshal(raw)
	a.sendAndAnswer(c, roomID, rooms.EventRequest{Type: event.EventRedaction.Type, Sender: sess.UserID,
		Content: json.RawMessage(content), Redacts: target, DeviceID: sess.DeviceID, TS: massagedTS(c, sess),
		TxnID: c.Param("txnID"), TxnScope: "redact/" + string(roomID) + "/" + string(target)})
}

func (a *API) putState(c *gin.Context, sess *storage.Session) {
	roomID, ok := roomIDFromPath(c)
	if !ok {
		return
	}
	raw, ok := a.readJSON(c, nil)
	if !ok {
		return
	}
	evtType, stateKey := c.Param("eventType"), stateKeyParam(c)
	if evtType == event.StateMember.Type {
		// Membership goes through the membership endpoints' checks, but a
		// client may set its own member event (e.g. a per-room name).
		var m struct {
			Membership event.Membership `json:"membership"`
		}
		content, _ := json.Marshal(raw)
		_ = json.Unmarshal(content, &m)
		if m.Membership == "" {
			fail(c, mautrix.MBadJSON.WithMessage("membership is required"))
			return
		}
	}
	content, _ := json.Marshal(raw)
	a.sendAndAnswer(c, roomID, rooms.EventRequest{Type: evtType, StateKey: &stateKey,
		Sender: sess.UserID, Content: json.RawMessage(content), DeviceID: sess.DeviceID, TS: massagedTS(c, sess)})
}

// readableState returns the state the user may read: the current state for
// members (and world-readable rooms), the state when they left otherwise.
func (a *API) readableState(c *gin.Context, sess *storage.Session, roomID id.RoomID) ([]*storage.Event, bool) {
	ctx := c.Request.Context()
	h, err := a.rooms.HistoryFor(ctx, roomID, sess.UserID)
	if err != nil {
		a.roomError(c, err)
		return nil, false
	}
	events, err := a.rooms.CurrentStateEvents(ctx, roomID)
	if err != nil {
		a.roomError(c, err)
		return nil, false
	}
	current, err := a.db.CurrentStreamPos(ctx)
	if err != nil {
		a.internalError(c, err)
		return nil, false
	}
	if h.MembershipAt(current) == event.MembershipJoin || h.CanSee(current+1) {
		return events, true
	}
	// Former members see the state as it was when they left.
	left := h.LastLeave()
	if left == 0 {
		fail(c, mautrix.MForbidden.WithMessage("You are not a member of this room"))
		return nil, false
	}
	leaveEvents, err := a.db.RoomEvents(ctx, roomID, left-1, left, 1, false)
	if err != nil || len(leaveEvents) == 0 {
		a.roomError(c, rooms.ErrRoomNotFound)
		return nil, false
	}
	state, err := a.rooms.StateAt(ctx, leaveEvents[0], true)
	if err != nil {
		a.internalError(c, err)
		return nil, false
	}
	events, err = a.rooms.StateEvents(ctx, state)
	if err != nil {
		a.internalError(c, err)
		return nil, false
	}
	return events, true
}

func (a *API) getRoomState(c *gin.Context, sess *storage.Session) {
	roomID, ok := roomIDFromPath(c)
	if !ok {
		return
	}
	events, ok := a.readableState(c, sess, roomID)
	if !ok {
		return
	}
	c.JSON(http.StatusOK, a.rooms.Render(c.Request.Context(), events, rooms.Viewer{UserID: sess.UserID, DeviceID: sess.DeviceID}, true))
}

func (a *API) getStateEvent(c *gin.Context, sess *storage.Session) {
	roomID, ok := roomIDFromPath(c)
	if !ok {
		return
	}
	events, ok := a.readableState(c, sess, roomID)
	if !ok {
		return
	}
	evtType, stateKey := c.Param("eventType"), stateKeyParam(c)
	for _, e := range events {
		if e.Type == evtType && e.StateKey != nil && *e.StateKey == stateKey {
			rendered := a.rooms.Render(c.Request.Context(), []*storage.Event{e}, rooms.Viewer{UserID: sess.UserID}, true)[0]
			if c.Query("format") == "event" {
				c.JSON(http.StatusOK, rendered)
			} else {
				c.JSON(http.StatusOK, rendered.Content)
			}
			return
		}
	}
	fail(c, mautrix.MNotFound.WithMessage("No %s state with key %q", evtType, stateKey))
}

func (a *API) getEvent(c *gin.Context, sess *storage.Session) {
	roomID, ok := roomIDFromPath(c)
	if !ok {
		return
	}
	e, err := a.rooms.GetEvent(c.Request.Context(), roomID, id.EventID(c.Param("eventID")), sess.UserID)
	if err != nil {
		a.roomError(c, err)
		return
	}
	c.JSON(http.StatusOK, a.rooms.Render(c.Request.Context(), []*storage.Event{e}, rooms.Viewer{UserID: sess.UserID, DeviceID: sess.DeviceID}, true)[0])
}

func (a *API) getJoinedRooms(c *gin.Context, sess *storage.Session) {
	memberships, err := a.db.UserRooms(c.Request.Context(), sess.UserID)
	if err != nil {
		a.internalError(c, err)
		return
	}
	joined := []id.RoomID{}
	for _, m := range memberships {
		if m.Membership == string(event.MembershipJoin) {
			joined = append(joined, m.RoomID)
		}
	}
	c.JSON(http.StatusOK, gin.H{"joined_rooms": joined})
}

func (a *API) getMembers(c *gin.Context, sess *storage.Session) {
	roomID, ok := roomIDFromPath(c)
	if !ok {
		return
	}
	events, ok := a.readableState(c, sess, roomID)
	if !ok {
		return
	}
	if at := c.Query("at"); at != "" {
		if events, ok = a.stateAtToken(c, roomID, at); !ok {
			return
		}
	}
	want, notWant := c.Query("membership"), c.Query("not_membership")
	var members []*storage.Event
	for _, e := range events {
		if e.Type != event.StateMember.Type {
			continue
		}
		m := string(memberOf(e))
		if (want != "" && m != want) || (notWant != "" && m == notWant) {
			continue
		}
		members = append(members, e)
	}
	c.JSON(http.StatusOK, gin.H{"chunk": a.rooms.Render(c.Request.Context(), members, rooms.Viewer{UserID: sess.UserID}, true)})
}

func (a *API) getJoinedMembers(c *gin.Context, sess *storage.Session) {
	roomID, ok := roomIDFromPath(c)
	if !ok {
		return
	}
	m, err := a.rooms.Membership(c.Request.Context(), roomID, sess.UserID)
	if err != nil {
		a.roomError(c, err)
		return
	}
	if m != event.MembershipJoin {
		fail(c, mautrix.MForbidden.WithMessage("You are not a member of this room"))
		return
	}
	events, err := a.rooms.CurrentStateEvents(c.Request.Context(), roomID)
	if err != nil {
		a.roomError(c, err)
		return
	}
	joined := map[id.UserID]gin.H{}
	for _, e := range events {
		if e.Type != event.StateMember.Type || memberOf(e) != event.MembershipJoin {
			continue
		}
		var content event.MemberEventContent
		rendered := a.rooms.Render(c.Request.Context(), []*storage.Event{e}, rooms.Viewer{}, false)[0]
		_ = json.Unmarshal(rendered.Content, &content)
		entry := gin.H{}
		if content.Displayname != "" {
			entry["display_name"] = content.Displayname
		}
		if content.AvatarURL != "" {
			entry["avatar_url"] = content.AvatarURL
		}
		joined[id.UserID(*e.StateKey)] = entry
	}
	c.JSON(http.StatusOK, gin.H{"joined": joined})
}

// stateAtToken returns the room state at a sync or pagination token (the
// state after the room's last event at that point), for /members?at=.
func (a *API) stateAtToken(c *gin.Context, roomID id.RoomID, raw string) ([]*storage.Event, bool) {
	ctx := c.Request.Context()
	tok, ok := a.parsePaginationToken(c, roomID, raw)
	if !ok {
		return nil, false
	}
	events, err := a.db.RoomEventsTopological(ctx, roomID, tok.depth, tok.pos, 1, true)
	if err != nil {
		a.internalError(c, err)
		return nil, false
	}
	if len(events) == 0 {
		return []*storage.Event{}, true
	}
	state, err := a.rooms.StateAt(ctx, events[0], true)
	if err != nil {
		a.internalError(c, err)
		return nil, false
	}
	out, err := a.rooms.StateEvents(ctx, state)
	if err != nil {
		a.internalError(c, err)
		return nil, false
	}
	return out, true
}

// stateKeyParam reads the catch-all state key ("" when absent).
func stateKeyParam(c *gin.Context) string {
	return strings.TrimPrefix(c.Param("stateKey"), "/")
}

func memberOf(e *storage.Event) event.Membership {
	var content struct {
		Membership event.Membership `json:"membership"`
	}
	raw := rooms.ContentOf(e)
	_ = json.Unmarshal(raw, &content)
	return content.Membership
}
