package push

// Evaluation of push rules (spec: "Push Rules", "Conditions"). mautrix's
// pushrules package is not used: its event_match matches substrings of any
// key rather than whole values (and word-bounded substrings of content.body
// only), stringifies non-string values, understands only "room" for
// sender_notification_permission, and compiles glob patterns on every
// match, which is too slow for a thousand members per event.

import (
	"bytes"
	"encoding/json"
	"math"
	"regexp"
	"strconv"
	"strings"
	"sync"

	"github.com/tidwall/gjson"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/switchboard-im/switchboard/homeserver/storage"
)

type condKind string

const (
	condEventMatch         condKind = "event_match"
	condPropertyIs         condKind = "event_property_is"
	condPropertyContains   condKind = "event_property_contains"
	condDisplayName        condKind = "contains_display_name"
	condMemberCount        condKind = "room_member_count"
	condSenderPermission   condKind = "sender_notification_permission"
	defaultRoomNotifyLevel          = 50
)

// Event is an event prepared for evaluation against many users' rules. It
// is read-only once made and safe for concurrent use.
type Event struct {
	Type     string
	Sender   id.UserID
	RoomID   id.RoomID
	StateKey *string
	// top holds the top-level properties conditions can look at.
	top map[string]any
	// body is content.body when it is a string.
	body      string
	bodyLower string
	hasBody   bool
}

// NewEvent prepares a stored event.
func NewEvent(e *storage.Event) *Event {
	return newEvent(e.EventID, e.RoomID, e.Sender, e.Type, e.StateKey, e.OriginServerTS,
		[]byte(gjson.GetBytes(e.PDU, "content").Raw))
}

// NewClientEvent prepares an event given in the client-server format.
func NewClientEvent(raw []byte) *Event {
	get := func(k string) gjson.Result { return gjson.GetBytes(raw, k) }
	var stateKey *string
	if sk := get("state_key"); sk.Type == gjson.String {
		stateKey = &sk.Str
	}
	return newEvent(id.EventID(get("event_id").Str), id.RoomID(get("room_id").Str), id.UserID(get("sender").Str),
		get("type").Str, stateKey, get("origin_server_ts").Int(), []byte(get("content").Raw))
}

func newEvent(eventID id.EventID, roomID id.RoomID, sender id.UserID, evtType string, stateKey *string, ts int64, content []byte) *Event {
	ev := &Event{Type: evtType, Sender: sender, RoomID: roomID, StateKey: stateKey}
	var c map[string]any
	if len(content) > 0 {
		dec := json.NewDecoder(bytes.NewReader(content))
		dec.UseNumber()
		_ = dec.Decode(&c)
	}
	if c == nil {
		c = map[string]any{}
	}
	ev.top = map[string]any{
		"type":             evtType,
		"sender":           string(sender),
		"room_id":          string(roomID),
		"event_id":         string(eventID),
		"origin_server_ts": json.Number(strconv.FormatInt(ts, 10)),
		"content":          c,
	}
	if stateKey != nil {
		ev.top["state_key"] = *stateKey
	}
	if body, ok := c["body"].(string); ok {
		ev.body, ev.bodyLower, ev.hasBody = body, strings.ToLower(body), true
	}
	return ev
}

// lookup follows a split dot-separated path.
func (ev *Event) lookup(path []string) (any, bool) {
	var cur any = ev.top
	for _, p := range path {
		m, ok := cur.(map[string]any)
		if !ok {
			return nil, false
		}
		if cur, ok = m[p]; !ok {
			return nil, false
		}
	}
	return cur, true
}

// splitPath splits a dot-separated property path (spec appendix): "\." is
// a literal dot, "\\" a literal backslash, any other backslash is itself.
func splitPath(key string) []string {
	var parts []string
	var cur strings.Builder
	for i := 0; i < len(key); i++ {
		switch c := key[i]; {
		case c == '\\' && i+1 < len(key) && (key[i+1] == '.' || key[i+1] == '\\'):
			cur.WriteByte(key[i+1])
			i++
		case c == '.':
			parts = append(parts, cur.String())
			cur.Reset()
		default:
			cur.WriteByte(c)
		}
	}
	return append(parts, cur.String())
}

// Room is what room-dependent conditions need to know, from the room's
// state.
type Room struct {
	// MemberCount is the number of joined members.
	MemberCount int
	// PowerLevels is the room's power levels (with the create event for
	// room versions whose creators outrank everyone); nil means none.
	PowerLevels *event.PowerLevelsEventContent
	// NotificationLevels is the power levels' notifications object.
	NotificationLevels map[string]int
}

// NotificationLevels reads the notifications object of a power levels
// content; "room" defaults to 50.
func NotificationLevels(plContent []byte) map[string]int {
	out := map[string]int{"room": defaultRoomNotifyLevel}
	gjson.GetBytes(plContent, "notifications").ForEach(func(k, v gjson.Result) bool {
		switch {
		case v.Type == gjson.Number:
			out[k.Str] = int(v.Int())
		case v.Type == gjson.String:
			// Old rooms may have stringified levels.
			if n, err := strconv.Atoi(v.Str); err == nil {
				out[k.Str] = n
			}
		}
		return true
	})
	return out
}

func (r *Room) senderMayNotify(sender id.UserID, key string) bool {
	required, ok := r.NotificationLevels[key]
	if !ok {
		if key != "room" {
			return false
		}
		required = defaultRoomNotifyLevel
	}
	level := 0
	if r.PowerLevels != nil {
		level = r.PowerLevels.GetUserLevel(sender)
	}
	return level == math.MaxInt || level >= required
}

// Member is the user whose rules are evaluated.
type Member struct {
	UserID id.UserID
	// DisplayName is their display name in the room ("" for none).
	DisplayName string
}

// Result is what the matching rule says about an event. Results are shared:
// do not modify.
type Result struct {
	Kind   Kind
	RuleID string
	// Actions are the rule's actions, legacy actions stripped.
	Actions json.RawMessage
	// Tweaks are the set_tweak actions (a tweak without value is true).
	Tweaks     map[string]any
	TweaksJSON json.RawMessage
	Notify     bool
	// Highlight is set when the highlight tweak is true and the rule notifies.
	Highlight bool
}

func newResult(k Kind, ruleID string, actions json.RawMessage) *Result {
	res := &Result{Kind: k, RuleID: ruleID, Tweaks: map[string]any{}}
	var items []json.RawMessage
	_ = json.Unmarshal(actions, &items)
	kept := []json.RawMessage{}
	for _, item := range items {
		var s string
		if json.Unmarshal(item, &s) == nil {
			if legacyActions[s] {
				continue
			}
			if s == "notify" {
				res.Notify = true
			}
			kept = append(kept, item)
			continue
		}
		var obj map[string]any
		if json.Unmarshal(item, &obj) == nil {
			if name, ok := obj["set_tweak"].(string); ok {
				// No value (some clients send null) means true.
				v, present := obj["value"]
				if !present || v == nil {
					v = true
				}
				res.Tweaks[name] = v
			}
		}
		kept = append(kept, item)
	}
	res.Actions, _ = marshalNoEscape(kept)
	res.TweaksJSON, _ = marshalNoEscape(res.Tweaks)
	res.Highlight = res.Notify && res.Tweaks["highlight"] == true
	return res
}

// scalar is a non-compound canonical JSON value.
type scalar struct {
	kind byte // 's', 'i', 'b', 'n'
	s    string
	i    int64
	b    bool
}

// parseScalar reads a condition value: a string, an integer within the
// canonical JSON range, a boolean or null.
func parseScalar(raw json.RawMessage) (scalar, bool) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if dec.Decode(&v) != nil {
		return scalar{}, false
	}
	return scalarOf(v)
}

const maxCanonicalInt = 1<<53 - 1

func scalarOf(v any) (scalar, bool) {
	switch v := v.(type) {
	case string:
		return scalar{kind: 's', s: v}, true
	case bool:
		return scalar{kind: 'b', b: v}, true
	case nil:
		return scalar{kind: 'n'}, true
	case json.Number:
		i, err := strconv.ParseInt(string(v), 10, 64)
		if err != nil || i > maxCanonicalInt || i < -maxCanonicalInt {
			return scalar{}, false
		}
		return scalar{kind: 'i', i: i}, true
	}
	return scalar{}, false
}

// equals compares an event value with the scalar, exactly (no casting).
func (s scalar) equals(v any) bool {
	switch s.kind {
	case 's':
		str, ok := v.(string)
		return ok && str == s.s
	case 'b':
		b, ok := v.(bool)
		return ok && b == s.b
	case 'n':
		return v == nil
	case 'i':
		other, ok := scalarOf(v)
		return ok && other.kind == 'i' && other.i == s.i
	}
	return false
}

// glob is a compiled glob pattern (spec appendix): '*' is any run of
// characters, '?' exactly one; matching is case-insensitive.
type glob struct {
	// literal is the lowercased pattern when it has no wildcards.
	literal   string
	isLiteral bool
	re        *regexp.Regexp
	// words: match a word-bounded substring (content.body), not the
	// whole value.
	words bool
}

const wordChar = "a-z0-9_" // with (?i), also A-Z

func compileGlob(pattern string, words bool) *glob {
	g := &glob{words: words}
	if !strings.ContainsAny(pattern, "*?") {
		g.literal, g.isLiteral = strings.ToLower(pattern), true
		return g
	}
	var b strings.Builder
	b.WriteString("(?is)")
	if words {
		b.WriteString("(?:^|[^" + wordChar + "])")
	} else {
		b.WriteString("^")
	}
	for _, r := range pattern {
		switch r {
		case '*':
			b.WriteString(".*")
		case '?':
			b.WriteString(".")
		default:
			b.WriteString(regexp.QuoteMeta(string(r)))
		}
	}
	if words {
		b.WriteString("(?:[^" + wordChar + "]|$)")
	} else {
		b.WriteString("$")
	}
	g.re = regexp.MustCompile(b.String())
	return g
}

// match matches a value; lower is the value lowercased (for word mode).
func (g *glob) match(value, lower string) bool {
	if !g.isLiteral {
		return g.re.MatchString(value)
	}
	if !g.words {
		return strings.EqualFold(value, g.literal)
	}
	return containsWord(lower, g.literal)
}

func isWordByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_'
}

// containsWord reports whether s contains word as a substring that starts
// and ends at word boundaries (both already lowercased).
func containsWord(s, word string) bool {
	if word == "" {
		return false
	}
	for from := 0; from <= len(s)-len(word); {
		i := strings.Index(s[from:], word)
		if i < 0 {
			return false
		}
		i += from
		end := i + len(word)
		if (i == 0 || !isWordByte(s[i-1])) && (end == len(s) || !isWordByte(s[end])) {
			return true
		}
		from = i + 1
	}
	return false
}

// cond is a compiled condition.
type cond struct {
	kind condKind
	path []string
	// event_match: the pattern; self means the pattern is the server
	// defaults' "[the user's Matrix ID]": the evaluated user's ID.
	glob *glob
	self bool
	// event_property_is/contains (self as above).
	value scalar
	// room_member_count.
	op string
	n  int
	// sender_notification_permission.
	key string
}

func (c *cond) match(ev *Event, room *Room, m *Member) bool {
	switch c.kind {
	case condEventMatch:
		v, ok := ev.lookup(c.path)
		if !ok {
			return false
		}
		s, ok := v.(string)
		if !ok {
			return false
		}
		if c.self {
			return s == string(m.UserID)
		}
		// Word matching is only compiled for content.body, whose
		// lowercase form the event keeps.
		return c.glob.match(s, ev.bodyLower)
	case condPropertyIs, condPropertyContains:
		v, ok := ev.lookup(c.path)
		if !ok {
			return false
		}
		want := c.value
		if c.self {
			want = scalar{kind: 's', s: string(m.UserID)}
		}
		if c.kind == condPropertyIs {
			return want.equals(v)
		}
		arr, ok := v.([]any)
		if !ok {
			return false
		}
		for _, item := range arr {
			if want.equals(item) {
				return true
			}
		}
		return false
	case condDisplayName:
		if m.DisplayName == "" || !ev.hasBody {
			return false
		}
		return containsWord(ev.bodyLower, strings.ToLower(m.DisplayName))
	case condMemberCount:
		count := room.MemberCount
		switch c.op {
		case "", "==":
			return count == c.n
		case "<":
			return count < c.n
		case ">":
			return count > c.n
		case "<=":
			return count <= c.n
		case ">=":
			return count >= c.n
		}
		return false
	case condSenderPermission:
		return room.senderMayNotify(ev.Sender, c.key)
	}
	return false
}

// compileCond compiles one condition; ok=false for conditions that can
// never match (unknown or malformed). placeholders turns the defaults'
// user ID placeholder into "the evaluated user".
func compileCond(raw map[string]json.RawMessage, placeholders bool) (*cond, bool) {
	str := func(field string) (string, bool) {
		var s string
		return s, raw[field] != nil && json.Unmarshal(raw[field], &s) == nil
	}
	kind, _ := str("kind")
	c := &cond{kind: condKind(kind)}
	switch c.kind {
	case condEventMatch:
		key, ok1 := str("key")
		pattern, ok2 := str("pattern")
		if !ok1 || !ok2 {
			return nil, false
		}
		c.path = splitPath(key)
		if placeholders && pattern == userIDPlaceholder {
			c.self = true
		} else {
			c.glob = compileGlob(pattern, key == "content.body")
		}
	case condPropertyIs, condPropertyContains:
		key, ok := str("key")
		v, present := raw["value"]
		if !ok || !present {
			return nil, false
		}
		c.path = splitPath(key)
		if c.value, ok = parseScalar(v); !ok {
			return nil, false
		}
		if placeholders && c.value.kind == 's' && c.value.s == userIDPlaceholder {
			c.self = true
		}
	case condDisplayName:
	case condMemberCount:
		is, _ := str("is")
		m := memberCountRe.FindStringSubmatch(is)
		if m == nil {
			return nil, false
		}
		n, err := strconv.Atoi(m[2])
		if err != nil {
			return nil, false
		}
		c.op, c.n = m[1], n
	case condSenderPermission:
		key, ok := str("key")
		if !ok {
			return nil, false
		}
		c.key = key
	default:
		return nil, false
	}
	return c, true
}

// compiledRule is one enabled rule, ready to match.
type compiledRule struct {
	kind   Kind
	conds  []*cond
	room   id.RoomID // room rules
	sender id.UserID // sender rules
	result *Result
}

func (r *compiledRule) matches(ev *Event, room *Room, m *Member) bool {
	switch r.kind {
	case KindRoom:
		return ev.RoomID == r.room
	case KindSender:
		return ev.Sender == r.sender
	}
	for _, c := range r.conds {
		if !c.match(ev, room, m) {
			return false
		}
	}
	return true
}

// Compiled is a user's ruleset compiled for evaluation: the enabled rules
// in the order they are checked. It is immutable and safe for concurrent
// use; users who never changed their rules share one.
type Compiled struct {
	rules []*compiledRule
}

// Compile compiles an assembled ruleset.
func Compile(rs *Ruleset) *Compiled { return compile(rs, false) }

// defaultsOnce is the server defaults compiled once for every user who
// never changed them (the user ID placeholder resolved per evaluation).
var defaultsOnce = sync.OnceValue(func() *Compiled { return compile(Assemble(userIDPlaceholder, nil), true) })

// Defaults returns the compiled server-default rules.
func Defaults() *Compiled { return defaultsOnce() }

func compile(rs *Ruleset, placeholders bool) *Compiled {
	out := &Compiled{}
	for _, k := range Kinds {
	rules:
		for _, r := range rs.Of(k) {
			if !r.Enabled {
				continue
			}
			cr := &compiledRule{kind: k, result: newResult(k, r.RuleID, r.Actions)}
			switch k {
			case KindRoom:
				cr.room = id.RoomID(r.RuleID)
			case KindSender:
				cr.sender = id.UserID(r.RuleID)
			case KindContent:
				if r.Pattern == nil {
					continue
				}
				cr.conds = []*cond{{kind: condEventMatch, path: []string{"content", "body"}, glob: compileGlob(*r.Pattern, true)}}
			default:
				var conds []map[string]json.RawMessage
				if len(r.Conditions) > 0 && json.Unmarshal(r.Conditions, &conds) != nil {
					continue
				}
				for _, raw := range conds {
					c, ok := compileCond(raw, placeholders)
					if !ok {
						// Unrecognised conditions never match.
						continue rules
					}
					cr.conds = append(cr.conds, c)
				}
			}
			out.rules = append(out.rules, cr)
		}
	}
	return out
}

// Evaluate runs the rules for member m on an event and returns the first
// matching rule's result, or nil when none matches or the member sent the
// event (users are never notified of their own events).
func (c *Compiled) Evaluate(ev *Event, room *Room, m *Member) *Result {
	if ev.Sender == m.UserID {
		return nil
	}
	for _, r := range c.rules {
		if r.matches(ev, room, m) {
			return r.result
		}
	}
	return nil
}
