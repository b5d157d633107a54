package storage

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"

	"go.mau.fi/util/dbutil"
	"maunium.net/go/mautrix/id"
)

// ReportKind is what a content report is about.
type ReportKind string

const (
	ReportEvent ReportKind = "event"
	ReportRoom  ReportKind = "room"
	ReportUser  ReportKind = "user"
)

// Report is a user's report of an event, a room or a user to the server
// admins (spec: "Reporting Content").
type Report struct {
	ID       int64
	Kind     ReportKind
	Reporter id.UserID
	RoomID   id.RoomID
	EventID  id.EventID
	// UserID is the reported user, or the reported event's sender.
	UserID id.UserID
	// Reason is nil when an event report gave none.
	Reason *string
	// Score is the -100…0 of event reports from clients of spec versions
	// before v1.18, nil otherwise.
	Score      *int64
	ReceivedTS int64
}

// InsertReport stores a report and returns its ID.
func (db *DB) InsertReport(ctx context.Context, r *Report) (int64, error) {
	var reason sql.NullString
	if r.Reason != nil {
		reason = sql.NullString{String: *r.Reason, Valid: true}
	}
	var reportID int64
	err := db.QueryRow(ctx, `INSERT INTO content_reports (kind, reporter, room_id, event_id, user_id, reason, score, received_ts)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id`,
		string(r.Kind), r.Reporter, nullString(string(r.RoomID)), nullString(string(r.EventID)), nullString(string(r.UserID)),
		reason, nullInt64(r.Score), nowMS()).Scan(&reportID)
	if err != nil {
		return 0, fmt.Errorf("insert report: %w", err)
	}
	return reportID, nil
}

// ReportQuery selects reports of one kind for listing.
type ReportQuery struct {
	Kind ReportKind
	// Offset and Limit page through the list, newest first unless Forwards.
	Offset, Limit int
	Forwards      bool
	// Optional filters: the room, the reporter, the reported user (or the
	// reported event's sender).
	RoomID   id.RoomID
	Reporter id.UserID
	UserID   id.UserID
}

const reportColumns = `id, kind, reporter, room_id, event_id, user_id, reason, score, received_ts`

func scanReport(row dbutil.Scannable) (*Report, error) {
	var r Report
	var roomID, eventID, userID, reason sql.NullString
	var score sql.NullInt64
	if err := row.Scan(&r.ID, &r.Kind, &r.Reporter, &roomID, &eventID, &userID, &reason, &score, &r.ReceivedTS); err != nil {
		return nil, err
	}
	r.RoomID, r.EventID, r.UserID = id.RoomID(roomID.String), id.EventID(eventID.String), id.UserID(userID.String)
	if reason.Valid {
		r.Reason = &reason.String
	}
	r.Score = ptrInt64(score)
	return &r, nil
}

// ListReports returns a page of reports and how many match in all.
func (db *DB) ListReports(ctx context.Context, q ReportQuery) ([]*Report, int, error) {
	conds := []string{"kind = $1"}
	args := []any{string(q.Kind)}
	for column, v := range map[string]string{"room_id": string(q.RoomID), "reporter": string(q.Reporter), "user_id": string(q.UserID)} {
		if v != "" {
			args = append(args, v)
			conds = append(conds, fmt.Sprintf("%s = $%d", column, len(args)))
		}
	}
	where := strings.Join(conds, " AND ")
	var total int
	if err := db.QueryRow(ctx, `SELECT count(*) FROM content_reports WHERE `+where, args...).Scan(&total); err != nil {
		return nil, 0, fmt.Errorf("count reports: %w", err)
	}
	order := "DESC"
	if q.Forwards {
		order = "ASC"
	}
	args = append(args, q.Limit, q.Offset)
	out, err := queryList(ctx, db, "list reports", scanReport, fmt.Sprintf(`SELECT %s FROM content_reports WHERE %s ORDER BY id %s LIMIT $%d OFFSET $%d`,
		reportColumns, where, order, len(args)-1, len(args)), args...)
	return out, total, err
}

// GetReport returns one report of the given kind, or ErrNotFound.
func (db *DB) GetReport(ctx context.Context, kind ReportKind, reportID int64) (*Report, error) {
	r, err := scanReport(db.QueryRow(ctx, `SELECT `+reportColumns+` FROM content_reports WHERE id = $1 AND kind = $2`, reportID, string(kind)))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	} else if err != nil {
		return nil, fmt.Errorf("get report: %w", err)
	}
	return r, nil
}

// UserKnown reports whether a user has an account here or has ever had a
// membership in a room here (how remote users are known).
func (db *DB) UserKnown(ctx context.Context, userID id.UserID) (bool, error) {
	var known bool
	err := db.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM users WHERE user_id = $1)
		OR EXISTS (SELECT 1 FROM memberships WHERE user_id = $1)`, userID).Scan(&known)
	if err != nil {
		return false, fmt.Errorf("check user: %w", err)
	}
	return known, nil
}
