package push

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"sync"

	"maunium.net/go/mautrix/id"

	"github.com/switchboard-im/switchboard/homeserver/storage"
)

// Kind is a push rule kind.
type Kind string

const (
	KindOverride  Kind = "override"
	KindContent   Kind = "content"
	KindRoom      Kind = "room"
	KindSender    Kind = "sender"
	KindUnderride Kind = "underride"
)

// Kinds are the rule kinds in the order rules are checked.
var Kinds = []Kind{KindOverride, KindContent, KindRoom, KindSender, KindUnderride}

// ValidKind reports whether k is a rule kind.
func ValidKind(k Kind) bool { return slices.Contains(Kinds, k) }

// MasterRuleID is the server-default rule that, enabled, silences
// everything; it is checked before every other rule, user rules included.
const MasterRuleID = ".m.rule.master"

// Rule is one push rule in the client-server API's format.
type Rule struct {
	RuleID  string `json:"rule_id"`
	Default bool   `json:"default"`
	Enabled bool   `json:"enabled"`
	// Conditions (a JSON array, kept as given so that conditions this
	// server does not know survive) is set on override and underride rules.
	Conditions json.RawMessage `json:"conditions,omitempty"`
	// Pattern is set on content rules.
	Pattern *string         `json:"pattern,omitempty"`
	Actions json.RawMessage `json:"actions"`
}

// Ruleset is the "global" ruleset as /pushrules and m.push_rules carry it.
type Ruleset struct {
	Override  []*Rule `json:"override"`
	Content   []*Rule `json:"content"`
	Room      []*Rule `json:"room"`
	Sender    []*Rule `json:"sender"`
	Underride []*Rule `json:"underride"`
}

// Of returns the rules of one kind.
func (rs *Ruleset) Of(k Kind) []*Rule {
	switch k {
	case KindOverride:
		return rs.Override
	case KindContent:
		return rs.Content
	case KindRoom:
		return rs.Room
	case KindSender:
		return rs.Sender
	case KindUnderride:
		return rs.Underride
	}
	return nil
}

// Find returns the rule of a kind with an ID, or nil.
func (rs *Ruleset) Find(k Kind, ruleID string) *Rule {
	for _, r := range rs.Of(k) {
		if r.RuleID == ruleID {
			return r
		}
	}
	return nil
}

// AccountDataContent is the content of the m.push_rules account data event.
func (rs *Ruleset) AccountDataContent() json.RawMessage {
	out, _ := marshalNoEscape(map[string]*Ruleset{"global": rs})
	return out
}

// defaultTemplate is defaults.json parsed once, placeholders kept.
var defaultTemplate = sync.OnceValue(func() *Ruleset {
	var rs Ruleset
	if err := json.Unmarshal([]byte(defaultsJSON), &rs); err != nil {
		panic(fmt.Errorf("push: defaults.json: %w", err))
	}
	return &rs
})

// defaultRules returns the server-default rules of a kind with the user
// substituted, fresh copies the caller may change.
func defaultRules(k Kind, user id.UserID) []*Rule {
	quoted, _ := json.Marshal(string(user))
	escaped := []byte(quoted[1 : len(quoted)-1])
	var out []*Rule
	for _, r := range defaultTemplate().Of(k) {
		c := *r
		c.Conditions = bytes.ReplaceAll(r.Conditions, []byte(userIDPlaceholder), escaped)
		c.Actions = slices.Clone(r.Actions)
		out = append(out, &c)
	}
	return out
}

// IsDefaultRuleID reports whether a rule ID is a server-default one's
// (they all start with a dot).
func IsDefaultRuleID(ruleID string) bool { return strings.HasPrefix(ruleID, ".") }

// Assemble builds a user's ruleset from the server defaults and their
// stored rows: the user's own rules of each kind come first, in their
// order, then the server-default rules — except .m.rule.master, which comes
// before everything. Rows that change a server-default rule override its
// enabled flag and actions; rows for default rules that no longer exist
// are ignored.
func Assemble(user id.UserID, rows []storage.PushRule) *Ruleset {
	type key struct {
		kind Kind
		id   string
	}
	changed := map[key]storage.PushRule{}
	own := map[Kind][]storage.PushRule{}
	for _, r := range rows {
		if IsDefaultRuleID(r.RuleID) {
			changed[key{Kind(r.Kind), r.RuleID}] = r
		} else {
			own[Kind(r.Kind)] = append(own[Kind(r.Kind)], r)
		}
	}
	rs := &Ruleset{}
	for _, k := range Kinds {
		var master *Rule
		var defaults []*Rule
		for _, d := range defaultRules(k, user) {
			if c, ok := changed[key{k, d.RuleID}]; ok {
				if c.Enabled != nil {
					d.Enabled = *c.Enabled
				}
				if c.Actions != nil {
					d.Actions = c.Actions
				}
			}
			if d.RuleID == MasterRuleID {
				master = d
			} else {
				defaults = append(defaults, d)
			}
		}
		list := []*Rule{}
		if master != nil {
			list = append(list, master)
		}
		mine := own[k]
		slices.SortStableFunc(mine, func(a, b storage.PushRule) int { return a.Position - b.Position })
		for _, r := range mine {
			rule := &Rule{RuleID: r.RuleID, Enabled: r.Enabled == nil || *r.Enabled, Actions: r.Actions}
			if rule.Actions == nil {
				rule.Actions = json.RawMessage("[]")
			}
			switch k {
			case KindOverride, KindUnderride:
				rule.Conditions = r.Conditions
				if rule.Conditions == nil {
					rule.Conditions = json.RawMessage("[]")
				}
			case KindContent:
				rule.Pattern = r.Pattern
				if rule.Pattern == nil {
					empty := ""
					rule.Pattern = &empty
				}
			}
			list = append(list, rule)
		}
		list = append(list, defaults...)
		switch k {
		case KindOverride:
			rs.Override = list
		case KindContent:
			rs.Content = list
		case KindRoom:
			rs.Room = list
		case KindSender:
			rs.Sender = list
		case KindUnderride:
			rs.Underride = list
		}
	}
	return rs
}

// Errors of rule edits; the client API maps them to Matrix error codes.
var (
	// ErrRuleNotFound: no such rule.
	ErrRuleNotFound = errors.New("push rule not found")
	// ErrDefaultRule: server-default rules cannot be created or deleted.
	ErrDefaultRule = errors.New("server-default rules cannot be created or deleted")
	// ErrRelativeRuleNotFound: the before/after rule is not a user rule of
	// the same kind.
	ErrRelativeRuleNotFound = errors.New("before/after rule not found")
	// ErrRelativeToDefault: before/after names a server-default rule.
	ErrRelativeToDefault = errors.New("rules cannot be placed relative to server-default rules")
	// ErrTooManyRules: the user has MaxUserRules rules already.
	ErrTooManyRules = errors.New("too many push rules")
)

// MaxUserRules caps the rules a user may define (the whole ruleset goes
// into every initial sync).
const MaxUserRules = 500

// NewRule is a user rule as PUT /pushrules/global/{kind}/{ruleId} gives it.
type NewRule struct {
	Kind       Kind
	RuleID     string
	Conditions json.RawMessage // override, underride
	Pattern    *string         // content
	Actions    json.RawMessage
	// Before and After place the rule relative to another user rule of
	// the same kind ("" for neither).
	Before, After string
}

// PutRule applies a PUT to the stored rows: it creates the rule (enabled,
// as the most important of its kind unless Before/After say otherwise) or
// updates it in place (keeping its enabled flag, moving it only when
// Before/After are given).
func PutRule(rows []storage.PushRule, nr NewRule) ([]storage.PushRule, error) {
	if IsDefaultRuleID(nr.RuleID) {
		return nil, ErrDefaultRule
	}
	for _, rel := range []string{nr.Before, nr.After} {
		if IsDefaultRuleID(rel) {
			return nil, fmt.Errorf("%w: %s", ErrRelativeToDefault, rel)
		}
	}
	var others, mine []storage.PushRule
	enabled := true
	existed := false
	for _, r := range rows {
		switch {
		case Kind(r.Kind) == nr.Kind && r.RuleID == nr.RuleID:
			existed = true
			if r.Enabled != nil {
				enabled = *r.Enabled
			}
			mine = append(mine, r) // placeholder, replaced below
		case Kind(r.Kind) == nr.Kind && !IsDefaultRuleID(r.RuleID):
			mine = append(mine, r)
		default:
			others = append(others, r)
		}
	}
	slices.SortStableFunc(mine, func(a, b storage.PushRule) int { return a.Position - b.Position })
	if !existed && countUserRules(rows) >= MaxUserRules {
		return nil, ErrTooManyRules
	}
	row := storage.PushRule{Kind: string(nr.Kind), RuleID: nr.RuleID, Actions: nr.Actions, Enabled: &enabled}
	switch nr.Kind {
	case KindOverride, KindUnderride:
		row.Conditions = nr.Conditions
		if row.Conditions == nil {
			row.Conditions = json.RawMessage("[]")
		}
	case KindContent:
		row.Pattern = nr.Pattern
	}
	at := slices.IndexFunc(mine, func(r storage.PushRule) bool { return r.RuleID == nr.RuleID })
	if nr.Before == "" && nr.After == "" {
		if at >= 0 {
			mine[at] = row // in place
		} else {
			mine = slices.Insert(mine, 0, row)
		}
	} else {
		if at >= 0 {
			mine = slices.Delete(mine, at, at+1)
		}
		// With both, before wins (spec).
		rel, offset := nr.Before, 0
		if rel == "" {
			rel, offset = nr.After, 1
		}
		i := slices.IndexFunc(mine, func(r storage.PushRule) bool { return r.RuleID == rel })
		if i < 0 {
			return nil, fmt.Errorf("%w: %s", ErrRelativeRuleNotFound, rel)
		}
		mine = slices.Insert(mine, i+offset, row)
	}
	for i := range mine {
		mine[i].Position = i
	}
	return append(others, mine...), nil
}

func countUserRules(rows []storage.PushRule) int {
	n := 0
	for _, r := range rows {
		if !IsDefaultRuleID(r.RuleID) {
			n++
		}
	}
	return n
}

// DeleteRule removes a user rule from the stored rows.
func DeleteRule(user id.UserID, rows []storage.PushRule, k Kind, ruleID string) ([]storage.PushRule, error) {
	if IsDefaultRuleID(ruleID) {
		if Assemble(user, nil).Find(k, ruleID) != nil {
			return nil, ErrDefaultRule
		}
		return nil, ErrRuleNotFound
	}
	i := slices.IndexFunc(rows, func(r storage.PushRule) bool { return Kind(r.Kind) == k && r.RuleID == ruleID })
	if i < 0 {
		return nil, ErrRuleNotFound
	}
	return slices.Delete(slices.Clone(rows), i, i+1), nil
}

// SetEnabled enables or disables a rule (user or server-default).
func SetEnabled(user id.UserID, rows []storage.PushRule, k Kind, ruleID string, enabled bool) ([]storage.PushRule, error) {
	return changeRule(user, rows, k, ruleID, func(r *storage.PushRule) { r.Enabled = &enabled })
}

// SetActions changes a rule's actions (user or server-default).
func SetActions(user id.UserID, rows []storage.PushRule, k Kind, ruleID string, actions json.RawMessage) ([]storage.PushRule, error) {
	return changeRule(user, rows, k, ruleID, func(r *storage.PushRule) { r.Actions = actions })
}

func changeRule(user id.UserID, rows []storage.PushRule, k Kind, ruleID string, change func(r *storage.PushRule)) ([]storage.PushRule, error) {
	rows = slices.Clone(rows)
	i := slices.IndexFunc(rows, func(r storage.PushRule) bool { return Kind(r.Kind) == k && r.RuleID == ruleID })
	if i >= 0 {
		change(&rows[i])
		return rows, nil
	}
	if !IsDefaultRuleID(ruleID) || Assemble(user, nil).Find(k, ruleID) == nil {
		return nil, ErrRuleNotFound
	}
	row := storage.PushRule{Kind: string(k), RuleID: ruleID}
	change(&row)
	return append(rows, row), nil
}

// InvalidError is a rule a client sent that is not valid; Missing says a
// required field was absent rather than malformed.
type InvalidError struct {
	Msg     string
	Missing bool
}

func (e *InvalidError) Error() string { return e.Msg }

func invalid(format string, args ...any) error {
	return &InvalidError{Msg: fmt.Sprintf(format, args...)}
}

// legacyActions are actions older spec versions had; servers MUST ignore
// them, "for instance, by stripping them from actions arrays".
var legacyActions = map[string]bool{"dont_notify": true, "coalesce": true}

// ParseActions validates an actions array and returns it compact, legacy
// actions stripped. Actions are "notify" or {"set_tweak": name, ...}.
func ParseActions(raw json.RawMessage) (json.RawMessage, error) {
	if len(bytes.TrimSpace(raw)) == 0 {
		return nil, &InvalidError{Msg: "actions is required", Missing: true}
	}
	var items []json.RawMessage
	if err := json.Unmarshal(raw, &items); err != nil || items == nil {
		return nil, invalid("actions must be an array")
	}
	out := []any{}
	for _, item := range items {
		var s string
		if json.Unmarshal(item, &s) == nil {
			switch {
			case s == "notify":
				out = append(out, s)
			case legacyActions[s]:
			default:
				return nil, invalid("unknown action %q", s)
			}
			continue
		}
		var obj map[string]any
		if err := json.Unmarshal(item, &obj); err != nil || obj == nil {
			return nil, invalid("actions must be strings or objects")
		}
		if name, ok := obj["set_tweak"].(string); !ok || name == "" {
			return nil, invalid("action objects must have a set_tweak name")
		}
		out = append(out, obj)
	}
	return marshalNoEscape(out)
}

// memberCountRe is room_member_count's "is" syntax.
var memberCountRe = regexp.MustCompile(`^(==|<|>|>=|<=)?([0-9]+)$`)

// ParseConditions validates an override/underride rule's conditions. Kinds
// this server knows must have their parameters; unknown kinds are kept
// (they never match, as the spec requires).
func ParseConditions(raw json.RawMessage) (json.RawMessage, error) {
	if len(bytes.TrimSpace(raw)) == 0 || bytes.Equal(bytes.TrimSpace(raw), []byte("null")) {
		return json.RawMessage("[]"), nil
	}
	var items []map[string]json.RawMessage
	if err := json.Unmarshal(raw, &items); err != nil || items == nil {
		return nil, invalid("conditions must be an array of objects")
	}
	str := func(c map[string]json.RawMessage, field string) (string, bool) {
		var s string
		return s, json.Unmarshal(c[field], &s) == nil && c[field] != nil
	}
	for i, c := range items {
		if c == nil {
			return nil, invalid("conditions[%d] must be an object", i)
		}
		kind, ok := str(c, "kind")
		if !ok {
			return nil, invalid("conditions[%d] needs a kind", i)
		}
		switch condKind(kind) {
		case condEventMatch:
			if _, ok := str(c, "key"); !ok {
				return nil, invalid("conditions[%d]: event_match needs a key", i)
			}
			if _, ok := str(c, "pattern"); !ok {
				return nil, invalid("conditions[%d]: event_match needs a pattern", i)
			}
		case condPropertyIs, condPropertyContains:
			if _, ok := str(c, "key"); !ok {
				return nil, invalid("conditions[%d]: %s needs a key", i, kind)
			}
			v, present := c["value"]
			if !present {
				return nil, invalid("conditions[%d]: %s needs a value", i, kind)
			}
			if _, ok := parseScalar(v); !ok {
				return nil, invalid("conditions[%d]: value must be a string, an integer, a boolean or null", i)
			}
		case condMemberCount:
			if is, ok := str(c, "is"); !ok || !memberCountRe.MatchString(is) {
				return nil, invalid("conditions[%d]: room_member_count needs is, a number optionally prefixed by ==, <, >, >= or <=", i)
			}
		case condSenderPermission:
			if _, ok := str(c, "key"); !ok {
				return nil, invalid("conditions[%d]: sender_notification_permission needs a key", i)
			}
		}
	}
	return marshalNoEscape(items)
}

// CheckRuleID checks a rule ID for PUT: not a server-default ID, no
// slashes or backslashes, and for room and sender rules a room or user ID.
func CheckRuleID(k Kind, ruleID string) error {
	switch {
	case ruleID == "":
		return errors.New("rule IDs must not be empty")
	case IsDefaultRuleID(ruleID):
		return ErrDefaultRule
	case strings.ContainsAny(ruleID, `/\`):
		return errors.New("rule IDs must not contain slashes or backslashes")
	case len(ruleID) > 255:
		return errors.New("rule IDs are limited to 255 bytes")
	case k == KindRoom && !strings.HasPrefix(ruleID, "!"):
		return errors.New("the ID of a room rule is the room ID")
	case k == KindSender && !strings.HasPrefix(ruleID, "@"):
		return errors.New("the ID of a sender rule is the user ID")
	}
	return nil
}

// marshalNoEscape encodes compactly without HTML escaping.
func marshalNoEscape(v any) (json.RawMessage, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimRight(buf.Bytes(), "\n"), nil
}
