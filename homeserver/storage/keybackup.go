package storage

// Server-side key backups (client-server "Server-side key backups"): per
// user, numbered backup versions, each holding at most one encrypted room
// key per (room, megolm session). The server never reads the keys; it
// keeps the one the spec calls better when a session is uploaded twice.

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"slices"

	"go.mau.fi/util/dbutil"
	"maunium.net/go/mautrix/id"
)

// KeyBackupVersion is one backup version as GET /room_keys/version shows it.
type KeyBackupVersion struct {
	Version   int64
	Algorithm string
	AuthData  json.RawMessage
	// ETag counts the changes to the version's keys.
	ETag  int64
	Count int64
}

// BackupKey is one backed-up room key.
type BackupKey struct {
	RoomID            id.RoomID
	SessionID         id.SessionID
	FirstMessageIndex int64
	ForwardedCount    int64
	IsVerified        bool
	SessionData       json.RawMessage
}

// GetMassInsertValues is the row of k after (user_id, version).
func (k *BackupKey) GetMassInsertValues() [6]any {
	return [6]any{k.RoomID, k.SessionID, k.FirstMessageIndex, k.ForwardedCount, k.IsVerified, string(k.SessionData)}
}

// WrongKeyBackupVersionError refuses an upload to a version that is not
// the user's current one.
type WrongKeyBackupVersionError struct {
	Current int64
}

func (e *WrongKeyBackupVersionError) Error() string {
	return fmt.Sprintf("wrong key backup version: current is %d", e.Current)
}

// ErrKeyBackupAlgorithmMismatch refuses an update that changes a backup's
// algorithm (only auth_data may change).
var ErrKeyBackupAlgorithmMismatch = errors.New("key backup algorithm does not match")

// CreateKeyBackupVersion adds a backup version, which becomes the user's
// current one, and returns its number. Numbers count up from 1 per user
// and are never reused, not even after a version is deleted.
func (db *DB) CreateKeyBackupVersion(ctx context.Context, userID id.UserID, algorithm string, authData json.RawMessage) (int64, error) {
	// Two concurrent creates (other processes on PostgreSQL) may pick the
	// same number; the loser sees the conflict and takes the next one.
	for range 5 {
		var last int64
		if err := db.QueryRow(ctx, `SELECT COALESCE(MAX(version), 0) FROM key_backup_versions WHERE user_id = $1`, userID).Scan(&last); err != nil {
			return 0, fmt.Errorf("create key backup version: %w", err)
		}
		res, err := db.Exec(ctx, `INSERT INTO key_backup_versions (user_id, version, algorithm, auth_data) VALUES ($1, $2, $3, $4)
			ON CONFLICT DO NOTHING`, userID, last+1, algorithm, string(authData))
		if err != nil {
			return 0, fmt.Errorf("create key backup version: %w", err)
		}
		if n, _ := res.RowsAffected(); n == 1 {
			return last + 1, nil
		}
	}
	return 0, errors.New("create key backup version: no free version number")
}

// GetKeyBackupVersion returns one of the user's backup versions, or
// ErrNotFound when it does not exist or was deleted.
func (db *DB) GetKeyBackupVersion(ctx context.Context, userID id.UserID, version int64) (*KeyBackupVersion, error) {
	return db.getKeyBackupVersion(ctx, userID, `SELECT version, algorithm, auth_data, etag FROM key_backup_versions
		WHERE user_id = $1 AND version = $2 AND NOT deleted`, version)
}

// GetCurrentKeyBackupVersion returns the user's newest backup version that
// is not deleted, or ErrNotFound.
func (db *DB) GetCurrentKeyBackupVersion(ctx context.Context, userID id.UserID) (*KeyBackupVersion, error) {
	return db.getKeyBackupVersion(ctx, userID, `SELECT version, algorithm, auth_data, etag FROM key_backup_versions
		WHERE user_id = $1 AND NOT deleted ORDER BY version DESC LIMIT 1`)
}

// getKeyBackupVersion runs a query for one version row whose first
// parameter is userID.
func (db *DB) getKeyBackupVersion(ctx context.Context, userID id.UserID, query string, args ...any) (*KeyBackupVersion, error) {
	var v KeyBackupVersion
	var authData string
	err := db.QueryRow(ctx, query, append([]any{userID}, args...)...).Scan(&v.Version, &v.Algorithm, &authData, &v.ETag)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	} else if err != nil {
		return nil, fmt.Errorf("get key backup version: %w", err)
	}
	v.AuthData = json.RawMessage(authData)
	if v.Count, err = db.countBackupKeys(ctx, userID, v.Version); err != nil {
		return nil, err
	}
	return &v, nil
}

func (db *DB) countBackupKeys(ctx context.Context, userID id.UserID, version int64) (int64, error) {
	var count int64
	err := db.QueryRow(ctx, `SELECT COUNT(*) FROM key_backup_sessions WHERE user_id = $1 AND version = $2`, userID, version).Scan(&count)
	if err != nil {
		return 0, fmt.Errorf("count backup keys: %w", err)
	}
	return count, nil
}

// UpdateKeyBackupVersion replaces a version's auth_data. It returns
// ErrNotFound for a missing or deleted version and
// ErrKeyBackupAlgorithmMismatch when algorithm is not the version's.
func (db *DB) UpdateKeyBackupVersion(ctx context.Context, userID id.UserID, version int64, algorithm string, authData json.RawMessage) error {
	return db.DoTxn(ctx, nil, func(ctx context.Context) error {
		var stored string
		err := db.QueryRow(ctx, db.forUpdate(`SELECT algorithm FROM key_backup_versions WHERE user_id = $1 AND version = $2 AND NOT deleted`),
			userID, version).Scan(&stored)
		if errors.Is(err, sql.ErrNoRows) {
			return ErrNotFound
		} else if err != nil {
			return fmt.Errorf("update key backup version: %w", err)
		}
		if stored != algorithm {
			return ErrKeyBackupAlgorithmMismatch
		}
		if _, err := db.Exec(ctx, `UPDATE key_backup_versions SET auth_data = $3 WHERE user_id = $1 AND version = $2`,
			userID, version, string(authData)); err != nil {
			return fmt.Errorf("update key backup version: %w", err)
		}
		return nil
	})
}

// DeleteKeyBackupVersion deletes a version and all its keys. Deleting a
// version that was deleted before succeeds; ErrNotFound means it never
// existed.
func (db *DB) DeleteKeyBackupVersion(ctx context.Context, userID id.UserID, version int64) error {
	return db.DoTxn(ctx, nil, func(ctx context.Context) error {
		// Marking the row first locks it: an upload to this version either
		// committed before (its keys are deleted below) or waits and then
		// finds the version deleted.
		res, err := db.Exec(ctx, `UPDATE key_backup_versions SET deleted = true WHERE user_id = $1 AND version = $2`, userID, version)
		if err != nil {
			return fmt.Errorf("delete key backup version: %w", err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return ErrNotFound
		}
		if _, err := db.Exec(ctx, `DELETE FROM key_backup_sessions WHERE user_id = $1 AND version = $2`, userID, version); err != nil {
			return fmt.Errorf("delete key backup version: %w", err)
		}
		return nil
	})
}

// forUpdate adds FOR UPDATE on PostgreSQL, locking the selected row until
// the transaction ends; SQLite serialises all writers anyway.
func (db *DB) forUpdate(query string) string {
	if db.Dialect == dbutil.Postgres {
		return query + ` FOR UPDATE`
	}
	return query
}

// lockKeyBackupVersion locks a live version's row for the rest of the
// transaction, so the key writes of one version (and its deletion) happen
// one at a time, and returns the version's etag. ErrNotFound: missing or
// deleted.
func (db *DB) lockKeyBackupVersion(ctx context.Context, userID id.UserID, version int64) (int64, error) {
	var etag int64
	err := db.QueryRow(ctx, db.forUpdate(`SELECT etag FROM key_backup_versions WHERE user_id = $1 AND version = $2 AND NOT deleted`),
		userID, version).Scan(&etag)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, ErrNotFound
	} else if err != nil {
		return 0, fmt.Errorf("lock key backup version: %w", err)
	}
	return etag, nil
}

// keysChanged bumps a version's etag after its keys changed and returns
// the new etag and the version's key count.
func (db *DB) keysChanged(ctx context.Context, userID id.UserID, version, etag int64, changed bool) (int64, int64, error) {
	if changed {
		if _, err := db.Exec(ctx, `UPDATE key_backup_versions SET etag = etag + 1 WHERE user_id = $1 AND version = $2`, userID, version); err != nil {
			return 0, 0, fmt.Errorf("update key backup etag: %w", err)
		}
		etag++
	}
	count, err := db.countBackupKeys(ctx, userID, version)
	return etag, count, err
}

// A key replaces the stored key of its session only if it is better
// (spec: verified beats unverified; then the lower first_message_index;
// then the lower forwarded_count), decided in SQL so that concurrent
// uploads cannot overwrite a better key with a worse one.
const upsertBackupKeyQuery = `INSERT INTO key_backup_sessions
	(user_id, version, room_id, session_id, first_message_index, forwarded_count, is_verified, session_data)
	VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
	ON CONFLICT (user_id, version, room_id, session_id) DO UPDATE SET
		first_message_index = excluded.first_message_index,
		forwarded_count = excluded.forwarded_count,
		is_verified = excluded.is_verified,
		session_data = excluded.session_data
	WHERE (excluded.is_verified AND NOT key_backup_sessions.is_verified)
		OR (excluded.is_verified = key_backup_sessions.is_verified
			AND (excluded.first_message_index < key_backup_sessions.first_message_index
				OR (excluded.first_message_index = key_backup_sessions.first_message_index
					AND excluded.forwarded_count < key_backup_sessions.forwarded_count)))`

var upsertBackupKeysBuilder = dbutil.NewMassInsertBuilder[*BackupKey, [2]any](upsertBackupKeyQuery, "($1, $2, $%d, $%d, $%d, $%d, $%d, $%d)")

// backupKeysPerStatement keeps one statement's parameters (6 per key)
// under the old SQLite limit of 999.
const backupKeysPerStatement = 150

// PutBackupKeys stores keys in the user's current backup version, all or
// none, keeping a stored key where it is better than the uploaded one. It
// returns the version's etag and key count afterwards. ErrNotFound: the
// user has no backup; *WrongKeyBackupVersionError: version is not the
// current one.
func (db *DB) PutBackupKeys(ctx context.Context, userID id.UserID, version int64, keys []*BackupKey) (etag, count int64, err error) {
	err = db.DoTxn(ctx, nil, func(ctx context.Context) error {
		var lockErr error
		etag, lockErr = db.lockKeyBackupVersion(ctx, userID, version)
		if lockErr != nil && !errors.Is(lockErr, ErrNotFound) {
			return lockErr
		}
		var current int64
		if err := db.QueryRow(ctx, `SELECT COALESCE(MAX(version), 0) FROM key_backup_versions WHERE user_id = $1 AND NOT deleted`,
			userID).Scan(&current); err != nil {
			return fmt.Errorf("put backup keys: %w", err)
		}
		if current == 0 {
			return ErrNotFound
		} else if lockErr != nil || current != version {
			return &WrongKeyBackupVersionError{Current: current}
		}
		changed := false
		for chunk := range slices.Chunk(keys, backupKeysPerStatement) {
			query, params := upsertBackupKeysBuilder.Build([2]any{userID, version}, chunk)
			res, err := db.Exec(ctx, query, params...)
			if err != nil {
				return fmt.Errorf("put backup keys: %w", err)
			}
			n, err := res.RowsAffected()
			if err != nil {
				return fmt.Errorf("put backup keys: %w", err)
			}
			changed = changed || n > 0
		}
		etag, count, err = db.keysChanged(ctx, userID, version, etag, changed)
		return err
	})
	if err != nil {
		return 0, 0, err
	}
	return etag, count, nil
}

// GetBackupKeys returns the keys of a backup version, of one room when
// roomID is set, of one session when sessionID is set too. ErrNotFound:
// the version does not exist or was deleted.
func (db *DB) GetBackupKeys(ctx context.Context, userID id.UserID, version int64, roomID id.RoomID, sessionID id.SessionID) ([]*BackupKey, error) {
	var exists bool
	err := db.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM key_backup_versions WHERE user_id = $1 AND version = $2 AND NOT deleted)`,
		userID, version).Scan(&exists)
	if err != nil {
		return nil, fmt.Errorf("get backup keys: %w", err)
	} else if !exists {
		return nil, ErrNotFound
	}
	where, args := backupKeysWhere(userID, version, roomID, sessionID)
	return queryList(ctx, db, "get backup keys", func(row dbutil.Scannable) (*BackupKey, error) {
		var k BackupKey
		var data string
		err := row.Scan(&k.RoomID, &k.SessionID, &k.FirstMessageIndex, &k.ForwardedCount, &k.IsVerified, &data)
		k.SessionData = json.RawMessage(data)
		return &k, err
	}, `SELECT room_id, session_id, first_message_index, forwarded_count, is_verified, session_data
		FROM key_backup_sessions WHERE `+where, args...)
}

// DeleteBackupKeys deletes the keys of a backup version (current or not),
// of one room when roomID is set, of one session when sessionID is set
// too, and returns the version's etag and key count afterwards.
// ErrNotFound: the version does not exist or was deleted.
func (db *DB) DeleteBackupKeys(ctx context.Context, userID id.UserID, version int64, roomID id.RoomID, sessionID id.SessionID) (etag, count int64, err error) {
	err = db.DoTxn(ctx, nil, func(ctx context.Context) error {
		if etag, err = db.lockKeyBackupVersion(ctx, userID, version); err != nil {
			return err
		}
		where, args := backupKeysWhere(userID, version, roomID, sessionID)
		res, err := db.Exec(ctx, `DELETE FROM key_backup_sessions WHERE `+where, args...)
		if err != nil {
			return fmt.Errorf("delete backup keys: %w", err)
		}
		n, err := res.RowsAffected()
		if err != nil {
			return fmt.Errorf("delete backup keys: %w", err)
		}
		etag, count, err = db.keysChanged(ctx, userID, version, etag, n > 0)
		return err
	})
	if err != nil {
		return 0, 0, err
	}
	return etag, count, nil
}

// backupKeysWhere selects a version's keys, a room's or one session's.
func backupKeysWhere(userID id.UserID, version int64, roomID id.RoomID, sessionID id.SessionID) (string, []any) {
	where := `user_id = $1 AND version = $2`
	args := []any{userID, version}
	if roomID != "" {
		where += ` AND room_id = $3`
		args = append(args, roomID)
		if sessionID != "" {
			where += ` AND session_id = $4`
			args = append(args, sessionID)
		}
	}
	return where, args
}
