package rooms

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"

	"github.com/tidwall/gjson"
	"maunium.net/go/mautrix/crypto/canonicaljson"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/switchboard-im/switchboard/homeserver/storage"
)

// Relationship types the server treats specially (spec: "Forming
// relationships between events").
const (
	RelReplace    = "m.replace"
	RelThread     = "m.thread"
	RelReference  = "m.reference"
	RelAnnotation = "m.annotation"
)

// Errors of relations a client may not send (both HTTP 400).
var (
	// ErrDuplicateAnnotation is M_DUPLICATE_ANNOTATION.
	ErrDuplicateAnnotation = errors.New("you already sent this annotation")
	// ErrThreadOnRelation is M_UNKNOWN: threads cannot start from (or
	// nest in) an event that itself has a relation.
	ErrThreadOnRelation = errors.New("cannot start a thread from an event with a relation")
)

// checkRelation enforces what the spec asks of servers when a client sends
// a related event: no thread rooted at an event that has a rel_type, and no
// second identical annotation by the same sender.
func (w *work) checkRelation(ctx context.Context, req EventRequest) error {
	if req.StateKey != nil {
		return nil
	}
	raw, ok := req.Content.(json.RawMessage)
	if !ok {
		if raw, ok = jsonOf(req.Content); !ok {
			return nil
		}
	}
	rel := gjson.GetBytes(raw, `m\.relates_to`)
	if !rel.IsObject() {
		return nil
	}
	parent := id.EventID(rel.Get("event_id").Str)
	switch rel.Get("rel_type").Str {
	case RelThread:
		target, err := w.s.db.GetEvent(ctx, parent)
		if errors.Is(err, storage.ErrNotFound) {
			return nil
		} else if err != nil {
			return err
		}
		if target.RoomID == w.rs.roomID && target.RelType != "" && target.RelType != relReply {
			return ErrThreadOnRelation
		}
	case RelAnnotation:
		key := rel.Get("key").Str
		if parent == "" || key == "" {
			return nil
		}
		dup, err := w.s.db.HasAnnotation(ctx, parent, req.Sender, req.Type, key)
		if err != nil {
			return err
		}
		if dup {
			return ErrDuplicateAnnotation
		}
	}
	return nil
}

func jsonOf(v any) (json.RawMessage, bool) {
	data, err := json.Marshal(v)
	return data, err == nil
}

// relReply is the rel_type build.go records for rich replies, which are
// not relations.
const relReply = "m.in_reply_to"

// VisibleEvent returns an event of the room that the user may see, and the
// user's history in the room; ErrEventNotFound otherwise.
func (s *Service) VisibleEvent(ctx context.Context, roomID id.RoomID, eventID id.EventID, userID id.UserID) (*storage.Event, *History, error) {
	e, err := s.db.GetEvent(ctx, eventID)
	if errors.Is(err, storage.ErrNotFound) || (err == nil && e.RoomID != roomID) {
		return nil, nil, ErrEventNotFound
	} else if err != nil {
		return nil, nil, err
	}
	h, err := s.HistoryFor(ctx, roomID, userID)
	if err != nil {
		return nil, nil, err
	}
	if !h.CanSee(e.StreamPos) {
		return nil, nil, ErrEventNotFound
	}
	return e, h, nil
}

// IgnoredUsers returns the users in the user's m.ignored_user_list.
func (s *Service) IgnoredUsers(ctx context.Context, userID id.UserID) (map[id.UserID]bool, error) {
	raw, err := s.db.GetAccountData(ctx, userID, "", event.AccountDataIgnoredUserList.Type)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, nil
	} else if err != nil {
		return nil, err
	}
	var content struct {
		IgnoredUsers map[id.UserID]json.RawMessage `json:"ignored_users"`
	}
	if json.Unmarshal(raw, &content) != nil || len(content.IgnoredUsers) == 0 {
		return nil, nil
	}
	out := make(map[id.UserID]bool, len(content.IgnoredUsers))
	for u := range content.IgnoredUsers {
		out[u] = true
	}
	return out, nil
}

// Redacted returns a copy of a stored event in its redacted form (the
// room version's redaction algorithm), for showing a thread root sent by
// an ignored user.
func (s *Service) Redacted(ctx context.Context, e *storage.Event) (*storage.Event, error) {
	version, err := s.Version(ctx, e.RoomID)
	if err != nil {
		return nil, err
	}
	p, err := parsePDU(e.PDU)
	if err != nil {
		return nil, err
	}
	raw, err := canonicaljson.Marshal(p.Redact(version))
	if err != nil {
		return nil, fmt.Errorf("redact: %w", err)
	}
	c := *e
	c.PDU = raw
	return &c, nil
}

// BundleAggregations adds the bundled aggregations (unsigned["m.relations"])
// to the events that have any, as the viewer may see them: the latest valid
// m.replace (never on a redacted event, as the spec says; the content itself
// is left as sent), the m.thread summary and the m.reference chunk (kept on
// redacted parents: the spec only drops m.replace). m.annotation is not
// aggregated. Child events the viewer may not see (history
// visibility) or that ignored users sent are left out; redacted children
// have lost their relation and are never counted. State events get no
// aggregations. Events rendered inside an aggregation (latest edit, latest
// thread event) are rendered by Render, so they get their own aggregations.
func (s *Service) BundleAggregations(ctx context.Context, events []*ClientEvent, viewer Viewer) {
	if viewer.UserID == "" || len(events) == 0 {
		return
	}
	byID := make(map[id.EventID][]*ClientEvent, len(events))
	parents := make([]id.EventID, 0, len(events))
	for _, ce := range events {
		if ce == nil || ce.StateKey != nil || ce.EventID == "" {
			continue
		}
		if _, seen := byID[ce.EventID]; !seen {
			parents = append(parents, ce.EventID)
		}
		byID[ce.EventID] = append(byID[ce.EventID], ce)
	}
	if len(parents) == 0 {
		return
	}
	rels, err := s.db.AggregatedRelations(ctx, parents)
	if err != nil {
		s.log.Warn().Err(err).Msg("Failed to load relations for bundled aggregations")
		return
	}
	if len(rels) == 0 {
		return
	}
	ignored, err := s.IgnoredUsers(ctx, viewer.UserID)
	if err != nil {
		s.log.Warn().Err(err).Msg("Failed to load ignored users for bundled aggregations")
	}
	histories := map[id.RoomID]*History{}
	visible := func(r *storage.Relation) bool {
		if ignored[r.Sender] {
			return false
		}
		h, ok := histories[r.RoomID]
		if !ok {
			if h, err = s.HistoryFor(ctx, r.RoomID, viewer.UserID); err != nil {
				s.log.Warn().Err(err).Msg("Failed to load history visibility for bundled aggregations")
			}
			histories[r.RoomID] = h
		}
		return h != nil && h.CanSee(r.StreamPos)
	}

	type aggregation struct {
		edits        []*storage.Relation
		threadLatest *storage.Relation
		threadCount  int
		participated bool
		references   []*storage.Relation
	}
	aggs := map[id.EventID]*aggregation{}
	get := func(parent id.EventID) *aggregation {
		a := aggs[parent]
		if a == nil {
			a = &aggregation{}
			aggs[parent] = a
		}
		return a
	}
	for i := range rels {
		r := &rels[i]
		parent := byID[r.Parent][0]
		switch r.RelType {
		case RelReplace:
			// Valid replacements (spec: "Validity of replacement events"):
			// same sender and type, neither a state event, the original not
			// itself an edit; none are bundled with a redacted original.
			if r.ParentRedacted || r.IsState || r.Sender != parent.Sender || r.Type != parent.Type ||
				r.ParentRelType == RelReplace || !visible(r) {
				continue
			}
			a := get(r.Parent)
			a.edits = append(a.edits, r)
		case RelThread:
			// A thread cannot hang off an event that has a relation.
			if r.ParentRelType != "" {
				continue
			}
			if r.Sender == viewer.UserID {
				get(r.Parent).participated = true
			}
			if !visible(r) {
				continue
			}
			a := get(r.Parent)
			a.threadCount++
			if a.threadLatest == nil || topoLess(a.threadLatest, r) {
				a.threadLatest = r
			}
		case RelReference:
			if visible(r) {
				a := get(r.Parent)
				a.references = append(a.references, r)
			}
		}
	}

	// Load the edit candidates and the latest thread events in one query.
	var load []id.EventID
	for _, a := range aggs {
		for _, r := range a.edits {
			load = append(load, r.EventID)
		}
		if a.threadLatest != nil {
			load = append(load, a.threadLatest.EventID)
		}
	}
	loaded := map[id.EventID]*storage.Event{}
	if len(load) > 0 {
		found, err := s.db.GetEvents(ctx, load)
		if err != nil {
			s.log.Warn().Err(err).Msg("Failed to load related events for bundled aggregations")
		}
		for _, e := range found {
			loaded[e.EventID] = e
		}
	}

	// Choose each parent's latest valid edit and render the chosen events
	// the way their parent is rendered (with or without room_id).
	latestEdit := map[id.EventID]*storage.Event{}
	toRender := map[bool][]*storage.Event{}
	withRoomID := func(parent id.EventID) bool { return byID[parent][0].RoomID != "" }
	for parent, a := range aggs {
		slices.SortFunc(a.edits, func(x, y *storage.Relation) int {
			return cmp.Or(cmp.Compare(y.OriginServerTS, x.OriginServerTS), cmp.Compare(y.EventID, x.EventID))
		})
		for _, r := range a.edits {
			e := loaded[r.EventID]
			if e == nil {
				continue
			}
			// The replacement must carry m.new_content; in encrypted events
			// it is inside the ciphertext, out of the server's sight.
			if e.Type != event.EventEncrypted.Type && !gjson.GetBytes(e.PDU, `content.m\.new_content`).IsObject() {
				continue
			}
			latestEdit[parent] = e
			toRender[withRoomID(parent)] = append(toRender[withRoomID(parent)], e)
			break
		}
		if a.threadLatest != nil {
			if e := loaded[a.threadLatest.EventID]; e != nil {
				toRender[withRoomID(parent)] = append(toRender[withRoomID(parent)], e)
			}
		}
	}
	rendered := map[bool]map[id.EventID]*ClientEvent{}
	for flag, evs := range toRender {
		rendered[flag] = map[id.EventID]*ClientEvent{}
		for _, ce := range s.Render(ctx, evs, viewer, flag) {
			rendered[flag][ce.EventID] = ce
		}
	}

	for parent, a := range aggs {
		relations := map[string]any{}
		flag := withRoomID(parent)
		if e := latestEdit[parent]; e != nil {
			if ce := rendered[flag][e.EventID]; ce != nil {
				relations[RelReplace] = ce
			}
		}
		if a.threadCount > 0 && a.threadLatest != nil {
			if ce := rendered[flag][a.threadLatest.EventID]; ce != nil {
				participated := a.participated || byID[parent][0].Sender == viewer.UserID
				relations[RelThread] = map[string]any{
					"latest_event":              ce,
					"count":                     a.threadCount,
					"current_user_participated": participated,
				}
			}
		}
		if len(a.references) > 0 {
			slices.SortFunc(a.references, func(x, y *storage.Relation) int {
				return cmp.Or(cmp.Compare(x.Depth, y.Depth), cmp.Compare(x.StreamPos, y.StreamPos))
			})
			chunk := make([]map[string]id.EventID, len(a.references))
			for i, r := range a.references {
				chunk[i] = map[string]id.EventID{"event_id": r.EventID}
			}
			relations[RelReference] = map[string]any{"chunk": chunk}
		}
		if len(relations) == 0 {
			continue
		}
		for _, ce := range byID[parent] {
			if ce.Unsigned == nil {
				ce.Unsigned = map[string]any{}
			}
			ce.Unsigned["m.relations"] = relations
		}
	}
}

// topoLess orders relations topologically: by depth, then stream position.
func topoLess(a, b *storage.Relation) bool {
	return a.Depth < b.Depth || (a.Depth == b.Depth && a.StreamPos < b.StreamPos)
}
