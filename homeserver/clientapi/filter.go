package clientapi

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"

	"github.com/gin-gonic/gin"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"github.com/switchboard-im/switchboard/homeserver/storage"
)

// registerFilters mounts the filter endpoints on a client API prefix group.
func (a *API) registerFilters(g gin.IRouter) {
	g.POST("/user/:userID/filter", a.authed(a.postFilter))
	g.GET("/user/:userID/filter/:filterID", a.authed(a.getFilter))
}

// filterLimits captures every limit in a filter: mautrix's Filter cannot
// tell an explicit 0 from an absent limit, and the spec wants limit > 0.
type filterLimits struct {
	AccountData *partLimit  `json:"account_data"`
	Presence    *partLimit  `json:"presence"`
	Room        *roomLimits `json:"room"`
}

type roomLimits struct {
	AccountData *partLimit `json:"account_data"`
	Ephemeral   *partLimit `json:"ephemeral"`
	State       *partLimit `json:"state"`
	Timeline    *partLimit `json:"timeline"`
}

type partLimit struct {
	Limit *int64 `json:"limit"`
}

// validateFilter checks what the spec's filter schema says beyond JSON
// types: event_format's values, room and user ID syntax, positive limits.
func validateFilter(f *mautrix.Filter, limits *filterLimits) error {
	if f.EventFormat != "" {
		if err := f.Validate(); err != nil {
			return errors.New("event_format must be client or federation")
		}
	}
	checkRooms := func(field string, rooms []id.RoomID) error {
		for _, r := range rooms {
			if !strings.HasPrefix(string(r), "!") {
				return fmt.Errorf("%s: %q is not a room ID", field, r)
			}
		}
		return nil
	}
	checkPart := func(name string, p *mautrix.FilterPart, l *partLimit) error {
		if l != nil && l.Limit != nil && *l.Limit <= 0 {
			return fmt.Errorf("%s.limit must be greater than 0", name)
		}
		if p == nil {
			return nil
		}
		for _, u := range slices.Concat(p.Senders, p.NotSenders) {
			if !strings.HasPrefix(string(u), "@") {
				return fmt.Errorf("%s: %q is not a user ID", name, u)
			}
		}
		if err := checkRooms(name+".rooms", p.Rooms); err != nil {
			return err
		}
		return checkRooms(name+".not_rooms", p.NotRooms)
	}
	var room roomLimits
	if limits.Room != nil {
		room = *limits.Room
	}
	if err := checkPart("account_data", f.AccountData, limits.AccountData); err != nil {
		return err
	}
	if err := checkPart("presence", f.Presence, limits.Presence); err != nil {
		return err
	}
	r := f.Room
	if r == nil {
		r = &mautrix.RoomFilter{}
	}
	if err := checkRooms("room.rooms", r.Rooms); err != nil {
		return err
	}
	if err := checkRooms("room.not_rooms", r.NotRooms); err != nil {
		return err
	}
	for _, p := range []struct {
		name string
		part *mautrix.FilterPart
		l    *partLimit
	}{
		{"room.account_data", r.AccountData, room.AccountData},
		{"room.ephemeral", r.Ephemeral, room.Ephemeral},
		{"room.state", r.State, room.State},
		{"room.timeline", r.Timeline, room.Timeline},
	} {
		if err := checkPart(p.name, p.part, p.l); err != nil {
			return err
		}
	}
	return nil
}

func (a *API) postFilter(c *gin.Context, sess *storage.Session) {
	if !ownUserParam(c, sess, "filters") {
		return
	}
	var filter mautrix.Filter
	raw, ok := a.readJSON(c, &filter)
	if !ok {
		return
	}
	body, err := compactJSON(raw)
	if err != nil {
		a.internalError(c, err)
		return
	}
	var limits filterLimits
	if err := json.Unmarshal(body, &limits); err != nil {
		fail(c, mautrix.MBadJSON.WithMessage("%s", describeJSONError(err)))
		return
	}
	if err := validateFilter(&filter, &limits); err != nil {
		fail(c, mautrix.MBadJSON.WithMessage("Invalid filter: %s", err))
		return
	}
	filterID, err := a.db.CreateFilter(c.Request.Context(), sess.UserID, body)
	if err != nil {
		a.internalError(c, err)
		return
	}
	c.JSON(http.StatusOK, mautrix.RespCreateFilter{FilterID: filterID})
}

func (a *API) getFilter(c *gin.Context, sess *storage.Session) {
	if !ownUserParam(c, sess, "filters") {
		return
	}
	filter, err := a.db.GetFilter(c.Request.Context(), sess.UserID, c.Param("filterID"))
	if errors.Is(err, storage.ErrNotFound) {
		fail(c, mautrix.MNotFound.WithMessage("Unknown filter"))
		return
	} else if err != nil {
		a.internalError(c, err)
		return
	}
	c.Data(http.StatusOK, "application/json", filter)
}
