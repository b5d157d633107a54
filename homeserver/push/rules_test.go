package push

import (
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/switchboard-im/switchboard/homeserver/storage"
)

func ruleIDs(rules []*Rule) []string {
	var out []string
	for _, r := range rules {
		out = append(out, r.RuleID)
	}
	return out
}

func TestPutRuleOrdering(t *testing.T) {
	pattern := "x"
	put := func(rows []storage.PushRule, ruleID, before, after string) []storage.PushRule {
		t.Helper()
		out, err := PutRule(rows, NewRule{Kind: KindContent, RuleID: ruleID, Pattern: &pattern, Actions: json.RawMessage(`["notify"]`), Before: before, After: after})
		if err != nil {
			t.Fatalf("put %s: %v", ruleID, err)
		}
		return out
	}
	var rows []storage.PushRule
	rows = put(rows, "a", "", "")   // [a]
	rows = put(rows, "b", "", "")   // new rules go first: [b a]
	rows = put(rows, "c", "a", "")  // before a: [b c a]
	rows = put(rows, "d", "", "b")  // after b: [b d c a]
	rows = put(rows, "e", "c", "b") // both: before wins: [b d e c a]
	rows = put(rows, "a", "", "")   // update in place: [b d e c a]
	rows = put(rows, "b", "", "a")  // move after a: [d e c a b]
	got := ruleIDs(Assemble(bob, rows).Content)
	if want := []string{"d", "e", "c", "a", "b"}; !slices.Equal(got, want) {
		t.Fatalf("content rules %v, want %v", got, want)
	}
	// A rule disabled, then updated, stays disabled.
	rows, err := SetEnabled(bob, rows, KindContent, "c", false)
	if err != nil {
		t.Fatal(err)
	}
	rows = put(rows, "c", "", "")
	if r := Assemble(bob, rows).Find(KindContent, "c"); r == nil || r.Enabled {
		t.Fatalf("rule c after update = %+v, want disabled", r)
	}

	for _, tc := range []struct {
		name          string
		ruleID        string
		before, after string
		want          error
	}{
		{"default rule", ".m.rule.mine", "", "", ErrDefaultRule},
		{"before unknown", "f", "nope", "", ErrRelativeRuleNotFound},
		{"after unknown", "f", "", "nope", ErrRelativeRuleNotFound},
		{"relative to default", "f", ".m.rule.master", "", ErrRelativeToDefault},
		{"relative to itself", "a", "a", "", ErrRelativeRuleNotFound},
	} {
		_, err := PutRule(rows, NewRule{Kind: KindContent, RuleID: tc.ruleID, Pattern: &pattern, Actions: json.RawMessage(`[]`), Before: tc.before, After: tc.after})
		if !errors.Is(err, tc.want) {
			t.Errorf("%s: err = %v, want %v", tc.name, err, tc.want)
		}
	}
}

func TestAssemble(t *testing.T) {
	rs := Assemble(bob, nil)
	if len(rs.Content) != 0 || len(rs.Room) != 0 || len(rs.Sender) != 0 || rs.Content == nil || rs.Room == nil || rs.Sender == nil {
		t.Fatalf("defaults have content/room/sender %v %v %v, want three empty arrays", rs.Content, rs.Room, rs.Sender)
	}
	raw, _ := json.Marshal(rs)
	if strings.Contains(string(raw), userIDPlaceholder) || !strings.Contains(string(raw), string(bob)) {
		t.Fatalf("user ID not substituted: %s", raw)
	}
	// User overrides go after the master rule, before the other defaults;
	// changed defaults keep their place.
	enabled := true
	rows := []storage.PushRule{
		{Kind: "override", RuleID: "mine", Conditions: json.RawMessage(`[]`), Actions: json.RawMessage(`[]`), Enabled: &enabled},
		{Kind: "override", RuleID: MasterRuleID, Enabled: &enabled},
		{Kind: "underride", RuleID: ".m.rule.message", Actions: json.RawMessage(`["notify",{"set_tweak":"sound","value":"x"}]`)},
		{Kind: "underride", RuleID: ".m.rule.gone", Actions: json.RawMessage(`[]`)},
	}
	rs = Assemble(bob, rows)
	if ids := ruleIDs(rs.Override); ids[0] != MasterRuleID || ids[1] != "mine" || ids[2] != ".m.rule.suppress_notices" {
		t.Fatalf("override order %v", ids)
	}
	if !rs.Override[0].Enabled || rs.Override[1].Default || !rs.Override[2].Default {
		t.Fatalf("master enabled=%v, mine default=%v", rs.Override[0].Enabled, rs.Override[1].Default)
	}
	if msg := rs.Find(KindUnderride, ".m.rule.message"); string(msg.Actions) != `["notify",{"set_tweak":"sound","value":"x"}]` || !msg.Enabled {
		t.Fatalf(".m.rule.message = %+v", msg)
	}
	if rs.Find(KindUnderride, ".m.rule.gone") != nil {
		t.Fatal("a change to a default rule that does not exist made a rule")
	}
	if _, err := DeleteRule(bob, rows, KindOverride, MasterRuleID); !errors.Is(err, ErrDefaultRule) {
		t.Fatalf("delete master: %v", err)
	}
	if _, err := DeleteRule(bob, rows, KindOverride, ".m.rule.nope"); !errors.Is(err, ErrRuleNotFound) {
		t.Fatalf("delete unknown default: %v", err)
	}
	if _, err := SetActions(bob, rows, KindContent, ".m.rule.message", json.RawMessage(`[]`)); !errors.Is(err, ErrRuleNotFound) {
		t.Fatalf("default rule under the wrong kind: %v", err)
	}
}

func TestParseActionsAndConditions(t *testing.T) {
	for raw, want := range map[string]string{
		`["notify"]`:      `["notify"]`,
		`["dont_notify"]`: `[]`,
		`["notify","coalesce",{"set_tweak":"sound","value":"a<b"}]`: `["notify",{"set_tweak":"sound","value":"a<b"}]`,
		`[{"set_tweak":"highlight"}]`:                               `[{"set_tweak":"highlight"}]`,
		`["explode"]`:                                               "error",
		`"notify"`:                                                  "error",
		`[{"value":1}]`:                                             "error",
		`[3]`:                                                       "error",
	} {
		got, err := ParseActions(json.RawMessage(raw))
		if (err != nil) != (want == "error") || (err == nil && string(got) != want) {
			t.Errorf("ParseActions(%s) = %s, %v; want %s", raw, got, err, want)
		}
	}
	if _, err := ParseActions(nil); err == nil || !err.(*InvalidError).Missing {
		t.Errorf("missing actions: %v", err)
	}
	for raw, ok := range map[string]bool{
		`[]`: true,
		`[{"kind":"event_match","key":"content.body","pattern":"x"}]`:        true,
		`[{"kind":"event_match","key":"content.body"}]`:                      false,
		`[{"kind":"event_property_is","key":"content.n","value":null}]`:      true,
		`[{"kind":"event_property_is","key":"content.n"}]`:                   false,
		`[{"kind":"event_property_contains","key":"content.n","value":[1]}]`: false,
		`[{"kind":"event_property_is","key":"content.n","value":1.5}]`:       false,
		`[{"kind":"room_member_count","is":">=2"}]`:                          true,
		`[{"kind":"room_member_count","is":"two"}]`:                          false,
		`[{"kind":"sender_notification_permission","key":"room"}]`:           true,
		`[{"kind":"org.example.unknown","anything":1}]`:                      true,
		`[{"key":"x"}]`:          false,
		`{"kind":"event_match"}`: false,
	} {
		if _, err := ParseConditions(json.RawMessage(raw)); (err == nil) != ok {
			t.Errorf("ParseConditions(%s): err = %v, want ok=%v", raw, err, ok)
		}
	}
}
