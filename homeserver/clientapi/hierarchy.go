package clientapi

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/gin-gonic/gin"
	"github.com/tidwall/gjson"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/switchboard-im/switchboard/homeserver/rooms"
	"github.com/switchboard-im/switchboard/homeserver/storage"
)

// Limits of GET /hierarchy. The default is Synapse's, which Element is
// tuned to; max_depth has no limit of its own, as in Synapse: every room is
// walked at most once, so the tree's size bounds the work.
const (
	hierarchyDefaultLimit = 50
	hierarchyMaxLimit     = 100
	// hierarchyBatch bounds how many rooms one load asks the database for.
	hierarchyBatch = 200
	// maxOrderLength is the longest valid m.space.child order (spec).
	maxOrderLength = 50
)

// hierarchyRoom is one room of a hierarchy page (spec:
// SpaceHierarchyRoomsChunk).
type hierarchyRoom struct {
	publicRoomsChunk
	ChildrenState  []hierarchyChild `json:"children_state"`
	AllowedRoomIDs []id.RoomID      `json:"allowed_room_ids,omitempty"`
	Encryption     string           `json:"encryption,omitempty"`
	RoomVersion    string           `json:"room_version,omitempty"`
}

// hierarchyChild is a stripped m.space.child event with its timestamp
// (spec: StrippedChildStateEvent).
type hierarchyChild struct {
	rooms.StrippedState
	OriginServerTS int64 `json:"origin_server_ts"`
}

type hierarchyResponse struct {
	Rooms     []*hierarchyRoom `json:"rooms"`
	NextBatch string           `json:"next_batch,omitempty"`
}

// hierarchyParams are what a pagination token is bound to: the spec forbids
// changing max_depth and suggested_only while paginating, and a token only
// makes sense for the tree (and the user) it was made for.
type hierarchyParams struct {
	user          id.UserID
	root          id.RoomID
	maxDepth      int // -1: no limit
	suggestedOnly bool
}

func (p *hierarchyParams) binding() string {
	sum := sha256.Sum256(fmt.Appendf(nil, "%s\x00%s\x00%d\x00%t", p.user, p.root, p.maxDepth, p.suggestedOnly))
	return base64.RawURLEncoding.EncodeToString(sum[:12])
}

// hierarchyToken is where a page ended. Pages are not kept on the server
// (several processes may serve one user): the next request walks the tree
// again from the root, which costs a few queries per space, and resumes
// after the last room served. Should that room have left the tree since,
// it resumes after as many rooms as were served.
type hierarchyToken struct {
	Binding string    `json:"b"`
	Last    id.RoomID `json:"l"`
	Served  int       `json:"n"`
}

func (t *hierarchyToken) String() string {
	raw, _ := json.Marshal(t)
	return base64.RawURLEncoding.EncodeToString(raw)
}

func parseHierarchyToken(raw string, p *hierarchyParams) (*hierarchyToken, bool) {
	if len(raw) > 2048 {
		return nil, false
	}
	data, err := base64.RawURLEncoding.DecodeString(raw)
	if err != nil {
		return nil, false
	}
	var t hierarchyToken
	if json.Unmarshal(data, &t) != nil || t.Binding != p.binding() || t.Served < 1 || !strings.HasPrefix(string(t.Last), "!") {
		return nil, false
	}
	return &t, true
}

// getHierarchy is GET /_matrix/client/v1/rooms/{roomId}/hierarchy (spec:
// "Discovering rooms within spaces"): the space tree below a room, depth
// first, each room once, children in the spec's order, only rooms the user
// may see (and only their children are walked).
func (a *API) getHierarchy(c *gin.Context, sess *storage.Session) {
	rootID, ok := roomIDFromPath(c)
	// Per user (rate_limits.hierarchy): each request walks the tree from
	// its root, so a client paging through a big space at full speed would
	// keep the database busy.
	if !ok || !limit(c, a.hierarchyLimit, string(sess.UserID)) {
		return
	}
	pageSize, ok := queryLimit(c, hierarchyDefaultLimit, 1, hierarchyMaxLimit)
	if !ok {
		return
	}
	p := hierarchyParams{user: sess.UserID, root: rootID, maxDepth: -1}
	if raw, given := c.GetQuery("max_depth"); given {
		n, err := strconv.Atoi(raw)
		if err != nil || n < 0 {
			fail(c, mautrix.MInvalidParam.WithMessage("max_depth must be a non-negative integer"))
			return
		}
		p.maxDepth = n
	}
	switch raw, given := c.GetQuery("suggested_only"); {
	case !given || raw == "false":
	case raw == "true":
		p.suggestedOnly = true
	default:
		fail(c, mautrix.MInvalidParam.WithMessage("suggested_only must be true or false"))
		return
	}
	var from *hierarchyToken
	if raw := c.Query("from"); raw != "" {
		if from, ok = parseHierarchyToken(raw, &p); !ok {
			fail(c, mautrix.MInvalidParam.WithMessage("Unknown pagination token: it is malformed, or was given for another room, max_depth or suggested_only"))
			return
		}
	}

	ctx := c.Request.Context()
	w := &hierarchyWalker{db: a.db, params: p, loaded: map[id.RoomID]*storage.SpaceRoom{}}
	if err := w.load(ctx, []id.RoomID{rootID}); err != nil {
		a.internalError(c, err)
		return
	}
	// A room this server does not know answers as a room the user may not
	// see, as the spec lists it, so room IDs cannot be probed.
	root := w.loaded[rootID]
	if root == nil {
		fail(c, mautrix.MForbidden.WithMessage("You are not allowed to view this room"))
		return
	}
	if visible, err := w.accessible(ctx, root); err != nil {
		a.internalError(c, err)
		return
	} else if !visible {
		fail(c, mautrix.MForbidden.WithMessage("You are not allowed to view this room"))
		return
	}

	page, next, err := w.page(ctx, from, pageSize)
	if err != nil {
		a.internalError(c, err)
		return
	}
	resp := hierarchyResponse{Rooms: page}
	if next != nil {
		resp.NextBatch = next.String()
	}
	c.JSON(http.StatusOK, resp)
}

// hierarchyWalker walks one user's view of a space tree.
type hierarchyWalker struct {
	db     *storage.DB
	params hierarchyParams
	// loaded holds the rooms loaded so far; nil for rooms this server has
	// no state of.
	loaded map[id.RoomID]*storage.SpaceRoom
	// memberships are the user's current memberships, loaded on first need:
	// trees of public rooms never need them.
	memberships map[id.RoomID]event.Membership
}

// page walks the tree and returns the limit rooms after from (nil: from
// the root), and the token for the rest (nil when none is left).
func (w *hierarchyWalker) page(ctx context.Context, from *hierarchyToken, limit int) ([]*hierarchyRoom, *hierarchyToken, error) {
	var page, byCount []*hierarchyRoom
	resumed := from == nil
	index, start := 0, 0
	more := false
	err := w.walk(ctx, func(r *hierarchyRoom) bool {
		defer func() { index++ }()
		if !resumed {
			if r.RoomID == from.Last {
				resumed, start = true, index+1
			} else if index >= from.Served && len(byCount) <= limit {
				byCount = append(byCount, r)
			}
			return true
		}
		if len(page) == limit {
			more = true
			return false
		}
		page = append(page, r)
		return true
	})
	if err != nil {
		return nil, nil, err
	}
	if !resumed {
		// The last room served has left the tree: continue by count.
		page, start = byCount, from.Served
		if more = len(page) > limit; more {
			page = page[:limit]
		}
	}
	if page == nil {
		page = []*hierarchyRoom{}
	}
	if !more {
		return page, nil, nil
	}
	return page, &hierarchyToken{Binding: w.params.binding(), Last: page[len(page)-1].RoomID, Served: start + len(page)}, nil
}

// walk visits the rooms of the tree the user may see, depth first, each
// once (the spec allows loops, which must not loop the walk), until visit
// returns false. A room's children are loaded together, in one query.
//
// Only rooms this server has state of are walked. Federation has no
// hierarchy API here yet: a child on another server that we do not know is
// skipped, as Synapse skips one whose servers cannot be reached.
func (w *hierarchyWalker) walk(ctx context.Context, visit func(*hierarchyRoom) bool) error {
	type queued struct {
		roomID id.RoomID
		depth  int
	}
	stack := []queued{{roomID: w.params.root}}
	seen := map[id.RoomID]bool{}
	for len(stack) > 0 {
		q := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if seen[q.roomID] {
			continue
		}
		seen[q.roomID] = true
		r := w.loaded[q.roomID]
		if r == nil {
			continue
		}
		if ok, err := w.accessible(ctx, r); err != nil {
			return err
		} else if !ok {
			continue
		}
		entry, children := w.summary(r)
		if !visit(entry) {
			return nil
		}
		if w.params.maxDepth >= 0 && q.depth >= w.params.maxDepth {
			continue
		}
		var toLoad []id.RoomID
		for _, child := range children {
			if _, done := w.loaded[child]; !done && !seen[child] {
				toLoad = append(toLoad, child)
			}
		}
		if err := w.load(ctx, toLoad); err != nil {
			return err
		}
		// Pushed last first, so the first child is walked next.
		for i := len(children) - 1; i >= 0; i-- {
			stack = append(stack, queued{roomID: children[i], depth: q.depth + 1})
		}
	}
	return nil
}

// load reads rooms into w.loaded, hierarchyBatch rooms a query.
func (w *hierarchyWalker) load(ctx context.Context, roomIDs []id.RoomID) error {
	for batch := range slices.Chunk(roomIDs, hierarchyBatch) {
		found, err := w.db.SpaceRooms(ctx, batch)
		if err != nil {
			return err
		}
		for _, roomID := range batch {
			w.loaded[roomID] = found[roomID]
		}
	}
	return nil
}

// accessible applies the spec's rules for which rooms a hierarchy shows:
// the user is joined or invited, or may join (public join rule, or
// restricted to a room they are joined to), or may knock, or the room is
// world-readable.
func (w *hierarchyWalker) accessible(ctx context.Context, r *storage.SpaceRoom) (bool, error) {
	if stateString(r, event.StateHistoryVisibility.Type, "history_visibility") == string(event.HistoryVisibilityWorldReadable) {
		return true, nil
	}
	version := roomVersion(r)
	rule := event.JoinRule(stateString(r, event.StateJoinRules.Type, "join_rule"))
	switch {
	case rule == event.JoinRulePublic,
		rule == event.JoinRuleKnock && version.Knocks(),
		rule == event.JoinRuleKnockRestricted && version.KnockRestricted():
		return true, nil
	}
	if w.memberships == nil {
		mine, err := w.db.UserRooms(ctx, w.params.user)
		if err != nil {
			return false, err
		}
		w.memberships = make(map[id.RoomID]event.Membership, len(mine))
		for _, m := range mine {
			w.memberships[m.RoomID] = event.Membership(m.Membership)
		}
	}
	switch w.memberships[r.RoomID] {
	case event.MembershipJoin, event.MembershipInvite:
		return true, nil
	}
	if rule == event.JoinRuleRestricted && version.RestrictedJoins() {
		for _, allowed := range allowedRoomIDs(r) {
			if w.memberships[allowed] == event.MembershipJoin {
				return true, nil
			}
		}
	}
	return false, nil
}

// summary builds a room's hierarchy entry and lists the children to walk.
func (w *hierarchyWalker) summary(r *storage.SpaceRoom) (*hierarchyRoom, []id.RoomID) {
	entry := &hierarchyRoom{
		publicRoomsChunk: directoryEntry(storage.PublicRoom{RoomID: r.RoomID, JoinedMembers: r.JoinedMembers}, r.State),
		ChildrenState:    []hierarchyChild{},
		Encryption:       stateString(r, event.StateEncryption.Type, "algorithm"),
		RoomVersion:      string(roomVersion(r)),
	}
	switch event.JoinRule(entry.JoinRule) {
	case event.JoinRuleRestricted, event.JoinRuleKnockRestricted:
		entry.AllowedRoomIDs = allowedRoomIDs(r)
	}
	// The spec: children_state is empty for a room that is not a space.
	if entry.RoomType != string(event.RoomTypeSpace) {
		return entry, nil
	}
	children := spaceChildren(r.Children, w.params.suggestedOnly)
	ids := make([]id.RoomID, len(children))
	for i, e := range children {
		ids[i] = id.RoomID(*e.StateKey)
		entry.ChildrenState = append(entry.ChildrenState, hierarchyChild{
			StrippedState:  rooms.StrippedState{Content: rooms.ContentOf(e), Sender: e.Sender, StateKey: *e.StateKey, Type: e.Type},
			OriginServerTS: e.OriginServerTS,
		})
	}
	return entry, ids
}

// spaceChildren keeps the m.space.child events that make a room a child (a
// room ID state key and a non-empty via of server names; an event without
// via removes the child) and sorts them as the spec orders children: a
// valid order first, by order; then by the event's origin_server_ts; then
// by room ID.
func spaceChildren(events []*storage.Event, suggestedOnly bool) []*storage.Event {
	type child struct {
		e        *storage.Event
		order    string
		hasOrder bool
	}
	var children []child
	for _, e := range events {
		content := gjson.GetBytes(e.PDU, "content")
		if e.StateKey == nil || !strings.HasPrefix(*e.StateKey, "!") || !validVia(content.Get("via")) {
			continue
		}
		if suggestedOnly && content.Get("suggested").Type != gjson.True {
			continue
		}
		ch := child{e: e}
		if order := content.Get("order"); order.Type == gjson.String && validOrder(order.Str) {
			ch.order, ch.hasOrder = order.Str, true
		}
		children = append(children, ch)
	}
	slices.SortFunc(children, func(a, b child) int {
		if a.hasOrder != b.hasOrder {
			if a.hasOrder {
				return -1
			}
			return 1
		}
		return cmp.Or(strings.Compare(a.order, b.order),
			cmp.Compare(a.e.OriginServerTS, b.e.OriginServerTS),
			strings.Compare(*a.e.StateKey, *b.e.StateKey))
	})
	out := make([]*storage.Event, len(children))
	for i, ch := range children {
		out[i] = ch.e
	}
	return out
}

// validVia is a non-empty array of strings (as Synapse checks it).
func validVia(via gjson.Result) bool {
	if !via.IsArray() {
		return false
	}
	servers := via.Array()
	for _, s := range servers {
		if s.Type != gjson.String {
			return false
		}
	}
	return len(servers) > 0
}

// validOrder is the spec's order: 1 to 50 characters from \x20 to \x7E.
// Any other order counts as none.
func validOrder(order string) bool {
	if order == "" || len(order) > maxOrderLength {
		return false
	}
	for i := 0; i < len(order); i++ {
		if order[i] < 0x20 || order[i] > 0x7E {
			return false
		}
	}
	return true
}

// stateString is a string field of one of the room's summary state events.
func stateString(r *storage.SpaceRoom, evtType, field string) string {
	return stateContentString(r.State, evtType, field)
}

// roomVersion is the version m.room.create names; "1" when it names none.
func roomVersion(r *storage.SpaceRoom) id.RoomVersion {
	if v := stateString(r, event.StateCreate.Type, "room_version"); v != "" {
		return id.RoomVersion(v)
	}
	return id.RoomV1
}

// allowedRoomIDs are the rooms whose members a restricted join rule admits.
func allowedRoomIDs(r *storage.SpaceRoom) []id.RoomID {
	var out []id.RoomID
	for _, allow := range gjson.GetBytes(r.State[event.StateJoinRules.Type], "content.allow").Array() {
		if allow.Get("type").Str == "m.room_membership" {
			if roomID := allow.Get("room_id"); roomID.Type == gjson.String && strings.HasPrefix(roomID.Str, "!") {
				out = append(out, id.RoomID(roomID.Str))
			}
		}
	}
	return out
}
