package storage

// End-to-end encryption keys (client-server "Key management API" and
// "Cross-signing"): device identity keys, one-time and fallback keys,
// cross-signing keys, signatures added to any of them, and the device-list
// stream that tells other users' /sync and /keys/changes who changed. The
// server checks shapes and signatures in clientapi; here every write is one
// transaction and every claim hands a one-time key out exactly once.

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"

	"go.mau.fi/util/dbutil"
	"maunium.net/go/mautrix/id"
)

// OneTimeKey is a one-time or fallback key of a device.
type OneTimeKey struct {
	Algorithm string
	KeyID     string
	// JSON is the key as uploaded: a JSON string (curve25519) or a signed
	// key object (signed_curve25519).
	JSON json.RawMessage
}

// KeyUpload is one POST /keys/upload of a device.
type KeyUpload struct {
	UserID   id.UserID
	DeviceID id.DeviceID
	// DeviceKeys is the signed device_keys object in canonical JSON
	// without "unsigned"; nil when the upload has none. Ed25519 and
	// Curve25519 are its identity keys.
	DeviceKeys          json.RawMessage
	Ed25519, Curve25519 string
	OneTimeKeys         []OneTimeKey
	// FallbackKeys replace the device's fallback key of their algorithm.
	FallbackKeys []OneTimeKey
}

// KeyUploadResult is what an upload did.
type KeyUploadResult struct {
	// OneTimeKeyCounts are the device's unclaimed one-time keys per
	// algorithm after the upload.
	OneTimeKeyCounts map[string]int
	// ChangePos is the stream position of the device-list change the
	// upload made; 0 when the device keys did not change.
	ChangePos int64
}

// KeyConflictError refuses an upload that contradicts stored keys: other
// identity keys for a device, or another key under a used one-time key ID.
type KeyConflictError struct {
	Reason string
}

func (e *KeyConflictError) Error() string { return e.Reason }

// ErrCrossSigningChanged is returned when the user's master key changed
// between the caller's check and the write.
var ErrCrossSigningChanged = errors.New("cross-signing keys changed concurrently")

// advisoryLockCrossSigning is the first key of the PostgreSQL advisory
// locks that serialise one user's cross-signing uploads (the second is a
// hash of the user ID).
const advisoryLockCrossSigning = 0x5853 // "XS"

// keyInsertBatch rows per multi-row INSERT keep statements well under
// SQLite's bound-parameter limit.
const keyInsertBatch = 100

// keyQueryBatch IDs per IN list.
const keyQueryBatch = 500

// UploadKeys stores a device's uploaded keys in one transaction.
func (db *DB) UploadKeys(ctx context.Context, up *KeyUpload) (*KeyUploadResult, error) {
	var res KeyUploadResult
	err := db.DoTxn(ctx, nil, func(ctx context.Context) error {
		res = KeyUploadResult{}
		if err := db.insertOneTimeKeys(ctx, up.UserID, up.DeviceID, up.OneTimeKeys); err != nil {
			return err
		}
		for _, k := range up.FallbackKeys {
			// The same key again keeps its used flag; another key
			// replaces it, unused.
			_, err := db.Exec(ctx, `
				INSERT INTO e2e_fallback_keys (user_id, device_id, algorithm, key_id, key_json, used)
				VALUES ($1, $2, $3, $4, $5, false)
				ON CONFLICT (user_id, device_id, algorithm) DO UPDATE
				SET key_id = excluded.key_id, key_json = excluded.key_json, used = false
				WHERE e2e_fallback_keys.key_id <> excluded.key_id OR e2e_fallback_keys.key_json <> excluded.key_json`,
				up.UserID, up.DeviceID, k.Algorithm, k.KeyID, string(k.JSON))
			if err != nil {
				return fmt.Errorf("store fallback key: %w", err)
			}
		}
		if up.DeviceKeys != nil {
			// Last: the stream position is taken as late as possible, as
			// it serialises every stream writer until this commit.
			pos, err := db.storeDeviceKeys(ctx, up)
			if err != nil {
				return err
			}
			res.ChangePos = pos
		}
		counts, err := db.OneTimeKeyCounts(ctx, up.UserID, up.DeviceID)
		res.OneTimeKeyCounts = counts
		return err
	})
	if err != nil {
		return nil, err
	}
	return &res, nil
}

// storeDeviceKeys writes device keys unless identical ones are stored, and
// records the device-list change.
func (db *DB) storeDeviceKeys(ctx context.Context, up *KeyUpload) (int64, error) {
	var stored, ed, curve string
	err := db.QueryRow(ctx, `SELECT key_json, ed25519, curve25519 FROM e2e_device_keys WHERE user_id = $1 AND device_id = $2`,
		up.UserID, up.DeviceID).Scan(&stored, &ed, &curve)
	exists := err == nil
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return 0, fmt.Errorf("read device keys: %w", err)
	}
	if exists {
		if ed != up.Ed25519 || curve != up.Curve25519 {
			return 0, &KeyConflictError{Reason: "Device " + string(up.DeviceID) + " already has other identity keys"}
		}
		if stored == string(up.DeviceKeys) {
			return 0, nil
		}
	} else {
		// Signatures left from an earlier device of the same ID are not
		// about these keys.
		if _, err := db.Exec(ctx, `DELETE FROM e2e_signatures WHERE target_user_id = $1 AND target_key_id = $2`, up.UserID, up.DeviceID); err != nil {
			return 0, fmt.Errorf("clear old device signatures: %w", err)
		}
	}
	pos, err := db.AllocStreamPos(ctx, 1)
	if err != nil {
		return 0, err
	}
	// The identity keys are compared again in the write itself: a
	// concurrent first upload with other keys must not be overwritten.
	res, err := db.Exec(ctx, `
		INSERT INTO e2e_device_keys (user_id, device_id, key_json, ed25519, curve25519, stream_pos) VALUES ($1, $2, $3, $4, $5, $6)
		ON CONFLICT (user_id, device_id) DO UPDATE SET key_json = excluded.key_json, stream_pos = excluded.stream_pos
		WHERE e2e_device_keys.ed25519 = excluded.ed25519 AND e2e_device_keys.curve25519 = excluded.curve25519`,
		up.UserID, up.DeviceID, string(up.DeviceKeys), up.Ed25519, up.Curve25519, pos)
	if err != nil {
		return 0, fmt.Errorf("store device keys: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return 0, &KeyConflictError{Reason: "Device " + string(up.DeviceID) + " already has other identity keys"}
	}
	if err := db.insertDeviceListChanges(ctx, pos, []DeviceListChange{{UserID: up.UserID}}); err != nil {
		return 0, err
	}
	return pos, nil
}

// insertOneTimeKeys adds one-time keys. A key ID the device already holds
// is skipped when the key is the same (a retried upload) and refused when
// it is not.
func (db *DB) insertOneTimeKeys(ctx context.Context, userID id.UserID, deviceID id.DeviceID, keys []OneTimeKey) error {
	for start := 0; start < len(keys); start += keyInsertBatch {
		batch := keys[start:min(start+keyInsertBatch, len(keys))]
		ids := make([]string, len(batch))
		for i, k := range batch {
			ids[i] = k.KeyID
		}
		in, args := inList(ids, 2)
		rows, err := db.Query(ctx, `SELECT algorithm, key_id, key_json FROM e2e_one_time_keys
			WHERE user_id = $1 AND device_id = $2 AND key_id IN (`+in+`)`, append([]any{userID, deviceID}, args...)...)
		if err != nil {
			return fmt.Errorf("read one-time keys: %w", err)
		}
		existing := map[[2]string]string{}
		for rows.Next() {
			var alg, keyID, js string
			if err := rows.Scan(&alg, &keyID, &js); err != nil {
				rows.Close()
				return fmt.Errorf("read one-time keys: %w", err)
			}
			existing[[2]string{alg, keyID}] = js
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return fmt.Errorf("read one-time keys: %w", err)
		}
		var q strings.Builder
		q.WriteString(`INSERT INTO e2e_one_time_keys (user_id, device_id, algorithm, key_id, key_json) VALUES `)
		args = args[:0]
		n := 0
		for _, k := range batch {
			if js, ok := existing[[2]string{k.Algorithm, k.KeyID}]; ok {
				if js != string(k.JSON) {
					return &KeyConflictError{Reason: "One-time key " + k.Algorithm + ":" + k.KeyID + " already exists with another value"}
				}
				continue
			}
			if n > 0 {
				q.WriteString(", ")
			}
			p := len(args)
			fmt.Fprintf(&q, "($%d, $%d, $%d, $%d, $%d)", p+1, p+2, p+3, p+4, p+5)
			args = append(args, userID, deviceID, k.Algorithm, k.KeyID, string(k.JSON))
			n++
		}
		if n == 0 {
			continue
		}
		// A concurrent upload of the same key ID (a retry racing the
		// original) is not an error: the first one stays.
		q.WriteString(` ON CONFLICT (user_id, device_id, algorithm, key_id) DO NOTHING`)
		if _, err := db.Exec(ctx, q.String(), args...); err != nil {
			return fmt.Errorf("store one-time keys: %w", err)
		}
	}
	return nil
}

// OneTimeKeyCounts returns a device's unclaimed one-time keys per algorithm.
func (db *DB) OneTimeKeyCounts(ctx context.Context, userID id.UserID, deviceID id.DeviceID) (map[string]int, error) {
	rows, err := db.Query(ctx, `SELECT algorithm, COUNT(*) FROM e2e_one_time_keys WHERE user_id = $1 AND device_id = $2 GROUP BY algorithm`,
		userID, deviceID)
	if err != nil {
		return nil, fmt.Errorf("count one-time keys: %w", err)
	}
	defer rows.Close()
	counts := map[string]int{}
	for rows.Next() {
		var alg string
		var n int
		if err := rows.Scan(&alg, &n); err != nil {
			return nil, fmt.Errorf("count one-time keys: %w", err)
		}
		counts[alg] = n
	}
	return counts, rows.Err()
}

// UnusedFallbackKeyTypes returns the algorithms of a device's fallback
// keys that no claim has handed out yet, sorted.
func (db *DB) UnusedFallbackKeyTypes(ctx context.Context, userID id.UserID, deviceID id.DeviceID) ([]string, error) {
	rows, err := db.Query(ctx, `SELECT algorithm FROM e2e_fallback_keys WHERE user_id = $1 AND device_id = $2 AND NOT used ORDER BY algorithm`,
		userID, deviceID)
	if err != nil {
		return nil, fmt.Errorf("unused fallback keys: %w", err)
	}
	defer rows.Close()
	out := []string{}
	for rows.Next() {
		var alg string
		if err := rows.Scan(&alg); err != nil {
			return nil, fmt.Errorf("unused fallback keys: %w", err)
		}
		out = append(out, alg)
	}
	return out, rows.Err()
}

// KeyClaim asks for one key of a device.
type KeyClaim struct {
	UserID    id.UserID
	DeviceID  id.DeviceID
	Algorithm string
}

// ClaimedKey is a key handed out by ClaimKeys.
type ClaimedKey struct {
	KeyClaim
	KeyID string
	JSON  json.RawMessage
	// Fallback is set when the device had no one-time key left.
	Fallback bool
}

// ClaimKeys hands out, per claim, the device's oldest one-time key of the
// algorithm, deleting it in the same statement so that no other claim can
// get it; when none is left, the device's fallback key, which is marked
// used. Claims that find neither are left out.
func (db *DB) ClaimKeys(ctx context.Context, claims []KeyClaim) ([]ClaimedKey, error) {
	// PostgreSQL: concurrent claimers skip a row another one has locked
	// (and will delete) instead of waiting for it and then finding
	// nothing. SQLite runs one writer at a time.
	pick := `SELECT id FROM e2e_one_time_keys WHERE user_id = $1 AND device_id = $2 AND algorithm = $3 ORDER BY id LIMIT 1`
	if db.Dialect == dbutil.Postgres {
		pick += ` FOR UPDATE SKIP LOCKED`
	}
	claimOTK := `DELETE FROM e2e_one_time_keys WHERE id = (` + pick + `) RETURNING key_id, key_json`
	var out []ClaimedKey
	err := db.DoTxn(ctx, nil, func(ctx context.Context) error {
		out = out[:0]
		for _, c := range claims {
			var keyID, js string
			err := db.QueryRow(ctx, claimOTK, c.UserID, c.DeviceID, c.Algorithm).Scan(&keyID, &js)
			if err == nil {
				out = append(out, ClaimedKey{KeyClaim: c, KeyID: keyID, JSON: json.RawMessage(js)})
				continue
			} else if !errors.Is(err, sql.ErrNoRows) {
				return fmt.Errorf("claim one-time key: %w", err)
			}
			err = db.QueryRow(ctx, `UPDATE e2e_fallback_keys SET used = true WHERE user_id = $1 AND device_id = $2 AND algorithm = $3
				RETURNING key_id, key_json`, c.UserID, c.DeviceID, c.Algorithm).Scan(&keyID, &js)
			if err == nil {
				out = append(out, ClaimedKey{KeyClaim: c, KeyID: keyID, JSON: json.RawMessage(js), Fallback: true})
			} else if !errors.Is(err, sql.ErrNoRows) {
				return fmt.Errorf("claim fallback key: %w", err)
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// StoredDeviceKeys are a device's identity keys as stored.
type StoredDeviceKeys struct {
	UserID      id.UserID
	DeviceID    id.DeviceID
	KeyJSON     json.RawMessage
	Ed25519     string
	DisplayName *string
}

// DeviceKeysOf returns the device keys of every existing device of the
// users, ordered by user and device.
func (db *DB) DeviceKeysOf(ctx context.Context, users []id.UserID) ([]StoredDeviceKeys, error) {
	var out []StoredDeviceKeys
	for start := 0; start < len(users); start += keyQueryBatch {
		in, args := inList(users[start:min(start+keyQueryBatch, len(users))], 0)
		rows, err := db.Query(ctx, `SELECT k.user_id, k.device_id, k.key_json, k.ed25519, d.display_name
			FROM e2e_device_keys k JOIN devices d ON d.user_id = k.user_id AND d.device_id = k.device_id
			WHERE k.user_id IN (`+in+`)`, args...)
		if err != nil {
			return nil, fmt.Errorf("query device keys: %w", err)
		}
		for rows.Next() {
			var k StoredDeviceKeys
			var js string
			var name sql.NullString
			if err := rows.Scan(&k.UserID, &k.DeviceID, &js, &k.Ed25519, &name); err != nil {
				rows.Close()
				return nil, fmt.Errorf("query device keys: %w", err)
			}
			k.KeyJSON = json.RawMessage(js)
			if name.Valid {
				k.DisplayName = &name.String
			}
			out = append(out, k)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, fmt.Errorf("query device keys: %w", err)
		}
	}
	slices.SortFunc(out, func(a, b StoredDeviceKeys) int {
		if c := strings.Compare(string(a.UserID), string(b.UserID)); c != 0 {
			return c
		}
		return strings.Compare(string(a.DeviceID), string(b.DeviceID))
	})
	return out, nil
}

// CrossSigningKey is one of a user's cross-signing keys.
type CrossSigningKey struct {
	UserID id.UserID
	// Type is master, self_signing or user_signing.
	Type      string
	PublicKey string
	// JSON is the key object as uploaded (canonical, with the owner's
	// signatures).
	JSON json.RawMessage
}

// Cross-signing key types (the usage each key has).
const (
	CrossSigningMaster      = "master"
	CrossSigningSelfSigning = "self_signing"
	CrossSigningUserSigning = "user_signing"
)

// CrossSigningKeysOf returns the cross-signing keys of the users.
func (db *DB) CrossSigningKeysOf(ctx context.Context, users []id.UserID) ([]CrossSigningKey, error) {
	var out []CrossSigningKey
	for start := 0; start < len(users); start += keyQueryBatch {
		in, args := inList(users[start:min(start+keyQueryBatch, len(users))], 0)
		rows, err := db.Query(ctx, `SELECT user_id, key_type, public_key, key_json FROM e2e_cross_signing_keys
			WHERE user_id IN (`+in+`)`, args...)
		if err != nil {
			return nil, fmt.Errorf("query cross-signing keys: %w", err)
		}
		for rows.Next() {
			var k CrossSigningKey
			var js string
			if err := rows.Scan(&k.UserID, &k.Type, &k.PublicKey, &js); err != nil {
				rows.Close()
				return nil, fmt.Errorf("query cross-signing keys: %w", err)
			}
			k.JSON = json.RawMessage(js)
			out = append(out, k)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, fmt.Errorf("query cross-signing keys: %w", err)
		}
	}
	return out, nil
}

// SetCrossSigningKeys stores a user's new cross-signing keys (replacing
// those of the same types) and records the device-list change; it returns
// the change's stream position, 0 when every key was stored already.
// expectMaster is the master public key the caller based its decision on
// ("" for none): if another request changed it meanwhile, nothing is
// written and ErrCrossSigningChanged is returned.
func (db *DB) SetCrossSigningKeys(ctx context.Context, userID id.UserID, keys []CrossSigningKey, expectMaster string) (int64, error) {
	var pos int64
	err := db.DoTxn(ctx, nil, func(ctx context.Context) error {
		pos = 0
		if db.Dialect == dbutil.Postgres {
			// FOR UPDATE locks no row when the user has no keys yet, so two
			// first uploads would both see "no master key" (and both skip
			// user-interactive auth): serialise the user's uploads on an
			// advisory lock instead. SQLite serialises all writers anyway.
			if _, err := db.Exec(ctx, `SELECT pg_advisory_xact_lock($1, hashtext($2))`, advisoryLockCrossSigning, userID); err != nil {
				return fmt.Errorf("lock cross-signing keys: %w", err)
			}
		}
		rows, err := db.Query(ctx, `SELECT key_type, key_json, public_key FROM e2e_cross_signing_keys WHERE user_id = $1`, userID)
		if err != nil {
			return fmt.Errorf("read cross-signing keys: %w", err)
		}
		stored := map[string]string{}
		master := ""
		for rows.Next() {
			var typ, js, pub string
			if err := rows.Scan(&typ, &js, &pub); err != nil {
				rows.Close()
				return fmt.Errorf("read cross-signing keys: %w", err)
			}
			stored[typ] = js
			if typ == CrossSigningMaster {
				master = pub
			}
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return fmt.Errorf("read cross-signing keys: %w", err)
		}
		if master != expectMaster {
			return ErrCrossSigningChanged
		}
		var changed []CrossSigningKey
		for _, k := range keys {
			if stored[k.Type] != string(k.JSON) {
				changed = append(changed, k)
			}
		}
		if len(changed) == 0 {
			return nil
		}
		if pos, err = db.AllocStreamPos(ctx, 1); err != nil {
			return err
		}
		for _, k := range changed {
			_, err := db.Exec(ctx, `
				INSERT INTO e2e_cross_signing_keys (user_id, key_type, public_key, key_json, stream_pos) VALUES ($1, $2, $3, $4, $5)
				ON CONFLICT (user_id, key_type) DO UPDATE
				SET public_key = excluded.public_key, key_json = excluded.key_json, stream_pos = excluded.stream_pos`,
				userID, k.Type, k.PublicKey, string(k.JSON), pos)
			if err != nil {
				return fmt.Errorf("store cross-signing key: %w", err)
			}
		}
		return db.insertDeviceListChanges(ctx, pos, []DeviceListChange{{UserID: userID}})
	})
	if err != nil {
		return 0, err
	}
	return pos, nil
}

// KeySignature is one signature added to a device or cross-signing key.
type KeySignature struct {
	TargetUserID id.UserID
	// TargetKeyID is the device ID or the cross-signing public key.
	TargetKeyID  string
	SignerUserID id.UserID
	// SignerKeyID is "ed25519:" and the signing device ID or public key.
	SignerKeyID string
	Signature   string
}

// SignaturesOn returns the added signatures on keys of the users.
func (db *DB) SignaturesOn(ctx context.Context, users []id.UserID) ([]KeySignature, error) {
	var out []KeySignature
	for start := 0; start < len(users); start += keyQueryBatch {
		in, args := inList(users[start:min(start+keyQueryBatch, len(users))], 0)
		rows, err := db.Query(ctx, `SELECT target_user_id, target_key_id, signer_user_id, signer_key_id, signature
			FROM e2e_signatures WHERE target_user_id IN (`+in+`)`, args...)
		if err != nil {
			return nil, fmt.Errorf("query signatures: %w", err)
		}
		for rows.Next() {
			var s KeySignature
			if err := rows.Scan(&s.TargetUserID, &s.TargetKeyID, &s.SignerUserID, &s.SignerKeyID, &s.Signature); err != nil {
				rows.Close()
				return nil, fmt.Errorf("query signatures: %w", err)
			}
			out = append(out, s)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, fmt.Errorf("query signatures: %w", err)
		}
	}
	return out, nil
}

// DeviceListChange is one row of the device-list stream.
type DeviceListChange struct {
	UserID id.UserID
	// Observer is the one user who may see the change; empty for everyone
	// sharing a room with UserID.
	Observer id.UserID
}

// AddSignatures stores signatures (a signature already stored under the
// same signer key is replaced) and records the device-list changes, each
// at its own stream position; it returns the last one.
func (db *DB) AddSignatures(ctx context.Context, sigs []KeySignature, changes []DeviceListChange) (int64, error) {
	var pos int64
	err := db.DoTxn(ctx, nil, func(ctx context.Context) error {
		pos = 0
		for _, s := range sigs {
			_, err := db.Exec(ctx, `
				INSERT INTO e2e_signatures (target_user_id, target_key_id, signer_user_id, signer_key_id, signature) VALUES ($1, $2, $3, $4, $5)
				ON CONFLICT (target_user_id, target_key_id, signer_user_id, signer_key_id) DO UPDATE SET signature = excluded.signature`,
				s.TargetUserID, s.TargetKeyID, s.SignerUserID, s.SignerKeyID, s.Signature)
			if err != nil {
				return fmt.Errorf("store signature: %w", err)
			}
		}
		if len(changes) == 0 {
			return nil
		}
		last, err := db.AllocStreamPos(ctx, int64(len(changes)))
		if err != nil {
			return err
		}
		pos = last
		return db.insertDeviceListChanges(ctx, last, changes)
	})
	if err != nil {
		return 0, err
	}
	return pos, nil
}

// insertDeviceListChanges writes changes at the positions last-n+1 … last.
func (db *DB) insertDeviceListChanges(ctx context.Context, last int64, changes []DeviceListChange) error {
	first := last - int64(len(changes)) + 1
	for i, ch := range changes {
		if _, err := db.Exec(ctx, `INSERT INTO device_list_changes (stream_pos, user_id, observer) VALUES ($1, $2, $3)`,
			first+int64(i), ch.UserID, ch.Observer); err != nil {
			return fmt.Errorf("record device list change: %w", err)
		}
	}
	return nil
}

// DeviceListChanges returns the device-list changes in (since, upto] that
// observer may see (those for everyone and those for observer alone), in
// stream order; the caller decides which users observer shares rooms with.
func (db *DB) DeviceListChanges(ctx context.Context, observer id.UserID, since, upto int64) ([]DeviceListChange, error) {
	return queryList(ctx, db, "device list changes", func(row dbutil.Scannable) (ch DeviceListChange, err error) {
		err = row.Scan(&ch.UserID, &ch.Observer)
		return ch, err
	}, `SELECT user_id, observer FROM device_list_changes
		WHERE stream_pos > $1 AND stream_pos <= $2 AND (observer = '' OR observer = $3) ORDER BY stream_pos`, since, upto, observer)
}

// SharedRoomUsers returns which of candidates are joined to a room that
// userID is joined to (userID itself only if it is in some room).
func (db *DB) SharedRoomUsers(ctx context.Context, userID id.UserID, candidates []id.UserID) (map[id.UserID]bool, error) {
	out := map[id.UserID]bool{}
	for start := 0; start < len(candidates); start += keyQueryBatch {
		in, args := inList(candidates[start:min(start+keyQueryBatch, len(candidates))], 1)
		err := addToSet(ctx, db, out, "shared room users", `SELECT DISTINCT other.state_key FROM current_state other
			JOIN current_state mine ON mine.room_id = other.room_id AND mine.type = 'm.room.member'
				AND mine.state_key = $1 AND mine.membership = 'join'
			WHERE other.type = 'm.room.member' AND other.membership = 'join' AND other.state_key IN (`+in+`)`,
			append([]any{userID}, args...)...)
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}

// RoommateMembershipChanges returns the membership changes in (since,
// upto] of other users in the rooms userID is joined to now, in stream
// order.
func (db *DB) RoommateMembershipChanges(ctx context.Context, userID id.UserID, since, upto int64) ([]Membership, error) {
	return queryList(ctx, db, "roommate membership changes", func(row dbutil.Scannable) (m Membership, err error) {
		err = row.Scan(&m.RoomID, &m.UserID, &m.Membership, &m.StreamPos)
		return m, err
	}, `SELECT m.room_id, m.user_id, m.membership, m.stream_pos FROM memberships m
		JOIN current_state mine ON mine.room_id = m.room_id AND mine.type = 'm.room.member'
			AND mine.state_key = $3 AND mine.membership = 'join'
		WHERE m.stream_pos > $1 AND m.stream_pos <= $2 AND m.user_id <> $3 ORDER BY m.stream_pos`, since, upto, userID)
}

// SweepDeviceKeys deletes the device keys (and the signatures on them) of
// the user's devices that no longer exist, and records one device-list
// change when there were any; it returns its stream position, or 0. Call
// it in the transaction that deletes devices; called again later it
// catches up on deletions that happened without it.
func (db *DB) SweepDeviceKeys(ctx context.Context, userID id.UserID) (int64, error) {
	var pos int64
	err := db.DoTxn(ctx, nil, func(ctx context.Context) error {
		pos = 0
		rows, err := db.Query(ctx, `DELETE FROM e2e_device_keys WHERE user_id = $1 AND NOT EXISTS (
			SELECT 1 FROM devices d WHERE d.user_id = e2e_device_keys.user_id AND d.device_id = e2e_device_keys.device_id)
			RETURNING device_id`, userID)
		if err != nil {
			return fmt.Errorf("sweep device keys: %w", err)
		}
		var gone []id.DeviceID
		for rows.Next() {
			var d id.DeviceID
			if err := rows.Scan(&d); err != nil {
				rows.Close()
				return fmt.Errorf("sweep device keys: %w", err)
			}
			gone = append(gone, d)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return fmt.Errorf("sweep device keys: %w", err)
		}
		if len(gone) == 0 {
			return nil
		}
		for start := 0; start < len(gone); start += keyQueryBatch {
			in, args := inList(gone[start:min(start+keyQueryBatch, len(gone))], 1)
			if _, err := db.Exec(ctx, `DELETE FROM e2e_signatures WHERE target_user_id = $1 AND target_key_id IN (`+in+`)`,
				append([]any{userID}, args...)...); err != nil {
				return fmt.Errorf("delete signatures of deleted devices: %w", err)
			}
		}
		if pos, err = db.AllocStreamPos(ctx, 1); err != nil {
			return err
		}
		return db.insertDeviceListChanges(ctx, pos, []DeviceListChange{{UserID: userID}})
	})
	if err != nil {
		return 0, err
	}
	return pos, nil
}
