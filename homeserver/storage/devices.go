package storage

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"maunium.net/go/mautrix/id"
)

// Device is one login of a user.
type Device struct {
	UserID      id.UserID
	DeviceID    id.DeviceID
	DisplayName *string
	LastSeenTS  *int64
	LastSeenIP  *string
	CreatedTS   int64
}

// Session is what an access token authenticates.
type Session struct {
	TokenID        int64
	UserID         id.UserID
	DeviceID       id.DeviceID
	ExpiresTS      *int64
	RefreshTokenID *int64
	// RefreshPrevID is set while the refresh token that preceded this
	// token's generation is still valid; first use retires it.
	RefreshPrevID *int64
	IsAdmin       bool
	Deactivated   bool
	// AppserviceID is set when an appservice's as_token authenticated the
	// request (the session is then masqueraded, not stored).
	AppserviceID string
}

// RefreshToken is a stored refresh token.
type RefreshToken struct {
	ID       int64
	UserID   id.UserID
	DeviceID id.DeviceID
	PrevID   *int64
}

// EnsureDevice makes sure a device exists for a new login. For an existing
// device its old tokens are revoked, as the spec requires when a client
// names its device_id; the display name of an existing device is kept.
func (db *DB) EnsureDevice(ctx context.Context, userID id.UserID, deviceID id.DeviceID, displayName *string, ip string) error {
	now := nowMS()
	res, err := db.Exec(ctx, `
		INSERT INTO devices (user_id, device_id, display_name, last_seen_ts, last_seen_ip, created_ts)
		VALUES ($1, $2, $3, $4, $5, $4) ON CONFLICT (user_id, device_id) DO NOTHING`,
		userID, deviceID, displayName, now, nullString(ip))
	if err != nil {
		return fmt.Errorf("insert device: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		if _, err = db.Exec(ctx, `DELETE FROM refresh_tokens WHERE user_id = $1 AND device_id = $2`, userID, deviceID); err != nil {
			return fmt.Errorf("revoke device refresh tokens: %w", err)
		}
		if _, err = db.Exec(ctx, `DELETE FROM access_tokens WHERE user_id = $1 AND device_id = $2`, userID, deviceID); err != nil {
			return fmt.Errorf("revoke device access tokens: %w", err)
		}
	}
	return nil
}

const deviceColumns = `user_id, device_id, display_name, last_seen_ts, last_seen_ip, created_ts`

func scanDevice(row interface{ Scan(...any) error }) (*Device, error) {
	var d Device
	var name, ip sql.NullString
	var seen sql.NullInt64
	if err := row.Scan(&d.UserID, &d.DeviceID, &name, &seen, &ip, &d.CreatedTS); err != nil {
		return nil, err
	}
	if name.Valid {
		d.DisplayName = &name.String
	}
	if ip.Valid {
		d.LastSeenIP = &ip.String
	}
	d.LastSeenTS = ptrInt64(seen)
	return &d, nil
}

// GetDevice returns one device or ErrNotFound.
func (db *DB) GetDevice(ctx context.Context, userID id.UserID, deviceID id.DeviceID) (*Device, error) {
	d, err := scanDevice(db.QueryRow(ctx, `SELECT `+deviceColumns+` FROM devices WHERE user_id = $1 AND device_id = $2`, userID, deviceID))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	} else if err != nil {
		return nil, fmt.Errorf("get device: %w", err)
	}
	return d, nil
}

// ListDevices returns a user's devices.
func (db *DB) ListDevices(ctx context.Context, userID id.UserID) ([]*Device, error) {
	rows, err := db.Query(ctx, `SELECT `+deviceColumns+` FROM devices WHERE user_id = $1 ORDER BY created_ts, device_id`, userID)
	if err != nil {
		return nil, fmt.Errorf("list devices: %w", err)
	}
	defer rows.Close()
	devices := []*Device{}
	for rows.Next() {
		d, err := scanDevice(rows)
		if err != nil {
			return nil, fmt.Errorf("list devices: %w", err)
		}
		devices = append(devices, d)
	}
	return devices, rows.Err()
}

// RenameDevice sets a device's display name.
func (db *DB) RenameDevice(ctx context.Context, userID id.UserID, deviceID id.DeviceID, name string) error {
	return db.expectOne(ctx, "rename device", `UPDATE devices SET display_name = $3 WHERE user_id = $1 AND device_id = $2`, userID, deviceID, name)
}

// TouchDevice records when and from where a device was last seen.
func (db *DB) TouchDevice(ctx context.Context, userID id.UserID, deviceID id.DeviceID, ip string, ts int64) error {
	_, err := db.Exec(ctx, `UPDATE devices SET last_seen_ts = $3, last_seen_ip = $4 WHERE user_id = $1 AND device_id = $2`, userID, deviceID, ts, nullString(ip))
	return err
}

// DeleteDevices deletes devices and, by cascade, their tokens. Unknown IDs
// are ignored, as /delete_devices requires.
func (db *DB) DeleteDevices(ctx context.Context, userID id.UserID, deviceIDs ...id.DeviceID) error {
	return db.DoTxn(ctx, nil, func(ctx context.Context) error {
		for _, deviceID := range deviceIDs {
			if _, err := db.Exec(ctx, `DELETE FROM devices WHERE user_id = $1 AND device_id = $2`, userID, deviceID); err != nil {
				return fmt.Errorf("delete device: %w", err)
			}
			if err := db.DeleteToDeviceForDevice(ctx, userID, deviceID); err != nil {
				return err
			}
		}
		return nil
	})
}

// DeleteOtherDevices deletes every device of the user except keep (all
// when keep is empty), with their tokens and pending to-device messages.
func (db *DB) DeleteOtherDevices(ctx context.Context, userID id.UserID, keep id.DeviceID) error {
	return db.DoTxn(ctx, nil, func(ctx context.Context) error {
		if _, err := db.Exec(ctx, `DELETE FROM devices WHERE user_id = $1 AND device_id <> $2`, userID, keep); err != nil {
			return fmt.Errorf("delete other devices: %w", err)
		}
		return db.DeleteToDeviceForOtherDevices(ctx, userID, keep)
	})
}

// InsertAccessToken stores a new access token's hash.
func (db *DB) InsertAccessToken(ctx context.Context, hash string, userID id.UserID, deviceID id.DeviceID, refreshID, expiresTS *int64) error {
	_, err := db.Exec(ctx, `
		INSERT INTO access_tokens (token_hash, user_id, device_id, refresh_token_id, expires_ts, created_ts)
		VALUES ($1, $2, $3, $4, $5, $6)`,
		hash, userID, deviceID, nullInt64(refreshID), nullInt64(expiresTS), nowMS())
	if err != nil {
		return fmt.Errorf("insert access token: %w", err)
	}
	return nil
}

// InsertRefreshToken stores a new refresh token's hash and returns its ID.
func (db *DB) InsertRefreshToken(ctx context.Context, hash string, userID id.UserID, deviceID id.DeviceID, prevID *int64) (int64, error) {
	var tokenID int64
	err := db.QueryRow(ctx, `
		INSERT INTO refresh_tokens (token_hash, user_id, device_id, prev_id, created_ts)
		VALUES ($1, $2, $3, $4, $5) RETURNING id`,
		hash, userID, deviceID, nullInt64(prevID), nowMS()).Scan(&tokenID)
	if err != nil {
		return 0, fmt.Errorf("insert refresh token: %w", err)
	}
	return tokenID, nil
}

const lookupAccessTokenQuery = `
	SELECT t.id, t.user_id, t.device_id, t.expires_ts, t.refresh_token_id, r.prev_id, u.is_admin, u.deactivated
	FROM access_tokens t
	JOIN users u ON u.user_id = t.user_id
	LEFT JOIN refresh_tokens r ON r.id = t.refresh_token_id
	WHERE t.token_hash = $1`

// LookupAccessToken resolves a token hash to its session, or ErrNotFound.
func (db *DB) LookupAccessToken(ctx context.Context, hash string) (*Session, error) {
	var s Session
	var expires, refreshID, prevID sql.NullInt64
	err := db.lookupToken.QueryRowContext(ctx, hash).
		Scan(&s.TokenID, &s.UserID, &s.DeviceID, &expires, &refreshID, &prevID, &s.IsAdmin, &s.Deactivated)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	} else if err != nil {
		return nil, fmt.Errorf("look up access token: %w", err)
	}
	s.ExpiresTS, s.RefreshTokenID, s.RefreshPrevID = ptrInt64(expires), ptrInt64(refreshID), ptrInt64(prevID)
	return &s, nil
}

// RetirePreviousRefreshToken revokes the refresh token that refreshTokenID
// replaced (and the access tokens of that older generation), now that the
// client has proven it received the new one.
func (db *DB) RetirePreviousRefreshToken(ctx context.Context, refreshTokenID, prevID int64) error {
	return db.DoTxn(ctx, nil, func(ctx context.Context) error {
		if _, err := db.Exec(ctx, `UPDATE refresh_tokens SET prev_id = NULL WHERE id = $1`, refreshTokenID); err != nil {
			return fmt.Errorf("clear prev refresh token: %w", err)
		}
		if _, err := db.Exec(ctx, `DELETE FROM refresh_tokens WHERE id = $1`, prevID); err != nil {
			return fmt.Errorf("delete prev refresh token: %w", err)
		}
		return nil
	})
}

// GetRefreshToken returns a refresh token by hash, or ErrNotFound.
func (db *DB) GetRefreshToken(ctx context.Context, hash string) (*RefreshToken, error) {
	var rt RefreshToken
	var prev sql.NullInt64
	err := db.QueryRow(ctx, `SELECT id, user_id, device_id, prev_id FROM refresh_tokens WHERE token_hash = $1`, hash).
		Scan(&rt.ID, &rt.UserID, &rt.DeviceID, &prev)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	} else if err != nil {
		return nil, fmt.Errorf("get refresh token: %w", err)
	}
	rt.PrevID = ptrInt64(prev)
	return &rt, nil
}

// DeleteRefreshSuccessors removes refresh tokens issued from refreshID that
// were never used: a client refreshing with the same token again evidently
// lost the earlier answer.
func (db *DB) DeleteRefreshSuccessors(ctx context.Context, refreshID int64) error {
	_, err := db.Exec(ctx, `DELETE FROM refresh_tokens WHERE prev_id = $1`, refreshID)
	if err != nil {
		return fmt.Errorf("delete refresh successors: %w", err)
	}
	return nil
}

// DeleteAccessToken revokes one access token.
func (db *DB) DeleteAccessToken(ctx context.Context, tokenID int64) error {
	_, err := db.Exec(ctx, `DELETE FROM access_tokens WHERE id = $1`, tokenID)
	return err
}
