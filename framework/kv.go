package framework

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"

	"go.mau.fi/util/dbutil"
	"maunium.net/go/mautrix/id"
)

// KV is small persistent state of a bot or bridge under one scope: a room,
// a user, or the whole appservice. Values are JSON.
type KV struct {
	db    *dbutil.Database
	scope string
}

// NewKV returns the state under scope in a database that has the
// framework's tables.
func NewKV(db *dbutil.Database, scope string) KV { return KV{db, scope} }

// RoomKV is the state of one room.
func (a *Appservice) RoomKV(roomID id.RoomID) KV { return KV{a.DB, "room:" + string(roomID)} }

// UserKV is the state of one user.
func (a *Appservice) UserKV(userID id.UserID) KV { return KV{a.DB, "user:" + string(userID)} }

// GlobalKV is the appservice-wide state.
func (a *Appservice) GlobalKV() KV { return KV{a.DB, "global"} }

// Get decodes the value of key into v; found is false when there is none.
func (kv KV) Get(ctx context.Context, key string, v any) (found bool, err error) {
	var raw string
	err = kv.db.QueryRow(ctx, `SELECT value FROM framework_kv WHERE scope = $1 AND key = $2`, kv.scope, key).Scan(&raw)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	} else if err != nil {
		return false, fmt.Errorf("read %s/%s: %w", kv.scope, key, err)
	}
	if err := json.Unmarshal([]byte(raw), v); err != nil {
		return false, fmt.Errorf("decode %s/%s: %w", kv.scope, key, err)
	}
	return true, nil
}

// Set stores v (as JSON) under key.
func (kv KV) Set(ctx context.Context, key string, v any) error {
	raw, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode %s/%s: %w", kv.scope, key, err)
	}
	_, err = kv.db.Exec(ctx, `INSERT INTO framework_kv (scope, key, value) VALUES ($1, $2, $3)
		ON CONFLICT (scope, key) DO UPDATE SET value = excluded.value`, kv.scope, key, string(raw))
	if err != nil {
		return fmt.Errorf("write %s/%s: %w", kv.scope, key, err)
	}
	return nil
}

// Delete removes key.
func (kv KV) Delete(ctx context.Context, key string) error {
	if _, err := kv.db.Exec(ctx, `DELETE FROM framework_kv WHERE scope = $1 AND key = $2`, kv.scope, key); err != nil {
		return fmt.Errorf("delete %s/%s: %w", kv.scope, key, err)
	}
	return nil
}

// Keys lists the scope's keys in order.
func (kv KV) Keys(ctx context.Context) ([]string, error) {
	rows, err := kv.db.Query(ctx, `SELECT key FROM framework_kv WHERE scope = $1 ORDER BY key`, kv.scope)
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", kv.scope, err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var k string
		if err := rows.Scan(&k); err != nil {
			return nil, fmt.Errorf("list %s: %w", kv.scope, err)
		}
		out = append(out, k)
	}
	return out, rows.Err()
}
