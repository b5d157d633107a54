package storage

// Push: each user's push rules (as far as they differ from the server
// defaults), the notifications the push worker wrote, HTTP pushers and the
// worker's place in the event stream (upgrades/15-push.sql). The rules
// themselves — defaults, merging, evaluation — belong to package push; this
// file only stores rows.

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/lib/pq"
	"go.mau.fi/util/dbutil"
	"maunium.net/go/mautrix/id"
)

// PushRulesType is the account data type that carries a user's push rules
// to their clients through /sync.
const PushRulesType = "m.push_rules"

// PushRule is one stored push rule row. For a server-default rule (RuleID
// starting with '.') only Enabled and Actions are used, and nil means the
// default's value.
type PushRule struct {
	Kind   string
	RuleID string
	// Position orders the user's own rules of one kind, ascending.
	Position   int
	Conditions json.RawMessage
	Pattern    *string
	Actions    json.RawMessage
	Enabled    *bool
}

const pushRuleColumns = `user_id, kind, rule_id, position, conditions, pattern, actions, enabled`

func scanPushRule(row interface{ Scan(...any) error }) (id.UserID, PushRule, error) {
	var user id.UserID
	var r PushRule
	var conditions, pattern, actions sql.NullString
	var enabled sql.NullBool
	if err := row.Scan(&user, &r.Kind, &r.RuleID, &r.Position, &conditions, &pattern, &actions, &enabled); err != nil {
		return "", r, err
	}
	if conditions.Valid {
		r.Conditions = json.RawMessage(conditions.String)
	}
	if pattern.Valid {
		r.Pattern = &pattern.String
	}
	if actions.Valid {
		r.Actions = json.RawMessage(actions.String)
	}
	if enabled.Valid {
		r.Enabled = &enabled.Bool
	}
	return user, r, nil
}

// PushRules returns a user's stored rules, by kind and position.
func (db *DB) PushRules(ctx context.Context, userID id.UserID) ([]PushRule, error) {
	byUser, err := db.PushRulesOf(ctx, []id.UserID{userID})
	if err != nil {
		return nil, err
	}
	return byUser[userID], nil
}

// inListBatch bounds IN lists, well under SQLite's bound-parameter limit.
const inListBatch = 500

// PushRulesOf returns the stored rules of several users (users without any
// are absent from the map), each list by kind and position.
func (db *DB) PushRulesOf(ctx context.Context, users []id.UserID) (map[id.UserID][]PushRule, error) {
	out := map[id.UserID][]PushRule{}
	for start := 0; start < len(users); start += inListBatch {
		batch := users[start:min(start+inListBatch, len(users))]
		in, args := inList(batch, 0)
		rows, err := db.Query(ctx, `SELECT `+pushRuleColumns+` FROM push_rules WHERE user_id IN (`+in+`)
			ORDER BY user_id, kind, position, rule_id`, args...)
		if err != nil {
			return nil, fmt.Errorf("read push rules: %w", err)
		}
		for rows.Next() {
			user, r, err := scanPushRule(rows)
			if err != nil {
				rows.Close()
				return nil, fmt.Errorf("read push rules: %w", err)
			}
			out[user] = append(out[user], r)
		}
		err = rows.Err()
		rows.Close()
		if err != nil {
			return nil, fmt.Errorf("read push rules: %w", err)
		}
	}
	return out, nil
}

// PushRuleVersions returns the stream position of each listed user's latest
// push rule change (users who never changed their rules are absent).
func (db *DB) PushRuleVersions(ctx context.Context, users []id.UserID) (map[id.UserID]int64, error) {
	out := map[id.UserID]int64{}
	for start := 0; start < len(users); start += inListBatch {
		batch := users[start:min(start+inListBatch, len(users))]
		in, args := inList(batch, 0)
		if err := db.scanUserPositions(ctx, out, `SELECT user_id, stream_pos FROM push_rules_stream WHERE user_id IN (`+in+`)`, args...); err != nil {
			return nil, fmt.Errorf("read push rule versions: %w", err)
		}
	}
	return out, nil
}

// PushRulesChangedSince returns the users whose push rules changed after
// stream position since, with the position of their latest change.
func (db *DB) PushRulesChangedSince(ctx context.Context, since int64) (map[id.UserID]int64, error) {
	out := map[id.UserID]int64{}
	if err := db.scanUserPositions(ctx, out, `SELECT user_id, stream_pos FROM push_rules_stream WHERE stream_pos > $1`, since); err != nil {
		return nil, fmt.Errorf("read push rule changes: %w", err)
	}
	return out, nil
}

// LatestPushRulesChange returns the stream position of the latest push rule
// change of any user (0: none yet).
func (db *DB) LatestPushRulesChange(ctx context.Context) (int64, error) {
	var pos sql.NullInt64
	if err := db.QueryRow(ctx, `SELECT MAX(stream_pos) FROM push_rules_stream`).Scan(&pos); err != nil {
		return 0, fmt.Errorf("read latest push rule change: %w", err)
	}
	return pos.Int64, nil
}

func (db *DB) scanUserPositions(ctx context.Context, out map[id.UserID]int64, query string, args ...any) error {
	rows, err := db.Query(ctx, query, args...)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var user id.UserID
		var pos int64
		if err := rows.Scan(&user, &pos); err != nil {
			return err
		}
		out[user] = pos
	}
	return rows.Err()
}

// ErrPushRulesUnchanged may be returned by an UpdatePushRules callback to
// write nothing.
var ErrPushRulesUnchanged = fmt.Errorf("push rules %w", errUnchanged)

// UpdatePushRules is a read-modify-write of a user's rules: update gets the
// stored rows and returns the new set (positions as they should be stored)
// and the complete ruleset as the m.push_rules account data content. The
// rows, the change's stream position and the account data are written in
// one transaction, serialised with every other account data write, and
// the position is returned (0 when update returned ErrPushRulesUnchanged).
// Any other error from update is returned as is, nothing written.
func (db *DB) UpdatePushRules(ctx context.Context, userID id.UserID,
	update func(rows []PushRule) ([]PushRule, json.RawMessage, error)) (int64, error) {
	return db.writeAtNewPos(ctx, func(ctx context.Context, pos int64) error {
		old, err := db.PushRules(ctx, userID)
		if err != nil {
			return err
		}
		rows, content, err := update(old)
		if err != nil {
			return err
		}
		if _, err := db.Exec(ctx, `DELETE FROM push_rules WHERE user_id = $1`, userID); err != nil {
			return fmt.Errorf("replace push rules: %w", err)
		}
		for _, r := range rows {
			var conditions, pattern, actions sql.NullString
			var enabled sql.NullBool
			if r.Conditions != nil {
				conditions = sql.NullString{String: string(r.Conditions), Valid: true}
			}
			if r.Pattern != nil {
				pattern = sql.NullString{String: *r.Pattern, Valid: true}
			}
			if r.Actions != nil {
				actions = sql.NullString{String: string(r.Actions), Valid: true}
			}
			if r.Enabled != nil {
				enabled = sql.NullBool{Bool: *r.Enabled, Valid: true}
			}
			_, err := db.Exec(ctx, `INSERT INTO push_rules (`+pushRuleColumns+`) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`,
				userID, r.Kind, r.RuleID, r.Position, conditions, pattern, actions, enabled)
			if err != nil {
				return fmt.Errorf("store push rule: %w", err)
			}
		}
		_, err = db.Exec(ctx, `INSERT INTO push_rules_stream (user_id, stream_pos) VALUES ($1, $2)
			ON CONFLICT (user_id) DO UPDATE SET stream_pos = excluded.stream_pos`, userID, pos)
		if err != nil {
			return fmt.Errorf("record push rule change: %w", err)
		}
		if err := db.upsertAccountData(ctx, userID, "", PushRulesType, content, pos); err != nil {
			return fmt.Errorf("store push rules account data: %w", err)
		}
		return nil
	})
}

// Notification is one notification a user got.
type Notification struct {
	UserID    id.UserID
	StreamPos int64
	RoomID    id.RoomID
	EventID   id.EventID
	ThreadID  string
	EventType string
	Actions   json.RawMessage
	Highlight bool
	TS        int64
}

// notificationInsertRows bounds the rows of one INSERT (3 parameters each,
// under SQLite's bound-parameter limit).
const notificationInsertRows = 2000

// InsertNotifications stores notifications; one already stored (same user
// and event) is left as it is. The notifications of one event (one per
// member, often a thousand) go in one statement that names the event's
// fields once.
func (db *DB) InsertNotifications(ctx context.Context, notes []Notification) error {
	for start := 0; start < len(notes); {
		// The run of notes for the same event, up to the row limit.
		end := start + 1
		for end < len(notes) && end-start < notificationInsertRows && notes[end].StreamPos == notes[start].StreamPos {
			end++
		}
		first := notes[start]
		if db.Dialect == dbutil.Postgres {
			// One short statement with arrays: PostgreSQL plans a VALUES
			// list of thousands of parameters slowly.
			users := make([]string, end-start)
			actions := make([]string, end-start)
			highlights := make([]bool, end-start)
			for i, n := range notes[start:end] {
				users[i], actions[i], highlights[i] = string(n.UserID), string(n.Actions), n.Highlight
			}
			_, err := db.Exec(ctx, `INSERT INTO push_notifications (stream_pos, room_id, event_id, thread_id, event_type, ts, user_id, actions, highlight)
				SELECT $1, $2, $3, $4, $5, $6, u, a, h FROM unnest($7::text[], $8::text[], $9::boolean[]) AS t(u, a, h)
				ON CONFLICT (user_id, stream_pos) DO NOTHING`,
				first.StreamPos, first.RoomID, first.EventID, first.ThreadID, first.EventType, first.TS,
				pq.Array(users), pq.Array(actions), pq.Array(highlights))
			if err != nil {
				return fmt.Errorf("store notifications: %w", err)
			}
			start = end
			continue
		}
		var q strings.Builder
		q.WriteString(`INSERT INTO push_notifications (stream_pos, room_id, event_id, thread_id, event_type, ts, user_id, actions, highlight) VALUES `)
		args := []any{first.StreamPos, first.RoomID, first.EventID, first.ThreadID, first.EventType, first.TS}
		for i, n := range notes[start:end] {
			if i > 0 {
				q.WriteString(", ")
			}
			k := len(args)
			fmt.Fprintf(&q, "($1, $2, $3, $4, $5, $6, $%d, $%d, $%d)", k+1, k+2, k+3)
			args = append(args, n.UserID, string(n.Actions), n.Highlight)
		}
		q.WriteString(` ON CONFLICT (user_id, stream_pos) DO NOTHING`)
		if _, err := db.Exec(ctx, q.String(), args...); err != nil {
			return fmt.Errorf("store notifications: %w", err)
		}
		start = end
	}
	return nil
}

const notificationColumns = `user_id, stream_pos, room_id, event_id, thread_id, event_type, actions, highlight, ts`

func scanNotification(row dbutil.Scannable) (Notification, error) {
	var n Notification
	var actions string
	err := row.Scan(&n.UserID, &n.StreamPos, &n.RoomID, &n.EventID, &n.ThreadID, &n.EventType, &actions, &n.Highlight, &n.TS)
	n.Actions = json.RawMessage(actions)
	return n, err
}

func (db *DB) queryNotifications(ctx context.Context, query string, args ...any) ([]Notification, error) {
	return queryList(ctx, db, "read notifications", scanNotification, query, args...)
}

// Notifications returns up to limit of a user's notifications before
// stream position before (0: from the newest), newest first; with
// onlyHighlight, only those that highlight.
func (db *DB) Notifications(ctx context.Context, userID id.UserID, before int64, limit int, onlyHighlight bool) ([]Notification, error) {
	q := `SELECT ` + notificationColumns + ` FROM push_notifications WHERE user_id = $1 AND stream_pos < $2`
	if onlyHighlight {
		q += ` AND highlight`
	}
	if before <= 0 {
		before = 1<<63 - 1
	}
	return db.queryNotifications(ctx, q+` ORDER BY stream_pos DESC LIMIT $3`, userID, before, limit)
}

// NotificationsAfter returns up to limit of a user's notifications after
// stream position after, oldest first.
func (db *DB) NotificationsAfter(ctx context.Context, userID id.UserID, after int64, limit int) ([]Notification, error) {
	return db.queryNotifications(ctx, `SELECT `+notificationColumns+` FROM push_notifications
		WHERE user_id = $1 AND stream_pos > $2 ORDER BY stream_pos LIMIT $3`, userID, after, limit)
}

// UnreadNotificationCounts counts a user's unread notifications in the
// rooms they are joined to: those after their furthest m.read or
// m.read.private receipt (unthreaded, or of the notification's thread),
// and of them the m.call.invite ones (missed calls).
func (db *DB) UnreadNotificationCounts(ctx context.Context, userID id.UserID) (unread, missedCalls int, err error) {
	var calls sql.NullInt64
	err = db.QueryRow(ctx, `
		SELECT COUNT(*), SUM(CASE WHEN n.event_type = 'm.call.invite' THEN 1 ELSE 0 END)
		FROM push_notifications n
		JOIN current_state m ON m.room_id = n.room_id AND m.type = 'm.room.member' AND m.state_key = n.user_id AND m.membership = 'join'
		WHERE n.user_id = $1 AND n.stream_pos > COALESCE((
			SELECT MAX(e.stream_pos) FROM receipts r JOIN events e ON e.event_id = r.event_id
			WHERE r.room_id = n.room_id AND r.user_id = n.user_id AND r.receipt_type IN ('m.read', 'm.read.private')
				AND r.thread_id IN ('', n.thread_id)), 0)`, userID).Scan(&unread, &calls)
	if err != nil {
		return 0, 0, fmt.Errorf("count unread notifications: %w", err)
	}
	return unread, int(calls.Int64), nil
}

// PruneNotifications deletes notifications stored before ts (Unix ms).
func (db *DB) PruneNotifications(ctx context.Context, ts int64) (int64, error) {
	res, err := db.Exec(ctx, `DELETE FROM push_notifications WHERE ts < $1`, ts)
	if err != nil {
		return 0, fmt.Errorf("prune notifications: %w", err)
	}
	n, _ := res.RowsAffected()
	return n, nil
}

// Pusher is one stored pusher.
type Pusher struct {
	UserID            id.UserID       `json:"-"`
	AppID             string          `json:"app_id"`
	PushKey           string          `json:"pushkey"`
	Kind              string          `json:"kind"`
	AppDisplayName    string          `json:"app_display_name"`
	DeviceDisplayName string          `json:"device_display_name"`
	ProfileTag        string          `json:"profile_tag,omitempty"`
	Lang              string          `json:"lang"`
	Data              json.RawMessage `json:"data"`
	DeviceID          id.DeviceID     `json:"-"`
	// PushKeyTS is in Unix seconds.
	PushKeyTS int64 `json:"-"`
	// LastPos: the user's notifications up to this stream position are
	// delivered (or given up on).
	LastPos int64 `json:"-"`
}

const pusherColumns = `user_id, app_id, pushkey, kind, app_display_name, device_display_name, profile_tag, lang, data, device_id, pushkey_ts, last_pos`

func scanPusher(row dbutil.Scannable) (*Pusher, error) {
	var p Pusher
	var tag, device sql.NullString
	var data string
	err := row.Scan(&p.UserID, &p.AppID, &p.PushKey, &p.Kind, &p.AppDisplayName, &p.DeviceDisplayName, &tag, &p.Lang,
		&data, &device, &p.PushKeyTS, &p.LastPos)
	p.ProfileTag, p.DeviceID, p.Data = tag.String, id.DeviceID(device.String), json.RawMessage(data)
	return &p, err
}

func (db *DB) queryPushers(ctx context.Context, query string, args ...any) ([]*Pusher, error) {
	return queryList(ctx, db, "read pushers", scanPusher, query, args...)
}

// Pushers returns a user's pushers.
func (db *DB) Pushers(ctx context.Context, userID id.UserID) ([]*Pusher, error) {
	return db.queryPushers(ctx, `SELECT `+pusherColumns+` FROM pushers WHERE user_id = $1 ORDER BY app_id, pushkey`, userID)
}

// PushersOf returns the pushers of the listed users.
func (db *DB) PushersOf(ctx context.Context, users []id.UserID) ([]*Pusher, error) {
	var out []*Pusher
	for start := 0; start < len(users); start += inListBatch {
		batch := users[start:min(start+inListBatch, len(users))]
		in, args := inList(batch, 0)
		ps, err := db.queryPushers(ctx, `SELECT `+pusherColumns+` FROM pushers WHERE user_id IN (`+in+`)`, args...)
		if err != nil {
			return nil, err
		}
		out = append(out, ps...)
	}
	return out, nil
}

// AllPushers returns every pusher.
func (db *DB) AllPushers(ctx context.Context) ([]*Pusher, error) {
	return db.queryPushers(ctx, `SELECT `+pusherColumns+` FROM pushers`)
}

// GetPusher returns one pusher, or ErrNotFound.
func (db *DB) GetPusher(ctx context.Context, userID id.UserID, appID, pushKey string) (*Pusher, error) {
	ps, err := db.queryPushers(ctx, `SELECT `+pusherColumns+` FROM pushers WHERE user_id = $1 AND app_id = $2 AND pushkey = $3`,
		userID, appID, pushKey)
	if err != nil {
		return nil, err
	} else if len(ps) == 0 {
		return nil, ErrNotFound
	}
	return ps[0], nil
}

// SetPusher creates or updates a pusher (keyed by user, app ID and
// pushkey). A new pusher starts at the current stream position: it
// delivers what the user is notified of from now on; an updated one keeps
// its place. Unless appendKey is set, other users' pushers with the same
// app ID and pushkey are deleted (the spec's append flag). p.DeviceID is
// stored only when that device exists.
func (db *DB) SetPusher(ctx context.Context, p *Pusher, appendKey bool) error {
	return db.DoTxn(ctx, nil, func(ctx context.Context) error {
		pos, err := db.CurrentStreamPos(ctx)
		if err != nil {
			return err
		}
		var device sql.NullString
		if p.DeviceID != "" {
			if _, err := db.GetDevice(ctx, p.UserID, p.DeviceID); err == nil {
				device = sql.NullString{String: string(p.DeviceID), Valid: true}
			} else if !errors.Is(err, ErrNotFound) {
				return err
			}
		}
		_, err = db.Exec(ctx, `INSERT INTO pushers (`+pusherColumns+`) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
			ON CONFLICT (user_id, app_id, pushkey) DO UPDATE SET kind = excluded.kind, app_display_name = excluded.app_display_name,
				device_display_name = excluded.device_display_name, profile_tag = excluded.profile_tag, lang = excluded.lang,
				data = excluded.data, device_id = excluded.device_id, pushkey_ts = excluded.pushkey_ts`,
			p.UserID, p.AppID, p.PushKey, p.Kind, p.AppDisplayName, p.DeviceDisplayName, nullString(p.ProfileTag), p.Lang,
			string(p.Data), device, p.PushKeyTS, pos)
		if err != nil {
			return fmt.Errorf("store pusher: %w", err)
		}
		if !appendKey {
			_, err := db.Exec(ctx, `DELETE FROM pushers WHERE app_id = $1 AND pushkey = $2 AND user_id <> $3`, p.AppID, p.PushKey, p.UserID)
			if err != nil {
				return fmt.Errorf("delete other users' pushers: %w", err)
			}
		}
		return nil
	})
}

// DeletePusher deletes one pusher; it reports whether there was one.
func (db *DB) DeletePusher(ctx context.Context, userID id.UserID, appID, pushKey string) (bool, error) {
	return db.affectsOne(ctx, "delete pusher", `DELETE FROM pushers WHERE user_id = $1 AND app_id = $2 AND pushkey = $3`,
		userID, appID, pushKey)
}

// SetPusherLastPos moves a pusher's delivery position forward to pos.
func (db *DB) SetPusherLastPos(ctx context.Context, userID id.UserID, appID, pushKey string, pos int64) error {
	_, err := db.Exec(ctx, `UPDATE pushers SET last_pos = $4 WHERE user_id = $1 AND app_id = $2 AND pushkey = $3 AND last_pos < $4`,
		userID, appID, pushKey, pos)
	if err != nil {
		return fmt.Errorf("advance pusher: %w", err)
	}
	return nil
}

// PushWorkerPos returns the stream position up to which events have been
// evaluated for push.
func (db *DB) PushWorkerPos(ctx context.Context) (int64, error) {
	var pos int64
	if err := db.QueryRow(ctx, `SELECT evaluated_pos FROM push_worker WHERE id = 1`).Scan(&pos); err != nil {
		return 0, fmt.Errorf("read push worker position: %w", err)
	}
	return pos, nil
}

// ClaimPushWorker takes or renews the push worker lease: it succeeds when
// the lease is free, owner's, or ended before now.
func (db *DB) ClaimPushWorker(ctx context.Context, owner string, now, until int64) (bool, error) {
	return db.affectsOne(ctx, "claim push worker", `UPDATE push_worker SET lease_owner = $1, lease_until = $3
		WHERE id = 1 AND (lease_owner IS NULL OR lease_owner = $1 OR lease_until < $2)`, owner, now, until)
}

// ReleasePushWorker gives up owner's lease.
func (db *DB) ReleasePushWorker(ctx context.Context, owner string) error {
	if _, err := db.Exec(ctx, `UPDATE push_worker SET lease_owner = NULL, lease_until = 0 WHERE id = 1 AND lease_owner = $1`, owner); err != nil {
		return fmt.Errorf("release push worker: %w", err)
	}
	return nil
}

// ClearPushWorkerLease frees the lease whoever holds it (at the start of
// the only process on an SQLite database, whose predecessor may have
// crashed).
func (db *DB) ClearPushWorkerLease(ctx context.Context) error {
	if _, err := db.Exec(ctx, `UPDATE push_worker SET lease_owner = NULL, lease_until = 0 WHERE id = 1`); err != nil {
		return fmt.Errorf("clear push worker lease: %w", err)
	}
	return nil
}

// sqliteNotificationChunk bounds the notifications one SQLite transaction
// stores: SQLite has one writer at a time, and a message to a room of a
// thousand members would otherwise hold every sender up for tens of
// milliseconds.
const sqliteNotificationChunk = 500

// CommitPushEvaluation stores notifications and moves the worker's
// position to pos, if owner still holds the lease (ok=false and the
// position unchanged otherwise). On SQLite, many notifications are stored
// in several transactions before the last one moves the position; after a
// crash in between, evaluating the events again stores only what is
// missing.
func (db *DB) CommitPushEvaluation(ctx context.Context, owner string, pos int64, notes []Notification) (ok bool, err error) {
	if db.Dialect == dbutil.SQLite {
		for len(notes) > sqliteNotificationChunk {
			if err := db.DoTxn(ctx, nil, func(ctx context.Context) error {
				return db.InsertNotifications(ctx, notes[:sqliteNotificationChunk])
			}); err != nil {
				return false, err
			}
			notes = notes[sqliteNotificationChunk:]
		}
	}
	err = db.DoTxn(ctx, nil, func(ctx context.Context) error {
		if ok, err = db.affectsOne(ctx, "advance push worker", `UPDATE push_worker SET evaluated_pos = $2
			WHERE id = 1 AND lease_owner = $1 AND evaluated_pos < $2`, owner, pos); err != nil || !ok {
			return err
		}
		return db.InsertNotifications(ctx, notes)
	})
	return ok, err
}

// MembershipsAfter returns every membership change after stream position
// after, in stream order.
func (db *DB) MembershipsAfter(ctx context.Context, after int64) ([]Membership, error) {
	return queryList(ctx, db, "membership changes", func(row dbutil.Scannable) (m Membership, err error) {
		err = row.Scan(&m.RoomID, &m.UserID, &m.Membership, &m.StreamPos, &m.Sender)
		return m, err
	}, `SELECT room_id, user_id, membership, stream_pos, sender FROM memberships
		WHERE stream_pos > $1 ORDER BY stream_pos`, after)
}

// MembershipAt returns a user's membership in a room as of stream position
// pos ("leave" when they had none).
func (db *DB) MembershipAt(ctx context.Context, roomID id.RoomID, userID id.UserID, pos int64) (string, error) {
	var m string
	err := db.QueryRow(ctx, `SELECT membership FROM memberships WHERE user_id = $1 AND room_id = $2 AND stream_pos <= $3
		ORDER BY stream_pos DESC LIMIT 1`, userID, roomID, pos).Scan(&m)
	if errors.Is(err, sql.ErrNoRows) {
		return "leave", nil
	} else if err != nil {
		return "", fmt.Errorf("membership at position: %w", err)
	}
	return m, nil
}

// PushableUsers returns which of the listed local users get push
// evaluation: existing accounts that are not deactivated and were not
// registered by an appservice (bridge ghosts and bots have no clients).
func (db *DB) PushableUsers(ctx context.Context, users []id.UserID) (map[id.UserID]bool, error) {
	out := make(map[id.UserID]bool, len(users))
	for start := 0; start < len(users); start += inListBatch {
		batch := users[start:min(start+inListBatch, len(users))]
		in, args := inList(batch, 0)
		err := addToSet(ctx, db, out, "read pushable users",
			`SELECT user_id FROM users WHERE user_id IN (`+in+`) AND NOT deactivated AND appservice_id IS NULL`, args...)
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}
