package storage

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"

	"maunium.net/go/mautrix/id"
)

// relReply is how InsertEvent's caller records a rich reply (which has no
// rel_type): it is indexed with the relations but is not one, so the
// relations API and aggregations never return it.
const relReply = "m.in_reply_to"

// Relation is a child event's link to its parent, without the PDU: enough
// to count and pick the latest children before loading any of them.
type Relation struct {
	EventID        id.EventID
	Parent         id.EventID
	RelType        string
	Type           string
	IsState        bool
	Sender         id.UserID
	RoomID         id.RoomID
	Depth          int64
	StreamPos      int64
	OriginServerTS int64
	// The parent's own relation type ("" when none) and whether it has
	// been redacted: both decide which aggregations are valid.
	ParentRelType  string
	ParentRedacted bool
}

// aggregationChunk bounds the IN list of one aggregation query.
const aggregationChunk = 500

// AggregatedRelations returns the m.replace, m.thread and m.reference
// children of the given parents, only those in their parent's room (a
// relation across rooms is invalid). Redacted children have lost their
// relation columns and so are never returned.
func (db *DB) AggregatedRelations(ctx context.Context, parents []id.EventID) ([]Relation, error) {
	var out []Relation
	for len(parents) > 0 {
		batch := parents[:min(len(parents), aggregationChunk)]
		parents = parents[len(batch):]
		in, args := inList(batch, 0)
		// "|| ''": without it SQLite joins on room_id and walks whole rooms.
		rows, err := db.Query(ctx, `
			SELECT c.event_id, c.relates_to, c.rel_type, c.type, c.state_key, c.sender, c.room_id, c.depth,
				c.stream_pos, c.origin_server_ts, p.rel_type, p.redacted_by
			FROM events c JOIN events p ON p.event_id = c.relates_to AND p.room_id = c.room_id || ''
			WHERE c.relates_to IN (`+in+`)
				AND c.rel_type IN ('m.replace', 'm.thread', 'm.reference')`, args...)
		if err != nil {
			return nil, fmt.Errorf("aggregated relations: %w", err)
		}
		for rows.Next() {
			var r Relation
			var stateKey, parentRel, parentRedacted sql.NullString
			if err := rows.Scan(&r.EventID, &r.Parent, &r.RelType, &r.Type, &stateKey, &r.Sender, &r.RoomID, &r.Depth,
				&r.StreamPos, &r.OriginServerTS, &parentRel, &parentRedacted); err != nil {
				rows.Close()
				return nil, fmt.Errorf("scan relation: %w", err)
			}
			r.IsState, r.ParentRedacted = stateKey.Valid, parentRedacted.Valid
			if parentRel.String != relReply {
				r.ParentRelType = parentRel.String
			}
			out = append(out, r)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, fmt.Errorf("aggregated relations: %w", err)
		}
	}
	return out, nil
}

// RelationsQuery selects a page of a parent's child events for the
// relations API.
type RelationsQuery struct {
	RoomID id.RoomID
	Parent id.EventID
	// RelType and EventType filter every returned event, direct or
	// indirect ("" matches any).
	RelType   string
	EventType string
	// Levels is how many relationship hops to follow: 1 for direct
	// children only.
	Levels int
	// Depth and Pos are the point in (depth, stream) order to page from:
	// backwards returns children at or before it, newest first; forwards
	// those after it, oldest first (as RoomEventsTopological).
	Depth, Pos int64
	Backwards  bool
	Limit      int
}

// RelatedEvents returns one page of a parent's child events. Replies
// (which have no rel_type) are not relations and never returned.
func (db *DB) RelatedEvents(ctx context.Context, q RelationsQuery) ([]*Event, error) {
	args := []any{q.Parent, q.RoomID, q.Depth, q.Pos, q.Limit}
	filter := ` AND %[1]s.rel_type IS NOT NULL AND %[1]s.rel_type <> '` + relReply + `'`
	if q.RelType != "" {
		args = append(args, q.RelType)
		filter += fmt.Sprintf(` AND %%[1]s.rel_type = $%d`, len(args))
	}
	if q.EventType != "" {
		args = append(args, q.EventType)
		filter += fmt.Sprintf(` AND %%[1]s.type = $%d`, len(args))
	}
	bound, order := `(depth > $3 OR (depth = $3 AND stream_pos > $4))`, `ASC`
	if q.Backwards {
		bound, order = `(depth < $3 OR (depth = $3 AND stream_pos <= $4))`, `DESC`
	}
	var query string
	if q.Levels <= 1 {
		// "room_id || ''" keeps the planner on (relates_to, rel_type)
		// rather than walking the room's whole history in order.
		query = `SELECT ` + eventColumns + ` FROM events c WHERE c.relates_to = $1 AND c.room_id || '' = $2` + fmt.Sprintf(filter, "c") +
			` AND ` + bound + ` ORDER BY depth ` + order + `, stream_pos ` + order + ` LIMIT $5`
	} else {
		// The filter applies to intermediate events too: an event related
		// only through a non-matching event is not returned.
		args = append(args, q.Levels)
		query = `WITH RECURSIVE rel(event_id, lvl) AS (
				SELECT c.event_id, 1 FROM events c WHERE c.relates_to = $1 AND c.room_id = $2` + fmt.Sprintf(filter, "c") + `
				UNION
				SELECT e.event_id, rel.lvl + 1 FROM events e JOIN rel ON e.relates_to = rel.event_id
				WHERE rel.lvl < $` + fmt.Sprint(len(args)) + ` AND e.room_id = $2` + fmt.Sprintf(filter, "e") + `
			)
			SELECT ` + eventColumns + ` FROM events WHERE event_id IN (SELECT event_id FROM rel) AND ` + bound +
			` ORDER BY depth ` + order + `, stream_pos ` + order + ` LIMIT $5`
	}
	return db.queryEvents(ctx, query, args...)
}

// ThreadRoot is a thread's root event and the (depth, stream) key of its
// latest m.thread child, which orders threads by activity.
type ThreadRoot struct {
	Root        *Event
	LatestDepth int64
	LatestPos   int64
}

// ThreadRoots returns up to limit thread roots of a room whose latest
// threaded event is at or before (depth, pos), most recently active first.
// With participant set, only threads that user started or posted in.
// Roots that are themselves relations are not valid thread roots.
func (db *DB) ThreadRoots(ctx context.Context, roomID id.RoomID, participant id.UserID, depth, pos int64, limit int) ([]ThreadRoot, error) {
	args := []any{roomID, depth, pos, limit}
	participated := ""
	if participant != "" {
		args = append(args, participant)
		participated = ` AND (r.sender = $5 OR EXISTS (SELECT 1 FROM events p
			WHERE p.relates_to = c.relates_to AND p.rel_type = 'm.thread' AND p.room_id || '' = c.room_id AND p.sender = $5))`
	}
	// "room_id || ''" keeps the planners from answering the correlated
	// subqueries from a room index: (relates_to, rel_type) finds a root's
	// few threaded events directly.
	rows, err := db.Query(ctx, `
		SELECT `+prefixedEventColumns("r")+`, c.depth, c.stream_pos
		FROM events c JOIN events r ON r.event_id = c.relates_to AND r.room_id = c.room_id
		WHERE c.room_id = $1 AND c.rel_type = 'm.thread'
			AND (r.rel_type IS NULL OR r.rel_type = '`+relReply+`')
			AND (c.depth < $2 OR (c.depth = $2 AND c.stream_pos <= $3))
			AND NOT EXISTS (SELECT 1 FROM events d WHERE d.relates_to = c.relates_to AND d.rel_type = 'm.thread'
				AND d.room_id || '' = c.room_id AND (d.depth > c.depth OR (d.depth = c.depth AND d.stream_pos > c.stream_pos)))`+
		participated+`
		ORDER BY c.depth DESC, c.stream_pos DESC LIMIT $4`, args...)
	if err != nil {
		return nil, fmt.Errorf("thread roots: %w", err)
	}
	defer rows.Close()
	var out []ThreadRoot
	for rows.Next() {
		var tr ThreadRoot
		var scanErr error
		tr.Root, scanErr = scanEvent(scanWithExtra{rows, []any{&tr.LatestDepth, &tr.LatestPos}})
		if scanErr != nil {
			return nil, fmt.Errorf("scan thread root: %w", scanErr)
		}
		out = append(out, tr)
	}
	return out, rows.Err()
}

// scanWithExtra lets scanEvent read a row that has more columns after the
// event's.
type scanWithExtra struct {
	row   interface{ Scan(...any) error }
	extra []any
}

func (s scanWithExtra) Scan(dest ...any) error { return s.row.Scan(append(dest, s.extra...)...) }

// prefixedEventColumns is eventColumns qualified with a table alias.
func prefixedEventColumns(alias string) string {
	cols := strings.Split(eventColumns, ",")
	for i, c := range cols {
		cols[i] = alias + "." + strings.TrimSpace(c)
	}
	return strings.Join(cols, ", ")
}

// HasAnnotation reports whether sender already has an unredacted
// annotation of evtType with key on parent.
func (db *DB) HasAnnotation(ctx context.Context, parent id.EventID, sender id.UserID, evtType, key string) (bool, error) {
	var one int
	err := db.QueryRow(ctx, `SELECT 1 FROM events WHERE relates_to = $1 AND rel_type = 'm.annotation'
		AND sender = $2 AND type = $3 AND rel_key = $4 LIMIT 1`, parent, sender, evtType, key).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	} else if err != nil {
		return false, fmt.Errorf("find annotation: %w", err)
	}
	return true, nil
}
