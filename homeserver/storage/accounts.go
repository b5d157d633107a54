package storage

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"maunium.net/go/mautrix/id"
)

// User is a local account.
type User struct {
	UserID       id.UserID
	PasswordHash string // empty: no password login possible
	IsAdmin      bool
	Deactivated  bool
	UserType     string
	CreatedTS    int64
	// AppserviceID names the appservice that registered this user (its ghost).
	AppserviceID string
}

// ErrUserExists is returned by CreateUser when the ID is taken.
var ErrUserExists = errors.New("user already exists")

// CreateUser inserts a user. It returns ErrUserExists if the ID is taken,
// including by a deactivated account (IDs are never reused).
func (db *DB) CreateUser(ctx context.Context, u *User) error {
	if u.CreatedTS == 0 {
		u.CreatedTS = nowMS()
	}
	res, err := db.Exec(ctx, `
		INSERT INTO users (user_id, password_hash, is_admin, deactivated, user_type, created_ts, appservice_id)
		VALUES ($1, $2, $3, false, $4, $5, $6) ON CONFLICT (user_id) DO NOTHING`,
		u.UserID, nullString(u.PasswordHash), u.IsAdmin, nullString(u.UserType), u.CreatedTS, nullString(u.AppserviceID))
	if err != nil {
		return fmt.Errorf("insert user: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return ErrUserExists
	}
	return nil
}

const userColumns = `user_id, password_hash, is_admin, deactivated, user_type, created_ts, appservice_id`

func scanUser(row interface{ Scan(...any) error }) (*User, error) {
	var u User
	var hash, userType, asID sql.NullString
	if err := row.Scan(&u.UserID, &hash, &u.IsAdmin, &u.Deactivated, &userType, &u.CreatedTS, &asID); err != nil {
		return nil, err
	}
	u.PasswordHash, u.UserType, u.AppserviceID = hash.String, userType.String, asID.String
	return &u, nil
}

// GetUser returns the user or ErrNotFound.
func (db *DB) GetUser(ctx context.Context, userID id.UserID) (*User, error) {
	u, err := scanUser(db.QueryRow(ctx, `SELECT `+userColumns+` FROM users WHERE user_id = $1`, userID))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	} else if err != nil {
		return nil, fmt.Errorf("get user: %w", err)
	}
	return u, nil
}

// ListUsers returns every account, oldest first.
func (db *DB) ListUsers(ctx context.Context) ([]*User, error) {
	rows, err := db.Query(ctx, `SELECT `+userColumns+` FROM users ORDER BY created_ts, user_id`)
	if err != nil {
		return nil, fmt.Errorf("list users: %w", err)
	}
	defer rows.Close()
	var users []*User
	for rows.Next() {
		u, err := scanUser(rows)
		if err != nil {
			return nil, fmt.Errorf("list users: %w", err)
		}
		users = append(users, u)
	}
	return users, rows.Err()
}

// SetPasswordHash replaces a user's password hash.
func (db *DB) SetPasswordHash(ctx context.Context, userID id.UserID, hash string) error {
	return db.expectOne(ctx, "set password", `UPDATE users SET password_hash = $2 WHERE user_id = $1 AND NOT deactivated`, userID, hash)
}

// SetAdmin grants or revokes server admin.
func (db *DB) SetAdmin(ctx context.Context, userID id.UserID, admin bool) error {
	return db.expectOne(ctx, "set admin", `UPDATE users SET is_admin = $2 WHERE user_id = $1`, userID, admin)
}

// DeactivateUser locks an account for good: password removed, every device
// and token deleted, and with erase the profile too. The user ID stays taken.
func (db *DB) DeactivateUser(ctx context.Context, userID id.UserID, erase bool) error {
	return db.DoTxn(ctx, nil, func(ctx context.Context) error {
		if err := db.expectOne(ctx, "deactivate", `UPDATE users SET deactivated = true, password_hash = NULL, is_admin = false WHERE user_id = $1`, userID); err != nil {
			return err
		}
		if err := db.DeleteOtherDevices(ctx, userID, ""); err != nil {
			return err
		}
		if erase {
			if _, err := db.Exec(ctx, `DELETE FROM profile_fields WHERE user_id = $1`, userID); err != nil {
				return fmt.Errorf("erase profile: %w", err)
			}
		}
		return nil
	})
}

func (db *DB) expectOne(ctx context.Context, what, query string, args ...any) error {
	res, err := db.Exec(ctx, query, args...)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return ErrNotFound
	}
	return nil
}

func nullString(s string) sql.NullString { return sql.NullString{String: s, Valid: s != ""} }

func nullInt64(p *int64) sql.NullInt64 {
	if p == nil {
		return sql.NullInt64{}
	}
	return sql.NullInt64{Int64: *p, Valid: true}
}

func ptrInt64(n sql.NullInt64) *int64 {
	if !n.Valid {
		return nil
	}
	return &n.Int64
}
