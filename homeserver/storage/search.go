package storage

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"
	"strings"
	"time"
	"unicode"

	"github.com/rs/zerolog"
	"github.com/tidwall/gjson"
	"go.mau.fi/util/dbutil"
	"maunium.net/go/mautrix/id"
)

// Full-text search over room events (spec: "Server Side Search").
//
// event_search holds the text of every searchable event (SearchText),
// written by InsertEvent and deleted by SetRedactedBy in the caller's
// transaction. PostgreSQL matches it through a generated tsvector column
// with a GIN index and ranks with ts_rank; SQLite through an FTS5 index
// (event_search_fts, external content over event_search, kept in step by
// triggers) and ranks with bm25. Both tokenize without regard to language
// (lower case, no stemming, no stop words), so a search finds the same
// events on either database, but for diacritics: SQLite folds them ("cafe"
// finds "café"), PostgreSQL without the unaccent extension does not.
//
// mattn/go-sqlite3 compiles FTS5 in only with the sqlite_fts5 build tag
// (the Makefile sets it). A binary built without it still runs, without
// search: it drops the triggers so that its writes do not touch an index it
// cannot open, and the next binary with FTS5 finds them missing and
// rebuilds the index from event_search.

// SearchKeyTypes maps the spec's search keys to the event type whose
// content they search.
var SearchKeyTypes = map[string]string{
	"content.body":  "m.room.message",
	"content.name":  "m.room.name",
	"content.topic": "m.room.topic",
}

// ErrSearchUnavailable is returned by searches on a SQLite database when
// the binary was built without FTS5.
var ErrSearchUnavailable = errors.New("full-text search is not available: this binary was built without SQLite FTS5 (build tag sqlite_fts5)")

// SearchText returns the text of a stored event that search looks in, ""
// for none: content.body of m.room.message, content.name of m.room.name,
// and content.topic with the text/plain representations in m.topic that
// differ from it, for m.room.topic. The upgrade that made event_search
// (14-search.sql) computes the same in SQL for the events before it.
func SearchText(evtType string, stateKey *string, pdu []byte) string {
	if bytes.Contains(pdu, []byte(`\u0000`)) {
		// PostgreSQL can hold NUL in neither text nor jsonb.
		return ""
	}
	content := gjson.GetBytes(pdu, "content")
	str := func(key string) string {
		if v := content.Get(key); v.Type == gjson.String {
			return v.Str
		}
		return ""
	}
	switch {
	case evtType == "m.room.message" && stateKey == nil:
		return str("body")
	case evtType == "m.room.name" && stateKey != nil && *stateKey == "":
		return str("name")
	case evtType == "m.room.topic" && stateKey != nil && *stateKey == "":
		topic := content.Get("topic")
		var parts []string
		if topic.Type == gjson.String && topic.Str != "" {
			parts = append(parts, topic.Str)
		}
		if texts := content.Get(`m\.topic.m\.text`); texts.IsArray() {
			for _, t := range texts.Array() {
				body, mime := t.Get("body"), t.Get("mimetype")
				if !t.IsObject() || body.Type != gjson.String || body.Str == "" ||
					(topic.Type == gjson.String && body.Str == topic.Str) {
					continue
				}
				if mime.Type == gjson.Null || (mime.Type == gjson.String && mime.Str == "text/plain") {
					parts = append(parts, body.Str)
				}
			}
		}
		return strings.Join(parts, "\n")
	}
	return ""
}

// indexForSearch stores a new event's searchable text.
func (db *DB) indexForSearch(ctx context.Context, e *Event) error {
	if e.RedactedBy != "" {
		return nil
	}
	text := SearchText(e.Type, e.StateKey, e.PDU)
	if text == "" {
		return nil
	}
	if _, err := db.Exec(ctx, `INSERT INTO event_search (stream_pos, room_id, sender, type, text) VALUES ($1, $2, $3, $4, $5)`,
		e.StreamPos, e.RoomID, e.Sender, e.Type, text); err != nil {
		return fmt.Errorf("index event for search: %w", err)
	}
	return nil
}

// unindexForSearch forgets a redacted event's text.
func (db *DB) unindexForSearch(ctx context.Context, eventID id.EventID) error {
	if _, err := db.Exec(ctx, `DELETE FROM event_search WHERE stream_pos = (SELECT stream_pos FROM events WHERE event_id = $1)`, eventID); err != nil {
		return fmt.Errorf("remove redacted event from search: %w", err)
	}
	return nil
}

const (
	ftsInsertTrigger = "event_search_fts_insert"
	ftsDeleteTrigger = "event_search_fts_delete"
)

// EnsureSearchIndex makes SQLite's FTS5 index complete, once the schema is
// upgraded: it creates it and its triggers, and fills it from event_search,
// when they are missing (a new database, or one last opened by a binary
// without FTS5). Without FTS5 it drops the triggers instead. PostgreSQL's
// index is kept by the schema alone.
func (db *DB) EnsureSearchIndex(ctx context.Context, log zerolog.Logger) error {
	if db.Dialect != dbutil.SQLite {
		return nil
	}
	if !db.sqliteHasFTS5(ctx) {
		log.Warn().Msg("SQLite was built without FTS5 (build tag sqlite_fts5): /search will answer an error")
		for _, trigger := range []string{ftsInsertTrigger, ftsDeleteTrigger} {
			if _, err := db.Exec(ctx, `DROP TRIGGER IF EXISTS `+trigger); err != nil {
				return fmt.Errorf("drop search trigger: %w", err)
			}
		}
		return nil
	}
	var triggers int
	err := db.QueryRow(ctx, `SELECT count(*) FROM sqlite_master WHERE type = 'trigger' AND name IN ($1, $2)`,
		ftsInsertTrigger, ftsDeleteTrigger).Scan(&triggers)
	if err != nil {
		return fmt.Errorf("check search index: %w", err)
	} else if triggers == 2 {
		return nil
	}
	start := time.Now()
	err = db.DoTxn(ctx, nil, func(ctx context.Context) error {
		for _, stmt := range []string{
			`CREATE VIRTUAL TABLE IF NOT EXISTS event_search_fts USING fts5(text, content='event_search',
				content_rowid='stream_pos', tokenize='unicode61 remove_diacritics 2')`,
			`DROP TRIGGER IF EXISTS ` + ftsInsertTrigger,
			`DROP TRIGGER IF EXISTS ` + ftsDeleteTrigger,
			`CREATE TRIGGER ` + ftsInsertTrigger + ` AFTER INSERT ON event_search BEGIN
				INSERT INTO event_search_fts (rowid, text) VALUES (new.stream_pos, new.text);
			END`,
			`CREATE TRIGGER ` + ftsDeleteTrigger + ` AFTER DELETE ON event_search BEGIN
				INSERT INTO event_search_fts (event_search_fts, rowid, text) VALUES ('delete', old.stream_pos, old.text);
			END`,
			`INSERT INTO event_search_fts (event_search_fts) VALUES ('rebuild')`,
		} {
			if _, err := db.Exec(ctx, stmt); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("build search index: %w", err)
	}
	log.Info().Dur("took", time.Since(start)).Msg("Built the full-text search index")
	return nil
}

func (db *DB) sqliteHasFTS5(ctx context.Context) bool {
	var has bool
	err := db.QueryRow(ctx, `SELECT sqlite_compileoption_used('ENABLE_FTS5')`).Scan(&has)
	return err == nil && has
}

// SearchAvailable reports whether searches can run.
func (db *DB) SearchAvailable(ctx context.Context) bool {
	return db.Dialect != dbutil.SQLite || db.sqliteHasFTS5(ctx)
}

// SearchTerms is a parsed search_term: alternatives ("or") of conjunctions
// of words and "quoted phrases", each with optional -exclusions. A bare
// word also matches words it begins, so results come while typing.
type SearchTerms struct {
	clauses []searchClause
}

type searchClause struct{ must, not []searchItem }

// searchItem is a word (prefix: or any word it begins) or a phrase.
type searchItem struct {
	words  []string
	prefix bool
	// raw is the phrase as the user wrote it: PostgreSQL's parser keeps
	// some punctuated words whole ("example.com", "1.5"), so a phrase is
	// matched as it parses the raw text.
	raw string
}

// maxSearchItems bounds the work one search_term can ask for.
const maxSearchItems = 32

// ParseSearchTerms parses a search_term. Words are runs of letters, digits
// and marks, compared in lower case, as both databases index them.
func ParseSearchTerms(raw string) *SearchTerms {
	t := &SearchTerms{}
	cur := searchClause{}
	items := 0
	flush := func() {
		if len(cur.must) > 0 {
			// Exclusions alone would match nearly everything; neither
			// index can answer them cheaply.
			t.clauses = append(t.clauses, cur)
		}
		cur = searchClause{}
	}
	rs := []rune(raw)
	for i := 0; i < len(rs) && items < maxSearchItems; {
		if unicode.IsSpace(rs[i]) {
			i++
			continue
		}
		negated := false
		if rs[i] == '-' {
			negated = true
			i++
		}
		var item searchItem
		if i < len(rs) && rs[i] == '"' {
			end := i + 1
			for end < len(rs) && rs[end] != '"' {
				end++
			}
			item.raw = string(rs[i+1 : min(end, len(rs))])
			item.words = searchWords(item.raw, true)
			i = end + 1
		} else {
			end := i
			for end < len(rs) && !unicode.IsSpace(rs[end]) {
				end++
			}
			chunk := string(rs[i:end])
			i = end
			if !negated && strings.EqualFold(chunk, "or") {
				flush()
				continue
			} else if !negated && strings.EqualFold(chunk, "and") {
				continue
			}
			item.raw = chunk
			item.words = searchWords(chunk, true)
			item.prefix = len(item.words) == 1
		}
		if len(item.words) == 0 {
			continue
		}
		items++
		if negated {
			cur.not = append(cur.not, item)
		} else {
			cur.must = append(cur.must, item)
		}
	}
	flush()
	return t
}

// Empty reports whether the terms can match nothing (no words to look for).
func (t *SearchTerms) Empty() bool { return len(t.clauses) == 0 }

func isWordRune(r rune) bool { return unicode.IsLetter(r) || unicode.IsNumber(r) || unicode.IsMark(r) }

// searchWords splits text into words, lower-cased when lower is set.
func searchWords(text string, lower bool) []string {
	var words []string
	for _, w := range strings.FieldsFunc(text, func(r rune) bool { return !isWordRune(r) }) {
		if lower {
			w = strings.ToLower(w)
		}
		words = append(words, w)
	}
	return words
}

// fts5 renders the terms as an FTS5 query. Words hold only letters, digits
// and marks, so quoting them needs no escaping.
func (t *SearchTerms) fts5() string {
	item := func(it searchItem) string {
		s := `"` + strings.Join(it.words, " ") + `"`
		if it.prefix {
			s += "*"
		}
		return s
	}
	clauses := make([]string, len(t.clauses))
	for i, c := range t.clauses {
		must := make([]string, len(c.must))
		for j, it := range c.must {
			must[j] = item(it)
		}
		s := "(" + strings.Join(must, " AND ") + ")"
		for _, it := range c.not {
			s = "(" + s + " NOT " + item(it) + ")"
		}
		clauses[i] = s
	}
	return strings.Join(clauses, " OR ")
}

// tsquery renders the terms for PostgreSQL's to_tsquery, which parses
// each quoted item as it parsed the text: a phrase becomes the same
// lexemes in a row.
func (t *SearchTerms) tsquery() string {
	item := func(it searchItem) string {
		if len(it.words) == 1 {
			s := "'" + it.words[0] + "'"
			if it.prefix {
				s += ":*"
			}
			return s
		}
		return "'" + tsqueryEscaper.Replace(it.raw) + "'"
	}
	clauses := make([]string, len(t.clauses))
	for i, c := range t.clauses {
		var parts []string
		for _, it := range c.must {
			parts = append(parts, item(it))
		}
		for _, it := range c.not {
			parts = append(parts, "!"+item(it))
		}
		clauses[i] = "(" + strings.Join(parts, " & ") + ")"
	}
	return strings.Join(clauses, " | ")
}

var tsqueryEscaper = strings.NewReplacer(`\`, `\\`, `'`, `''`)

// Highlights returns the words of text that the terms matched, as written
// there, for clients to highlight.
func (t *SearchTerms) Highlights(text string) []string {
	var out []string
	seen := map[string]bool{}
	for _, w := range searchWords(text, false) {
		if !seen[w] && t.matchesWord(strings.ToLower(w)) {
			seen[w] = true
			out = append(out, w)
		}
	}
	return out
}

func (t *SearchTerms) matchesWord(lower string) bool {
	for _, c := range t.clauses {
		for _, it := range c.must {
			for _, w := range it.words {
				if w == lower || (it.prefix && strings.HasPrefix(lower, w)) {
					return true
				}
			}
		}
	}
	return false
}

// PosRange is an inclusive range of stream positions.
type PosRange struct{ From, To int64 }

// SearchFilter says where a search looks.
type SearchFilter struct {
	// Rooms maps each room to search to the positions in it whose events
	// the user may see; nil ranges stand for all of them. No rooms match
	// nothing.
	Rooms map[id.RoomID][]PosRange
	// Types are the event types (of SearchKeyTypes) to search; none
	// matches nothing.
	Types      []string
	Senders    []id.UserID
	NotSenders []id.UserID
	// ByRank orders the best matches first (then the newest); otherwise
	// the newest come first.
	ByRank bool
}

// SearchHit is an event that matched.
type SearchHit struct {
	StreamPos int64
	RoomID    id.RoomID
	Sender    id.UserID
	// Rank is higher for a closer match (bm25 negated on SQLite, ts_rank
	// on PostgreSQL); only its order means something.
	Rank float64
}

// SearchEvents returns up to limit events matching terms under f, in f's
// order, after the hit after (nil: from the first), and whether more
// follow. By rank, where every match is ranked anyway, it counts them all
// too; otherwise total is -1 (SearchCount counts).
func (db *DB) SearchEvents(ctx context.Context, terms *SearchTerms, f *SearchFilter, after *SearchHit, limit int) (hits []SearchHit, more bool, total int, err error) {
	if terms.Empty() || len(f.Rooms) == 0 || len(f.Types) == 0 || limit <= 0 {
		return nil, false, 0, nil
	}
	if !db.SearchAvailable(ctx) {
		return nil, false, 0, ErrSearchUnavailable
	}
	from, where, args := db.searchQuery(terms, f)
	rankExpr := `-bm25(event_search_fts)`
	if db.Dialect == dbutil.Postgres {
		rankExpr = `ts_rank(s.vector, q)`
	}
	var query string
	if f.ByRank {
		// Materialised, so that the cursor and the count do not compute
		// the ranks again.
		cursor := ""
		if after != nil {
			args = append(args, after.Rank, after.StreamPos)
			cursor = fmt.Sprintf(`WHERE score < $%[1]d OR (score = $%[1]d AND stream_pos < $%[2]d)`, len(args)-1, len(args))
		}
		query = fmt.Sprintf(`WITH m AS MATERIALIZED (SELECT s.stream_pos, s.room_id, s.sender, %s AS score FROM %s WHERE %s)
			SELECT stream_pos, room_id, sender, score, (SELECT count(*) FROM m) FROM m %s
			ORDER BY score DESC, stream_pos DESC LIMIT %d`, rankExpr, from, where, cursor, limit+1)
	} else {
		// Newest first straight off the index: the search stops reading
		// once it has limit+1 matches.
		posColumn := `event_search_fts.rowid`
		if db.Dialect == dbutil.Postgres {
			posColumn = `s.stream_pos`
		}
		if after != nil {
			args = append(args, after.StreamPos)
			where += fmt.Sprintf(` AND %s < $%d`, posColumn, len(args))
		}
		query = fmt.Sprintf(`SELECT s.stream_pos, s.room_id, s.sender, %s, -1 FROM %s WHERE %s ORDER BY %s DESC LIMIT %d`,
			rankExpr, from, where, posColumn, limit+1)
	}
	rows, err := db.Query(ctx, query, args...)
	if err != nil {
		return nil, false, 0, fmt.Errorf("search events: %w", err)
	}
	defer rows.Close()
	total = -1
	if f.ByRank && after == nil {
		total = 0 // no rows: no matches
	}
	for rows.Next() {
		var h SearchHit
		if err := rows.Scan(&h.StreamPos, &h.RoomID, &h.Sender, &h.Rank, &total); err != nil {
			return nil, false, 0, fmt.Errorf("scan search hit: %w", err)
		}
		hits = append(hits, h)
	}
	if err := rows.Err(); err != nil {
		return nil, false, 0, fmt.Errorf("search events: %w", err)
	}
	if len(hits) > limit {
		return hits[:limit], true, total, nil
	}
	return hits, false, total, nil
}

// SearchCount counts the events matching terms under f.
func (db *DB) SearchCount(ctx context.Context, terms *SearchTerms, f *SearchFilter) (int, error) {
	if terms.Empty() || len(f.Rooms) == 0 || len(f.Types) == 0 {
		return 0, nil
	}
	if !db.SearchAvailable(ctx) {
		return 0, ErrSearchUnavailable
	}
	from, where, args := db.searchQuery(terms, f)
	var n int
	if err := db.QueryRow(ctx, `SELECT count(*) FROM `+from+` WHERE `+where, args...).Scan(&n); err != nil {
		return 0, fmt.Errorf("count search hits: %w", err)
	}
	return n, nil
}

// searchQuery builds the FROM and WHERE clauses of a search. Everything it
// filters on is in event_search, so no event row is read.
func (db *DB) searchQuery(terms *SearchTerms, f *SearchFilter) (from, where string, args []any) {
	var conds []string
	if db.Dialect == dbutil.Postgres {
		from = `event_search s, to_tsquery('simple', $1) q`
		conds = append(conds, `s.vector @@ q`)
		args = append(args, terms.tsquery())
	} else {
		// CROSS JOIN keeps the index the outer loop, so that a search for
		// recent events reads no more matches than it returns.
		from = `event_search_fts CROSS JOIN event_search s ON s.stream_pos = event_search_fts.rowid`
		conds = append(conds, `event_search_fts MATCH $1`)
		args = append(args, terms.fts5())
	}
	arg := func(v any) string {
		args = append(args, v)
		return fmt.Sprintf("$%d", len(args))
	}
	in := func(column string, values []string, not bool) {
		list, listArgs := inList(values, len(args))
		op := " IN "
		if not {
			op = " NOT IN "
		}
		conds = append(conds, column+op+"("+list+")")
		args = append(args, listArgs...)
	}

	// The rooms, whole or in the ranges the user may see.
	var whole []string
	var parts []string
	for _, r := range slices.Sorted(maps.Keys(f.Rooms)) {
		ranges := f.Rooms[r]
		if ranges == nil {
			whole = append(whole, string(r))
			continue
		}
		var rs []string
		for _, pr := range ranges {
			if pr.To == math.MaxInt64 {
				rs = append(rs, "s.stream_pos >= "+arg(pr.From))
			} else {
				rs = append(rs, "s.stream_pos BETWEEN "+arg(pr.From)+" AND "+arg(pr.To))
			}
		}
		if len(rs) > 0 {
			parts = append(parts, "(s.room_id = "+arg(string(r))+" AND ("+strings.Join(rs, " OR ")+"))")
		}
	}
	if len(whole) > 0 {
		list, listArgs := inList(whole, len(args))
		args = append(args, listArgs...)
		parts = append(parts, "s.room_id IN ("+list+")")
	}
	if len(parts) == 0 {
		parts = append(parts, "false")
	}
	conds = append(conds, "("+strings.Join(parts, " OR ")+")")

	in("s.type", f.Types, false)
	if len(f.Senders) > 0 {
		in("s.sender", idStrings(f.Senders), false)
	}
	if len(f.NotSenders) > 0 {
		in("s.sender", idStrings(f.NotSenders), true)
	}
	return from, strings.Join(conds, " AND "), args
}

func idStrings[T ~string](ids []T) []string {
	out := make([]string, len(ids))
	for i, v := range ids {
		out[i] = string(v)
	}
	return out
}

// EventsAt returns the events at the given stream positions, in no order.
func (db *DB) EventsAt(ctx context.Context, positions []int64) ([]*Event, error) {
	if len(positions) == 0 {
		return nil, nil
	}
	in, args := inList(positions, 0)
	return db.queryEvents(ctx, `SELECT `+eventColumns+` FROM events WHERE stream_pos IN (`+in+`)`, args...)
}

// EncryptedRooms returns which of rooms have m.room.encryption in their
// current state.
func (db *DB) EncryptedRooms(ctx context.Context, rooms []id.RoomID) (map[id.RoomID]bool, error) {
	if len(rooms) == 0 {
		return map[id.RoomID]bool{}, nil
	}
	in, args := inList(rooms, 0)
	return querySet[id.RoomID](ctx, db, "encrypted rooms", `SELECT room_id FROM current_state
		WHERE type = 'm.room.encryption' AND state_key = '' AND room_id IN (`+in+`)`, args...)
}

// CurrentStateContent returns the content of a room's current state event
// of the given type and state key, or ErrNotFound.
func (db *DB) CurrentStateContent(ctx context.Context, roomID id.RoomID, evtType, stateKey string) ([]byte, error) {
	var pdu string
	err := db.QueryRow(ctx, `SELECT e.pdu FROM current_state cs JOIN events e ON e.event_id = cs.event_id
		WHERE cs.room_id = $1 AND cs.type = $2 AND cs.state_key = $3`, roomID, evtType, stateKey).Scan(&pdu)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	} else if err != nil {
		return nil, fmt.Errorf("current state content: %w", err)
	}
	content := gjson.Get(pdu, "content")
	if !content.IsObject() {
		return []byte("{}"), nil
	}
	return []byte(content.Raw), nil
}

// StateEventsOfTypeIn returns the state events of one type and state key
// of several rooms, oldest first.
func (db *DB) StateEventsOfTypeIn(ctx context.Context, roomIDs []id.RoomID, evtType, stateKey string) ([]*Event, error) {
	if len(roomIDs) == 0 {
		return nil, nil
	}
	in, args := inList(roomIDs, 2)
	return db.queryEvents(ctx, `SELECT `+eventColumns+` FROM events
		WHERE type = $1 AND state_key = $2 AND room_id IN (`+in+`) ORDER BY stream_pos`, append([]any{evtType, stateKey}, args...)...)
}
