package clientapi

// Server-side key backups (client-server "Server-side key backups"): backup
// versions under /room_keys/version and the encrypted room keys under
// /room_keys/keys at three levels (all rooms, one room, one session).

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"

	"github.com/gin-gonic/gin"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"github.com/switchboard-im/switchboard/homeserver/storage"
)

// registerKeyBackup mounts the key backup endpoints on a client API prefix
// group.
func (a *API) registerKeyBackup(g gin.IRouter) {
	g.POST("/room_keys/version", a.authed(a.postKeyBackupVersion))
	g.GET("/room_keys/version", a.authed(a.getKeyBackupVersion))
	g.GET("/room_keys/version/:version", a.authed(a.getKeyBackupVersion))
	g.PUT("/room_keys/version/:version", a.authed(a.putKeyBackupVersion))
	g.DELETE("/room_keys/version/:version", a.authed(a.deleteKeyBackupVersion))

	for _, path := range []string{"/room_keys/keys", "/room_keys/keys/:roomID", "/room_keys/keys/:roomID/:sessionID"} {
		g.PUT(path, a.authed(a.putBackupKeys))
		g.GET(path, a.authed(a.getBackupKeys))
		g.DELETE(path, a.authed(a.deleteBackupKeys))
	}
}

const (
	// maxBackupAuthDataBytes bounds a version's auth_data (a public key and
	// its signatures: well under 1 KiB in practice).
	maxBackupAuthDataBytes = 64 * 1024
	// maxBackupSessionDataBytes bounds one key's encrypted session_data
	// (an exported megolm session: about 1 KiB in practice).
	maxBackupSessionDataBytes = 64 * 1024
	// maxBackupAlgorithmBytes bounds an algorithm name as the spec bounds
	// other namespaced identifiers.
	maxBackupAlgorithmBytes = 255
	// maxSessionIDBytes bounds megolm session IDs (43 bytes in practice);
	// they end up in a primary key.
	maxSessionIDBytes = 255
	// maxJSONSafeInt is the largest integer the spec allows in JSON (the
	// largest a double holds exactly).
	maxJSONSafeInt = 1<<53 - 1
)

var (
	errUnknownBackupVersion = mautrix.MNotFound.WithMessage("Unknown backup version")
	errNoCurrentBackup      = mautrix.MNotFound.WithMessage("No current backup version")
)

// validBackupAlgorithm accepts the spec's algorithm and, for clients trying
// an MSC's backup algorithm, names outside the spec's m. namespace.
func validBackupAlgorithm(algorithm string) bool {
	if algorithm == string(id.KeyBackupAlgorithmMegolmBackupV1) {
		return true
	}
	return len(algorithm) <= maxBackupAlgorithmBytes && !strings.HasPrefix(algorithm, "m.") && strings.Contains(algorithm, ".")
}

// parseBackupVersion reads a version as this server issues them: a
// positive decimal number without leading zeros. Any other string names no
// version.
func parseBackupVersion(raw string) (int64, bool) {
	if raw == "" || raw[0] == '0' || len(raw) > 18 {
		return 0, false
	}
	for _, r := range raw {
		if r < '0' || r > '9' {
			return 0, false
		}
	}
	v, err := strconv.ParseInt(raw, 10, 64)
	return v, err == nil
}

func formatBackupVersion(v int64) string { return strconv.FormatInt(v, 10) }

// isJSONObject reports whether raw (valid JSON) is an object.
func isJSONObject(raw json.RawMessage) bool {
	raw = bytes.TrimSpace(raw)
	return len(raw) > 0 && raw[0] == '{'
}

func isJSONNull(raw json.RawMessage) bool { return bytes.Equal(bytes.TrimSpace(raw), []byte("null")) }

// readBackupVersion reads a version's create or update request: the body
// and its algorithm and auth_data. It answers a bad request and returns
// false.
func (a *API) readBackupVersion(c *gin.Context) (map[string]json.RawMessage, string, json.RawMessage, bool) {
	raw, ok := a.readJSON(c, nil)
	if !ok {
		return nil, "", nil, false
	}
	algorithm, authData, rerr := backupVersionBody(raw)
	if rerr != nil {
		fail(c, *rerr)
		return nil, "", nil, false
	}
	return raw, algorithm, authData, true
}

// backupVersionBody reads the algorithm and auth_data of a version's
// create or update request.
func backupVersionBody(raw map[string]json.RawMessage) (string, json.RawMessage, *mautrix.RespError) {
	fieldErr := func(e mautrix.RespError) (string, json.RawMessage, *mautrix.RespError) { return "", nil, &e }
	algRaw, ok := raw["algorithm"]
	if !ok {
		return fieldErr(errMissingParam.WithMessage("algorithm is required"))
	}
	var algorithm string
	if json.Unmarshal(algRaw, &algorithm) != nil || isJSONNull(algRaw) {
		return fieldErr(mautrix.MBadJSON.WithMessage("algorithm must be a string"))
	}
	if !validBackupAlgorithm(algorithm) {
		return fieldErr(mautrix.MInvalidParam.WithMessage("Unsupported backup algorithm %q", algorithm))
	}
	authRaw, ok := raw["auth_data"]
	if !ok {
		return fieldErr(errMissingParam.WithMessage("auth_data is required"))
	}
	if !isJSONObject(authRaw) {
		return fieldErr(mautrix.MBadJSON.WithMessage("auth_data must be an object"))
	}
	var authData map[string]json.RawMessage
	if err := json.Unmarshal(authRaw, &authData); err != nil {
		return fieldErr(mautrix.MBadJSON.WithMessage("auth_data must be an object"))
	}
	if algorithm == string(id.KeyBackupAlgorithmMegolmBackupV1) {
		var publicKey string
		if json.Unmarshal(authData["public_key"], &publicKey) != nil || publicKey == "" {
			return fieldErr(mautrix.MInvalidParam.WithMessage("auth_data.public_key must be a non-empty string for %s", algorithm))
		}
		// mautrix-go sends "signatures": null for an unsigned backup.
		if sigs, ok := authData["signatures"]; ok && !isJSONObject(sigs) && !isJSONNull(sigs) {
			return fieldErr(mautrix.MInvalidParam.WithMessage("auth_data.signatures must be an object"))
		}
	}
	var compact bytes.Buffer
	if err := json.Compact(&compact, authRaw); err != nil {
		return fieldErr(mautrix.MBadJSON.WithMessage("auth_data must be an object"))
	}
	if compact.Len() > maxBackupAuthDataBytes {
		return fieldErr(mautrix.MTooLarge.WithMessage("auth_data is limited to %d bytes", maxBackupAuthDataBytes))
	}
	return algorithm, compact.Bytes(), nil
}

func (a *API) postKeyBackupVersion(c *gin.Context, sess *storage.Session) {
	_, algorithm, authData, ok := a.readBackupVersion(c)
	if !ok {
		return
	}
	version, err := a.db.CreateKeyBackupVersion(c.Request.Context(), sess.UserID, algorithm, authData)
	if err != nil {
		a.internalError(c, err)
		return
	}
	c.JSON(http.StatusOK, gin.H{"version": formatBackupVersion(version)})
}

// keyBackupVersionJSON is a version as GET /room_keys/version shows it.
type keyBackupVersionJSON struct {
	Algorithm string          `json:"algorithm"`
	AuthData  json.RawMessage `json:"auth_data"`
	Count     int64           `json:"count"`
	ETag      string          `json:"etag"`
	Version   string          `json:"version"`
}

func (a *API) getKeyBackupVersion(c *gin.Context, sess *storage.Session) {
	ctx := c.Request.Context()
	var v *storage.KeyBackupVersion
	var err error
	if raw, present := c.Params.Get("version"); present {
		version, ok := parseBackupVersion(raw)
		if !ok {
			fail(c, errUnknownBackupVersion)
			return
		}
		v, err = a.db.GetKeyBackupVersion(ctx, sess.UserID, version)
		if errors.Is(err, storage.ErrNotFound) {
			fail(c, errUnknownBackupVersion)
			return
		}
	} else {
		v, err = a.db.GetCurrentKeyBackupVersion(ctx, sess.UserID)
		if errors.Is(err, storage.ErrNotFound) {
			fail(c, errNoCurrentBackup)
			return
		}
	}
	if err != nil {
		a.internalError(c, err)
		return
	}
	c.JSON(http.StatusOK, keyBackupVersionJSON{
		Algorithm: v.Algorithm,
		AuthData:  v.AuthData,
		Count:     v.Count,
		ETag:      formatBackupVersion(v.ETag),
		Version:   formatBackupVersion(v.Version),
	})
}

func (a *API) putKeyBackupVersion(c *gin.Context, sess *storage.Session) {
	raw, algorithm, authData, ok := a.readBackupVersion(c)
	if !ok {
		return
	}
	pathVersion := c.Param("version")
	if bodyVersion, present := raw["version"]; present && !isJSONNull(bodyVersion) {
		var s string
		if json.Unmarshal(bodyVersion, &s) != nil {
			fail(c, mautrix.MBadJSON.WithMessage("version must be a string"))
			return
		}
		if s != pathVersion {
			fail(c, mautrix.MInvalidParam.WithMessage("version in body does not match the version in the path"))
			return
		}
	}
	version, ok := parseBackupVersion(pathVersion)
	if !ok {
		fail(c, errUnknownBackupVersion)
		return
	}
	err := a.db.UpdateKeyBackupVersion(c.Request.Context(), sess.UserID, version, algorithm, authData)
	if !a.backupError(c, err) {
		c.JSON(http.StatusOK, gin.H{})
	}
}

func (a *API) deleteKeyBackupVersion(c *gin.Context, sess *storage.Session) {
	version, ok := parseBackupVersion(c.Param("version"))
	if !ok {
		fail(c, errUnknownBackupVersion)
		return
	}
	err := a.db.DeleteKeyBackupVersion(c.Request.Context(), sess.UserID, version)
	if !a.backupError(c, err) {
		c.JSON(http.StatusOK, gin.H{})
	}
}

// backupError answers the error of a backup read or write, if there is
// one: an unknown version, a wrong current version, a changed algorithm,
// or an internal error.
func (a *API) backupError(c *gin.Context, err error) bool {
	var wrong *storage.WrongKeyBackupVersionError
	switch {
	case err == nil:
		return false
	case errors.Is(err, storage.ErrNotFound):
		fail(c, errUnknownBackupVersion)
	case errors.As(err, &wrong):
		fail(c, mautrix.MWrongRoomKeysVersion.WithMessage("Wrong backup version.").
			WithExtraField("current_version", formatBackupVersion(wrong.Current)))
	case errors.Is(err, storage.ErrKeyBackupAlgorithmMismatch):
		fail(c, mautrix.MInvalidParam.WithMessage("Algorithm does not match the backup's algorithm"))
	default:
		a.internalError(c, err)
	}
	return true
}

// backupKeysTarget is what a /room_keys/keys request addresses: a version's
// keys, a room's, or one session's.
type backupKeysTarget struct {
	version   int64 // 0 when the query names no version this server issued
	roomID    id.RoomID
	sessionID id.SessionID
}

// issuedKeysTarget is keysTarget for reads and deletions, which need a
// version this server issued.
func issuedKeysTarget(c *gin.Context) (backupKeysTarget, bool) {
	t, ok := keysTarget(c)
	if ok && t.version == 0 {
		fail(c, errUnknownBackupVersion)
		return t, false
	}
	return t, ok
}

// keysTarget validates the version query parameter and the path.
func keysTarget(c *gin.Context) (backupKeysTarget, bool) {
	var t backupKeysTarget
	rawVersion := c.Query("version")
	if rawVersion == "" {
		fail(c, errMissingParam.WithMessage("The version query parameter is required"))
		return t, false
	}
	t.version, _ = parseBackupVersion(rawVersion)
	var ok bool
	if t.roomID, ok = roomIDParam(c); !ok {
		return t, false
	}
	if raw, present := c.Params.Get("sessionID"); present {
		if !validSessionID(raw) {
			fail(c, mautrix.MInvalidParam.WithMessage("Session IDs must be 1 to %d bytes", maxSessionIDBytes))
			return t, false
		}
		t.sessionID = id.SessionID(raw)
	}
	return t, true
}

func validSessionID(s string) bool { return s != "" && len(s) <= maxSessionIDBytes }

func validRoomID(s string) bool { return len(s) >= 2 && s[0] == '!' && len(s) <= maxRoomIDBytes }

// backupKeyJSON is one key (KeyBackupData) as uploaded and served.
type backupKeyJSON struct {
	FirstMessageIndex int64           `json:"first_message_index"`
	ForwardedCount    int64           `json:"forwarded_count"`
	IsVerified        bool            `json:"is_verified"`
	SessionData       json.RawMessage `json:"session_data"`
}

// roomKeyBackupJSON is one room's keys (RoomKeyBackup).
type roomKeyBackupJSON struct {
	Sessions map[id.SessionID]backupKeyJSON `json:"sessions"`
}

// backupInt reads a required non-negative integer field.
func backupInt(obj map[string]json.RawMessage, path, field string) (int64, *mautrix.RespError) {
	raw, ok := obj[field]
	if !ok {
		e := errMissingParam.WithMessage("%s%s is required", path, field)
		return 0, &e
	}
	text := string(bytes.TrimSpace(raw))
	digits := strings.TrimPrefix(text, "-")
	if digits == "" || strings.Trim(digits, "0123456789") != "" {
		e := mautrix.MBadJSON.WithMessage("%s%s must be an integer", path, field)
		return 0, &e
	}
	v, err := strconv.ParseInt(text, 10, 64)
	if err != nil || v < 0 || v > maxJSONSafeInt {
		e := mautrix.MInvalidParam.WithMessage("%s%s must be an integer from 0 to %d", path, field, int64(maxJSONSafeInt))
		return 0, &e
	}
	return v, nil
}

// parseBackupKey validates one KeyBackupData object; path prefixes field
// names in error messages.
func parseBackupKey(obj map[string]json.RawMessage, path string, roomID id.RoomID, sessionID id.SessionID) (*storage.BackupKey, *mautrix.RespError) {
	fieldErr := func(e mautrix.RespError) (*storage.BackupKey, *mautrix.RespError) { return nil, &e }
	key := &storage.BackupKey{RoomID: roomID, SessionID: sessionID}
	var rerr *mautrix.RespError
	if key.FirstMessageIndex, rerr = backupInt(obj, path, "first_message_index"); rerr != nil {
		return nil, rerr
	}
	if key.ForwardedCount, rerr = backupInt(obj, path, "forwarded_count"); rerr != nil {
		return nil, rerr
	}
	verified, ok := obj["is_verified"]
	if !ok {
		return fieldErr(errMissingParam.WithMessage("%sis_verified is required", path))
	}
	switch string(bytes.TrimSpace(verified)) {
	case "true":
		key.IsVerified = true
	case "false":
	default:
		return fieldErr(mautrix.MBadJSON.WithMessage("%sis_verified must be a boolean", path))
	}
	data, ok := obj["session_data"]
	if !ok {
		return fieldErr(errMissingParam.WithMessage("%ssession_data is required", path))
	}
	if !isJSONObject(data) {
		return fieldErr(mautrix.MBadJSON.WithMessage("%ssession_data must be an object", path))
	}
	var compact bytes.Buffer
	if err := json.Compact(&compact, data); err != nil {
		return fieldErr(mautrix.MBadJSON.WithMessage("%ssession_data must be an object", path))
	}
	if compact.Len() > maxBackupSessionDataBytes {
		return fieldErr(mautrix.MTooLarge.WithMessage("%ssession_data is limited to %d bytes", path, maxBackupSessionDataBytes))
	}
	key.SessionData = compact.Bytes()
	return key, nil
}

// parseRoomKeyBackup validates a RoomKeyBackup object ({"sessions": …}).
func parseRoomKeyBackup(obj map[string]json.RawMessage, path string, roomID id.RoomID) ([]*storage.BackupKey, *mautrix.RespError) {
	fieldErr := func(e mautrix.RespError) ([]*storage.BackupKey, *mautrix.RespError) { return nil, &e }
	rawSessions, ok := obj["sessions"]
	if !ok {
		return fieldErr(errMissingParam.WithMessage("%ssessions is required", path))
	}
	var sessions map[string]json.RawMessage
	if !isJSONObject(rawSessions) || json.Unmarshal(rawSessions, &sessions) != nil {
		return fieldErr(mautrix.MBadJSON.WithMessage("%ssessions must be an object", path))
	}
	keys := make([]*storage.BackupKey, 0, len(sessions))
	for sessionID, raw := range sessions {
		if !validSessionID(sessionID) {
			return fieldErr(mautrix.MInvalidParam.WithMessage("%ssessions: session IDs must be 1 to %d bytes", path, maxSessionIDBytes))
		}
		keyPath := path + "sessions." + sessionID
		var obj map[string]json.RawMessage
		if !isJSONObject(raw) || json.Unmarshal(raw, &obj) != nil {
			return fieldErr(mautrix.MBadJSON.WithMessage("%s must be an object", keyPath))
		}
		key, rerr := parseBackupKey(obj, keyPath+".", roomID, id.SessionID(sessionID))
		if rerr != nil {
			return nil, rerr
		}
		keys = append(keys, key)
	}
	return keys, nil
}

// backupKeysBody validates an upload at the target's level.
func backupKeysBody(body map[string]json.RawMessage, t backupKeysTarget) ([]*storage.BackupKey, *mautrix.RespError) {
	switch {
	case t.sessionID != "":
		key, rerr := parseBackupKey(body, "", t.roomID, t.sessionID)
		if rerr != nil {
			return nil, rerr
		}
		return []*storage.BackupKey{key}, nil
	case t.roomID != "":
		return parseRoomKeyBackup(body, "", t.roomID)
	}
	rawRooms, ok := body["rooms"]
	if !ok {
		e := errMissingParam.WithMessage("rooms is required")
		return nil, &e
	}
	var rooms map[string]json.RawMessage
	if !isJSONObject(rawRooms) || json.Unmarshal(rawRooms, &rooms) != nil {
		e := mautrix.MBadJSON.WithMessage("rooms must be an object")
		return nil, &e
	}
	var keys []*storage.BackupKey
	for roomID, raw := range rooms {
		if !validRoomID(roomID) {
			e := mautrix.MInvalidParam.WithMessage("rooms: %q is not a valid room ID", truncateForMessage(roomID))
			return nil, &e
		}
		path := "rooms." + roomID + "."
		var obj map[string]json.RawMessage
		if !isJSONObject(raw) || json.Unmarshal(raw, &obj) != nil {
			e := mautrix.MBadJSON.WithMessage("%s must be an object", strings.TrimSuffix(path, "."))
			return nil, &e
		}
		roomKeys, rerr := parseRoomKeyBackup(obj, path, id.RoomID(roomID))
		if rerr != nil {
			return nil, rerr
		}
		keys = append(keys, roomKeys...)
	}
	return keys, nil
}

// truncateForMessage shortens client-supplied text quoted in an error.
func truncateForMessage(s string) string {
	if len(s) <= 64 {
		return s
	}
	for i := 64; i > 0; i-- {
		if i < len(s) && s[i]&0xC0 != 0x80 {
			return s[:i] + "…"
		}
	}
	return ""
}

// keysUpdated answers an upload or deletion (RoomKeysUpdateResponse).
func keysUpdated(c *gin.Context, etag, count int64) {
	c.JSON(http.StatusOK, gin.H{"etag": formatBackupVersion(etag), "count": count})
}

func (a *API) putBackupKeys(c *gin.Context, sess *storage.Session) {
	t, ok := keysTarget(c)
	if !ok {
		return
	}
	body, ok := a.readJSON(c, nil)
	if !ok {
		return
	}
	keys, rerr := backupKeysBody(body, t)
	if rerr != nil {
		fail(c, *rerr)
		return
	}
	etag, count, err := a.db.PutBackupKeys(c.Request.Context(), sess.UserID, t.version, keys)
	if !a.backupError(c, err) {
		keysUpdated(c, etag, count)
	}
}

func (a *API) getBackupKeys(c *gin.Context, sess *storage.Session) {
	t, ok := issuedKeysTarget(c)
	if !ok {
		return
	}
	keys, err := a.db.GetBackupKeys(c.Request.Context(), sess.UserID, t.version, t.roomID, t.sessionID)
	if a.backupError(c, err) {
		return
	}
	switch {
	case t.sessionID != "":
		if len(keys) == 0 {
			fail(c, mautrix.MNotFound.WithMessage("Key not found"))
			return
		}
		c.JSON(http.StatusOK, toBackupKeyJSON(keys[0]))
	case t.roomID != "":
		room := roomKeyBackupJSON{Sessions: make(map[id.SessionID]backupKeyJSON, len(keys))}
		for _, k := range keys {
			room.Sessions[k.SessionID] = toBackupKeyJSON(k)
		}
		c.JSON(http.StatusOK, room)
	default:
		rooms := map[id.RoomID]roomKeyBackupJSON{}
		for _, k := range keys {
			room, ok := rooms[k.RoomID]
			if !ok {
				room = roomKeyBackupJSON{Sessions: map[id.SessionID]backupKeyJSON{}}
				rooms[k.RoomID] = room
			}
			room.Sessions[k.SessionID] = toBackupKeyJSON(k)
		}
		c.JSON(http.StatusOK, gin.H{"rooms": rooms})
	}
}

func toBackupKeyJSON(k *storage.BackupKey) backupKeyJSON {
	return backupKeyJSON{
		FirstMessageIndex: k.FirstMessageIndex,
		ForwardedCount:    k.ForwardedCount,
		IsVerified:        k.IsVerified,
		SessionData:       k.SessionData,
	}
}

func (a *API) deleteBackupKeys(c *gin.Context, sess *storage.Session) {
	t, ok := issuedKeysTarget(c)
	if !ok {
		return
	}
	etag, count, err := a.db.DeleteBackupKeys(c.Request.Context(), sess.UserID, t.version, t.roomID, t.sessionID)
	if !a.backupError(c, err) {
		keysUpdated(c, etag, count)
	}
}
