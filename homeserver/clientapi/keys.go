package clientapi

// End-to-end encryption key distribution (client-server "Key management
// API" and "Cross-signing"): devices publish identity, one-time and
// fallback keys, others query and claim them, cross-signing keys and
// signatures tie devices and users together, and device-list changes
// reach the users who share a room through /sync and /keys/changes.
// Remote users are reported in failures until federation arrives.

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strings"

	"github.com/gin-gonic/gin"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/crypto/canonicaljson"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/federation/signutil"
	"maunium.net/go/mautrix/id"

	"github.com/switchboard-im/switchboard/homeserver/storage"
	"github.com/switchboard-im/switchboard/homeserver/syncapi"
)

// registerKeys mounts the key endpoints on a client API prefix group.
func (a *API) registerKeys(g gin.IRouter) {
	g.POST("/keys/upload", a.authed(a.postKeysUpload))
	g.POST("/keys/query", a.authed(a.postKeysQuery))
	g.POST("/keys/claim", a.authed(a.postKeysClaim))
	g.GET("/keys/changes", a.authed(a.getKeysChanges))
	g.POST("/keys/device_signing/upload", a.authed(a.postDeviceSigningUpload))
	g.POST("/keys/signatures/upload", a.authed(a.postSignaturesUpload))
}

var errInvalidSignature = mautrix.RespError{ErrCode: "M_INVALID_SIGNATURE", StatusCode: http.StatusBadRequest}

// Limits on the names keys are stored under: they end up in primary keys,
// which PostgreSQL cannot index beyond about 2.7 KB.
const (
	maxKeyAlgorithmBytes = 128
	maxKeyIDBytes        = 255
)

// signedCurve25519 is Olm's one-time key algorithm; its count is reported
// even at zero, as Synapse does and clients expect.
const signedCurve25519 = "signed_curve25519"

// remoteFailure is what failures says about a server we cannot ask.
var remoteFailure = map[string]any{"status": http.StatusServiceUnavailable, "message": "Federation is not available on this server"}

// parseKeyName splits "<algorithm>:<key_id>".
func parseKeyName(name string) (algorithm, keyID string, ok bool) {
	algorithm, keyID, ok = strings.Cut(name, ":")
	return algorithm, keyID, ok && algorithm != "" && keyID != "" &&
		len(algorithm) <= maxKeyAlgorithmBytes && len(keyID) <= maxKeyIDBytes
}

// validKey25519 reports whether s is an unpadded base64 32-byte key.
func validKey25519(s string) bool {
	b, err := base64.RawStdEncoding.DecodeString(s)
	return err == nil && len(b) == 32
}

// canonical re-encodes a JSON value as canonical JSON.
func canonical(raw []byte) ([]byte, error) {
	out, err := canonicaljson.Marshal(json.RawMessage(raw))
	if err != nil {
		return nil, err
	}
	return []byte(out), nil
}

// signedObject is a signed JSON object split into its fields, with the
// signatures decoded.
type signedObject struct {
	fields     map[string]json.RawMessage
	signatures map[id.UserID]map[string]string
}

// parseSignedObject reads a signed JSON object. what names it in errors.
func parseSignedObject(raw []byte, what string) (*signedObject, *mautrix.RespError) {
	raw = bytes.TrimSpace(raw)
	var obj signedObject
	if len(raw) == 0 || raw[0] != '{' || json.Unmarshal(raw, &obj.fields) != nil {
		e := mautrix.MBadJSON.WithMessage("%s must be an object", what)
		return nil, &e
	}
	// signatures stays nil when the object has none.
	if sigs, ok := obj.fields["signatures"]; ok && string(sigs) != "null" {
		if err := json.Unmarshal(sigs, &obj.signatures); err != nil || obj.signatures == nil {
			e := mautrix.MBadJSON.WithMessage("%s.signatures must map user IDs to objects of key IDs and signatures", what)
			return nil, &e
		}
	}
	return &obj, nil
}

// stored returns the object as it is kept: canonical JSON, without
// unsigned, with only the signatures of owner (nobody may publish
// signatures in another user's name).
func (o *signedObject) stored(owner id.UserID) ([]byte, error) {
	fields := make(map[string]json.RawMessage, len(o.fields))
	for k, v := range o.fields {
		if k != "unsigned" && k != "signatures" {
			fields[k] = v
		}
	}
	if own := o.signatures[owner]; len(own) > 0 {
		sigs, err := json.Marshal(map[id.UserID]map[string]string{owner: own})
		if err != nil {
			return nil, err
		}
		fields["signatures"] = sigs
	}
	raw, err := json.Marshal(fields)
	if err != nil {
		return nil, err
	}
	return canonical(raw)
}

// unsignedContent is the canonical JSON of what a signature covers: the
// object without signatures and unsigned.
func unsignedContent(raw []byte) ([]byte, error) {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(raw, &fields); err != nil {
		return nil, err
	}
	delete(fields, "signatures")
	delete(fields, "unsigned")
	b, err := json.Marshal(fields)
	if err != nil {
		return nil, err
	}
	return canonical(b)
}

// verifySignature checks signer's signature with the ed25519 key pub
// (keyID "ed25519:…") on the signed object raw.
func verifySignature(raw []byte, signer id.UserID, keyID, pub string) bool {
	return signutil.VerifyJSON(string(signer), id.KeyID(keyID), id.SigningKey(pub), json.RawMessage(raw)) == nil
}

// wakeKeyChange wakes the syncs that a device-list change at pos concerns:
// the user's and, unless only the user may see it, those of everyone
// sharing a joined room with them.
func (a *API) wakeKeyChange(ctx context.Context, pos int64, userID id.UserID, public bool) {
	if a.notifier == nil || pos == 0 {
		return
	}
	var joined []id.RoomID
	if public {
		if memberships, err := a.db.UserRooms(ctx, userID); err == nil {
			for _, m := range memberships {
				if m.Membership == string(event.MembershipJoin) {
					joined = append(joined, m.RoomID)
				}
			}
		}
	}
	a.notifier.Wake(pos, []id.UserID{userID}, joined)
}

// wakeKeyCounts tells the appservice pushers that one-time or fallback key
// counts changed (MSC3202 sends them to appservices; they have no stream
// position, like typing).
func (a *API) wakeKeyCounts() {
	if a.notifier != nil {
		a.notifier.Wake(0, nil, nil)
	}
}

// removeDevices runs remove, which deletes devices of userID, in one
// transaction with deleting their keys and recording the device-list
// change, then wakes those who track the user's devices.
func (a *API) removeDevices(ctx context.Context, userID id.UserID, remove func(ctx context.Context) error) error {
	var pos int64
	err := a.db.DoTxn(ctx, nil, func(ctx context.Context) error {
		if err := remove(ctx); err != nil {
			return err
		}
		var err error
		pos, err = a.db.SweepDeviceKeys(ctx, userID)
		return err
	})
	if err != nil {
		return err
	}
	a.wakeKeyChange(ctx, pos, userID, true)
	return nil
}

// devicesRemoved records the key changes of devices deleted elsewhere (a
// password change, deactivation), after the fact; a failure is caught up
// on by the next sweep.
func (a *API) devicesRemoved(c *gin.Context, userID id.UserID) {
	ctx := c.Request.Context()
	pos, err := a.db.SweepDeviceKeys(ctx, userID)
	if err != nil {
		zerologFromGin(c).Warn().Err(err).Msg("Failed to delete the keys of deleted devices")
		return
	}
	a.wakeKeyChange(ctx, pos, userID, true)
}

// --- POST /keys/upload ---

func (a *API) postKeysUpload(c *gin.Context, sess *storage.Session) {
	var req struct {
		DeviceKeys   json.RawMessage            `json:"device_keys"`
		OneTimeKeys  map[string]json.RawMessage `json:"one_time_keys"`
		FallbackKeys map[string]json.RawMessage `json:"fallback_keys"`
		// The name before fallback keys were in the spec (MSC2732).
		UnstableFallbackKeys map[string]json.RawMessage `json:"org.matrix.msc2732.fallback_keys"`
	}
	if _, ok := a.readJSON(c, &req); !ok {
		return
	}
	if sess.DeviceID == "" {
		fail(c, errMissingParam.WithMessage("Keys belong to a device: an application service must name one with device_id"))
		return
	}
	up := &storage.KeyUpload{UserID: sess.UserID, DeviceID: sess.DeviceID}
	if len(req.DeviceKeys) > 0 && string(req.DeviceKeys) != "null" {
		if e := parseDeviceKeys(req.DeviceKeys, sess, up); e != nil {
			fail(c, *e)
			return
		}
	}
	var e *mautrix.RespError
	if up.OneTimeKeys, e = parseOneTimeKeys(req.OneTimeKeys, "one_time_keys"); e != nil {
		fail(c, *e)
		return
	}
	fallback := req.FallbackKeys
	if fallback == nil {
		fallback = req.UnstableFallbackKeys
	}
	if up.FallbackKeys, e = parseOneTimeKeys(fallback, "fallback_keys"); e != nil {
		fail(c, *e)
		return
	}
	seen := map[string]bool{}
	for _, k := range up.FallbackKeys {
		if seen[k.Algorithm] {
			fail(c, mautrix.MInvalidParam.WithMessage("fallback_keys may hold one key per algorithm, not several of %s", k.Algorithm))
			return
		}
		seen[k.Algorithm] = true
	}
	ctx := c.Request.Context()
	res, err := a.db.UploadKeys(ctx, up)
	var conflict *storage.KeyConflictError
	if errors.As(err, &conflict) {
		fail(c, mautrix.MInvalidParam.WithMessage("%s", conflict.Reason))
		return
	} else if err != nil {
		a.internalError(c, err)
		return
	}
	a.wakeKeyChange(ctx, res.ChangePos, sess.UserID, true)
	if len(up.OneTimeKeys) > 0 || len(up.FallbackKeys) > 0 {
		a.wakeKeyCounts()
	}
	if _, ok := res.OneTimeKeyCounts[signedCurve25519]; !ok {
		res.OneTimeKeyCounts[signedCurve25519] = 0
	}
	c.JSON(http.StatusOK, gin.H{"one_time_key_counts": res.OneTimeKeyCounts})
}

// parseDeviceKeys checks an uploaded device_keys object: it must be the
// session's device, carry its ed25519 key and be signed by it.
func parseDeviceKeys(raw json.RawMessage, sess *storage.Session, up *storage.KeyUpload) *mautrix.RespError {
	obj, e := parseSignedObject(raw, "device_keys")
	if e != nil {
		return e
	}
	var dk struct {
		UserID     *string           `json:"user_id"`
		DeviceID   *string           `json:"device_id"`
		Algorithms []string          `json:"algorithms"`
		Keys       map[string]string `json:"keys"`
	}
	if err := json.Unmarshal(raw, &dk); err != nil {
		e := mautrix.MBadJSON.WithMessage("device_keys: %s", describeJSONError(err))
		return &e
	}
	bad := func(err mautrix.RespError, format string, args ...any) *mautrix.RespError {
		e := err.WithMessage(format, args...)
		return &e
	}
	switch {
	case dk.UserID == nil || dk.DeviceID == nil || dk.Algorithms == nil || dk.Keys == nil || obj.signatures == nil:
		return bad(errMissingParam, "device_keys needs user_id, device_id, algorithms, keys and signatures")
	case id.UserID(*dk.UserID) != sess.UserID:
		return bad(mautrix.MInvalidParam, "device_keys.user_id must be your user ID %s", sess.UserID)
	case id.DeviceID(*dk.DeviceID) != sess.DeviceID:
		return bad(mautrix.MInvalidParam, "device_keys.device_id must be this session's device %s", sess.DeviceID)
	}
	edName := "ed25519:" + string(sess.DeviceID)
	ed := dk.Keys[edName]
	if !validKey25519(ed) {
		return bad(mautrix.MInvalidParam, "device_keys.keys must hold the device's %s as an unpadded base64 32-byte key", edName)
	}
	curve, hasCurve := dk.Keys["curve25519:"+string(sess.DeviceID)]
	if hasCurve && !validKey25519(curve) {
		return bad(mautrix.MInvalidParam, "device_keys.keys curve25519:%s must be an unpadded base64 32-byte key", sess.DeviceID)
	}
	if _, signed := obj.signatures[sess.UserID][edName]; !signed {
		return bad(errInvalidSignature, "device_keys must be signed by the device's own %s key", edName)
	}
	if !verifySignature(raw, sess.UserID, edName, ed) {
		return bad(errInvalidSignature, "device_keys has an invalid signature by %s", edName)
	}
	stored, err := obj.stored(sess.UserID)
	if err != nil {
		return bad(mautrix.MBadJSON, "device_keys cannot be encoded as canonical JSON")
	}
	up.DeviceKeys, up.Ed25519, up.Curve25519 = stored, ed, curve
	return nil
}

// parseOneTimeKeys checks one_time_keys or fallback_keys: names
// "<algorithm>:<key_id>", values a key string or a key object with a key
// string (signatures are the claimer's to check).
func parseOneTimeKeys(keys map[string]json.RawMessage, what string) ([]storage.OneTimeKey, *mautrix.RespError) {
	out := make([]storage.OneTimeKey, 0, len(keys))
	for name, raw := range keys {
		alg, keyID, ok := parseKeyName(name)
		if !ok {
			e := mautrix.MInvalidParam.WithMessage("%s names must be <algorithm>:<key_id> of at most %d and %d bytes, not %q",
				what, maxKeyAlgorithmBytes, maxKeyIDBytes, name)
			return nil, &e
		}
		raw = bytes.TrimSpace(raw)
		switch {
		case len(raw) > 0 && raw[0] == '"':
			var s string
			if json.Unmarshal(raw, &s) != nil || s == "" {
				e := mautrix.MBadJSON.WithMessage("%s[%q] must be a key", what, name)
				return nil, &e
			}
		case len(raw) > 0 && raw[0] == '{':
			obj, e := parseSignedObject(raw, fmt.Sprintf("%s[%q]", what, name))
			if e != nil {
				return nil, e
			}
			var key string
			if json.Unmarshal(obj.fields["key"], &key) != nil || key == "" {
				e := mautrix.MBadJSON.WithMessage("%s[%q].key must be a string", what, name)
				return nil, &e
			}
		default:
			e := mautrix.MBadJSON.WithMessage("%s[%q] must be a key string or a key object", what, name)
			return nil, &e
		}
		js, err := canonical(raw)
		if err != nil {
			e := mautrix.MBadJSON.WithMessage("%s[%q] cannot be encoded as canonical JSON", what, name)
			return nil, &e
		}
		out = append(out, storage.OneTimeKey{Algorithm: alg, KeyID: keyID, JSON: js})
	}
	// Upload order is all a claim orders by; within one request the spec
	// leaves it open, a stable order makes it repeatable.
	slices.SortFunc(out, func(a, b storage.OneTimeKey) int {
		return strings.Compare(a.Algorithm+":"+a.KeyID, b.Algorithm+":"+b.KeyID)
	})
	return out, nil
}

// --- POST /keys/query ---

// splitUsers splits the user IDs that key a request's map into ours
// (sorted) and those of other servers (by server); for an invalid user ID
// it answers M_INVALID_PARAM and returns false.
func splitUsers[V any](a *API, c *gin.Context, byUser map[string]V) (local []id.UserID, remote map[string][]id.UserID, ok bool) {
	remote = map[string][]id.UserID{}
	for u := range byUser {
		userID := id.UserID(u)
		_, server, err := userID.Parse()
		if err != nil || len(u) > 255 {
			fail(c, mautrix.MInvalidParam.WithMessage("%q is not a valid user ID", u))
			return nil, nil, false
		}
		if server == a.cfg.ServerName {
			local = append(local, userID)
		} else {
			remote[server] = append(remote[server], userID)
		}
	}
	slices.Sort(local)
	return local, remote, true
}

// signatureIndex holds the added signatures visible to one requester, by
// target user and key: those by the key's owner (self-signing on devices,
// devices on the master key) and the requester's own (their user-signing
// key on others' master keys). Other users' user-signing signatures are
// hidden, as the spec requires.
type signatureIndex map[id.UserID]map[string][]storage.KeySignature

func newSignatureIndex(sigs []storage.KeySignature, requester id.UserID) signatureIndex {
	idx := signatureIndex{}
	for _, s := range sigs {
		if s.SignerUserID != s.TargetUserID && s.SignerUserID != requester {
			continue
		}
		if idx[s.TargetUserID] == nil {
			idx[s.TargetUserID] = map[string][]storage.KeySignature{}
		}
		idx[s.TargetUserID][s.TargetKeyID] = append(idx[s.TargetUserID][s.TargetKeyID], s)
	}
	return idx
}

// render returns a stored key object with the visible added signatures
// merged in, and unsigned set when given.
func (idx signatureIndex) render(keyJSON json.RawMessage, userID id.UserID, keyID string, unsigned map[string]any) (json.RawMessage, error) {
	extra := idx[userID][keyID]
	if len(extra) == 0 && unsigned == nil {
		return keyJSON, nil
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(keyJSON, &fields); err != nil {
		return nil, fmt.Errorf("stored key of %s %s: %w", userID, keyID, err)
	}
	if len(extra) > 0 {
		sigs := map[id.UserID]map[string]string{}
		if raw, ok := fields["signatures"]; ok {
			if err := json.Unmarshal(raw, &sigs); err != nil {
				return nil, fmt.Errorf("stored signatures of %s %s: %w", userID, keyID, err)
			}
		}
		for _, s := range extra {
			if sigs[s.SignerUserID] == nil {
				sigs[s.SignerUserID] = map[string]string{}
			}
			sigs[s.SignerUserID][s.SignerKeyID] = s.Signature
		}
		raw, err := json.Marshal(sigs)
		if err != nil {
			return nil, err
		}
		fields["signatures"] = raw
	}
	if unsigned != nil {
		raw, err := json.Marshal(unsigned)
		if err != nil {
			return nil, err
		}
		fields["unsigned"] = raw
	}
	return json.Marshal(fields)
}

type keysQueryResponse struct {
	Failures        map[string]any                                `json:"failures"`
	DeviceKeys      map[id.UserID]map[id.DeviceID]json.RawMessage `json:"device_keys"`
	MasterKeys      map[id.UserID]json.RawMessage                 `json:"master_keys"`
	SelfSigningKeys map[id.UserID]json.RawMessage                 `json:"self_signing_keys"`
	UserSigningKeys map[id.UserID]json.RawMessage                 `json:"user_signing_keys"`
}

func (a *API) postKeysQuery(c *gin.Context, sess *storage.Session) {
	var req struct {
		DeviceKeys map[string][]string `json:"device_keys"`
		// Accepted and unused: no remote server is asked yet.
		Timeout *float64 `json:"timeout"`
	}
	raw, ok := a.readJSON(c, &req)
	if !ok {
		return
	}
	if _, present := raw["device_keys"]; !present {
		fail(c, errMissingParam.WithMessage("device_keys is required"))
		return
	}
	local, remote, ok := splitUsers(a, c, req.DeviceKeys)
	if !ok {
		return
	}
	resp, err := a.queryKeys(c.Request.Context(), sess.UserID, local, func(userID id.UserID) []string { return req.DeviceKeys[string(userID)] })
	if err != nil {
		a.internalError(c, err)
		return
	}
	for server := range remote {
		resp.Failures[server] = remoteFailure
	}
	body, err := resp.encode()
	if err != nil {
		a.internalError(c, err)
		return
	}
	c.Data(http.StatusOK, "application/json; charset=utf-8", body)
}

// encode writes the response with the key objects copied as they are:
// they are JSON this server wrote, and encoding/json would parse every one
// of them again (a third of a 1,000-user query's time).
func (r *keysQueryResponse) encode() ([]byte, error) {
	var b bytes.Buffer
	failures, err := json.Marshal(r.Failures)
	if err != nil {
		return nil, err
	}
	b.WriteString(`{"failures":`)
	b.Write(failures)
	b.WriteString(`,"device_keys":{`)
	for i, user := range slices.Sorted(maps.Keys(r.DeviceKeys)) {
		if i > 0 {
			b.WriteByte(',')
		}
		writeJSONString(&b, string(user))
		b.WriteString(`:{`)
		devices := r.DeviceKeys[user]
		for j, device := range slices.Sorted(maps.Keys(devices)) {
			if j > 0 {
				b.WriteByte(',')
			}
			writeJSONString(&b, string(device))
			b.WriteByte(':')
			b.Write(devices[device])
		}
		b.WriteByte('}')
	}
	b.WriteByte('}')
	for _, section := range []struct {
		name string
		keys map[id.UserID]json.RawMessage
	}{{"master_keys", r.MasterKeys}, {"self_signing_keys", r.SelfSigningKeys}, {"user_signing_keys", r.UserSigningKeys}} {
		b.WriteString(`,"` + section.name + `":{`)
		for i, user := range slices.Sorted(maps.Keys(section.keys)) {
			if i > 0 {
				b.WriteByte(',')
			}
			writeJSONString(&b, string(user))
			b.WriteByte(':')
			b.Write(section.keys[user])
		}
		b.WriteByte('}')
	}
	b.WriteByte('}')
	return b.Bytes(), nil
}

func writeJSONString(b *bytes.Buffer, s string) {
	quoted, _ := json.Marshal(s) // a string always marshals
	b.Write(quoted)
}

// queryKeys answers /keys/query for local users as requester sees them;
// devices(user) lists the wanted device IDs (none: all).
func (a *API) queryKeys(ctx context.Context, requester id.UserID, users []id.UserID, devices func(id.UserID) []string) (*keysQueryResponse, error) {
	resp := &keysQueryResponse{
		Failures:        map[string]any{},
		DeviceKeys:      make(map[id.UserID]map[id.DeviceID]json.RawMessage, len(users)),
		MasterKeys:      map[id.UserID]json.RawMessage{},
		SelfSigningKeys: map[id.UserID]json.RawMessage{},
		UserSigningKeys: map[id.UserID]json.RawMessage{},
	}
	if len(users) == 0 {
		return resp, nil
	}
	for _, u := range users {
		resp.DeviceKeys[u] = map[id.DeviceID]json.RawMessage{}
	}
	deviceKeys, err := a.db.DeviceKeysOf(ctx, users)
	if err != nil {
		return nil, err
	}
	crossSigning, err := a.db.CrossSigningKeysOf(ctx, users)
	if err != nil {
		return nil, err
	}
	sigs, err := a.db.SignaturesOn(ctx, users)
	if err != nil {
		return nil, err
	}
	idx := newSignatureIndex(sigs, requester)
	wanted := map[id.UserID]map[string]bool{}
	for _, u := range users {
		if list := devices(u); len(list) > 0 {
			wanted[u] = make(map[string]bool, len(list))
			for _, d := range list {
				wanted[u][d] = true
			}
		}
	}
	for _, dk := range deviceKeys {
		if w := wanted[dk.UserID]; w != nil && !w[string(dk.DeviceID)] {
			continue
		}
		var unsigned map[string]any
		if dk.DisplayName != nil {
			unsigned = map[string]any{"device_display_name": *dk.DisplayName}
		}
		out, err := idx.render(dk.KeyJSON, dk.UserID, string(dk.DeviceID), unsigned)
		if err != nil {
			return nil, err
		}
		resp.DeviceKeys[dk.UserID][dk.DeviceID] = out
	}
	for _, k := range crossSigning {
		var target map[id.UserID]json.RawMessage
		switch k.Type {
		case storage.CrossSigningMaster:
			target = resp.MasterKeys
		case storage.CrossSigningSelfSigning:
			target = resp.SelfSigningKeys
		case storage.CrossSigningUserSigning:
			// Only its owner sees a user-signing key.
			if k.UserID != requester {
				continue
			}
			target = resp.UserSigningKeys
		default:
			continue
		}
		out, err := idx.render(k.JSON, k.UserID, k.PublicKey, nil)
		if err != nil {
			return nil, err
		}
		target[k.UserID] = out
	}
	return resp, nil
}

// --- POST /keys/claim ---

func (a *API) postKeysClaim(c *gin.Context, sess *storage.Session) {
	var req struct {
		OneTimeKeys map[string]map[string]string `json:"one_time_keys"`
		Timeout     *float64                     `json:"timeout"`
	}
	raw, ok := a.readJSON(c, &req)
	if !ok {
		return
	}
	if _, present := raw["one_time_keys"]; !present {
		fail(c, errMissingParam.WithMessage("one_time_keys is required"))
		return
	}
	local, remote, ok := splitUsers(a, c, req.OneTimeKeys)
	if !ok {
		return
	}
	var claims []storage.KeyClaim
	for _, u := range local {
		byDevice := req.OneTimeKeys[string(u)]
		deviceIDs := make([]string, 0, len(byDevice))
		for d := range byDevice {
			deviceIDs = append(deviceIDs, d)
		}
		slices.Sort(deviceIDs)
		for _, d := range deviceIDs {
			alg := byDevice[d]
			if alg == "" || len(alg) > maxKeyAlgorithmBytes {
				fail(c, mautrix.MInvalidParam.WithMessage("one_time_keys[%q][%q] must be a key algorithm", u, d))
				return
			}
			claims = append(claims, storage.KeyClaim{UserID: u, DeviceID: id.DeviceID(d), Algorithm: alg})
		}
	}
	claimed, err := a.db.ClaimKeys(c.Request.Context(), claims)
	if err != nil {
		a.internalError(c, err)
		return
	}
	if len(claimed) > 0 {
		a.wakeKeyCounts()
	}
	keys := map[id.UserID]map[id.DeviceID]map[string]json.RawMessage{}
	for _, k := range claimed {
		if keys[k.UserID] == nil {
			keys[k.UserID] = map[id.DeviceID]map[string]json.RawMessage{}
		}
		keys[k.UserID][k.DeviceID] = map[string]json.RawMessage{k.Algorithm + ":" + k.KeyID: k.JSON}
	}
	failures := map[string]any{}
	for server := range remote {
		failures[server] = remoteFailure
	}
	c.JSON(http.StatusOK, gin.H{"one_time_keys": keys, "failures": failures})
}

// --- GET /keys/changes ---

func (a *API) getKeysChanges(c *gin.Context, sess *storage.Session) {
	rawFrom := c.Query("from")
	if rawFrom == "" {
		fail(c, errMissingParam.WithMessage("from is required"))
		return
	}
	from, err := syncapi.ParseToken(rawFrom)
	if err != nil {
		fail(c, mautrix.MInvalidParam.WithMessage("from is not a sync token"))
		return
	}
	ctx := c.Request.Context()
	upto, err := a.db.CurrentStreamPos(ctx)
	if err != nil {
		a.internalError(c, err)
		return
	}
	if rawTo := c.Query("to"); rawTo != "" {
		to, err := syncapi.ParseToken(rawTo)
		if err != nil {
			fail(c, mautrix.MInvalidParam.WithMessage("to is not a sync token"))
			return
		}
		upto = min(upto, to.Pos)
	}
	changed, left, err := a.syncer().DeviceListChanges(ctx, sess.UserID, from.Pos, upto)
	if err != nil {
		a.internalError(c, err)
		return
	}
	c.JSON(http.StatusOK, gin.H{"changed": changed, "left": left})
}

// --- POST /keys/device_signing/upload ---

// crossSigningUpload is one key of a device_signing upload, checked.
type crossSigningUpload struct {
	key storage.CrossSigningKey
	raw json.RawMessage
}

// parseCrossSigningKey checks an uploaded cross-signing key of the given
// usage: the user's own, with exactly one ed25519 key named after itself.
func parseCrossSigningKey(raw json.RawMessage, usage, what string, owner id.UserID) (*crossSigningUpload, *mautrix.RespError) {
	obj, e := parseSignedObject(raw, what)
	if e != nil {
		return nil, e
	}
	var k struct {
		UserID *string           `json:"user_id"`
		Usage  []string          `json:"usage"`
		Keys   map[string]string `json:"keys"`
	}
	if err := json.Unmarshal(raw, &k); err != nil {
		e := mautrix.MBadJSON.WithMessage("%s: %s", what, describeJSONError(err))
		return nil, &e
	}
	bad := func(err mautrix.RespError, format string, args ...any) (*crossSigningUpload, *mautrix.RespError) {
		e := err.WithMessage(format, args...)
		return nil, &e
	}
	if k.UserID == nil || k.Usage == nil || k.Keys == nil {
		return bad(errMissingParam, "%s needs user_id, usage and keys", what)
	}
	if id.UserID(*k.UserID) != owner {
		return bad(mautrix.MInvalidParam, "%s.user_id must be your user ID %s", what, owner)
	}
	if !slices.Contains(k.Usage, usage) {
		return bad(mautrix.MInvalidParam, "%s.usage must include %s", what, usage)
	}
	if len(k.Keys) != 1 {
		return bad(mautrix.MInvalidParam, "%s.keys must hold exactly one key", what)
	}
	var pub string
	for name, value := range k.Keys {
		if name != "ed25519:"+value || !validKey25519(value) {
			return bad(mautrix.MInvalidParam, "%s.keys must be {\"ed25519:<key>\": \"<key>\"} with an unpadded base64 32-byte key", what)
		}
		pub = value
	}
	stored, err := obj.stored(owner)
	if err != nil {
		return bad(mautrix.MBadJSON, "%s cannot be encoded as canonical JSON", what)
	}
	return &crossSigningUpload{key: storage.CrossSigningKey{UserID: owner, Type: usage, PublicKey: pub, JSON: stored}, raw: raw}, nil
}

func (a *API) postDeviceSigningUpload(c *gin.Context, sess *storage.Session) {
	var req struct {
		Master      json.RawMessage `json:"master_key"`
		SelfSigning json.RawMessage `json:"self_signing_key"`
		UserSigning json.RawMessage `json:"user_signing_key"`
	}
	auth, ok := a.readJSONWithAuth(c, &req)
	if !ok {
		return
	}
	var uploads []*crossSigningUpload
	byType := map[string]*crossSigningUpload{}
	for _, part := range []struct {
		raw         json.RawMessage
		usage, name string
	}{
		{req.Master, storage.CrossSigningMaster, "master_key"},
		{req.SelfSigning, storage.CrossSigningSelfSigning, "self_signing_key"},
		{req.UserSigning, storage.CrossSigningUserSigning, "user_signing_key"},
	} {
		if len(part.raw) == 0 || string(part.raw) == "null" {
			continue
		}
		up, e := parseCrossSigningKey(part.raw, part.usage, part.name, sess.UserID)
		if e != nil {
			fail(c, *e)
			return
		}
		uploads = append(uploads, up)
		byType[part.usage] = up
	}
	ctx := c.Request.Context()
	if len(uploads) == 0 {
		c.JSON(http.StatusOK, gin.H{})
		return
	}
	current, err := a.db.CrossSigningKeysOf(ctx, []id.UserID{sess.UserID})
	if err != nil {
		a.internalError(c, err)
		return
	}
	stored := map[string]storage.CrossSigningKey{}
	for _, k := range current {
		stored[k.Type] = k
	}
	master := stored[storage.CrossSigningMaster].PublicKey
	if m := byType[storage.CrossSigningMaster]; m != nil {
		master = m.key.PublicKey
	}
	for _, usage := range []string{storage.CrossSigningSelfSigning, storage.CrossSigningUserSigning} {
		up := byType[usage]
		if up == nil {
			continue
		}
		if master == "" {
			fail(c, errMissingParam.WithMessage("No master key: upload one with (or before) the %s key", usage))
			return
		}
		if !verifySignature(up.raw, sess.UserID, "ed25519:"+master, master) {
			fail(c, errInvalidSignature.WithMessage("The %s key is not signed by the master key", usage))
			return
		}
	}
	for _, up := range uploads {
		if _, err := a.db.GetDevice(ctx, sess.UserID, id.DeviceID(up.key.PublicKey)); err == nil {
			fail(c, mautrix.MForbidden.WithMessage("The %s key's public key is the ID of one of your devices", up.key.Type))
			return
		} else if !errors.Is(err, storage.ErrNotFound) {
			a.internalError(c, err)
			return
		}
	}
	// User-interactive auth protects existing keys from being replaced
	// with a stolen access token. It is skipped when the user has no
	// master key yet (MSC3967), when the upload only repeats the stored
	// keys (a retry after a lost response), and for appservices.
	storedMaster := stored[storage.CrossSigningMaster].PublicKey
	needUIA := storedMaster != "" && sess.AppserviceID == ""
	if needUIA {
		same := true
		for _, up := range uploads {
			if stored[up.key.Type].PublicKey != up.key.PublicKey {
				same = false
			}
		}
		needUIA = !same
	}
	var uiaSession string
	for attempt := 0; ; attempt++ {
		if needUIA && uiaSession == "" {
			uia := a.runUIA(c, uiaRequest{flows: passwordFlows, user: sess.UserID, auth: auth})
			if uia == nil {
				return
			}
			uiaSession = uia.SessionID
		}
		keys := make([]storage.CrossSigningKey, len(uploads))
		for i, up := range uploads {
			keys[i] = up.key
		}
		pos, err := a.db.SetCrossSigningKeys(ctx, sess.UserID, keys, storedMaster)
		if errors.Is(err, storage.ErrCrossSigningChanged) && attempt == 0 {
			// Another upload won the race: judge again against its keys
			// (a master key now exists, so this one needs auth).
			current, err := a.db.CrossSigningKeysOf(ctx, []id.UserID{sess.UserID})
			if err != nil {
				a.internalError(c, err)
				return
			}
			storedMaster = ""
			for _, k := range current {
				if k.Type == storage.CrossSigningMaster {
					storedMaster = k.PublicKey
				}
			}
			needUIA = needUIA || (storedMaster != "" && sess.AppserviceID == "")
			continue
		} else if errors.Is(err, storage.ErrCrossSigningChanged) {
			fail(c, mautrix.MUnknown.WithMessage("Your cross-signing keys are being changed by another request; try again").WithStatus(http.StatusConflict))
			return
		} else if err != nil {
			a.internalError(c, err)
			return
		}
		if uiaSession != "" {
			_ = a.db.DeleteUIASession(ctx, uiaSession)
		}
		a.wakeKeyChange(ctx, pos, sess.UserID, true)
		c.JSON(http.StatusOK, gin.H{})
		return
	}
}

// --- POST /keys/signatures/upload ---

// signatureFailure is one entry of the failures map.
func signatureFailure(e mautrix.RespError, format string, args ...any) map[string]string {
	return map[string]string{"errcode": e.ErrCode, "error": fmt.Sprintf(format, args...)}
}

func (a *API) postSignaturesUpload(c *gin.Context, sess *storage.Session) {
	var req map[string]map[string]json.RawMessage
	if _, ok := a.readJSON(c, &req); !ok {
		return
	}
	ctx := c.Request.Context()
	me := sess.UserID
	local, remote, ok := splitUsers(a, c, req)
	if !ok {
		return
	}
	failures := map[id.UserID]map[string]any{}
	addFailure := func(user id.UserID, keyID string, f map[string]string) {
		if failures[user] == nil {
			failures[user] = map[string]any{}
		}
		failures[user][keyID] = f
	}
	for _, users := range remote {
		for _, u := range users {
			for keyID := range req[string(u)] {
				addFailure(u, keyID, signatureFailure(mautrix.MUnknown, "Keys of other servers cannot be signed here yet"))
			}
		}
	}
	lookup := append(slices.Clone(local), me)
	crossSigning, err := a.db.CrossSigningKeysOf(ctx, lookup)
	if err != nil {
		a.internalError(c, err)
		return
	}
	csk := map[id.UserID]map[string]storage.CrossSigningKey{}
	for _, k := range crossSigning {
		if csk[k.UserID] == nil {
			csk[k.UserID] = map[string]storage.CrossSigningKey{}
		}
		csk[k.UserID][k.Type] = k
	}
	ownDevices, err := a.db.DeviceKeysOf(ctx, []id.UserID{me})
	if err != nil {
		a.internalError(c, err)
		return
	}
	devices := map[string]storage.StoredDeviceKeys{}
	for _, d := range ownDevices {
		devices[string(d.DeviceID)] = d
	}

	var sigs []storage.KeySignature
	changed := map[storage.DeviceListChange]bool{}
	for _, target := range local {
		keyIDs := make([]string, 0, len(req[string(target)]))
		for keyID := range req[string(target)] {
			keyIDs = append(keyIDs, keyID)
		}
		slices.Sort(keyIDs)
		for _, keyID := range keyIDs {
			raw := req[string(target)][keyID]
			// Which stored key this is, and which of my keys may sign it.
			var storedJSON json.RawMessage
			signers := map[string]string{} // signer key ID -> public key
			change := storage.DeviceListChange{UserID: target}
			switch master := csk[target][storage.CrossSigningMaster]; {
			case target == me && devices[keyID].KeyJSON != nil:
				storedJSON = devices[keyID].KeyJSON
				if ssk, ok := csk[me][storage.CrossSigningSelfSigning]; ok {
					signers["ed25519:"+ssk.PublicKey] = ssk.PublicKey
				}
			case target == me && master.PublicKey == keyID:
				storedJSON = master.JSON
				for _, d := range ownDevices {
					signers["ed25519:"+string(d.DeviceID)] = d.Ed25519
				}
			case target != me && master.PublicKey == keyID:
				storedJSON = master.JSON
				if usk, ok := csk[me][storage.CrossSigningUserSigning]; ok {
					signers["ed25519:"+usk.PublicKey] = usk.PublicKey
				}
				change.Observer = me
			case target == me:
				addFailure(target, keyID, signatureFailure(mautrix.MNotFound, "Only your devices and master key can be signed here; %s is neither", keyID))
				continue
			default:
				addFailure(target, keyID, signatureFailure(mautrix.MNotFound, "%s is not the master key of %s", keyID, target))
				continue
			}
			obj, e := parseSignedObject(raw, "the signed key")
			if e != nil {
				addFailure(target, keyID, signatureFailure(*e, "%s", e.Err))
				continue
			}
			have, err1 := unsignedContent(raw)
			want, err2 := unsignedContent(storedJSON)
			if err1 != nil || err2 != nil || !bytes.Equal(have, want) {
				addFailure(target, keyID, signatureFailure(errInvalidSignature, "The signed object does not match the stored key %s", keyID))
				continue
			}
			var found []storage.KeySignature
			invalid := ""
			for signerKeyID, sig := range obj.signatures[me] {
				pub, allowed := signers[signerKeyID]
				if !allowed {
					continue // signatures already on the key, or by keys that cannot sign it
				}
				if !verifySignature(raw, me, signerKeyID, pub) {
					invalid = signerKeyID
					break
				}
				found = append(found, storage.KeySignature{TargetUserID: target, TargetKeyID: keyID,
					SignerUserID: me, SignerKeyID: signerKeyID, Signature: sig})
			}
			switch {
			case invalid != "":
				addFailure(target, keyID, signatureFailure(errInvalidSignature, "Invalid signature by %s", invalid))
			case len(found) == 0:
				addFailure(target, keyID, signatureFailure(errInvalidSignature, "No signature by a key of yours that may sign %s", keyID))
			default:
				sigs = append(sigs, found...)
				changed[change] = true
			}
		}
	}
	if len(sigs) > 0 {
		changes := make([]storage.DeviceListChange, 0, len(changed))
		for ch := range changed {
			changes = append(changes, ch)
		}
		slices.SortFunc(changes, func(a, b storage.DeviceListChange) int {
			return strings.Compare(string(a.UserID)+"|"+string(a.Observer), string(b.UserID)+"|"+string(b.Observer))
		})
		pos, err := a.db.AddSignatures(ctx, sigs, changes)
		if err != nil {
			a.internalError(c, err)
			return
		}
		public := false
		for _, ch := range changes {
			public = public || ch.Observer == ""
		}
		a.wakeKeyChange(ctx, pos, me, public)
	}
	c.JSON(http.StatusOK, gin.H{"failures": failures})
}
