package render

import (
	"fmt"
	"strings"
	"testing"

	"maunium.net/go/mautrix/event"

	"github.com/switchboard-im/switchboard/framework/format"
)

func mustRender(t *testing.T, body string, opts Options) *Message {
	t.Helper()
	p, err := Parse("application/json", []byte(body))
	if err != nil {
		t.Fatal(err)
	}
	m, err := Render(p, opts)
	if err != nil {
		t.Fatal(err)
	}
	maxSize := opts.MaxSize
	if maxSize == 0 {
		maxSize = DefaultMaxSize
	}
	checkMessage(t, m, maxSize)
	return m
}

// TestNumbersKeepTheirDigits follows payload numbers that float64 would
// change (too precise, too large, negative zero) through every place a
// number is shown.
func TestNumbersKeepTheirDigits(t *testing.T) {
	numbers := []string{"0.1000000000000000055511151231257827", "1e400", "-0", "12345678901234567890", "1.50"}
	for _, n := range numbers {
		grafana := `{"orgId":1,"status":"firing","groupKey":"k","alerts":[{"status":"firing","labels":{"alertname":"A"},"values":{"B":` + n + `}}]}`
		if m := mustRender(t, grafana, Options{}); !strings.Contains(m.Body, "B="+n) || !strings.Contains(m.HTML, "B="+n) {
			t.Errorf("grafana value %s: %q", n, m.Body)
		}
		generic := `{"value":` + n + `,"nested":{"list":[` + n + `]}}`
		tmpl := mustTemplate(t, "v={{.value}} j={{toJSON .nested}} l={{join \",\" .nested.list}} d={{default 0 .value}}")
		want := fmt.Sprintf(`v=%s j={"list":[%s]} l=%s d=%s`, n, n, n, n)
		if m := mustRender(t, generic, Options{Template: tmpl}); m.Body != want {
			t.Errorf("template: %q, want %q", m.Body, want)
		}
		if m := mustRender(t, generic, Options{}); !strings.Contains(m.Body, `"value": `+n+",") {
			t.Errorf("dump: %q", m.Body)
		}
		slack := `{"attachments":[{"text":"t","fields":[{"title":"n","value":` + n + `,"short":true}]}]}`
		if m := mustRender(t, slack, Options{}); !strings.Contains(m.Body, "n:** "+n) {
			t.Errorf("slack field: %q", m.Body)
		}
	}
}

func TestRoomMention(t *testing.T) {
	for _, tc := range []struct {
		body string
		want bool
	}{
		{`{"text":"<!here> deploy"}`, true},
		{`{"text":"<!channel>"}`, true},
		{`{"text":"<!everyone>"}`, true},
		{"{\"text\":\"`<!here>`\"}", false},
		{`{"text":"@room"}`, false}, // Slack text: only Slack's own syntax mentions
		{`{"blocks":[{"type":"rich_text","elements":[{"type":"rich_text_section","elements":[{"type":"broadcast","range":"here"}]}]}]}`, true},
		{`{"blocks":[{"type":"section","text":{"type":"mrkdwn","text":"<!here>"}}]}`, true},
		{`{"attachments":[{"text":"<!channel> look"}]}`, true},
		{`{"text":"ping @room now","format":"plain"}`, true},
		{`{"text":"ping <b>@room</b>","format":"html"}`, true},
		{`{"text":"@roommate","format":"plain"}`, false},
		{`{"text":"me@room.org","format":"plain"}`, false},
	} {
		if m := mustRender(t, tc.body, Options{}); m.RoomMention != tc.want {
			t.Errorf("%s: room mention %t", tc.body, m.RoomMention)
		}
	}
	tmpl := mustTemplate(t, `{{if eq .severity "critical"}}@room {{end}}{{.msg}}`)
	if m := mustRender(t, `{"severity":"critical","msg":"down"}`, Options{Template: tmpl}); !m.RoomMention || m.Body != "@room down" {
		t.Errorf("template: %+v", m)
	}
	if m := mustRender(t, `{"severity":"critical","msg":"@room"}`, Options{}); m.RoomMention {
		t.Errorf("a dump must not mention the room")
	}
}

func TestSenderAndMsgType(t *testing.T) {
	for _, tc := range []struct {
		body         string
		opts         Options
		name, avatar string
		msgtype      event.MessageType
	}{
		{`{"text":"x","username":" Deploy Bot ","icon_url":"https://e.org/a.png"}`, Options{}, "Deploy Bot", "https://e.org/a.png", event.MsgNotice},
		{`{"text":"x","icon_url":"ftp://e.org/a.png"}`, Options{MsgType: event.MsgText}, "", "", event.MsgText},
		{`{"text":"x","displayName":"CI","avatar_url":"http://e.org/a.png"}`, Options{}, "CI", "http://e.org/a.png", event.MsgNotice},
		{`{"text":"x","displayName":"CI","avatarUrl":"mxc://e.org/abc"}`, Options{}, "CI", "", event.MsgNotice},
		{`{"text":"x","msgtype":"text"}`, Options{}, "", "", event.MsgText},
		{`{"text":"x","msgtype":"m.emote"}`, Options{}, "", "", event.MsgEmote},
		{`{"text":"x","msgtype":"m.image"}`, Options{MsgType: event.MsgEmote}, "", "", event.MsgEmote},
		{`{"text":"x","username":"` + strings.Repeat("n", 300) + `"}`, Options{}, strings.Repeat("n", 253) + ellipsis, "", event.MsgNotice},
	} {
		m := mustRender(t, tc.body, tc.opts)
		if m.SenderName != tc.name || m.AvatarURL != tc.avatar || m.MsgType != tc.msgtype {
			t.Errorf("%.60s: sender %q avatar %q msgtype %s", tc.body, m.SenderName, m.AvatarURL, m.MsgType)
		}
	}
	p, _ := Parse("application/json", []byte(`{"text":"x"}`))
	if _, err := Render(p, Options{MsgType: event.MsgImage}); err == nil {
		t.Error("no error for an m.image hook")
	}
}

func TestBounded(t *testing.T) {
	long := strings.Repeat("*word* <https://example.org/"+strings.Repeat("x", 40)+"|link> ", 3000)
	for _, maxSize := range []int{0, 4096, 1000} {
		m := mustRender(t, `{"text":"`+long+`"}`, Options{MaxSize: maxSize})
		if !strings.HasSuffix(m.Body, ellipsis) {
			t.Errorf("max %d: body not marked as cut: …%q", maxSize, m.Body[len(m.Body)-20:])
		}
		if m.HTML != "" && !strings.Contains(m.HTML, ellipsis) {
			t.Errorf("max %d: HTML not marked as cut", maxSize)
		}
	}
	// A notification with many alerts lists what fits and counts the rest.
	var alerts []string
	for i := range 200 {
		alerts = append(alerts, fmt.Sprintf(`{"status":"firing","labels":{"alertname":"A","instance":"host-%d"},"annotations":{"description":"%s"}}`, i, strings.Repeat("d", 100)))
	}
	m := mustRender(t, `{"groupKey":"k","status":"firing","commonLabels":{"alertname":"A"},"alerts":[`+strings.Join(alerts, ",")+`]}`, Options{})
	if !strings.Contains(m.Body, "more alerts not shown.") || !strings.Contains(m.Body, "FIRING:200 A") || strings.HasSuffix(m.Body, ellipsis) {
		t.Errorf("200 alerts: %s", m.Body[len(m.Body)-200:])
	}
	// A long dump is cut at a line, and says so.
	m = mustRender(t, `{"items":[`+strings.Repeat(`"abcdefghij",`, 2000)+`"z"]}`, Options{})
	if !strings.Contains(m.Body, "Cut at ") || !strings.Contains(m.Body, "\"abcdefghij\",\n…\n```") {
		t.Errorf("dump: %s", m.Body[len(m.Body)-200:])
	}
}

func TestTruncateText(t *testing.T) {
	for _, tc := range []struct {
		in    string
		limit int
		want  string
	}{
		{"short", 10, "short"},
		{"two words here", 12, "two words…"},
		{"ééééé", 7, "éé…"},
		{"a\"b\"c\"d", 6, "a\"…"},
		{"abc", 2, "…"},
	} {
		if got := truncateText(tc.in, tc.limit); got != tc.want {
			t.Errorf("truncateText(%q, %d) = %q, want %q", tc.in, tc.limit, got, tc.want)
		}
	}
}

func TestTemplateHelpers(t *testing.T) {
	body := `{"name":"web","tags":["a","b"],"n":3,"empty":"","obj":{"x":[1,{"y":"<z>"}]}}`
	for _, tc := range []struct{ tmpl, want string }{
		{`{{upper .name}} {{lower "ABC"}}`, "WEB abc"},
		{`{{join "+" .tags}} {{join "," .name}}`, "a+b web"},
		{`{{default "none" .empty}} {{default "none" .missing}} {{default "none" .name}}`, "none none web"},
		{`{{truncate 2 .name}} {{truncate 5 .name}}`, "we… web"},
		{"`{{toJSON .obj}}`", "`" + `{"x":[1,{"y":"<z>"}]}` + "`"},
		{`{{.n}} {{index .tags 1}}`, "3 b"},
		{`{{escape "*a* <b>"}}`, `*a* <b>`},
	} {
		m := mustRender(t, body, Options{Template: mustTemplate(t, tc.tmpl)})
		if m.Body != tc.want {
			t.Errorf("%s: %q, want %q", tc.tmpl, m.Body, tc.want)
		}
	}
	m := mustRender(t, body, Options{Template: mustTemplate(t, "```json\n{{json .obj}}\n```")})
	if want := "```json\n{\n  \"x\": [\n    1,\n    {\n      \"y\": \"<z>\"\n    }\n  ]\n}\n```"; m.Body != want {
		t.Errorf("json: %q", m.Body)
	}
	if _, err := ParseTemplate("{{.a"); err == nil {
		t.Error("no error for a broken template")
	}
	// Output is bounded, so a template cannot run away with memory.
	m = mustRender(t, `{}`, Options{Template: mustTemplate(t, `{{range 100000000}}xxxxxxxxxx{{end}}`)})
	if !strings.HasSuffix(m.Body, ellipsis) {
		t.Errorf("runaway template: %.40q", m.Body)
	}
}

func TestEmojiTable(t *testing.T) {
	for alias, name := range emojiAliases {
		if _, ok := emojiByName()[alias]; !ok {
			t.Errorf("alias %s: target %s is not in the table", alias, name)
		}
	}
	for in, want := range map[string]string{
		":white_check_mark: :x: :warning: :rotating_light: :fire: :tada: :rocket:": "✅ ❌ ⚠️ 🚨 🔥 🎉 🚀",
		":thumbsup::skin-tone-2: :wave::skin-tone-9:":                              "👍🏻 👋:skin-tone-9:",
		"::fire:: :Fire: :fire":                                                    ":🔥: :Fire: :fire",
	} {
		// The table writes emoji fully qualified, with U+FE0F where
		// Unicode allows it.
		if got := strings.ReplaceAll(emojify(in), "\ufe0f", ""); got != strings.ReplaceAll(want, "\ufe0f", "") {
			t.Errorf("emojify(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestTruncateHTML(t *testing.T) {
	h := format.Sanitize(strings.Repeat(`<ul><li><a href="https://x.org/?a&amp;b">x &amp; "y"</a> `, 60))
	cuts := 0
	for limit := 0; limit < jsonLen(h)+10; limit += 7 {
		out := truncateHTML(h, limit)
		switch {
		case out == "":
			continue
		case jsonLen(out) > limit:
			t.Errorf("limit %d: %d bytes", limit, jsonLen(out))
		case out != format.Sanitize(out):
			t.Errorf("limit %d: not sanitised: %s", limit, out)
		case out != h && !strings.Contains(out, ellipsis):
			t.Errorf("limit %d: cut without a mark: %s", limit, out)
		case strings.Contains(out, "&amp;am") || strings.Contains(out, "&amp;quo"):
			t.Errorf("limit %d: an entity was cut: %s", limit, out)
		}
		cuts++
	}
	if cuts == 0 {
		t.Error("every cut dropped the HTML")
	}
}
