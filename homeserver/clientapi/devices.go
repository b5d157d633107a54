package clientapi

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"

	"github.com/gin-gonic/gin"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"github.com/switchboard-im/switchboard/homeserver/accounts"
	"github.com/switchboard-im/switchboard/homeserver/storage"
)

type deviceJSON struct {
	DeviceID    id.DeviceID `json:"device_id"`
	DisplayName *string     `json:"display_name,omitempty"`
	LastSeenIP  *string     `json:"last_seen_ip,omitempty"`
	LastSeenTS  *int64      `json:"last_seen_ts,omitempty"`
}

func toDeviceJSON(d *storage.Device) deviceJSON {
	return deviceJSON{DeviceID: d.DeviceID, DisplayName: d.DisplayName, LastSeenIP: d.LastSeenIP, LastSeenTS: d.LastSeenTS}
}

func (a *API) getDevices(c *gin.Context, sess *storage.Session) {
	devices, err := a.db.ListDevices(c.Request.Context(), sess.UserID)
	if err != nil {
		a.internalError(c, err)
		return
	}
	out := make([]deviceJSON, len(devices))
	for i, d := range devices {
		out[i] = toDeviceJSON(d)
	}
	c.JSON(http.StatusOK, gin.H{"devices": out})
}

func (a *API) getDevice(c *gin.Context, sess *storage.Session) {
	d, err := a.db.GetDevice(c.Request.Context(), sess.UserID, id.DeviceID(c.Param("deviceID")))
	if errors.Is(err, storage.ErrNotFound) {
		fail(c, mautrix.MNotFound.WithMessage("Unknown device"))
		return
	} else if err != nil {
		a.internalError(c, err)
		return
	}
	c.JSON(http.StatusOK, toDeviceJSON(d))
}

func (a *API) putDevice(c *gin.Context, sess *storage.Session) {
	var req struct {
		DisplayName *string `json:"display_name"`
	}
	if _, ok := a.readJSON(c, &req); !ok {
		return
	}
	ctx := c.Request.Context()
	deviceID := id.DeviceID(c.Param("deviceID"))
	if req.DisplayName == nil {
		// Nothing to change, but an unknown device is still an error.
		if _, err := a.db.GetDevice(ctx, sess.UserID, deviceID); errors.Is(err, storage.ErrNotFound) {
			fail(c, mautrix.MNotFound.WithMessage("Unknown device"))
			return
		}
		c.JSON(http.StatusOK, gin.H{})
		return
	}
	if len(*req.DisplayName) > 255 {
		fail(c, mautrix.MInvalidParam.WithMessage("display_name must be at most 255 bytes"))
		return
	}
	err := a.db.RenameDevice(ctx, sess.UserID, deviceID, *req.DisplayName)
	if errors.Is(err, storage.ErrNotFound) {
		fail(c, mautrix.MNotFound.WithMessage("Unknown device"))
		return
	} else if err != nil {
		a.internalError(c, err)
		return
	}
	c.JSON(http.StatusOK, gin.H{})
}

func (a *API) deleteDevice(c *gin.Context, sess *storage.Session) {
	raw, ok := a.readOptionalJSON(c, nil)
	if !ok {
		return
	}
	deviceID := id.DeviceID(c.Param("deviceID"))
	if _, err := a.db.GetDevice(c.Request.Context(), sess.UserID, deviceID); errors.Is(err, storage.ErrNotFound) {
		fail(c, mautrix.MNotFound.WithMessage("Unknown device"))
		return
	}
	a.deleteDevicesUIA(c, sess, raw, []id.DeviceID{deviceID})
}

func (a *API) postDeleteDevices(c *gin.Context, sess *storage.Session) {
	var req struct {
		Devices []id.DeviceID `json:"devices"`
	}
	raw, ok := a.readJSON(c, &req)
	if !ok {
		return
	}
	if req.Devices == nil {
		fail(c, errMissingParam.WithMessage("devices is required"))
		return
	}
	a.deleteDevicesUIA(c, sess, raw, req.Devices)
}

func (a *API) deleteDevicesUIA(c *gin.Context, sess *storage.Session, raw map[string]json.RawMessage, devices []id.DeviceID) {
	auth, ok := parseAuth(c, raw)
	if !ok {
		return
	}
	uia := a.runUIA(c, uiaRequest{flows: passwordFlows, user: sess.UserID, auth: auth})
	if uia == nil {
		return
	}
	ctx := c.Request.Context()
	if err := a.removeDevices(ctx, sess.UserID, func(ctx context.Context) error {
		return a.db.DeleteDevices(ctx, sess.UserID, devices...)
	}); err != nil {
		a.internalError(c, err)
		return
	}
	_ = a.db.DeleteUIASession(ctx, uia.SessionID)
	c.JSON(http.StatusOK, gin.H{})
}

// readOptionalJSON is readJSON for endpoints whose body may be empty
// (DELETE /devices/{id} without auth yet).
func (a *API) readOptionalJSON(c *gin.Context, dst any) (map[string]json.RawMessage, bool) {
	if c.Request.ContentLength == 0 {
		return map[string]json.RawMessage{}, true
	}
	return a.readJSON(c, dst)
}

func (a *API) postPassword(c *gin.Context, sess *storage.Session) {
	var req struct {
		NewPassword   string `json:"new_password"`
		LogoutDevices *bool  `json:"logout_devices"`
	}
	raw, ok := a.readJSON(c, &req)
	if !ok {
		return
	}
	if req.NewPassword == "" {
		fail(c, errMissingParam.WithMessage("new_password is required"))
		return
	}
	if err := a.accounts.CheckPasswordPolicy(req.NewPassword); err != nil {
		fail(c, errWeakPassword.WithMessage("%s", err.Error()))
		return
	}
	auth, ok := parseAuth(c, raw)
	if !ok {
		return
	}
	uia := a.runUIA(c, uiaRequest{flows: passwordFlows, user: sess.UserID, auth: auth})
	if uia == nil {
		return
	}
	logout := req.LogoutDevices == nil || *req.LogoutDevices
	ctx := c.Request.Context()
	if err := a.accounts.ChangePassword(ctx, sess.UserID, req.NewPassword, logout, sess.DeviceID); err != nil {
		if errors.Is(err, accounts.ErrWeakPassword) {
			fail(c, errWeakPassword.WithMessage("%s", err.Error()))
			return
		}
		a.internalError(c, err)
		return
	}
	_ = a.db.DeleteUIASession(ctx, uia.SessionID)
	if logout {
		a.devicesRemoved(c, sess.UserID)
	}
	zerologFromGin(c).Info().Bool("logout_devices", logout).Msg("Password changed")
	c.JSON(http.StatusOK, gin.H{})
}

func (a *API) postDeactivate(c *gin.Context, sess *storage.Session) {
	var req struct {
		Erase bool `json:"erase"`
	}
	auth, ok := a.readJSONWithAuth(c, &req)
	if !ok {
		return
	}
	uia := a.runUIA(c, uiaRequest{flows: passwordFlows, user: sess.UserID, auth: auth})
	if uia == nil {
		return
	}
	ctx := c.Request.Context()
	if err := a.removeDevices(ctx, sess.UserID, func(ctx context.Context) error {
		return a.accounts.Deactivate(ctx, sess.UserID, req.Erase)
	}); err != nil {
		a.internalError(c, err)
		return
	}
	_ = a.db.DeleteUIASession(ctx, uia.SessionID)
	zerologFromGin(c).Info().Bool("erase", req.Erase).Msg("Account deactivated")
	// We never bind 3PIDs to identity servers, so there is nothing to unbind.
	c.JSON(http.StatusOK, gin.H{"id_server_unbind_result": "no-support"})
}
