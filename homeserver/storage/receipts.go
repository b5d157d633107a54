package storage

// Receipts (spec: "Receipts") and the fully read marker (spec: "Read and
// unread markers"). The receipts table keeps the latest receipt per room,
// receipt type, user and thread; each write takes a stream position so
// /sync can send the receipts that changed in (since, upto]. Receipts and
// the marker only move forward: one pointing at an event older than the
// current one (in stream order) is ignored, as Synapse does.

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"go.mau.fi/util/dbutil"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// FullyReadType is the room account data type of the fully read marker.
const FullyReadType = "m.fully_read"

// Receipt is one stored receipt.
type Receipt struct {
	RoomID id.RoomID
	Type   event.ReceiptType
	UserID id.UserID
	// ThreadID is "" for unthreaded receipts, else "main" or a thread
	// root's event ID.
	ThreadID  string
	EventID   id.EventID
	TS        int64
	StreamPos int64
}

// ReceiptInfo is one user's receipt in an m.receipt event's content.
type ReceiptInfo struct {
	TS       int64  `json:"ts"`
	ThreadID string `json:"thread_id,omitempty"`
}

// ReceiptContent is the content of an m.receipt event: event ID → receipt
// type → user → receipt.
type ReceiptContent map[id.EventID]map[event.ReceiptType]map[id.UserID]ReceiptInfo

// GroupReceipts turns receipts into m.receipt contents per room (/sync and
// appservice transactions both send them so).
func GroupReceipts(receipts []Receipt) map[id.RoomID]ReceiptContent {
	byRoom := map[id.RoomID]ReceiptContent{}
	for _, r := range receipts {
		content := byRoom[r.RoomID]
		if content == nil {
			content = ReceiptContent{}
			byRoom[r.RoomID] = content
		}
		types := content[r.EventID]
		if types == nil {
			types = map[event.ReceiptType]map[id.UserID]ReceiptInfo{}
			content[r.EventID] = types
		}
		users := types[r.Type]
		if users == nil {
			users = map[id.UserID]ReceiptInfo{}
			types[r.Type] = users
		}
		users[r.UserID] = ReceiptInfo{TS: r.TS, ThreadID: r.ThreadID}
	}
	return byRoom
}

// receiptEventPos returns the stream position of the event the user's
// receipt of one type and thread points at (found=false when there is no
// receipt).
func (db *DB) receiptEventPos(ctx context.Context, roomID id.RoomID, receiptType event.ReceiptType, userID id.UserID, threadID string) (pos int64, found bool, err error) {
	err = db.QueryRow(ctx, `SELECT e.stream_pos FROM receipts r JOIN events e ON e.event_id = r.event_id
		WHERE r.room_id = $1 AND r.receipt_type = $2 AND r.user_id = $3 AND r.thread_id = $4`,
		roomID, string(receiptType), userID, threadID).Scan(&pos)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, false, nil
	} else if err != nil {
		return 0, false, fmt.Errorf("read receipt position: %w", err)
	}
	return pos, true, nil
}

// SetReceipt points the user's receipt of receiptType (in threadID, ""
// for unthreaded) at eventID, whose stream position is eventPos, stamped
// with the current time. A receipt already at or after eventPos is kept.
// It returns the write's stream position, or 0 when nothing changed.
func (db *DB) SetReceipt(ctx context.Context, roomID id.RoomID, receiptType event.ReceiptType, userID id.UserID, threadID string, eventID id.EventID, eventPos int64) (int64, error) {
	// Clients repeat receipts a lot: answer those without taking the
	// stream lock.
	if cur, found, err := db.receiptEventPos(ctx, roomID, receiptType, userID, threadID); err != nil {
		return 0, err
	} else if found && cur >= eventPos {
		return 0, nil
	}
	// The stream position first: it locks the counter row, so the check
	// below sees every earlier writer's receipt.
	return db.writeAtNewPos(ctx, func(ctx context.Context, pos int64) error {
		cur, found, err := db.receiptEventPos(ctx, roomID, receiptType, userID, threadID)
		if err != nil {
			return err
		} else if found && cur >= eventPos {
			return errUnchanged
		}
		_, err = db.Exec(ctx, `
			INSERT INTO receipts (room_id, receipt_type, user_id, thread_id, event_id, ts, stream_pos)
			VALUES ($1, $2, $3, $4, $5, $6, $7)
			ON CONFLICT (room_id, receipt_type, user_id, thread_id) DO UPDATE
			SET event_id = excluded.event_id, ts = excluded.ts, stream_pos = excluded.stream_pos`,
			roomID, string(receiptType), userID, threadID, eventID, nowMS(), pos)
		if err != nil {
			return fmt.Errorf("set receipt: %w", err)
		}
		return nil
	})
}

// receiptQueryBatch room IDs per query keep it under SQLite's
// bound-parameter limit.
const receiptQueryBatch = 500

// ReceiptsSince returns the receipts of rooms written in (since, upto]
// (since 0: all current receipts) that viewer may see: everyone's m.read,
// and m.read.private only of viewer. Each room's receipts come in stream
// order.
func (db *DB) ReceiptsSince(ctx context.Context, roomIDs []id.RoomID, viewer id.UserID, since, upto int64) ([]Receipt, error) {
	var out []Receipt
	for start := 0; start < len(roomIDs); start += receiptQueryBatch {
		batch := roomIDs[start:min(start+receiptQueryBatch, len(roomIDs))]
		args := []any{since, upto, viewer, string(event.ReceiptTypeReadPrivate)}
		placeholders := make([]string, len(batch))
		for i, r := range batch {
			args = append(args, r)
			placeholders[i] = fmt.Sprintf("$%d", len(args))
		}
		rows, err := db.Query(ctx, `SELECT room_id, receipt_type, user_id, thread_id, event_id, ts, stream_pos FROM receipts
			WHERE room_id IN (`+strings.Join(placeholders, ", ")+`) AND stream_pos > $1 AND stream_pos <= $2
				AND (receipt_type <> $4 OR user_id = $3)
			ORDER BY room_id, stream_pos`, args...)
		if err != nil {
			return nil, fmt.Errorf("receipts since: %w", err)
		}
		for rows.Next() {
			var r Receipt
			var receiptType string
			if err := rows.Scan(&r.RoomID, &receiptType, &r.UserID, &r.ThreadID, &r.EventID, &r.TS, &r.StreamPos); err != nil {
				rows.Close()
				return nil, fmt.Errorf("receipts since: %w", err)
			}
			r.Type = event.ReceiptType(receiptType)
			out = append(out, r)
		}
		err = rows.Err()
		rows.Close()
		if err != nil {
			return nil, fmt.Errorf("receipts since: %w", err)
		}
	}
	return out, nil
}

// ReadersInRange returns the users whose m.read or m.read.private receipt
// moved in (after, upto]: their unread counts may have changed.
func (db *DB) ReadersInRange(ctx context.Context, after, upto int64) ([]id.UserID, error) {
	return queryList(ctx, db, "readers in range", func(row dbutil.Scannable) (u id.UserID, err error) {
		err = row.Scan(&u)
		return u, err
	}, `SELECT DISTINCT user_id FROM receipts WHERE stream_pos > $1 AND stream_pos <= $2 AND receipt_type IN ($3, $4)`,
		after, upto, string(event.ReceiptTypeRead), string(event.ReceiptTypeReadPrivate))
}

// ReadUpTo returns, per thread ("" for unthreaded receipts), the stream
// position of the furthest event the user's m.read or m.read.private
// receipt in the room points at: whichever of the two is ahead counts
// (spec: "Receiving notifications").
func (db *DB) ReadUpTo(ctx context.Context, roomID id.RoomID, userID id.UserID) (map[string]int64, error) {
	rows, err := db.Query(ctx, `SELECT r.thread_id, MAX(e.stream_pos) FROM receipts r JOIN events e ON e.event_id = r.event_id
		WHERE r.room_id = $1 AND r.receipt_type IN ($2, $3) AND r.user_id = $4 GROUP BY r.thread_id`,
		roomID, string(event.ReceiptTypeRead), string(event.ReceiptTypeReadPrivate), userID)
	if err != nil {
		return nil, fmt.Errorf("read positions: %w", err)
	}
	defer rows.Close()
	out := map[string]int64{}
	for rows.Next() {
		var thread string
		var pos int64
		if err := rows.Scan(&thread, &pos); err != nil {
			return nil, fmt.Errorf("read positions: %w", err)
		}
		out[thread] = pos
	}
	return out, rows.Err()
}

// fullyReadContent is the m.fully_read account data content.
type fullyReadContent struct {
	EventID id.EventID `json:"event_id"`
}

// SetFullyRead moves the user's fully read marker in a room (the
// m.fully_read room account data) to eventID, whose stream position is
// eventPos, unless it already points at an event at or after it. It
// returns the write's stream position, or 0 when nothing changed.
func (db *DB) SetFullyRead(ctx context.Context, userID id.UserID, roomID id.RoomID, eventID id.EventID, eventPos int64) (int64, error) {
	content, err := json.Marshal(fullyReadContent{EventID: eventID})
	if err != nil {
		return 0, err
	}
	return db.writeAtNewPos(ctx, func(ctx context.Context, pos int64) error {
		old, err := db.GetAccountData(ctx, userID, roomID, FullyReadType)
		if err != nil && !errors.Is(err, ErrNotFound) {
			return err
		}
		var prev fullyReadContent
		if old != nil && json.Unmarshal(old, &prev) == nil && prev.EventID != "" {
			if prev.EventID == eventID {
				return errUnchanged
			}
			var prevPos int64
			err := db.QueryRow(ctx, `SELECT stream_pos FROM events WHERE event_id = $1 AND room_id = $2`, prev.EventID, roomID).Scan(&prevPos)
			if err == nil && prevPos >= eventPos {
				return errUnchanged
			} else if err != nil && !errors.Is(err, sql.ErrNoRows) {
				return fmt.Errorf("read fully read marker position: %w", err)
			}
		}
		if err := db.upsertAccountData(ctx, userID, roomID, FullyReadType, content, pos); err != nil {
			return fmt.Errorf("set fully read marker: %w", err)
		}
		return nil
	})
}
