package push

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/switchboard-im/switchboard/homeserver/storage"
)

const (
	alice = id.UserID("@alice:example.org")
	bob   = id.UserID("@bob:example.org")
)

// clientEvent builds a client-format event for bob's room from alice.
func clientEvent(t testing.TB, evtType string, content any, stateKey *string) *Event {
	t.Helper()
	raw := map[string]any{"type": evtType, "content": content, "sender": alice, "room_id": "!room:example.org",
		"event_id": "$evt", "origin_server_ts": 1432735824653}
	if stateKey != nil {
		raw["state_key"] = *stateKey
	}
	data, err := json.Marshal(raw)
	if err != nil {
		t.Fatal(err)
	}
	return NewClientEvent(data)
}

// ruleWith compiles one override rule with the given conditions.
func ruleWith(t testing.TB, conditions string) *Compiled {
	t.Helper()
	return Compile(&Ruleset{Override: []*Rule{{RuleID: "test", Enabled: true, Conditions: json.RawMessage(conditions), Actions: json.RawMessage(`["notify"]`)}}})
}

func matches(c *Compiled, ev *Event, room *Room, m *Member) bool {
	res := c.Evaluate(ev, room, m)
	return res != nil && res.Notify
}

func strPtr(s string) *string { return &s }

// TestConditionSpecExamples runs the examples the spec gives for each
// condition (client-server API, "Conditions").
func TestConditionSpecExamples(t *testing.T) {
	room := &Room{MemberCount: 3, NotificationLevels: map[string]int{"room": 50}}
	me := &Member{UserID: bob, DisplayName: "Bob"}
	cases := []struct {
		name       string
		conditions string
		evtType    string
		content    any
		stateKey   *string
		want       bool
	}{
		// event_match: the content.topic example.
		{"topic matches", `[{"kind":"event_match","key":"content.topic","pattern":"lunc?*"}]`, "m.room.topic", map[string]any{"topic": "Lunch plans"}, strPtr(""), true},
		{"topic case-insensitive", `[{"kind":"event_match","key":"content.topic","pattern":"lunc?*"}]`, "m.room.topic", map[string]any{"topic": "LUNCH"}, strPtr(""), true},
		{"topic leading space", `[{"kind":"event_match","key":"content.topic","pattern":"lunc?*"}]`, "m.room.topic", map[string]any{"topic": " lunch"}, strPtr(""), false},
		{"topic ? needs a character", `[{"kind":"event_match","key":"content.topic","pattern":"lunc?*"}]`, "m.room.topic", map[string]any{"topic": "lunc"}, strPtr(""), false},
		{"topic null", `[{"kind":"event_match","key":"content.topic","pattern":"lunc?*"}]`, "m.room.topic", map[string]any{"topic": nil}, strPtr(""), false},
		{"absent key, pattern *", `[{"kind":"event_match","key":"content.topic","pattern":"*"}]`, "m.room.topic", map[string]any{}, strPtr(""), false},
		{"non-string value, pattern *", `[{"kind":"event_match","key":"content.n","pattern":"*"}]`, "m.room.message", map[string]any{"n": 1}, nil, false},
		{"whole value, not a substring", `[{"kind":"event_match","key":"type","pattern":"m.room"}]`, "m.room.message", map[string]any{}, nil, false},
		// event_match on content.body: word-bounded substrings.
		{"body example", `[{"kind":"event_match","key":"content.body","pattern":"ex*ple"}]`, "m.room.message", map[string]any{"body": "An example event."}, nil, true},
		{"body exple", `[{"kind":"event_match","key":"content.body","pattern":"ex*ple"}]`, "m.room.message", map[string]any{"body": "exple"}, nil, true},
		{"body spans words", `[{"kind":"event_match","key":"content.body","pattern":"ex*ple"}]`, "m.room.message", map[string]any{"body": "An exciting triple-whammy"}, nil, true},
		{"body literal word", `[{"kind":"event_match","key":"content.body","pattern":"cake"}]`, "m.room.message", map[string]any{"body": "I like CAKE!"}, nil, true},
		{"body literal inside a word", `[{"kind":"event_match","key":"content.body","pattern":"cake"}]`, "m.room.message", map[string]any{"body": "cakes"}, nil, false},
		{"body underscore is a word char", `[{"kind":"event_match","key":"content.body","pattern":"cake"}]`, "m.room.message", map[string]any{"body": "my_cake"}, nil, false},
		{"body wildcard not at boundary", `[{"kind":"event_match","key":"content.body","pattern":"ex*ple"}]`, "m.room.message", map[string]any{"body": "examples"}, nil, false},
		// event_property_is: the m.federate example.
		{"federate true", `[{"kind":"event_property_is","key":"content.m\\.federate","value":true}]`, "m.room.create", map[string]any{"m.federate": true}, strPtr(""), true},
		{"federate string", `[{"kind":"event_property_is","key":"content.m\\.federate","value":true}]`, "m.room.create", map[string]any{"m.federate": "true"}, strPtr(""), false},
		{"federate 1", `[{"kind":"event_property_is","key":"content.m\\.federate","value":true}]`, "m.room.create", map[string]any{"m.federate": 1}, strPtr(""), false},
		{"integer", `[{"kind":"event_property_is","key":"content.n","value":42}]`, "m.room.message", map[string]any{"n": 42}, nil, true},
		{"integer vs string", `[{"kind":"event_property_is","key":"content.n","value":42}]`, "m.room.message", map[string]any{"n": "42"}, nil, false},
		{"float is not an integer", `[{"kind":"event_property_is","key":"content.n","value":1}]`, "m.room.message", json.RawMessage(`{"n":1.5}`), nil, false},
		{"null", `[{"kind":"event_property_is","key":"content.n","value":null}]`, "m.room.message", map[string]any{"n": nil}, nil, true},
		{"null vs absent", `[{"kind":"event_property_is","key":"content.n","value":null}]`, "m.room.message", map[string]any{}, nil, false},
		{"compound value", `[{"kind":"event_property_is","key":"content.n","value":null}]`, "m.room.message", map[string]any{"n": map[string]any{}}, nil, false},
		// event_property_contains: the alt_aliases example.
		{"alt_aliases contains", `[{"kind":"event_property_contains","key":"content.alt_aliases","value":"#myroom:example.com"}]`, "m.room.canonical_alias",
			map[string]any{"alias": "#somewhere:localhost", "alt_aliases": []string{"#somewhere:example.org", "#myroom:example.com"}}, strPtr(""), true},
		{"alt_aliases partial", `[{"kind":"event_property_contains","key":"content.alt_aliases","value":":example.com"}]`, "m.room.canonical_alias",
			map[string]any{"alt_aliases": []string{"#somewhere:example.org", "#myroom:example.com"}}, strPtr(""), false},
		{"contains on a non-array", `[{"kind":"event_property_contains","key":"content.alias","value":"#a:b"}]`, "m.room.canonical_alias", map[string]any{"alias": "#a:b"}, strPtr(""), false},
		// Dot-separated paths: escaped dots and backslashes.
		{"escaped backslash", `[{"kind":"event_property_is","key":"content.m\\\\foo","value":"x"}]`, "m.room.message", map[string]any{`m\foo`: "x"}, nil, true},
		{"nested path", `[{"kind":"event_property_is","key":"content.m\\.relates_to.rel_type","value":"m.thread"}]`, "m.room.message",
			map[string]any{"m.relates_to": map[string]any{"rel_type": "m.thread"}}, nil, true},
		{"unescaped dot is a level", `[{"kind":"event_property_is","key":"content.m.relates_to.rel_type","value":"m.thread"}]`, "m.room.message",
			map[string]any{"m.relates_to": map[string]any{"rel_type": "m.thread"}}, nil, false},
		// contains_display_name.
		{"display name", `[{"kind":"contains_display_name"}]`, "m.room.message", map[string]any{"body": "hey bob, look"}, nil, true},
		{"display name inside a word", `[{"kind":"contains_display_name"}]`, "m.room.message", map[string]any{"body": "bobsleigh"}, nil, false},
		// room_member_count (3 members).
		{"member count ==", `[{"kind":"room_member_count","is":"3"}]`, "m.room.message", map[string]any{}, nil, true},
		{"member count <", `[{"kind":"room_member_count","is":"<3"}]`, "m.room.message", map[string]any{}, nil, false},
		{"member count <=", `[{"kind":"room_member_count","is":"<=3"}]`, "m.room.message", map[string]any{}, nil, true},
		{"member count >", `[{"kind":"room_member_count","is":">2"}]`, "m.room.message", map[string]any{}, nil, true},
		{"member count >=", `[{"kind":"room_member_count","is":">=4"}]`, "m.room.message", map[string]any{}, nil, false},
		{"member count explicit ==", `[{"kind":"room_member_count","is":"==2"}]`, "m.room.message", map[string]any{}, nil, false},
		// Unknown conditions never match; no conditions always does.
		{"unknown condition", `[{"kind":"org.example.future"}]`, "m.room.message", map[string]any{}, nil, false},
		{"no conditions", `[]`, "m.room.message", map[string]any{}, nil, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ev := clientEvent(t, tc.evtType, tc.content, tc.stateKey)
			if got := matches(ruleWith(t, tc.conditions), ev, room, me); got != tc.want {
				t.Fatalf("match = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestSenderNotificationPermission(t *testing.T) {
	pl := &event.PowerLevelsEventContent{Users: map[id.UserID]int{alice: 50}, UsersDefault: 0}
	ev := clientEvent(t, "m.room.message", map[string]any{"body": "@room"}, nil)
	me := &Member{UserID: bob}
	rule := ruleWith(t, `[{"kind":"sender_notification_permission","key":"room"}]`)
	custom := ruleWith(t, `[{"kind":"sender_notification_permission","key":"org.example"}]`)
	for _, tc := range []struct {
		name   string
		rule   *Compiled
		levels map[string]int
		pl     *event.PowerLevelsEventContent
		want   bool
	}{
		{"default room level 50", rule, NotificationLevels(nil), pl, true},
		{"room level above the sender", rule, NotificationLevels([]byte(`{"notifications":{"room":51}}`)), pl, false},
		{"no power levels", rule, NotificationLevels(nil), nil, false},
		{"custom key present", custom, NotificationLevels([]byte(`{"notifications":{"org.example":10}}`)), pl, true},
		{"custom key absent", custom, NotificationLevels(nil), pl, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			room := &Room{MemberCount: 3, PowerLevels: tc.pl, NotificationLevels: tc.levels}
			if got := matches(tc.rule, ev, room, me); got != tc.want {
				t.Fatalf("match = %v, want %v", got, tc.want)
			}
		})
	}
}

// TestDefaultRules runs the server-default rules (shared compiled form,
// the user ID placeholder resolved per member) and a user's assembled
// copy of them on the events they are meant for.
func TestDefaultRules(t *testing.T) {
	pl := &event.PowerLevelsEventContent{Users: map[id.UserID]int{alice: 100}}
	group := &Room{MemberCount: 5, PowerLevels: pl, NotificationLevels: NotificationLevels(nil)}
	dm := &Room{MemberCount: 2, PowerLevels: pl, NotificationLevels: NotificationLevels(nil)}
	mutedRoom := &Room{MemberCount: 5, PowerLevels: &event.PowerLevelsEventContent{}, NotificationLevels: NotificationLevels(nil)}
	text := func(extra map[string]any) map[string]any {
		c := map[string]any{"msgtype": "m.text", "body": "hello"}
		for k, v := range extra {
			c[k] = v
		}
		return c
	}
	type want struct {
		rule              string
		notify, highlight bool
		sound             any
	}
	cases := []struct {
		name     string
		evtType  string
		content  any
		stateKey *string
		room     *Room
		want     want
	}{
		{"group message", "m.room.message", text(nil), nil, group, want{".m.rule.message", true, false, nil}},
		{"notice", "m.room.message", map[string]any{"msgtype": "m.notice", "body": "bot"}, nil, group, want{".m.rule.suppress_notices", false, false, nil}},
		{"user mention", "m.room.message", text(map[string]any{"m.mentions": map[string]any{"user_ids": []id.UserID{bob}}}), nil, group,
			want{".m.rule.is_user_mention", true, true, "default"}},
		{"someone else's mention", "m.room.message", text(map[string]any{"m.mentions": map[string]any{"user_ids": []id.UserID{"@carol:example.org"}}}), nil, group,
			want{".m.rule.message", true, false, nil}},
		{"room mention", "m.room.message", text(map[string]any{"m.mentions": map[string]any{"room": true}}), nil, group, want{".m.rule.is_room_mention", true, true, nil}},
		{"room mention without permission", "m.room.message", text(map[string]any{"m.mentions": map[string]any{"room": true}}), nil, mutedRoom,
			want{".m.rule.message", true, false, nil}},
		{"body mention is no mention (v1.17)", "m.room.message", text(map[string]any{"body": "bob: @room"}), nil, group, want{".m.rule.message", true, false, nil}},
		{"direct message", "m.room.message", text(nil), nil, dm, want{".m.rule.room_one_to_one", true, false, "default"}},
		{"encrypted direct", "m.room.encrypted", map[string]any{"algorithm": "m.megolm.v1.aes-sha2"}, nil, dm, want{".m.rule.encrypted_room_one_to_one", true, false, "default"}},
		{"encrypted group", "m.room.encrypted", map[string]any{"algorithm": "m.megolm.v1.aes-sha2"}, nil, group, want{".m.rule.encrypted", true, false, nil}},
		{"call", "m.call.invite", map[string]any{"call_id": "1"}, nil, group, want{".m.rule.call", true, false, "ring"}},
		{"invite for me", "m.room.member", map[string]any{"membership": "invite"}, strPtr(string(bob)), group, want{".m.rule.invite_for_me", true, false, "default"}},
		{"invite for another", "m.room.member", map[string]any{"membership": "invite"}, strPtr("@carol:example.org"), group, want{".m.rule.member_event", false, false, nil}},
		{"tombstone", "m.room.tombstone", map[string]any{"body": "moved"}, strPtr(""), group, want{".m.rule.tombstone", true, true, nil}},
		{"reaction", "m.reaction", map[string]any{"m.relates_to": map[string]any{"rel_type": "m.annotation", "key": "👍"}}, nil, dm, want{".m.rule.reaction", false, false, nil}},
		{"edit", "m.room.message", text(map[string]any{"m.relates_to": map[string]any{"rel_type": "m.replace", "event_id": "$x"}}), nil, dm,
			want{".m.rule.suppress_edits", false, false, nil}},
		{"server ACL", "m.room.server_acl", map[string]any{}, strPtr(""), group, want{".m.rule.room.server_acl", false, false, nil}},
		{"other state", "m.room.topic", map[string]any{"topic": "x"}, strPtr(""), group, want{"", false, false, nil}},
	}
	assembled := Compile(Assemble(bob, nil))
	for _, tc := range cases {
		for name, rules := range map[string]*Compiled{"shared": Defaults(), "assembled": assembled} {
			t.Run(tc.name+"/"+name, func(t *testing.T) {
				res := rules.Evaluate(clientEvent(t, tc.evtType, tc.content, tc.stateKey), tc.room, &Member{UserID: bob, DisplayName: "Bob"})
				if tc.want.rule == "" {
					if res != nil {
						t.Fatalf("rule %s matched, want none", res.RuleID)
					}
					return
				}
				if res == nil {
					t.Fatalf("no rule matched, want %s", tc.want.rule)
				}
				if res.RuleID != tc.want.rule || res.Notify != tc.want.notify || res.Highlight != tc.want.highlight || res.Tweaks["sound"] != tc.want.sound {
					t.Fatalf("got %s notify=%v highlight=%v sound=%v; want %+v", res.RuleID, res.Notify, res.Highlight, res.Tweaks["sound"], tc.want)
				}
			})
		}
	}
	// The sender is never notified of their own event.
	if res := Defaults().Evaluate(clientEvent(t, "m.room.message", text(nil), nil), dm, &Member{UserID: alice}); res != nil {
		t.Fatalf("own event matched %s", res.RuleID)
	}
}

// TestRulePriority checks the order rules are tried in: master, user
// overrides, default overrides, content, room, sender, user underrides,
// default underrides; disabled rules skipped; legacy actions stripped.
func TestRulePriority(t *testing.T) {
	const roomID = "!room:example.org"
	enabled, disabled := true, false
	row := func(kind, ruleID string, pos int, actions string) storage.PushRule {
		return storage.PushRule{Kind: kind, RuleID: ruleID, Position: pos, Actions: json.RawMessage(actions), Enabled: &enabled}
	}
	pattern := "cake"
	contentRule := row("content", "cake", 0, `["notify",{"set_tweak":"highlight"}]`)
	contentRule.Pattern = &pattern
	room := &Room{MemberCount: 5, NotificationLevels: NotificationLevels(nil)}
	me := &Member{UserID: bob}
	msg := func(body string) *Event {
		return clientEvent(t, "m.room.message", map[string]any{"msgtype": "m.text", "body": body}, nil)
	}
	for _, tc := range []struct {
		name string
		rows []storage.PushRule
		ev   *Event
		rule string
	}{
		{"keyword (content) is checked before the muted room", []storage.PushRule{row("room", roomID, 0, `["dont_notify"]`), contentRule}, msg("cake"), "cake"},
		{"muted room (legacy dont_notify)", []storage.PushRule{row("room", roomID, 0, `["dont_notify"]`), contentRule}, msg("pie"), roomID},
		{"keyword", []storage.PushRule{contentRule}, msg("cake time"), "cake"},
		{"muted room", []storage.PushRule{row("room", roomID, 0, `[]`)}, msg("hello"), roomID},
		{"muted sender", []storage.PushRule{row("sender", string(alice), 0, `[]`)}, msg("hello"), string(alice)},
		{"room beats sender", []storage.PushRule{row("sender", string(alice), 0, `[]`), row("room", roomID, 0, `["notify"]`)}, msg("hello"), roomID},
		{"user override beats default override", []storage.PushRule{{Kind: "override", RuleID: "all", Conditions: json.RawMessage(`[]`), Actions: json.RawMessage(`["notify"]`), Enabled: &enabled}},
			clientEvent(t, "m.room.message", map[string]any{"msgtype": "m.notice", "body": "x"}, nil), "all"},
		{"master beats user override", []storage.PushRule{{Kind: "override", RuleID: "all", Conditions: json.RawMessage(`[]`), Actions: json.RawMessage(`["notify"]`), Enabled: &enabled},
			{Kind: "override", RuleID: MasterRuleID, Enabled: &enabled}}, msg("x"), MasterRuleID},
		{"disabled default skipped", []storage.PushRule{{Kind: "underride", RuleID: ".m.rule.message", Enabled: &disabled}}, msg("x"), ""},
		{"user underride before default underride", []storage.PushRule{{Kind: "underride", RuleID: "mine", Conditions: json.RawMessage(`[{"kind":"event_match","key":"type","pattern":"m.room.message"}]`), Actions: json.RawMessage(`[]`), Enabled: &enabled}},
			msg("x"), "mine"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := Compile(Assemble(bob, tc.rows)).Evaluate(tc.ev, room, me)
			got := ""
			if res != nil {
				got = res.RuleID
			}
			if got != tc.rule {
				t.Fatalf("matched %q, want %q", got, tc.rule)
			}
			if strings.HasPrefix(tc.name, "muted") && (res.Notify || string(res.Actions) != "[]") {
				t.Fatalf("muting rule: notify=%v actions=%s", res.Notify, res.Actions)
			}
		})
	}
}

func TestSplitPath(t *testing.T) {
	for key, want := range map[string]string{
		`content.body`:                   `["content","body"]`,
		`content.m\.relates_to.rel_type`: `["content","m.relates_to","rel_type"]`,
		`content.m\\foo`:                 `["content","m\\foo"]`,
		`content.a\xb`:                   `["content","a\\xb"]`,
		`content.`:                       `["content",""]`,
	} {
		got, _ := json.Marshal(splitPath(key))
		if string(got) != want {
			t.Errorf("splitPath(%q) = %s, want %s", key, got, want)
		}
	}
}

// BenchmarkPushEvaluation1000Members is the cost of evaluating one event
// for every member of a 1,000-member room: most members on the server
// defaults, one in ten with rules of their own (a keyword, a muted room or
// sender), as the push worker does for each event.
func BenchmarkPushEvaluation1000Members(b *testing.B) {
	enabled := true
	members := make([]*Member, 1000)
	rules := make([]*Compiled, 1000)
	for i := range members {
		u := id.UserID(fmt.Sprintf("@user%d:example.org", i))
		members[i] = &Member{UserID: u, DisplayName: fmt.Sprintf("User %d", i)}
		rules[i] = Defaults()
		if i%10 == 0 {
			pattern := fmt.Sprintf("keyword%d", i)
			rows := []storage.PushRule{
				{Kind: "content", RuleID: "kw", Pattern: &pattern, Actions: json.RawMessage(`["notify",{"set_tweak":"highlight"}]`), Enabled: &enabled},
				{Kind: "room", RuleID: fmt.Sprintf("!muted%d:example.org", i), Actions: json.RawMessage(`[]`), Enabled: &enabled},
				{Kind: "sender", RuleID: "@spammer:example.org", Actions: json.RawMessage(`[]`), Enabled: &enabled},
			}
			rules[i] = Compile(Assemble(u, rows))
		}
	}
	room := &Room{MemberCount: 1000, PowerLevels: &event.PowerLevelsEventContent{Users: map[id.UserID]int{alice: 100}}, NotificationLevels: NotificationLevels(nil)}
	for _, bc := range []struct {
		name    string
		content map[string]any
	}{
		{"plain", map[string]any{"msgtype": "m.text", "body": "Has anyone seen the deploy logs from this morning?"}},
		{"mentions", map[string]any{"msgtype": "m.text", "body": "user1 user2: look",
			"m.mentions": map[string]any{"user_ids": []string{"@user1:example.org", "@user2:example.org"}}}},
		{"room_mention", map[string]any{"msgtype": "m.text", "body": "@room deploy done", "m.mentions": map[string]any{"room": true}}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			data, _ := json.Marshal(map[string]any{"type": "m.room.message", "sender": alice, "room_id": "!room:example.org",
				"event_id": "$e", "origin_server_ts": 1, "content": bc.content})
			b.ReportAllocs()
			notified := 0
			for b.Loop() {
				ev := NewClientEvent(data)
				notified = 0
				for i, m := range members {
					if res := rules[i].Evaluate(ev, room, m); res != nil && res.Notify {
						notified++
					}
				}
			}
			if notified < 999 {
				b.Fatalf("%d members notified, want all but the sender", notified)
			}
		})
	}
}
