package storage

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"maunium.net/go/mautrix/id"
)

// LookupTxn returns the response stored for a client transaction ID, or
// ErrNotFound if the request is new. Transaction IDs are scoped to the
// device and the endpoint, as the spec requires.
func (db *DB) LookupTxn(ctx context.Context, userID id.UserID, deviceID id.DeviceID, endpoint, txnID string) ([]byte, error) {
	var resp string
	err := db.QueryRow(ctx, `SELECT response FROM client_txns WHERE user_id = $1 AND device_id = $2 AND endpoint = $3 AND txn_id = $4`,
		userID, deviceID, endpoint, txnID).Scan(&resp)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	} else if err != nil {
		return nil, fmt.Errorf("look up transaction: %w", err)
	}
	return []byte(resp), nil
}

// SaveTxn stores the response to a client transaction; call it in the
// transaction that did the work, so a retry sees either both or neither.
func (db *DB) SaveTxn(ctx context.Context, userID id.UserID, deviceID id.DeviceID, endpoint, txnID string, response []byte) error {
	_, err := db.Exec(ctx, `INSERT INTO client_txns (user_id, device_id, endpoint, txn_id, response, created_ts) VALUES ($1, $2, $3, $4, $5, $6)`,
		userID, deviceID, endpoint, txnID, string(response), time.Now().UnixMilli())
	if err != nil {
		return fmt.Errorf("save transaction: %w", err)
	}
	return nil
}
