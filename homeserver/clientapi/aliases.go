package clientapi

import (
	"errors"
	"net/http"
	"strings"

	"github.com/gin-gonic/gin"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/switchboard-im/switchboard/homeserver/storage"
)

// aliasParam validates a local room alias path parameter.
func (a *API) aliasParam(c *gin.Context) (id.RoomAlias, bool) {
	alias := id.RoomAlias(c.Param("alias"))
	localpart, server, ok := strings.Cut(strings.TrimPrefix(string(alias), "#"), ":")
	if !strings.HasPrefix(string(alias), "#") || !ok || localpart == "" || len(alias) > 255 || strings.ContainsAny(localpart, " \t\n") {
		fail(c, mautrix.MInvalidParam.WithMessage("Invalid room alias"))
		return "", false
	}
	if server != a.cfg.ServerName {
		// Remote aliases are resolved over federation, which comes later.
		fail(c, mautrix.MNotFound.WithMessage("Room alias %s not found", alias))
		return "", false
	}
	return alias, true
}

func (a *API) getAlias(c *gin.Context) {
	alias, ok := a.aliasParam(c)
	if !ok {
		return
	}
	roomID, err := a.ensureAlias(c.Request.Context(), alias)
	if errors.Is(err, storage.ErrNotFound) {
		fail(c, mautrix.MNotFound.WithMessage("Room alias %s not found", alias))
		return
	} else if err != nil {
		a.internalError(c, err)
		return
	}
	c.JSON(http.StatusOK, gin.H{"room_id": roomID, "servers": []string{a.cfg.ServerName}})
}

func (a *API) putAlias(c *gin.Context, sess *storage.Session) {
	alias, ok := a.aliasParam(c)
	if !ok {
		return
	}
	var body struct {
		RoomID id.RoomID `json:"room_id"`
	}
	if _, ok := a.readJSON(c, &body); !ok {
		return
	}
	ctx := c.Request.Context()
	// Only members may point aliases at a room.
	m, err := a.rooms.Membership(ctx, body.RoomID, sess.UserID)
	if err != nil {
		a.roomError(c, err)
		return
	}
	if m != event.MembershipJoin {
		fail(c, mautrix.MForbidden.WithMessage("You are not a member of this room"))
		return
	}
	if err := a.db.CreateAlias(ctx, alias, body.RoomID, sess.UserID); errors.Is(err, storage.ErrAliasExists) {
		fail(c, mautrix.RespError{ErrCode: "M_UNKNOWN", Err: "Room alias already exists", StatusCode: http.StatusConflict})
		return
	} else if err != nil {
		a.internalError(c, err)
		return
	}
	c.JSON(http.StatusOK, gin.H{})
}

func (a *API) deleteAlias(c *gin.Context, sess *storage.Session) {
	alias, ok := a.aliasParam(c)
	if !ok {
		return
	}
	ctx := c.Request.Context()
	roomID, creator, err := a.db.ResolveAlias(ctx, alias)
	if errors.Is(err, storage.ErrNotFound) {
		fail(c, mautrix.MNotFound.WithMessage("Room alias %s not found", alias))
		return
	} else if err != nil {
		a.internalError(c, err)
		return
	}
	// The creator, a server admin, or a room member allowed to change the
	// canonical alias may delete it.
	if creator != sess.UserID && !sess.IsAdmin {
		pl, err := a.rooms.PowerLevels(ctx, roomID)
		if err != nil {
			a.roomError(c, err)
			return
		}
		if pl.GetUserLevel(sess.UserID) < pl.GetEventLevel(event.StateCanonicalAlias) {
			fail(c, mautrix.MForbidden.WithMessage("You may not delete this alias"))
			return
		}
	}
	if err := a.db.DeleteAlias(ctx, alias); err != nil {
		a.internalError(c, err)
		return
	}
	c.JSON(http.StatusOK, gin.H{})
}

func (a *API) getRoomAliases(c *gin.Context, sess *storage.Session) {
	roomID, ok := roomIDFromPath(c)
	if !ok {
		return
	}
	ctx := c.Request.Context()
	h, err := a.rooms.HistoryFor(ctx, roomID, sess.UserID)
	if err != nil {
		a.roomError(c, err)
		return
	}
	pos, _ := a.db.CurrentStreamPos(ctx)
	if !h.CanSee(pos + 1) {
		fail(c, mautrix.MForbidden.WithMessage("You are not a member of this room"))
		return
	}
	aliases, err := a.db.RoomAliases(ctx, roomID)
	if err != nil {
		a.internalError(c, err)
		return
	}
	c.JSON(http.StatusOK, gin.H{"aliases": aliases})
}
