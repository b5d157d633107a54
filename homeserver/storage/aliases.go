package storage

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"maunium.net/go/mautrix/id"
)

// ErrAliasExists is returned when an alias is already taken.
var ErrAliasExists = errors.New("alias already exists")

// CreateAlias maps an alias to a room.
func (db *DB) CreateAlias(ctx context.Context, alias id.RoomAlias, roomID id.RoomID, creator id.UserID) error {
	res, err := db.Exec(ctx, `INSERT INTO room_aliases (alias, room_id, creator, created_ts) VALUES ($1, $2, $3, $4) ON CONFLICT (alias) DO NOTHING`,
		alias, roomID, creator, time.Now().UnixMilli())
	if err != nil {
		return fmt.Errorf("create alias: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return ErrAliasExists
	}
	return nil
}

// ResolveAlias returns the room and creator of an alias, or ErrNotFound.
func (db *DB) ResolveAlias(ctx context.Context, alias id.RoomAlias) (id.RoomID, id.UserID, error) {
	var roomID id.RoomID
	var creator id.UserID
	err := db.QueryRow(ctx, `SELECT room_id, creator FROM room_aliases WHERE alias = $1`, alias).Scan(&roomID, &creator)
	if errors.Is(err, sql.ErrNoRows) {
		return "", "", ErrNotFound
	} else if err != nil {
		return "", "", fmt.Errorf("resolve alias: %w", err)
	}
	return roomID, creator, nil
}

// DeleteAlias removes an alias.
func (db *DB) DeleteAlias(ctx context.Context, alias id.RoomAlias) error {
	return db.expectOne(ctx, "delete alias", `DELETE FROM room_aliases WHERE alias = $1`, alias)
}

// RoomAliases lists a room's local aliases.
func (db *DB) RoomAliases(ctx context.Context, roomID id.RoomID) ([]id.RoomAlias, error) {
	rows, err := db.Query(ctx, `SELECT alias FROM room_aliases WHERE room_id = $1 ORDER BY alias`, roomID)
	if err != nil {
		return nil, fmt.Errorf("room aliases: %w", err)
	}
	defer rows.Close()
	aliases := []id.RoomAlias{}
	for rows.Next() {
		var a id.RoomAlias
		if err := rows.Scan(&a); err != nil {
			return nil, err
		}
		aliases = append(aliases, a)
	}
	return aliases, rows.Err()
}
