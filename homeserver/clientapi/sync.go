package clientapi

import (
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/gin-gonic/gin"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"

	"github.com/switchboard-im/switchboard/homeserver/storage"
	"github.com/switchboard-im/switchboard/homeserver/syncapi"
)

// maxSyncTimeout caps long-polls so proxies and clients see a regular answer.
const maxSyncTimeout = 5 * time.Minute

func (a *API) registerSync(g gin.IRouter) {
	g.GET("/sync", a.authed(a.getSync))
}

func (a *API) getSync(c *gin.Context, sess *storage.Session) {
	req := syncapi.Request{User: sess.UserID, Device: sess.DeviceID, FullState: c.Query("full_state") == "true"}
	if raw := c.Query("since"); raw != "" {
		t, err := syncapi.ParseToken(raw)
		if err != nil {
			fail(c, mautrix.MInvalidParam.WithMessage("Invalid since token"))
			return
		}
		req.Since = &t
	}
	if raw := c.Query("timeout"); raw != "" {
		ms, err := strconv.ParseInt(raw, 10, 64)
		if err != nil || ms < 0 {
			fail(c, mautrix.MInvalidParam.WithMessage("timeout must be a non-negative integer"))
			return
		}
		req.Timeout = min(time.Duration(ms)*time.Millisecond, maxSyncTimeout)
	}
	filter, ok := a.syncFilter(c, sess)
	if !ok {
		return
	}
	req.Filter = filter
	a.syncPresence(c, sess)
	resp, err := a.syncer().Sync(c.Request.Context(), req)
	if err != nil {
		if c.Request.Context().Err() != nil {
			return // the client went away
		}
		a.internalError(c, err)
		return
	}
	c.JSON(http.StatusOK, resp)
}

// presenceRefresh is how stale last_active may get before a syncing client
// refreshes it: a write per sync would cost more than the sync itself.
const presenceRefresh = time.Minute

// syncPresence applies /sync's set_presence (default online): a syncing
// client marks its user online or unavailable; "offline" changes nothing.
func (a *API) syncPresence(c *gin.Context, sess *storage.Session) {
	state := event.PresenceOnline
	switch c.Query("set_presence") {
	case "offline":
		return
	case "unavailable":
		state = event.PresenceUnavailable
	}
	ctx := c.Request.Context()
	// Most syncs come from a client already marked so within the minute:
	// answer those from memory instead of reading the presence row.
	key := string(sess.UserID) + "|" + string(state)
	if last, ok := a.presenceSeen.Load(key); ok && time.Since(last.(time.Time)) < presenceRefresh/2 {
		return
	}
	a.presenceSeen.Store(key, time.Now())
	var statusMsg *string
	if p, err := a.db.GetPresence(ctx, sess.UserID); err == nil {
		if p.Presence == state && time.Since(time.UnixMilli(p.LastActiveTS)) < presenceRefresh {
			return
		}
		statusMsg = p.StatusMsg
	}
	pos, err := a.db.SetPresence(ctx, sess.UserID, state, statusMsg)
	if err != nil {
		zerologFromGin(c).Warn().Err(err).Msg("Failed to update presence from sync")
		return
	}
	a.wakePresence(ctx, pos, sess.UserID)
}

// syncer returns the process's one sync engine (it holds caches).
func (a *API) syncer() *syncapi.Syncer {
	a.syncOnce.Do(func() {
		a.syncEngine = &syncapi.Syncer{DB: a.db, Rooms: a.rooms, Notifier: a.notifier, Typing: a.typing}
	})
	return a.syncEngine
}

// syncFilter reads the filter parameter: inline JSON or a stored filter ID.
func (a *API) syncFilter(c *gin.Context, sess *storage.Session) (*mautrix.Filter, bool) {
	raw := c.Query("filter")
	if raw == "" {
		return &mautrix.Filter{}, true
	}
	data := []byte(raw)
	if !strings.HasPrefix(strings.TrimSpace(raw), "{") {
		stored, err := a.db.GetFilter(c.Request.Context(), sess.UserID, raw)
		if errors.Is(err, storage.ErrNotFound) {
			fail(c, mautrix.MNotFound.WithMessage("Unknown filter %q", raw))
			return nil, false
		} else if err != nil {
			a.internalError(c, err)
			return nil, false
		}
		data = stored
	}
	var f mautrix.Filter
	if err := json.Unmarshal(data, &f); err != nil {
		fail(c, mautrix.MBadJSON.WithMessage("Invalid filter: %v", err))
		return nil, false
	}
	return &f, true
}
