package storage

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"maunium.net/go/mautrix/id"
)

// InsertOpenIDToken stores an OpenID token (its SHA-256 digest) valid until
// expiresTS, and prunes expired ones: tokens are short-lived and each
// request makes one, so pruning here keeps the table small without a
// background job.
func (db *DB) InsertOpenIDToken(ctx context.Context, tokenHash string, userID id.UserID, expiresTS int64) error {
	return db.DoTxn(ctx, nil, func(ctx context.Context) error {
		if _, err := db.Exec(ctx, `DELETE FROM openid_tokens WHERE expires_ts <= $1`, nowMS()); err != nil {
			return fmt.Errorf("prune openid tokens: %w", err)
		}
		if _, err := db.Exec(ctx, `INSERT INTO openid_tokens (token_hash, user_id, expires_ts) VALUES ($1, $2, $3)`,
			tokenHash, userID, expiresTS); err != nil {
			return fmt.Errorf("insert openid token: %w", err)
		}
		return nil
	})
}

// LookupOpenIDToken returns the user an unexpired OpenID token (by digest)
// was issued to, or ErrNotFound.
func (db *DB) LookupOpenIDToken(ctx context.Context, tokenHash string) (id.UserID, error) {
	var userID id.UserID
	err := db.QueryRow(ctx, `SELECT user_id FROM openid_tokens WHERE token_hash = $1 AND expires_ts > $2`,
		tokenHash, nowMS()).Scan(&userID)
	if errors.Is(err, sql.ErrNoRows) {
		return "", ErrNotFound
	} else if err != nil {
		return "", fmt.Errorf("look up openid token: %w", err)
	}
	return userID, nil
}
