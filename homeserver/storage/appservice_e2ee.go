package storage

import (
	"context"
	"fmt"

	"go.mau.fi/util/dbutil"
	"maunium.net/go/mautrix/id"
)

// MembershipsInRange returns the membership changes in (after, upto], in
// stream order. Every change is an event of the stream, so the range an
// appservice transaction covers bounds it.
func (db *DB) MembershipsInRange(ctx context.Context, after, upto int64) ([]Membership, error) {
	return queryList(ctx, db, "membership changes", func(row dbutil.Scannable) (m Membership, err error) {
		err = row.Scan(&m.RoomID, &m.UserID, &m.Membership, &m.StreamPos, &m.Sender)
		return m, err
	}, `SELECT room_id, user_id, membership, stream_pos, sender FROM memberships
		WHERE stream_pos > $1 AND stream_pos <= $2 ORDER BY stream_pos`, after, upto)
}

// DeviceKeyState is what an appservice is told of one of its devices'
// end-to-end keys (MSC3202): unclaimed one-time keys per algorithm and
// the algorithms of unused fallback keys (sorted, never nil).
type DeviceKeyState struct {
	UserID   id.UserID
	DeviceID id.DeviceID
	OTKs     map[string]int
	Fallback []string
}

// AppserviceDeviceKeys returns the key state of the devices that hold
// keys (device keys, one-time keys or fallback keys) and belong to the
// appservice's sender or to users it registered, ordered by user and
// device, at most limit of them.
func (db *DB) AppserviceDeviceKeys(ctx context.Context, asID string, sender id.UserID, limit int) ([]*DeviceKeyState, error) {
	const owned = `d.user_id IN (SELECT user_id FROM users WHERE appservice_id = $1 OR user_id = $2)`
	devices, err := queryList(ctx, db, "appservice devices with keys", func(row dbutil.Scannable) (*DeviceKeyState, error) {
		s := &DeviceKeyState{OTKs: map[string]int{}, Fallback: []string{}}
		return s, row.Scan(&s.UserID, &s.DeviceID)
	}, `SELECT d.user_id, d.device_id FROM devices d WHERE `+owned+` AND (
			EXISTS (SELECT 1 FROM e2e_device_keys k WHERE k.user_id = d.user_id AND k.device_id = d.device_id)
			OR EXISTS (SELECT 1 FROM e2e_one_time_keys k WHERE k.user_id = d.user_id AND k.device_id = d.device_id)
			OR EXISTS (SELECT 1 FROM e2e_fallback_keys k WHERE k.user_id = d.user_id AND k.device_id = d.device_id))
		ORDER BY d.user_id, d.device_id LIMIT $3`, asID, sender, limit)
	if err != nil || len(devices) == 0 {
		return devices, err
	}
	type device struct {
		user   id.UserID
		device id.DeviceID
	}
	byDevice := make(map[device]*DeviceKeyState, len(devices))
	for _, s := range devices {
		byDevice[device{s.UserID, s.DeviceID}] = s
	}
	// Keys of devices past the limit are read and dropped: the limit
	// bounds the transaction, not these two grouped reads.
	rows, err := db.Query(ctx, `SELECT d.user_id, d.device_id, d.algorithm, COUNT(*) FROM e2e_one_time_keys d WHERE `+owned+`
		GROUP BY d.user_id, d.device_id, d.algorithm`, asID, sender)
	if err != nil {
		return nil, fmt.Errorf("count appservice one-time keys: %w", err)
	}
	for rows.Next() {
		var d device
		var alg string
		var n int
		if err := rows.Scan(&d.user, &d.device, &alg, &n); err != nil {
			rows.Close()
			return nil, fmt.Errorf("count appservice one-time keys: %w", err)
		}
		if s := byDevice[d]; s != nil {
			s.OTKs[alg] = n
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("count appservice one-time keys: %w", err)
	}
	rows, err = db.Query(ctx, `SELECT d.user_id, d.device_id, d.algorithm FROM e2e_fallback_keys d WHERE `+owned+` AND NOT d.used
		ORDER BY d.user_id, d.device_id, d.algorithm`, asID, sender)
	if err != nil {
		return nil, fmt.Errorf("appservice fallback keys: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var d device
		var alg string
		if err := rows.Scan(&d.user, &d.device, &alg); err != nil {
			return nil, fmt.Errorf("appservice fallback keys: %w", err)
		}
		if s := byDevice[d]; s != nil {
			s.Fallback = append(s.Fallback, alg)
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("appservice fallback keys: %w", err)
	}
	return devices, nil
}
