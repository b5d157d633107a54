package clientapi

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"maps"
	"math"
	"net/http"
	"slices"
	"strings"

	"github.com/gin-gonic/gin"
	"github.com/tidwall/gjson"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/switchboard-im/switchboard/homeserver/rooms"
	"github.com/switchboard-im/switchboard/homeserver/storage"
	"github.com/switchboard-im/switchboard/homeserver/syncapi"
)

// Server-side search (spec: "Server Side Search"): POST /search over the
// room_events category, in the rooms the user has been in and only the
// events history visibility lets them see.

const (
	searchDefaultLimit = 10
	searchMaxLimit     = 100
	// The spec's default context size, and a cap on it.
	searchContextDefault = 5
	searchContextMax     = 100
)

func (a *API) registerSearch(r gin.IRouter) {
	for _, prefix := range clientPrefixes {
		r.POST(prefix+"/search", a.authed(a.postSearch))
	}
}

// roomEventsCriteria is the room_events search category of a request.
type roomEventsCriteria struct {
	SearchTerm   *string         `json:"search_term"`
	Keys         *[]string       `json:"keys"`
	Filter       json.RawMessage `json:"filter"`
	OrderBy      string          `json:"order_by"`
	EventContext *struct {
		BeforeLimit    *int `json:"before_limit"`
		AfterLimit     *int `json:"after_limit"`
		IncludeProfile bool `json:"include_profile"`
	} `json:"event_context"`
	IncludeState bool `json:"include_state"`
	Groupings    *struct {
		GroupBy []struct {
			Key string `json:"key"`
		} `json:"group_by"`
	} `json:"groupings"`
}

// searchToken is a next_batch: the last match served, in the order of the
// search, and the group it is confined to, if any. Clients treat it as
// opaque, so it is base64url JSON.
type searchToken struct {
	Order      string  `json:"o"`
	Rank       float64 `json:"r,omitempty"`
	Pos        int64   `json:"p"`
	GroupKey   string  `json:"k,omitempty"`
	GroupValue string  `json:"v,omitempty"`
}

func (t searchToken) String() string {
	raw, _ := json.Marshal(t)
	return base64.RawURLEncoding.EncodeToString(raw)
}

func parseSearchToken(raw string) (*searchToken, bool) {
	data, err := base64.RawURLEncoding.DecodeString(raw)
	if err != nil {
		return nil, false
	}
	var t searchToken
	if json.Unmarshal(data, &t) != nil || (t.Order != "rank" && t.Order != "recent") ||
		(t.GroupKey != "" && t.GroupKey != "room_id" && t.GroupKey != "sender") {
		return nil, false
	}
	return &t, true
}

// searchRequest is a validated room_events search.
type searchRequest struct {
	terms        *storage.SearchTerms
	types        []string
	filter       *mautrix.FilterPart
	limit        int
	byRank       bool
	withContext  bool
	before       int
	after        int
	withProfile  bool
	includeState bool
	groupBy      []string
	token        *searchToken
}

func (a *API) postSearch(c *gin.Context, sess *storage.Session) {
	raw, ok := a.readJSON(c, nil)
	if !ok {
		return
	}
	rawCategories, present := raw["search_categories"]
	if !present {
		fail(c, errMissingParam.WithMessage("search_categories is required"))
		return
	}
	var categories map[string]json.RawMessage
	if err := json.Unmarshal(rawCategories, &categories); err != nil || categories == nil {
		fail(c, mautrix.MBadJSON.WithMessage("search_categories must be an object"))
		return
	}
	for name := range categories {
		if name != "room_events" {
			fail(c, mautrix.MUnknown.WithMessage("Unknown search category %q: only room_events is supported", name).WithStatus(http.StatusBadRequest))
			return
		}
	}
	rawRoomEvents, present := categories["room_events"]
	if !present {
		c.JSON(http.StatusOK, gin.H{"search_categories": gin.H{}})
		return
	}
	req, ok := parseRoomEventsSearch(c, rawRoomEvents)
	if !ok {
		return
	}
	result, err := a.searchRoomEvents(c.Request.Context(), sess, req)
	if errors.Is(err, storage.ErrSearchUnavailable) {
		zerologFromGin(c).Error().Err(err).Msg("Search requested, but the database cannot search")
		fail(c, mautrix.MUnknown.WithMessage("Full-text search is not available on this server").WithStatus(http.StatusInternalServerError))
		return
	} else if err != nil {
		a.internalError(c, err)
		return
	}
	c.JSON(http.StatusOK, gin.H{"search_categories": gin.H{"room_events": result}})
}

// parseRoomEventsSearch validates the room_events criteria and the
// next_batch query parameter.
func parseRoomEventsSearch(c *gin.Context, raw json.RawMessage) (*searchRequest, bool) {
	var crit roomEventsCriteria
	if err := json.Unmarshal(raw, &crit); err != nil {
		fail(c, mautrix.MBadJSON.WithMessage("room_events: %s", describeJSONError(err)))
		return nil, false
	} else if string(raw) == "null" {
		fail(c, mautrix.MBadJSON.WithMessage("room_events must be an object"))
		return nil, false
	}
	if crit.SearchTerm == nil {
		fail(c, errMissingParam.WithMessage("room_events.search_term is required"))
		return nil, false
	}
	req := &searchRequest{terms: storage.ParseSearchTerms(*crit.SearchTerm), limit: searchDefaultLimit}

	switch crit.OrderBy {
	case "", "rank":
		req.byRank = true
	case "recent":
	default:
		fail(c, mautrix.MInvalidParam.WithMessage("order_by must be rank or recent"))
		return nil, false
	}

	keys := []string{"content.body", "content.name", "content.topic"}
	if crit.Keys != nil {
		keys = *crit.Keys
	}
	for _, k := range keys {
		if storage.SearchKeyTypes[k] == "" {
			fail(c, mautrix.MInvalidParam.WithMessage("keys: %q is not one of content.body, content.name, content.topic", k))
			return nil, false
		}
	}

	req.filter = &mautrix.FilterPart{}
	if len(crit.Filter) > 0 && string(crit.Filter) != "null" {
		var limit partLimit
		if err := json.Unmarshal(crit.Filter, req.filter); err != nil {
			fail(c, mautrix.MBadJSON.WithMessage("filter: %s", describeJSONError(err)))
			return nil, false
		} else if err := json.Unmarshal(crit.Filter, &limit); err != nil {
			fail(c, mautrix.MBadJSON.WithMessage("filter: %s", describeJSONError(err)))
			return nil, false
		}
		if err := validateEventFilter(req.filter, limit); err != nil {
			fail(c, mautrix.MBadJSON.WithMessage("Invalid filter: %s", err))
			return nil, false
		}
		if limit.Limit != nil {
			req.limit = int(min(*limit.Limit, searchMaxLimit))
		}
	}
	// The keys choose event types; the filter's types can narrow them.
	typeFilter := &mautrix.FilterPart{Types: req.filter.Types, NotTypes: req.filter.NotTypes}
	for _, k := range keys {
		t := storage.SearchKeyTypes[k]
		if syncapi.MatchFilter(typeFilter, &storage.Event{Type: t}) && !slices.Contains(req.types, t) {
			req.types = append(req.types, t)
		}
	}

	if ec := crit.EventContext; ec != nil {
		req.withContext, req.withProfile = true, ec.IncludeProfile
		req.before, req.after = searchContextDefault, searchContextDefault
		for _, l := range []struct {
			name string
			in   *int
			out  *int
		}{{"before_limit", ec.BeforeLimit, &req.before}, {"after_limit", ec.AfterLimit, &req.after}} {
			if l.in == nil {
				continue
			}
			if *l.in < 0 {
				fail(c, mautrix.MInvalidParam.WithMessage("event_context.%s must not be negative", l.name))
				return nil, false
			}
			*l.out = min(*l.in, searchContextMax)
		}
	}
	req.includeState = crit.IncludeState
	if crit.Groupings != nil {
		for _, g := range crit.Groupings.GroupBy {
			if g.Key != "room_id" && g.Key != "sender" {
				fail(c, mautrix.MInvalidParam.WithMessage("groupings: group key must be room_id or sender, not %q", g.Key))
				return nil, false
			}
			if !slices.Contains(req.groupBy, g.Key) {
				req.groupBy = append(req.groupBy, g.Key)
			}
		}
	}

	if raw := c.Query("next_batch"); raw != "" {
		t, ok := parseSearchToken(raw)
		if !ok {
			fail(c, mautrix.MInvalidParam.WithMessage("Invalid next_batch token"))
			return nil, false
		}
		if (t.Order == "rank") != req.byRank {
			fail(c, mautrix.MInvalidParam.WithMessage("next_batch is from a search with another order_by"))
			return nil, false
		}
		req.token = t
	}
	return req, true
}

// validateEventFilter checks a RoomEventFilter beyond its JSON types, as
// the filter API does.
func validateEventFilter(f *mautrix.FilterPart, limit partLimit) error {
	if limit.Limit != nil && *limit.Limit <= 0 {
		return errors.New("limit must be greater than 0")
	}
	for _, u := range slices.Concat(f.Senders, f.NotSenders) {
		if !strings.HasPrefix(string(u), "@") {
			return errors.New("senders: " + string(u) + " is not a user ID")
		}
	}
	for _, r := range slices.Concat(f.Rooms, f.NotRooms) {
		if !strings.HasPrefix(string(r), "!") {
			return errors.New("rooms: " + string(r) + " is not a room ID")
		}
	}
	return nil
}

// searchResult is one entry of results.
type searchResult struct {
	Rank    float64              `json:"rank"`
	Result  *rooms.ClientEvent   `json:"result"`
	Context *searchResultContext `json:"context,omitempty"`
}

type searchResultContext struct {
	Start        string               `json:"start"`
	End          string               `json:"end"`
	ProfileInfo  map[id.UserID]gin.H  `json:"profile_info,omitempty"`
	EventsBefore []*rooms.ClientEvent `json:"events_before"`
	EventsAfter  []*rooms.ClientEvent `json:"events_after"`
}

type searchGroup struct {
	NextBatch string       `json:"next_batch,omitempty"`
	Order     int          `json:"order"`
	Results   []id.EventID `json:"results"`
}

type roomEventsResult struct {
	Count      int                                `json:"count"`
	Highlights []string                           `json:"highlights"`
	Results    []*searchResult                    `json:"results"`
	NextBatch  string                             `json:"next_batch,omitempty"`
	Groups     map[string]map[string]*searchGroup `json:"groups,omitempty"`
	State      map[id.RoomID][]*rooms.ClientEvent `json:"state,omitempty"`
}

// searchRoomEvents runs a validated search for the session's user.
func (a *API) searchRoomEvents(ctx context.Context, sess *storage.Session, req *searchRequest) (*roomEventsResult, error) {
	out := &roomEventsResult{Highlights: []string{}, Results: []*searchResult{}}
	if len(req.groupBy) > 0 {
		out.Groups = map[string]map[string]*searchGroup{}
		for _, k := range req.groupBy {
			out.Groups[k] = map[string]*searchGroup{}
		}
	}
	ignored, err := a.rooms.IgnoredUsers(ctx, sess.UserID)
	if err != nil {
		return nil, err
	}
	sf, histories, err := a.searchFilter(ctx, sess.UserID, req, ignored)
	if err != nil || req.terms.Empty() || len(sf.Rooms) == 0 || len(sf.Types) == 0 {
		return out, err
	}

	// Read matches from the token on until limit of them pass the rest of
	// the filter (contains_url needs the content).
	var cursor *storage.SearchHit
	if t := req.token; t != nil {
		cursor = &storage.SearchHit{Rank: t.Rank, StreamPos: t.Pos}
	}
	var chosen []*storage.Event
	var chosenHits []storage.SearchHit
	more, total := true, -1
	for reads := 0; more && len(chosen) < req.limit && reads < 20; reads++ {
		hits, hitsMore, n, err := a.db.SearchEvents(ctx, req.terms, sf, cursor, max(req.limit-len(chosen), 10))
		if err != nil {
			return nil, err
		}
		if reads == 0 {
			total = n
		}
		more = hitsMore
		positions := make([]int64, len(hits))
		for i, h := range hits {
			positions[i] = h.StreamPos
		}
		events, err := a.db.EventsAt(ctx, positions)
		if err != nil {
			return nil, err
		}
		byPos := make(map[int64]*storage.Event, len(events))
		for _, e := range events {
			byPos[e.StreamPos] = e
		}
		for i, h := range hits {
			if len(chosen) == req.limit {
				more = true
				break
			}
			cursor = &hits[i]
			if e := byPos[h.StreamPos]; e != nil && e.RedactedBy == "" && syncapi.MatchFilter(req.filter, e) {
				chosen, chosenHits = append(chosen, e), append(chosenHits, h)
			}
		}
	}
	if out.Count = total; total < 0 {
		if out.Count, err = a.db.SearchCount(ctx, req.terms, sf); err != nil {
			return nil, err
		}
	}
	// More to come: the next page starts after the last match read.
	var nextTok *searchToken
	if more && cursor != nil {
		nextTok = &searchToken{Order: "recent", Pos: cursor.StreamPos}
		if req.byRank {
			nextTok.Order, nextTok.Rank = "rank", cursor.Rank
		}
		if req.token != nil {
			nextTok.GroupKey, nextTok.GroupValue = req.token.GroupKey, req.token.GroupValue
		}
		out.NextBatch = nextTok.String()
	}

	viewer := rooms.Viewer{UserID: sess.UserID, DeviceID: sess.DeviceID}
	rendered := a.rooms.Render(ctx, chosen, viewer, true)
	highlights := map[string]bool{}
	for i, e := range chosen {
		for _, w := range req.terms.Highlights(storage.SearchText(e.Type, e.StateKey, e.PDU)) {
			highlights[w] = true
		}
		res := &searchResult{Rank: chosenHits[i].Rank, Result: rendered[i]}
		if req.withContext {
			if res.Context, err = a.searchContext(ctx, e, visibleTo(histories[e.RoomID], ignored), req, viewer); err != nil {
				return nil, err
			}
		}
		out.Results = append(out.Results, res)
		for _, k := range req.groupBy {
			value := string(e.RoomID)
			if k == "sender" {
				value = string(e.Sender)
			}
			g := out.Groups[k][value]
			if g == nil {
				g = &searchGroup{Order: len(out.Groups[k]) + 1, Results: []id.EventID{}}
				// A token confines one group key: inside a group of
				// another key, there is no token to give.
				if nextTok != nil && (req.token == nil || req.token.GroupKey == "" || req.token.GroupKey == k) {
					t := *nextTok
					t.GroupKey, t.GroupValue = k, value
					g.NextBatch = t.String()
				}
				out.Groups[k][value] = g
			}
			g.Results = append(g.Results, e.EventID)
		}
	}
	out.Highlights = slices.Sorted(maps.Keys(highlights))
	if out.Highlights == nil {
		out.Highlights = []string{}
	}

	if req.includeState && len(chosen) > 0 {
		out.State = map[id.RoomID][]*rooms.ClientEvent{}
		for _, e := range chosen {
			if _, done := out.State[e.RoomID]; done {
				continue
			}
			state, err := a.searchRoomState(ctx, e.RoomID, histories[e.RoomID])
			if err != nil {
				return nil, err
			}
			out.State[e.RoomID] = a.rooms.Render(ctx, state, viewer, true)
		}
	}
	return out, nil
}

// searchFilter works out where to search: the rooms the user has any
// membership in (left ones included, forgotten and encrypted ones not)
// through the request's filter and group token, each limited to the
// events history visibility lets the user see; ignored users' events left
// out.
func (a *API) searchFilter(ctx context.Context, userID id.UserID, req *searchRequest, ignored map[id.UserID]bool) (*storage.SearchFilter, map[id.RoomID]*rooms.History, error) {
	memberships, err := a.db.UserRooms(ctx, userID)
	if err != nil {
		return nil, nil, err
	}
	forgotten, err := a.db.ForgottenRooms(ctx, userID)
	if err != nil {
		return nil, nil, err
	}
	sf := &storage.SearchFilter{Rooms: map[id.RoomID][]storage.PosRange{}, Types: req.types,
		Senders: req.filter.Senders, NotSenders: slices.Clone(req.filter.NotSenders), ByRank: req.byRank}
	var candidates []id.RoomID
	for _, m := range memberships {
		r := m.RoomID
		if forgotten[r] || (req.filter.Rooms != nil && !slices.Contains(req.filter.Rooms, r)) || slices.Contains(req.filter.NotRooms, r) {
			continue
		}
		if t := req.token; t != nil && t.GroupKey == "room_id" && t.GroupValue != string(r) {
			continue
		}
		candidates = append(candidates, r)
	}
	// The spec leaves encrypted rooms out of search altogether.
	encrypted, err := a.db.EncryptedRooms(ctx, candidates)
	if err != nil {
		return nil, nil, err
	}
	candidates = slices.DeleteFunc(candidates, func(r id.RoomID) bool { return encrypted[r] })
	histories, err := a.rooms.HistoriesFor(ctx, candidates, userID)
	if err != nil {
		return nil, nil, err
	}
	for _, r := range candidates {
		ranges := histories[r].VisibleRanges()
		switch {
		case len(ranges) == 0:
		case len(ranges) == 1 && ranges[0].From <= 0 && ranges[0].To == math.MaxInt64:
			sf.Rooms[r] = nil
		default:
			sf.Rooms[r] = ranges
		}
	}
	if t := req.token; t != nil && t.GroupKey == "sender" {
		if len(sf.Senders) > 0 && !slices.Contains(sf.Senders, id.UserID(t.GroupValue)) {
			clear(sf.Rooms)
		}
		sf.Senders = []id.UserID{id.UserID(t.GroupValue)}
	}
	for u := range ignored {
		sf.NotSenders = append(sf.NotSenders, u)
	}
	return sf, histories, nil
}

// searchContext is the events around a result that keep lets through, as
// /context gives them, with the senders' profiles at the time if asked.
func (a *API) searchContext(ctx context.Context, e *storage.Event, keep func(*storage.Event) bool, req *searchRequest, viewer rooms.Viewer) (*searchResultContext, error) {
	fetch := func(backwards bool) func(topoToken, int) ([]*storage.Event, error) {
		return func(cur topoToken, n int) ([]*storage.Event, error) {
			return a.db.RoomEventsTopological(ctx, e.RoomID, cur.depth, cur.pos, n, backwards)
		}
	}
	eventsBefore, start, _, err := pageEvents(before(e), nil, true, req.before, fetch(true), keep)
	if err != nil {
		return nil, err
	}
	eventsAfter, end, _, err := pageEvents(after(e), nil, false, req.after, fetch(false), keep)
	if err != nil {
		return nil, err
	}
	out := &searchResultContext{
		Start:        start.String(),
		End:          end.String(),
		EventsBefore: a.rooms.Render(ctx, eventsBefore, viewer, true),
		EventsAfter:  a.rooms.Render(ctx, eventsAfter, viewer, true),
	}
	if req.withProfile {
		if out.ProfileInfo, err = a.historicProfiles(ctx, e, slices.Concat([]*storage.Event{e}, eventsBefore, eventsAfter)); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// historicProfiles returns the displayname and avatar_url the senders of
// events had in the room just after e (or, for those who joined later,
// after the last of events).
func (a *API) historicProfiles(ctx context.Context, e *storage.Event, events []*storage.Event) (map[id.UserID]gin.H, error) {
	out := map[id.UserID]gin.H{}
	wanted := map[id.UserID]bool{}
	for _, ev := range events {
		wanted[ev.Sender] = true
	}
	last := e
	for _, ev := range events {
		if ev.StreamPos > last.StreamPos {
			last = ev
		}
	}
	for _, at := range []*storage.Event{e, last} {
		state, err := a.rooms.StateAt(ctx, at, true)
		if err != nil {
			return nil, err
		}
		members := storage.StateMap{}
		for u := range wanted {
			k := storage.StateKey{Type: event.StateMember.Type, StateKey: string(u)}
			if _, done := out[u]; !done && state[k] != "" {
				members[k] = state[k]
			}
		}
		memberEvents, err := a.rooms.StateEvents(ctx, members)
		if err != nil {
			return nil, err
		}
		for _, m := range memberEvents {
			profile := gin.H{}
			for _, field := range []string{"displayname", "avatar_url"} {
				if v := gjson.GetBytes(m.PDU, "content."+field); v.Type == gjson.String {
					profile[field] = v.Str
				}
			}
			out[id.UserID(*m.StateKey)] = profile
		}
	}
	return out, nil
}

// searchRoomState is the state of a room in the results that the user may
// read: the current state while they are in it (or it is world-readable),
// else the state when they left; nil if neither.
func (a *API) searchRoomState(ctx context.Context, roomID id.RoomID, h *rooms.History) ([]*storage.Event, error) {
	current, err := a.db.CurrentStreamPos(ctx)
	if err != nil {
		return nil, err
	}
	if h.MembershipAt(current) == event.MembershipJoin || h.CanSee(current+1) {
		return a.rooms.CurrentStateEvents(ctx, roomID)
	}
	left := h.LastLeave()
	if left == 0 {
		return nil, nil
	}
	leaveEvents, err := a.db.RoomEvents(ctx, roomID, left-1, left, 1, false)
	if err != nil || len(leaveEvents) == 0 {
		return nil, err
	}
	state, err := a.rooms.StateAt(ctx, leaveEvents[0], true)
	if err != nil {
		return nil, err
	}
	return a.rooms.StateEvents(ctx, state)
}
