package clientapi

import (
	"encoding/base64"
	"errors"
	"net/http"
	"strconv"
	"strings"

	"github.com/gin-gonic/gin"
	"github.com/tidwall/gjson"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/switchboard-im/switchboard/homeserver/storage"
)

// registerDirectory mounts the published room directory (spec: "Published
// room directory") and the user directory (spec: "User Directory").
func (a *API) registerDirectory(g gin.IRouter) {
	g.GET("/directory/list/room/:roomID", a.getRoomVisibility)
	g.PUT("/directory/list/room/:roomID", a.authed(a.putRoomVisibility))
	g.GET("/publicRooms", a.getPublicRooms)
	g.POST("/publicRooms", a.authed(a.postPublicRooms))
	g.POST("/user_directory/search", a.authed(a.postUserDirectorySearch))
}

const (
	visibilityPublic  = "public"
	visibilityPrivate = "private"
)

func (a *API) getRoomVisibility(c *gin.Context) {
	roomID, ok := roomIDFromPath(c)
	if !ok {
		return
	}
	room, err := a.db.GetRoom(c.Request.Context(), roomID, false)
	if errors.Is(err, storage.ErrNotFound) {
		fail(c, mautrix.MNotFound.WithMessage("Room not found"))
		return
	} else if err != nil {
		a.internalError(c, err)
		return
	}
	visibility := visibilityPrivate
	if room.IsPublic {
		visibility = visibilityPublic
	}
	c.JSON(http.StatusOK, gin.H{"visibility": visibility})
}

// putRoomVisibility publishes or unpublishes a room. The spec leaves access
// control to the server: we allow joined members who may change the room's
// canonical alias (the same power that decides how the room is found) and
// server admins.
func (a *API) putRoomVisibility(c *gin.Context, sess *storage.Session) {
	roomID, ok := roomIDFromPath(c)
	if !ok {
		return
	}
	var body struct {
		Visibility *string `json:"visibility"`
	}
	if _, ok := a.readJSON(c, &body); !ok {
		return
	}
	visibility := visibilityPublic
	if body.Visibility != nil {
		visibility = *body.Visibility
	}
	if visibility != visibilityPublic && visibility != visibilityPrivate {
		fail(c, mautrix.MInvalidParam.WithMessage("visibility must be public or private"))
		return
	}
	ctx := c.Request.Context()
	if !sess.IsAdmin {
		m, err := a.rooms.Membership(ctx, roomID, sess.UserID)
		if err != nil {
			a.roomError(c, err)
			return
		}
		if m != event.MembershipJoin {
			fail(c, mautrix.MForbidden.WithMessage("You are not joined to this room"))
			return
		}
		pl, err := a.rooms.PowerLevels(ctx, roomID)
		if err != nil {
			a.roomError(c, err)
			return
		}
		if pl.GetUserLevel(sess.UserID) < pl.GetEventLevel(event.StateCanonicalAlias) {
			fail(c, mautrix.MForbidden.WithMessage("You do not have the power to change this room's directory visibility"))
			return
		}
	}
	if err := a.db.SetRoomPublic(ctx, roomID, visibility == visibilityPublic); errors.Is(err, storage.ErrNotFound) {
		fail(c, mautrix.MNotFound.WithMessage("Room not found"))
		return
	} else if err != nil {
		a.internalError(c, err)
		return
	}
	c.JSON(http.StatusOK, gin.H{})
}

// maxPublicRoomsPage bounds a page of the room directory, also when the
// client asks for no limit (it gets next_batch for the rest).
const maxPublicRoomsPage = 500

type publicRoomsFilter struct {
	GenericSearchTerm string    `json:"generic_search_term"`
	RoomTypes         []*string `json:"room_types"`
}

type publicRoomsRequest struct {
	Limit  *int               `json:"limit"`
	Since  string             `json:"since"`
	Filter *publicRoomsFilter `json:"filter"`
	// Rooms appservices published in their networks' lists (spec:
	// third_party_instance_id is one network; "appservice_id|network_id"
	// as Synapse writes it is accepted too).
	IncludeAllNetworks   bool   `json:"include_all_networks"`
	ThirdPartyInstanceID string `json:"third_party_instance_id"`
}

// publicRoomsChunk is one room of the directory (spec: PublishedRoomsChunk).
type publicRoomsChunk struct {
	RoomID           id.RoomID `json:"room_id"`
	Name             string    `json:"name,omitempty"`
	Topic            string    `json:"topic,omitempty"`
	CanonicalAlias   string    `json:"canonical_alias,omitempty"`
	AvatarURL        string    `json:"avatar_url,omitempty"`
	NumJoinedMembers int64     `json:"num_joined_members"`
	WorldReadable    bool      `json:"world_readable"`
	GuestCanJoin     bool      `json:"guest_can_join"`
	JoinRule         string    `json:"join_rule,omitempty"`
	RoomType         string    `json:"room_type,omitempty"`
}

type publicRoomsResponse struct {
	Chunk                  []publicRoomsChunk `json:"chunk"`
	NextBatch              string             `json:"next_batch,omitempty"`
	PrevBatch              string             `json:"prev_batch,omitempty"`
	TotalRoomCountEstimate int                `json:"total_room_count_estimate"`
}

// getPublicRooms needs no access token: the spec lists no security for it.
func (a *API) getPublicRooms(c *gin.Context) {
	var req publicRoomsRequest
	if raw, ok := c.GetQuery("limit"); ok && raw != "" {
		n, err := strconv.Atoi(raw)
		if err != nil {
			fail(c, mautrix.MInvalidParam.WithMessage("limit must be an integer"))
			return
		}
		req.Limit = &n
	}
	req.Since = c.Query("since")
	req.IncludeAllNetworks = c.Query("include_all_networks") == "true"
	req.ThirdPartyInstanceID = c.Query("third_party_instance_id")
	a.listPublicRooms(c, &req)
}

func (a *API) postPublicRooms(c *gin.Context, _ *storage.Session) {
	var req publicRoomsRequest
	if _, ok := a.readJSON(c, &req); !ok {
		return
	}
	a.listPublicRooms(c, &req)
}

func (a *API) listPublicRooms(c *gin.Context, req *publicRoomsRequest) {
	if server := c.Query("server"); server != "" && server != a.cfg.ServerName {
		// Other servers' directories are fetched over federation, which
		// comes later.
		fail(c, mautrix.MInvalidParam.WithMessage("The room directory of %s cannot be fetched: only this server's directory is available", server))
		return
	}
	q := storage.PublicRoomsQuery{Limit: maxPublicRoomsPage}
	if req.Limit != nil {
		switch {
		case *req.Limit < 0:
			fail(c, mautrix.MInvalidParam.WithMessage("limit must not be negative"))
			return
		case *req.Limit > 0 && *req.Limit < maxPublicRoomsPage:
			q.Limit = *req.Limit
		}
	}
	switch {
	case req.IncludeAllNetworks:
		q.Network = storage.AllNetworks
	case req.ThirdPartyInstanceID != "":
		q.Network = req.ThirdPartyInstanceID[strings.LastIndex(req.ThirdPartyInstanceID, "|")+1:]
	}
	if req.Filter != nil {
		q.SearchTerm = strings.TrimSpace(req.Filter.GenericSearchTerm)
		q.RoomTypes = req.Filter.RoomTypes
	}
	if req.Since != "" {
		key, before, ok := parsePublicRoomsToken(req.Since)
		if !ok {
			fail(c, mautrix.MInvalidParam.WithMessage("Invalid since token"))
			return
		}
		if before {
			q.Before = &key
		} else {
			q.After = &key
		}
	}
	backwards := q.Before != nil
	ctx := c.Request.Context()
	rooms, more, err := a.db.PublicRooms(ctx, q)
	if err != nil {
		a.internalError(c, err)
		return
	}
	total, err := a.db.CountPublicRooms(ctx, q)
	if err != nil {
		a.internalError(c, err)
		return
	}
	ids := make([]id.RoomID, len(rooms))
	for i, r := range rooms {
		ids[i] = r.RoomID
	}
	state, err := a.db.DirectoryState(ctx, ids)
	if err != nil {
		a.internalError(c, err)
		return
	}
	resp := publicRoomsResponse{Chunk: make([]publicRoomsChunk, 0, len(rooms)), TotalRoomCountEstimate: total}
	for _, r := range rooms {
		resp.Chunk = append(resp.Chunk, directoryEntry(r, state[r.RoomID]))
	}
	if n := len(rooms); n > 0 {
		first, last := rooms[0].Key(), rooms[n-1].Key()
		// Going forwards, rooms precede the page whenever it did not start
		// at the top; going backwards, rooms follow it (the one the token
		// was taken from, at least).
		if backwards {
			resp.NextBatch = publicRoomsToken(last, false)
			if more {
				resp.PrevBatch = publicRoomsToken(first, true)
			}
		} else {
			if more {
				resp.NextBatch = publicRoomsToken(last, false)
			}
			if q.After != nil {
				resp.PrevBatch = publicRoomsToken(first, true)
			}
		}
	}
	c.JSON(http.StatusOK, resp)
}

// directoryEntry builds a room's directory entry from its current state
// events (PDUs by type).
func directoryEntry(r storage.PublicRoom, state map[string][]byte) publicRoomsChunk {
	str := func(evtType, field string) string { return stateContentString(state, evtType, field) }
	entry := publicRoomsChunk{
		RoomID:           r.RoomID,
		Name:             str(event.StateRoomName.Type, "name"),
		Topic:            str(event.StateTopic.Type, "topic"),
		NumJoinedMembers: r.JoinedMembers,
		WorldReadable:    str(event.StateHistoryVisibility.Type, "history_visibility") == string(event.HistoryVisibilityWorldReadable),
		GuestCanJoin:     str(event.StateGuestAccess.Type, "guest_access") == string(event.GuestAccessCanJoin),
		JoinRule:         str(event.StateJoinRules.Type, "join_rule"),
		RoomType:         str(event.StateCreate.Type, "type"),
	}
	if alias := str(event.StateCanonicalAlias.Type, "alias"); strings.HasPrefix(alias, "#") {
		entry.CanonicalAlias = alias
	}
	if avatar := str(event.StateRoomAvatar.Type, "url"); strings.HasPrefix(avatar, "mxc://") {
		entry.AvatarURL = avatar
	}
	return entry
}

// stateContentString is a string field of the content of a room's state
// event (state: event type → event JSON, as DirectoryState reads it); ""
// when absent or not a string.
func stateContentString(state map[string][]byte, evtType, field string) string {
	if v := gjson.GetBytes(state[evtType], "content."+field); v.Type == gjson.String {
		return v.Str
	}
	return ""
}

// publicRoomsToken makes an opaque pagination token: the rooms after key
// (or before it, for prev_batch).
func publicRoomsToken(key storage.PublicRoomKey, before bool) string {
	dir := "n"
	if before {
		dir = "p"
	}
	return base64.RawURLEncoding.EncodeToString([]byte(dir + strconv.FormatInt(key.JoinedMembers, 10) + "_" + string(key.RoomID)))
}

func parsePublicRoomsToken(token string) (key storage.PublicRoomKey, before, ok bool) {
	raw, err := base64.RawURLEncoding.DecodeString(token)
	if err != nil || len(raw) < 2 || (raw[0] != 'n' && raw[0] != 'p') {
		return key, false, false
	}
	count, roomID, found := strings.Cut(string(raw[1:]), "_")
	n, err := strconv.ParseInt(count, 10, 64)
	if !found || err != nil || n < 0 || !strings.HasPrefix(roomID, "!") {
		return key, false, false
	}
	return storage.PublicRoomKey{JoinedMembers: n, RoomID: id.RoomID(roomID)}, raw[0] == 'p', true
}

// User directory limits: Synapse's default and cap, which clients expect.
const (
	defaultUserDirectoryLimit = 10
	maxUserDirectoryLimit     = 50
)

type userDirectoryResult struct {
	UserID      id.UserID `json:"user_id"`
	DisplayName string    `json:"display_name,omitempty"`
	AvatarURL   string    `json:"avatar_url,omitempty"`
}

// postUserDirectorySearch searches the users the requester can see (see
// storage.SearchUserDirectory): those sharing a room with them and those
// in public or world-readable rooms, not every account on the server.
func (a *API) postUserDirectorySearch(c *gin.Context, sess *storage.Session) {
	var body struct {
		SearchTerm *string `json:"search_term"`
		Limit      *int    `json:"limit"`
	}
	if _, ok := a.readJSON(c, &body); !ok {
		return
	}
	if body.SearchTerm == nil {
		fail(c, errMissingParam.WithMessage("search_term is required"))
		return
	}
	limit := defaultUserDirectoryLimit
	if body.Limit != nil {
		if *body.Limit < 0 {
			fail(c, mautrix.MInvalidParam.WithMessage("limit must not be negative"))
			return
		}
		limit = min(*body.Limit, maxUserDirectoryLimit)
	}
	found, limited, err := a.db.SearchUserDirectory(c.Request.Context(), sess.UserID, strings.TrimSpace(*body.SearchTerm), limit)
	if err != nil {
		a.internalError(c, err)
		return
	}
	results := make([]userDirectoryResult, 0, len(found))
	for _, u := range found {
		r := userDirectoryResult{UserID: u.UserID, DisplayName: u.DisplayName}
		if strings.HasPrefix(u.AvatarURL, "mxc://") {
			r.AvatarURL = u.AvatarURL
		}
		results = append(results, r)
	}
	c.JSON(http.StatusOK, gin.H{"results": results, "limited": limited})
}
