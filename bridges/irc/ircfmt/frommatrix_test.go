package ircfmt

import (
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

func htmlContent(h string) *event.MessageEventContent {
	return &event.MessageEventContent{
		MsgType:       event.MsgText,
		Body:          "the body must not be used",
		Format:        event.FormatHTML,
		FormattedBody: h,
	}
}

type fromMatrixCase struct {
	name, html, irc string
}

var fromMatrixCases = []fromMatrixCase{
	// Each tag.
	{"strong", "a <strong>b</strong> c", "a \x02b\x02 c"},
	{"b", "<b>b</b>", "\x02b"},
	{"em", "<em>i</em>!", "\x1Di\x1D!"},
	{"i", "<i>i</i>!", "\x1Di\x1D!"},
	{"u", "<u>u</u>!", "\x1Fu\x1F!"},
	{"del", "<del>s</del>!", "\x1Es\x1E!"},
	{"s", "<s>s</s>!", "\x1Es\x1E!"},
	{"strike", "<strike>s</strike>!", "\x1Es\x1E!"},
	{"code", "run <code>make</code> now", "run \x11make\x11 now"},
	{"span colour", `<span data-mx-color="#ff0000">red</span> x`, "\x0304red\x03 x"},
	{"span colour and bg", `<span data-mx-color="#ffff00" data-mx-bg-color="#00007f">x</span>`, "\x0308,02x"},
	{"span bg only", `<span data-mx-bg-color="#ff0000">x</span>y`, "\x0399,04x\x03y"},
	{"font colour", `<font color="#00ff00">g</font>`, "\x0309g"},
	{"font data-mx-color", `<font data-mx-color="#0000ff">b</font>`, "\x0312b"},
	{"nearest colour", `<span data-mx-color="#fe0203">r</span><span data-mx-color="#808080">g</span>`, "\x0304r\x0314g"},
	{"bad colour ignored", `<span data-mx-color="red">x</span>`, "x"},
	{"spoiler", `<span data-mx-spoiler="">secret</span> ok`, "\x0301,01secret\x03 ok"},
	{"link", `<a href="https://example.org/">the site</a>`, "the site <https://example.org/>"},
	{"link label is url", `<a href="https://example.org/">https://example.org/</a>`, "https://example.org/"},
	{"link label is url without slash", `<a href="https://example.org/">https://example.org</a>`, "https://example.org"},
	{"link label without scheme", `<a href="https://example.org">example.org</a>`, "example.org"},
	{"mailto", `<a href="mailto:a@example.org">a@example.org</a>`, "a@example.org"},
	{"empty link label", `x <a href="https://example.org/"></a>`, "x https://example.org/"},
	{"formatted link label", `<a href="https://x.org/"><b>bold</b> site</a>`, "\x02bold\x02 site <https://x.org/>"},
	{"link in bold", `<b>see <a href="https://x.org/">this</a></b>`, "\x02see this <https://x.org/>"},
	{"unsafe link is text", `<a href="javascript:alert(1)">click</a>`, "click"},
	{"event permalink is a link", `<a href="https://matrix.to/#/!r:x.org/$e">msg</a>`, "msg <https://matrix.to/#/!r:x.org/$e>"},
	{"br", "a<br>b<br/>c", "a\nb\nc"},
	{"p", "<p>one</p>\n<p>two</p>", "one\ntwo"},
	{"div", "<div>a</div><div>b</div>c", "a\nb\nc"},
	{"heading", "<h1>Title</h1><p>text</p>", "\x02Title\ntext"},
	{"ul", "<ul><li>a</li><li>b</li></ul>", "- a\n- b"},
	{"ol", "<ol><li>a</li><li>b</li></ol>", "1. a\n2. b"},
	{"ol start", `<ol start="9"><li>a</li><li>b</li></ol>`, "9. a\n10. b"},
	{"nested list", "<ul><li>a<ul><li>b</li></ul></li><li>c</li></ul>", "- a\n  - b\n- c"},
	{"list item with lines", "<ul><li>a<br>b</li></ul>", "- a\n  b"},
	{"text around list", "before<ul><li>a</li></ul>after", "before\n- a\nafter"},
	{"blockquote", "<blockquote><p>q1</p><p>q2</p></blockquote><p>reply</p>", "> q1\n> q2\nreply"},
	{"nested blockquote", "<blockquote>a<blockquote>b</blockquote></blockquote>", "> a\n> > b"},
	{"pre", "<pre><code class=\"language-go\">func main() {\n\t<b>x</b> := 1\n}\n</code></pre>after",
		"func main() {\n\tx := 1\n}\nafter"},
	{"pre keeps blank lines and spaces", "<pre>a\n\n  b  \n</pre>", "a\n\n  b"},
	{"pre in bold has no codes", "<b>x<pre>raw</pre>y</b>", "\x02x\nraw\n\x02y"},
	{"pre in quote", "<blockquote><pre>a\nb</pre></blockquote>", "> a\n> b"},
	{"hr", "a<hr>b", "a\n---\nb"},
	{"table", "<table><tr><th>h1</th><th>h2</th></tr><tr><td>a</td><td>b</td></tr></table>", "h1 | h2\na | b"},
	{"img alt", `<img src="mxc://x/y" alt=":cat:">`, ":cat:"},
	{"entities", "&lt;b&gt; &amp; &quot; &#x1F600; &nbsp;x", "<b> & \" 😀 \u00a0x"},
	{"reply fallback stripped", `<mx-reply><blockquote><a href="https://matrix.to/#/!r:x/$e">In reply to</a> <a href="https://matrix.to/#/@a:x">@a:x</a><br>old</blockquote></mx-reply>new`, "new"},
	{"script dropped", "<script>alert(1)</script>x", "x"},

	// Nesting.
	{"nested bold", "<b>a<b>b</b>c</b>d", "\x02abc\x02d"},
	{"bold italic", "<b>a<i>b</i>c</b>", "\x02a\x1Db\x1Dc"},
	{"reset when many end", "<b><i><u>x</u></i></b>y", "\x02\x1D\x1Fx\x0Fy"},
	{"colour inside bold", `<b>a<span data-mx-color="#ff0000">b</span>c</b>`, "\x02a\x0304b\x03c"},
	{"colour change keeps bg", `<span data-mx-bg-color="#00007f"><span data-mx-color="#ff0000">a</span><span data-mx-color="#009300">b</span></span>`,
		"\x0304,02a\x0303b"},
	{"bg ends, fg stays", `<span data-mx-color="#ff0000"><span data-mx-bg-color="#00007f">a</span>b</span>`, "\x0304,02a\x03\x0304b"},
	{"formatting per line", "<b>a<br>b</b>", "\x02a\n\x02b"},
	{"formatting per paragraph", `<span data-mx-color="#ff0000"><p>a</p><p>b</p></span>`, "\x0304a\n\x0304b"},

	// Colour codes and the digits after them.
	{"digit after colour", `<span data-mx-color="#ff0000">a</span>5`, "\x0304a\x03\x02\x025"},
	{"digit after colour start", `<span data-mx-color="#ff0000">5</span>`, "\x03045"},
	{"comma after fg", `<span data-mx-color="#ff0000">,5</span>`, "\x0304\x02\x02,5"},
	{"comma after fg and bg", `<span data-mx-color="#ff0000" data-mx-bg-color="#ff0000">,5</span>`, "\x0304,04,5"},
	{"comma after colour end", `<span data-mx-color="#ff0000">a</span>,`, "\x0304a\x03\x02\x02,"},
	{"toggle ends colour arguments", `<span data-mx-color="#ff0000"><b>5</b></span>`, "\x0304\x025"},

	// White space.
	{"source line breaks are spaces", "<p>a\nb</p>", "a b"},
	{"spaces at line starts and ends", "<p>  a  </p>\n  <p>\n b </p>", "a\nb"},
	{"runs of spaces kept", "a   b", "a   b"},
	{"space between formatted words", "<b>a</b> <i>b</i>", "\x02a\x02 \x1Db"},
	{"leading and trailing breaks", "<br><br>a<br><br>", "a"},
	{"empty blocks", "<p></p><div> </div><p>a</p><p></p>", "a"},

	// What must never reach IRC.
	{"CR from entity", "a&#13;b", "a b"},
	{"NUL", "a\x00b&#0;c", "ab\uFFFDc"},
	{"CTCP", "\x01VERSION\x01", "VERSION"},
	{"IRC codes typed by a user", "\x02\x03" + "04x", "04x"},

	// Unicode.
	{"unicode", "<b>héllo 世界 🎉</b>", "\x02héllo 世界 🎉"},
}

func TestFromMatrix(t *testing.T) {
	for _, tc := range fromMatrixCases {
		t.Run(tc.name, func(t *testing.T) {
			got := FromMatrix(htmlContent(tc.html), Options{})
			if got != tc.irc {
				t.Errorf("FromMatrix(%q)\n got %q\nwant %q", tc.html, got, tc.irc)
			}
		})
	}
}

func TestFromMatrixPills(t *testing.T) {
	pill := func(userID id.UserID, label string) string {
		return "nick(" + string(userID) + "," + label + ")"
	}
	roomPill := func(alias id.RoomAlias, label string) string {
		return "chan(" + string(alias) + "," + label + ")"
	}
	cases := []struct {
		name, html  string
		opts        Options
		irc         string
		wantPillFor id.UserID
	}{
		{"user pill", `hi <a href="https://matrix.to/#/@alice:example.org">Alice</a>: x`, Options{Pill: pill},
			"hi nick(@alice:example.org,Alice): x", "@alice:example.org"},
		{"escaped user pill", `<a href="https://matrix.to/#/%40bob%3Aexample.org">Bob</a>`, Options{Pill: pill},
			"nick(@bob:example.org,Bob)", "@bob:example.org"},
		{"matrix URI pill", `<a href="matrix:u/carol:example.org?action=chat">Carol</a>`, Options{Pill: pill},
			"nick(@carol:example.org,Carol)", "@carol:example.org"},
		{"pill in bold", `<b><a href="https://matrix.to/#/@a:x.org">A</a></b>`, Options{Pill: pill},
			"\x02nick(@a:x.org,A)", "@a:x.org"},
		{"pill without callback", `<a href="https://matrix.to/#/@alice:example.org">Alice</a>`, Options{}, "Alice", ""},
		{"empty pill without callback", `<a href="https://matrix.to/#/@alice:example.org"></a>`, Options{}, "@alice:example.org", ""},
		{"pill with control characters", `<a href="https://matrix.to/#/@a:x.org">A</a>`,
			Options{Pill: func(id.UserID, string) string { return "bad\r\nPRIVMSG x\x00" }}, "bad PRIVMSG x", ""},
		{"room alias pill", `<a href="https://matrix.to/#/#irc_libera_#go:example.org">#go</a>`, Options{RoomPill: roomPill},
			"chan(#irc_libera_#go:example.org,#go)", ""},
		{"room alias without callback", `join <a href="https://matrix.to/#/%23room:example.org">Room</a>`, Options{},
			"join #room:example.org", ""},
		{"invalid user ID is a link", `<a href="https://matrix.to/#/@nocolon">x</a>`, Options{Pill: pill},
			"x <https://matrix.to/#/@nocolon>", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := FromMatrix(htmlContent(tc.html), tc.opts); got != tc.irc {
				t.Errorf("got %q, want %q", got, tc.irc)
			}
		})
	}
}

func TestFromMatrixOptions(t *testing.T) {
	c := htmlContent(`<code>x</code> <span data-mx-color="#ff8c00">o</span> <pre>p</pre>`)
	if got, want := FromMatrix(c, Options{}), "\x11x\x11 \x0307o\np"; got != want {
		t.Errorf("default: %q, want %q", got, want)
	}
	if got, want := FromMatrix(c, Options{NoMonospace: true, ExtendedColours: true}), "x \x0353o\np"; got != want {
		t.Errorf("no monospace, extended colours: %q, want %q", got, want)
	}
}

func TestFromMatrixBody(t *testing.T) {
	cases := []struct {
		name    string
		content *event.MessageEventContent
		irc     string
	}{
		{"nil", nil, ""},
		{"plain", &event.MessageEventContent{Body: "hello <b>not html</b> &amp;"}, "hello <b>not html</b> &amp;"},
		{"lines", &event.MessageEventContent{Body: "a\r\nb\rc\nd"}, "a\nb\nc\nd"},
		{"controls", &event.MessageEventContent{Body: "\x01ACTION x\x01\x00\x02"}, "ACTION x"},
		{"other format", &event.MessageEventContent{Body: "b", Format: "org.example.other", FormattedBody: "<b>f</b>"}, "b"},
		{"empty formatted body", &event.MessageEventContent{Body: "b", Format: event.FormatHTML}, "b"},
		{"HTML that shows nothing", &event.MessageEventContent{Body: "cat.png", Format: event.FormatHTML, FormattedBody: `<img src="mxc://x/y">`}, "cat.png"},
		{"reply fallback in body", &event.MessageEventContent{
			Body:      "> <@a:x.org> old\n> more\n\nnew",
			RelatesTo: &event.RelatesTo{InReplyTo: &event.InReplyTo{EventID: "$e"}},
		}, "new"},
		{"quote that is no reply", &event.MessageEventContent{Body: "> <@a:x.org> old\n\nnew"}, "> <@a:x.org> old\n\nnew"},
		{"invalid UTF-8", &event.MessageEventContent{Body: "a\xffb"}, "a\uFFFDb"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := FromMatrix(tc.content, Options{}); got != tc.irc {
				t.Errorf("got %q, want %q", got, tc.irc)
			}
		})
	}
}

func TestNearestColour(t *testing.T) {
	cases := []struct {
		hex      string
		extended bool
		want     int
	}{
		{"#ffffff", false, 0}, {"#000000", false, 1}, {"#ff0000", false, 4}, {"#FF0000", true, 4},
		{"#00007f", false, 2}, {"#101010", false, 1}, {"#c0c0c0", false, 15}, {"#808080", false, 14},
		{"#ffa500", false, 7}, {"#800080", false, 6}, {"#008080", false, 10}, {"#00ff00", false, 9},
		{"#00ff00", true, 56}, {"#ff8c00", true, 53}, {"#363636", true, 91}, {"#363636", false, 1},
	}
	for _, tc := range cases {
		if got, ok := nearestColour(tc.hex, tc.extended); !ok || got != tc.want {
			t.Errorf("nearestColour(%s, %v) = %d, %v; want %d", tc.hex, tc.extended, got, ok, tc.want)
		}
	}
	// Every palette colour maps to itself (or to the first colour with
	// the same value).
	for n, hex := range palette {
		got, _ := nearestColour(hex, true)
		if palette[got] != hex || got > n {
			t.Errorf("palette colour %d (%s) maps to %d", n, hex, got)
		}
	}
	if _, ok := nearestColour("#12345", false); ok {
		t.Error("short colour accepted")
	}
}

// TestFromMatrixLong checks that big and deeply nested HTML converts in
// linear time without failing.
func TestFromMatrixLong(t *testing.T) {
	inputs := map[string]string{
		"deep":      strings.Repeat("<b><i><span data-mx-color=\"#ff0000\">x", 5000),
		"deep list": strings.Repeat("<ul><li>x", 3000),
		"wide":      strings.Repeat("<b>a</b><i>b</i><br><p>c</p>", 5000),
		"text":      strings.Repeat("word ", 20000),
		"pre":       "<pre>" + strings.Repeat("line\n", 20000) + "</pre>",
	}
	for name, in := range inputs {
		start := time.Now()
		out := FromMatrix(htmlContent(in), Options{})
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("%s: %d bytes took %v", name, len(in), d)
		}
		if out == "" {
			t.Errorf("%s: empty output", name)
		}
	}
}
