package clientapi

import (
	"encoding/json"
	"errors"
	"net/http"
	"regexp"
	"strings"
	"unicode/utf8"

	"github.com/gin-gonic/gin"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/switchboard-im/switchboard/homeserver/rooms"
	"github.com/switchboard-im/switchboard/homeserver/storage"
)

// profileFieldName is the spec's grammar for profile keys.
var profileFieldName = regexp.MustCompile(`^(avatar_url|displayname|m\.tz|[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+)$`)

// maxDisplayNameRunes matches what Synapse accepts, so names bridged from
// here fit everywhere.
const maxDisplayNameRunes = 256

// profileUser resolves the path's user ID to a local, existing user.
func (a *API) profileUser(c *gin.Context) (id.UserID, bool) {
	userID := id.UserID(c.Param("userID"))
	_, server, err := userID.Parse()
	if err != nil {
		fail(c, mautrix.MInvalidParam.WithMessage("Invalid user ID"))
		return "", false
	}
	if server != a.cfg.ServerName {
		// Federation queries arrive with the federation issue.
		fail(c, mautrix.MNotFound.WithMessage("Profile not found"))
		return "", false
	}
	if exists, err := a.ensureUser(c.Request.Context(), userID); err != nil {
		a.internalError(c, err)
		return "", false
	} else if !exists {
		fail(c, mautrix.MNotFound.WithMessage("Profile not found"))
		return "", false
	}
	return userID, true
}

func (a *API) getProfile(c *gin.Context) {
	userID, ok := a.profileUser(c)
	if !ok {
		return
	}
	profile, err := a.db.GetProfile(c.Request.Context(), userID)
	if err != nil {
		a.internalError(c, err)
		return
	}
	c.JSON(http.StatusOK, profile)
}

func (a *API) getProfileField(c *gin.Context) {
	userID, ok := a.profileUser(c)
	if !ok {
		return
	}
	field := c.Param("field")
	value, err := a.db.GetProfileField(c.Request.Context(), userID, field)
	if errors.Is(err, storage.ErrNotFound) {
		fail(c, mautrix.MNotFound.WithMessage("Profile field %s is not set", field))
		return
	} else if err != nil {
		a.internalError(c, err)
		return
	}
	c.JSON(http.StatusOK, map[string]json.RawMessage{field: value})
}

// checkProfileWrite validates the path of a profile write.
func (a *API) checkProfileWrite(c *gin.Context, sess *storage.Session) (id.UserID, string, bool) {
	userID := id.UserID(c.Param("userID"))
	if userID != sess.UserID && !sess.IsAdmin {
		fail(c, mautrix.MForbidden.WithMessage("You cannot change another user's profile"))
		return "", "", false
	}
	if _, ok := a.profileUser(c); !ok {
		return "", "", false
	}
	field := c.Param("field")
	if len(field) > 255 {
		fail(c, errKeyTooLarge.WithMessage("Profile keys are limited to 255 bytes"))
		return "", "", false
	}
	if !profileFieldName.MatchString(field) {
		fail(c, mautrix.MInvalidParam.WithMessage("%q is not a valid profile field name", field))
		return "", "", false
	}
	return userID, field, true
}

func (a *API) putProfileField(c *gin.Context, sess *storage.Session) {
	userID, field, ok := a.checkProfileWrite(c, sess)
	if !ok {
		return
	}
	raw, ok := a.readJSON(c, nil)
	if !ok {
		return
	}
	value, present := raw[field]
	if !present {
		fail(c, errMissingParam.WithMessage("Body must contain the key %q", field))
		return
	}
	switch field {
	case "displayname":
		var name string
		if json.Unmarshal(value, &name) != nil {
			fail(c, mautrix.MBadJSON.WithMessage("displayname must be a string"))
			return
		}
		if utf8.RuneCountInString(name) > maxDisplayNameRunes {
			fail(c, mautrix.MInvalidParam.WithMessage("displayname is limited to %d characters", maxDisplayNameRunes))
			return
		}
	case "avatar_url":
		var uri string
		if json.Unmarshal(value, &uri) != nil || (uri != "" && !strings.HasPrefix(uri, "mxc://")) {
			fail(c, mautrix.MBadJSON.WithMessage("avatar_url must be an mxc:// URI string"))
			return
		}
	case "m.tz":
		var tz string
		if json.Unmarshal(value, &tz) != nil {
			fail(c, mautrix.MBadJSON.WithMessage("m.tz must be a string"))
			return
		}
	}
	err := a.db.SetProfileField(c.Request.Context(), userID, field, value)
	if errors.Is(err, storage.ErrProfileTooLarge) {
		fail(c, errProfileTooBig.WithMessage("A profile is limited to %d bytes", storage.MaxProfileBytes))
		return
	} else if err != nil {
		a.internalError(c, err)
		return
	}
	if field == "displayname" || field == "avatar_url" {
		a.propagateProfile(c, userID)
	}
	c.JSON(http.StatusOK, gin.H{})
}

// propagateProfile sends a fresh join event carrying the new display name
// and avatar into every room the user is joined to, as the spec requires
// ("Events on Change of Profile Information"). A room where the update is
// refused (e.g. by its power levels) keeps the old profile.
func (a *API) propagateProfile(c *gin.Context, userID id.UserID) {
	ctx := c.Request.Context()
	memberships, err := a.db.UserRooms(ctx, userID)
	if err != nil {
		zerologFromGin(c).Warn().Err(err).Msg("Failed to list rooms for profile propagation")
		return
	}
	profile := a.profileFor(c, userID)
	for _, m := range memberships {
		if m.Membership != string(event.MembershipJoin) {
			continue
		}
		_, err := a.rooms.SetMembership(ctx, m.RoomID, rooms.MembershipRequest{
			Sender: userID, Target: userID, Membership: event.MembershipJoin, Profile: profile,
		})
		if err != nil {
			zerologFromGin(c).Info().Err(err).Stringer("room_id", m.RoomID).Msg("Profile change not propagated to room")
		}
	}
}

func (a *API) deleteProfileField(c *gin.Context, sess *storage.Session) {
	userID, field, ok := a.checkProfileWrite(c, sess)
	if !ok {
		return
	}
	if err := a.db.DeleteProfileField(c.Request.Context(), userID, field); err != nil {
		a.internalError(c, err)
		return
	}
	c.JSON(http.StatusOK, gin.H{})
}
