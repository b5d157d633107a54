package storage

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"

	"maunium.net/go/mautrix/id"
)

// RegistrationToken is a pre-shared token that lets someone register.
type RegistrationToken struct {
	Token       string `json:"token"`
	UsesAllowed *int64 `json:"uses_allowed"`
	Pending     int64  `json:"pending"`
	Completed   int64  `json:"completed"`
	ExpiryTS    *int64 `json:"expiry_time"`
}

// Valid reports whether the token can start another registration at now.
func (t *RegistrationToken) Valid(now int64) bool {
	if t.ExpiryTS != nil && *t.ExpiryTS <= now {
		return false
	}
	return t.UsesAllowed == nil || t.Pending+t.Completed < *t.UsesAllowed
}

// ErrTokenExists is returned when creating a token that already exists.
var ErrTokenExists = errors.New("registration token already exists")

// CreateRegistrationToken inserts a token.
func (db *DB) CreateRegistrationToken(ctx context.Context, t *RegistrationToken) error {
	res, err := db.Exec(ctx, `
		INSERT INTO registration_tokens (token, uses_allowed, pending, completed, expiry_ts, created_ts)
		VALUES ($1, $2, 0, 0, $3, $4) ON CONFLICT (token) DO NOTHING`,
		t.Token, nullInt64(t.UsesAllowed), nullInt64(t.ExpiryTS), nowMS())
	if err != nil {
		return fmt.Errorf("create registration token: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return ErrTokenExists
	}
	return nil
}

const regTokenColumns = `token, uses_allowed, pending, completed, expiry_ts`

func scanRegToken(row interface{ Scan(...any) error }) (*RegistrationToken, error) {
	var t RegistrationToken
	var uses, expiry sql.NullInt64
	if err := row.Scan(&t.Token, &uses, &t.Pending, &t.Completed, &expiry); err != nil {
		return nil, err
	}
	t.UsesAllowed, t.ExpiryTS = ptrInt64(uses), ptrInt64(expiry)
	return &t, nil
}

// GetRegistrationToken returns a token or ErrNotFound.
func (db *DB) GetRegistrationToken(ctx context.Context, token string) (*RegistrationToken, error) {
	t, err := scanRegToken(db.QueryRow(ctx, `SELECT `+regTokenColumns+` FROM registration_tokens WHERE token = $1`, token))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	} else if err != nil {
		return nil, fmt.Errorf("get registration token: %w", err)
	}
	return t, nil
}

// ListRegistrationTokens returns all tokens, oldest first.
func (db *DB) ListRegistrationTokens(ctx context.Context) ([]*RegistrationToken, error) {
	rows, err := db.Query(ctx, `SELECT `+regTokenColumns+` FROM registration_tokens ORDER BY created_ts, token`)
	if err != nil {
		return nil, fmt.Errorf("list registration tokens: %w", err)
	}
	defer rows.Close()
	tokens := []*RegistrationToken{}
	for rows.Next() {
		t, err := scanRegToken(rows)
		if err != nil {
			return nil, fmt.Errorf("list registration tokens: %w", err)
		}
		tokens = append(tokens, t)
	}
	return tokens, rows.Err()
}

// UpdateRegistrationToken changes a token's limits.
func (db *DB) UpdateRegistrationToken(ctx context.Context, token string, usesAllowed, expiryTS *int64) error {
	return db.expectOne(ctx, "update registration token",
		`UPDATE registration_tokens SET uses_allowed = $2, expiry_ts = $3 WHERE token = $1`,
		token, nullInt64(usesAllowed), nullInt64(expiryTS))
}

// DeleteRegistrationToken removes a token.
func (db *DB) DeleteRegistrationToken(ctx context.Context, token string) error {
	return db.expectOne(ctx, "delete registration token", `DELETE FROM registration_tokens WHERE token = $1`, token)
}

// ReserveRegistrationToken atomically counts one pending use of a token if
// it is still valid; false means it is unknown, used up or expired. The
// single conditional UPDATE makes two racing registrations unable to both
// take a token's last use.
func (db *DB) ReserveRegistrationToken(ctx context.Context, token string, now int64) (bool, error) {
	res, err := db.Exec(ctx, `
		UPDATE registration_tokens SET pending = pending + 1
		WHERE token = $1
		  AND (expiry_ts IS NULL OR expiry_ts > $2)
		  AND (uses_allowed IS NULL OR pending + completed < uses_allowed)`, token, now)
	if err != nil {
		return false, fmt.Errorf("reserve registration token: %w", err)
	}
	n, _ := res.RowsAffected()
	return n == 1, nil
}

// CompleteRegistrationToken turns a pending use into a completed one.
func (db *DB) CompleteRegistrationToken(ctx context.Context, token string) error {
	_, err := db.Exec(ctx, `UPDATE registration_tokens SET pending = pending - 1, completed = completed + 1 WHERE token = $1 AND pending > 0`, token)
	return err
}

// UIASession is a user-interactive authentication session.
type UIASession struct {
	SessionID         string
	Endpoint          string
	UserID            id.UserID
	Completed         []string
	RegistrationToken string
	CreatedTS         int64
}

// CreateUIASession stores a new session.
func (db *DB) CreateUIASession(ctx context.Context, s *UIASession) error {
	s.CreatedTS = nowMS()
	completed, _ := json.Marshal(nonNil(s.Completed))
	_, err := db.Exec(ctx, `
		INSERT INTO uia_sessions (session_id, endpoint, user_id, completed, registration_token, created_ts)
		VALUES ($1, $2, $3, $4, $5, $6)`,
		s.SessionID, s.Endpoint, nullString(string(s.UserID)), string(completed), nullString(s.RegistrationToken), s.CreatedTS)
	if err != nil {
		return fmt.Errorf("create uia session: %w", err)
	}
	return nil
}

// GetUIASession returns a session or ErrNotFound.
func (db *DB) GetUIASession(ctx context.Context, sessionID string) (*UIASession, error) {
	var s UIASession
	var userID, regToken sql.NullString
	var completed string
	err := db.QueryRow(ctx, `
		SELECT session_id, endpoint, user_id, completed, registration_token, created_ts
		FROM uia_sessions WHERE session_id = $1`, sessionID).
		Scan(&s.SessionID, &s.Endpoint, &userID, &completed, &regToken, &s.CreatedTS)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	} else if err != nil {
		return nil, fmt.Errorf("get uia session: %w", err)
	}
	s.UserID, s.RegistrationToken = id.UserID(userID.String), regToken.String
	if err := json.Unmarshal([]byte(completed), &s.Completed); err != nil {
		return nil, fmt.Errorf("get uia session: bad completed list: %w", err)
	}
	return &s, nil
}

// UpdateUIASession saves completed stages and the reserved token.
func (db *DB) UpdateUIASession(ctx context.Context, s *UIASession) error {
	completed, _ := json.Marshal(nonNil(s.Completed))
	_, err := db.Exec(ctx, `UPDATE uia_sessions SET completed = $2, registration_token = $3 WHERE session_id = $1`,
		s.SessionID, string(completed), nullString(s.RegistrationToken))
	if err != nil {
		return fmt.Errorf("update uia session: %w", err)
	}
	return nil
}

// DeleteUIASession ends a session after the request it guarded succeeded.
func (db *DB) DeleteUIASession(ctx context.Context, sessionID string) error {
	_, err := db.Exec(ctx, `DELETE FROM uia_sessions WHERE session_id = $1`, sessionID)
	return err
}

// ExpireUIASessions deletes sessions created before cutoff and gives back
// the registration-token uses they held.
func (db *DB) ExpireUIASessions(ctx context.Context, cutoff int64) (int64, error) {
	var expired int64
	err := db.DoTxn(ctx, nil, func(ctx context.Context) error {
		_, err := db.Exec(ctx, `
			UPDATE registration_tokens SET pending = pending - (
				SELECT COUNT(*) FROM uia_sessions s WHERE s.registration_token = registration_tokens.token AND s.created_ts < $1
			) WHERE token IN (SELECT registration_token FROM uia_sessions WHERE created_ts < $1 AND registration_token IS NOT NULL)`, cutoff)
		if err != nil {
			return fmt.Errorf("release registration tokens: %w", err)
		}
		res, err := db.Exec(ctx, `DELETE FROM uia_sessions WHERE created_ts < $1`, cutoff)
		if err != nil {
			return fmt.Errorf("delete uia sessions: %w", err)
		}
		expired, _ = res.RowsAffected()
		_, err = db.Exec(ctx, `DELETE FROM admin_register_nonces WHERE created_ts < $1`, cutoff)
		return err
	})
	return expired, err
}

// InsertAdminNonce stores a shared-secret registration nonce.
func (db *DB) InsertAdminNonce(ctx context.Context, nonce string) error {
	_, err := db.Exec(ctx, `INSERT INTO admin_register_nonces (nonce, created_ts) VALUES ($1, $2)`, nonce, nowMS())
	return err
}

// ConsumeAdminNonce deletes a nonce issued at or after notBefore and reports
// whether it existed: each nonce works once.
func (db *DB) ConsumeAdminNonce(ctx context.Context, nonce string, notBefore int64) (bool, error) {
	res, err := db.Exec(ctx, `DELETE FROM admin_register_nonces WHERE nonce = $1 AND created_ts >= $2`, nonce, notBefore)
	if err != nil {
		return false, fmt.Errorf("consume nonce: %w", err)
	}
	n, _ := res.RowsAffected()
	return n == 1, nil
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}
