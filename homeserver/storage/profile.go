package storage

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"

	"maunium.net/go/mautrix/id"
)

// MaxProfileBytes is the spec's cap on a whole profile (64 KiB).
const MaxProfileBytes = 64 * 1024

// ErrProfileTooLarge is returned when a write would exceed MaxProfileBytes.
var ErrProfileTooLarge = errors.New("profile too large")

// GetProfile returns every profile field of a user.
func (db *DB) GetProfile(ctx context.Context, userID id.UserID) (map[string]json.RawMessage, error) {
	rows, err := db.Query(ctx, `SELECT field, value FROM profile_fields WHERE user_id = $1`, userID)
	if err != nil {
		return nil, fmt.Errorf("get profile: %w", err)
	}
	defer rows.Close()
	profile := map[string]json.RawMessage{}
	for rows.Next() {
		var field, value string
		if err := rows.Scan(&field, &value); err != nil {
			return nil, fmt.Errorf("get profile: %w", err)
		}
		profile[field] = json.RawMessage(value)
	}
	return profile, rows.Err()
}

// GetProfileField returns one field or ErrNotFound.
func (db *DB) GetProfileField(ctx context.Context, userID id.UserID, field string) (json.RawMessage, error) {
	var value string
	err := db.QueryRow(ctx, `SELECT value FROM profile_fields WHERE user_id = $1 AND field = $2`, userID, field).Scan(&value)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	} else if err != nil {
		return nil, fmt.Errorf("get profile field: %w", err)
	}
	return json.RawMessage(value), nil
}

// SetProfileField sets one field, refusing with ErrProfileTooLarge if the
// profile (as the JSON object clients read) would pass 64 KiB.
func (db *DB) SetProfileField(ctx context.Context, userID id.UserID, field string, value json.RawMessage) error {
	return db.DoTxn(ctx, nil, func(ctx context.Context) error {
		profile, err := db.GetProfile(ctx, userID)
		if err != nil {
			return err
		}
		profile[field] = value
		if encoded, _ := json.Marshal(profile); len(encoded) > MaxProfileBytes {
			return ErrProfileTooLarge
		}
		_, err = db.Exec(ctx, `
			INSERT INTO profile_fields (user_id, field, value) VALUES ($1, $2, $3)
			ON CONFLICT (user_id, field) DO UPDATE SET value = excluded.value`, userID, field, string(value))
		if err != nil {
			return fmt.Errorf("set profile field: %w", err)
		}
		return nil
	})
}

// DeleteProfileField removes one field; deleting an absent field is fine.
func (db *DB) DeleteProfileField(ctx context.Context, userID id.UserID, field string) error {
	_, err := db.Exec(ctx, `DELETE FROM profile_fields WHERE user_id = $1 AND field = $2`, userID, field)
	if err != nil {
		return fmt.Errorf("delete profile field: %w", err)
	}
	return nil
}
