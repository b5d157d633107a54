package format

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"

	"maunium.net/go/mautrix/event"
	mformat "maunium.net/go/mautrix/format"
	"maunium.net/go/mautrix/id"
)

func TestHTMLToPlain(t *testing.T) {
	tests := []struct{ name, in, want string }{
		{"plain text", `just text`, `just text`},
		{"entities", `a &amp; b &lt;c&gt;`, `a & b <c>`},
		{"link with label", `see <a href="https://example.com/x">the docs</a>`, `see the docs (https://example.com/x)`},
		{"link that is its url", `<a href="https://example.com">https://example.com</a>`, `https://example.com`},
		{"mailto link", `<a href="mailto:alice@example.com">alice@example.com</a>`, `alice@example.com`},
		{"javascript link loses its url", `<a href="javascript:alert(1)">click</a>`, `click`},
		{"unordered list", `<ul><li>one</li><li>two</li></ul>`, "* one\n* two"},
		{"ordered list with start", `<ol start="9"><li>nine</li><li>ten</li></ol>`, "9.  nine\n10. ten"},
		{"nested list", `<ul><li>a<ul><li>b</li></ul></li></ul>`, "* a\n  * b"},
		{"quote then text", `<blockquote>quoted<br>lines</blockquote><p>reply</p>`, "> quoted\n> lines\n\nreply"},
		{"code block kept verbatim", "<pre><code class=\"language-go\">func main() {\n\tprintln(\"hi\")\n}\n</code></pre>", "```go\nfunc main() {\n\tprintln(\"hi\")\n}\n```"},
		{"inline code", `run <code>make test</code>`, "run `make test`"},
		{"emphasis", `<b>bold</b>, <i>italic</i>, <del>gone</del>`, "**bold**, _italic_, ~~gone~~"},
		{"paragraphs", `<p>one</p><p>two</p>`, "one\n\ntwo"},
		{"line breaks in source are spaces", "Alert\nfiring on\n  host1<br>\nnext line", "Alert firing on host1\nnext line"},
		{"pre keeps its line breaks", "<pre>a\nb</pre>", "```\na\nb\n```"},
		{"spoiler hidden", `Alice <span data-mx-spoiler>dies</span> in the end`, `Alice [Spoiler] in the end`},
		{"spoiler with reason", `<span data-mx-spoiler="the ending">dies</span>`, `[Spoiler: the ending]`},
		{"user pill", `hi <a href="https://matrix.to/#/@alice:example.org">Alice</a>`, `hi Alice`},
		{"image alt", `<img src="mxc://example.org/abc" alt="a cat">`, `a cat`},
		{"table rows and cells", `<table><thead><tr><th>host</th><th>load</th></tr></thead><tbody><tr><td>db1</td><td><b>97</b></td></tr></tbody></table>`, "host\tload\ndb1\t**97**"},
		{"table with caption", `<table><caption>Hosts</caption><tr><td>a</td></tr></table>after`, "Hosts\na\nafter"},
		{"script and style dropped", `<style>p{}</style><script>alert(1)</script>visible`, `visible`},
		{"deeper than the HTML parser accepts", strings.Repeat("<div>", 1000) + "deep text", `deep text`},
		{"horizontal rule", `a<hr>b`, "a\n---\nb"},
		{"heading", `<h2>Title</h2>text`, "## Title\ntext"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := HTMLToPlain(tc.in); got != tc.want {
				t.Errorf("HTMLToPlain(%.80q)\n got %q\nwant %q", tc.in, got, tc.want)
			}
		})
	}
}

// TestConvertHTMLCustomParser is how a bridge adds its protocol's format:
// here IRC's bold and italic control codes.
func TestConvertHTMLCustomParser(t *testing.T) {
	irc := PlainParser()
	irc.BoldConverter = func(s string, _ mformat.Context) string { return "\x02" + s + "\x02" }
	irc.ItalicConverter = func(s string, _ mformat.Context) string { return "\x1d" + s + "\x1d" }
	text, mentions := ConvertHTML(irc, `<b>deploy</b> <i>done</i>, `+UserPill("@ops:example.org", "ops")+`<script>x</script>`)
	if want := "\x02deploy\x02 \x1ddone\x1d, ops"; text != want {
		t.Errorf("got %q, want %q", text, want)
	}
	if !slices.Equal(mentions.UserIDs, []id.UserID{"@ops:example.org"}) {
		t.Errorf("mentions %+v", *mentions)
	}
	// The parser handed out is a fresh one each time.
	if PlainParser().BoldConverter != nil {
		t.Error("PlainParser shares state between callers")
	}
}

func TestHTMLToMarkdown(t *testing.T) {
	tests := []struct{ name, in, want string }{
		{"link", `see <a href="https://example.com/x">the docs</a>`, `see [the docs](https://example.com/x)`},
		{"bare link", `<a href="https://example.com">https://example.com</a>`, `<https://example.com>`},
		{"emphasis", `<strong>bold</strong> <em>it</em>`, `**bold** _it_`},
		{"spoiler", `<span data-mx-spoiler>dies</span>`, `||dies||`},
		{"maths", `<span data-mx-maths="x^2">x²</span>`, `$x^2$`},
		{"script dropped", `<script>alert(1)</script>ok`, `ok`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := HTMLToMarkdown(tc.in); got != tc.want {
				t.Errorf("HTMLToMarkdown(%q)\n got %q\nwant %q", tc.in, got, tc.want)
			}
		})
	}
}

// wantContent is what a message event's content must say.
type wantContent struct {
	body, formatted string // formatted "" means no format and no formatted_body
	mentions        []id.UserID
}

func checkContent(t *testing.T, c *event.MessageEventContent, want wantContent) {
	t.Helper()
	if c.MsgType != event.MsgText {
		t.Errorf("msgtype %q, want m.text", c.MsgType)
	}
	if c.Body != want.body {
		t.Errorf("body %q, want %q", c.Body, want.body)
	}
	if c.FormattedBody != want.formatted {
		t.Errorf("formatted_body %q, want %q", c.FormattedBody, want.formatted)
	}
	wantFormat := event.Format("")
	if want.formatted != "" {
		wantFormat = event.FormatHTML
	}
	if c.Format != wantFormat {
		t.Errorf("format %q, want %q", c.Format, wantFormat)
	}
	if c.Mentions == nil {
		t.Fatalf("m.mentions missing; without it clients fall back to matching names in the body")
	}
	if !slices.Equal(c.Mentions.UserIDs, want.mentions) || c.Mentions.Room {
		t.Errorf("m.mentions %+v, want user_ids %v", *c.Mentions, want.mentions)
	}
}

func TestMarkdownToContent(t *testing.T) {
	tests := []struct {
		name, md string
		want     wantContent
	}{
		{"plain", "hello", wantContent{body: "hello"}},
		{"ampersand needs no html", "a & b", wantContent{body: "a & b"}},
		{"line break needs no html", "line one\nline two", wantContent{body: "line one\nline two"}},
		{"bold", "**bold** move", wantContent{body: "**bold** move", formatted: "<strong>bold</strong> move"}},
		{"link", "[docs](https://example.com)", wantContent{body: "docs (https://example.com)", formatted: `<a href="https://example.com">docs</a>`}},
		{"javascript link", "[click](javascript:alert(1))", wantContent{body: "click"}},
		{"inline script", "hi <script>alert(1)</script>", wantContent{body: "hi", formatted: "hi "}},
		{"inline html allowed", `<span data-mx-color="#ff0000">red</span>`, wantContent{body: "red", formatted: `<span data-mx-color="#ff0000">red</span>`}},
		{"spoiler", "||secret||", wantContent{body: "[Spoiler]", formatted: "<span data-mx-spoiler>secret</span>"}},
		{"code block", "```go\nx := 1\n```", wantContent{body: "```go\nx := 1\n```", formatted: "<pre><code class=\"language-go\">x := 1\n</code></pre>"}},
		{"list", "- a\n- b", wantContent{body: "* a\n* b", formatted: "<ul>\n<li>a</li>\n<li>b</li>\n</ul>"}},
		{"mention", "hi [Alice](https://matrix.to/#/@alice:example.org)", wantContent{
			body: "hi Alice", formatted: `hi <a href="https://matrix.to/#/@alice:example.org">Alice</a>`,
			mentions: []id.UserID{"@alice:example.org"},
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			checkContent(t, MarkdownToContent(tc.md), tc.want)
		})
	}
}

func TestHTMLContent(t *testing.T) {
	tests := []struct {
		name, html, plain string
		want              wantContent
	}{
		{"formatting", "<b>hi</b>", "", wantContent{body: "**hi**", formatted: "<b>hi</b>"}},
		{"text only", "plain &amp; simple", "", wantContent{body: "plain & simple"}},
		{"br only", "a<br>b", "", wantContent{body: "a\nb"}},
		{"given body", "<b>hi</b>", "hi there", wantContent{body: "hi there", formatted: "<b>hi</b>"}},
		{"given body that differs from plain html", "hi", "something else", wantContent{body: "something else", formatted: "hi"}},
		{"nothing left after sanitising", "<script>x</script>", "fallback", wantContent{body: "fallback"}},
		{"sanitised", `<img src=x onerror=alert(1)><a href="javascript:x">y</a><i>z</i>`, "", wantContent{body: "y_z_", formatted: "y<i>z</i>"}},
		{"pill mentions", "ping " + UserPill("@alice:example.org", "Alice") + " and " + UserPill("@bob:example.org", ""), "",
			wantContent{
				body:      "ping Alice and @bob:example.org",
				formatted: `ping <a href="https://matrix.to/#/@alice:example.org">Alice</a> and <a href="https://matrix.to/#/@bob:example.org">@bob:example.org</a>`,
				mentions:  []id.UserID{"@alice:example.org", "@bob:example.org"},
			}},
		{"room link is no mention", `<a href="https://matrix.to/#/#room:example.org">#room:example.org</a>`, "",
			wantContent{body: "#room:example.org", formatted: `<a href="https://matrix.to/#/#room:example.org">#room:example.org</a>`}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			checkContent(t, HTMLContent(tc.html, tc.plain), tc.want)
		})
	}
}

// TestTextToContentJSON checks what goes over the wire: an explicit, empty
// m.mentions, so that clients do not notify people named in the text.
func TestTextToContentJSON(t *testing.T) {
	c := TextToContent("deploy <done> @room alice")
	got, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"msgtype":"m.text","body":"deploy \u003cdone\u003e @room alice","m.mentions":{}}`
	if string(got) != want {
		t.Errorf("json %s\nwant %s", got, want)
	}
	c.MsgType = event.MsgNotice
	if got, _ := json.Marshal(c); !strings.Contains(string(got), `"msgtype":"m.notice"`) {
		t.Errorf("notice json %s", got)
	}
}

func TestUserPill(t *testing.T) {
	tests := []struct {
		name   string
		user   id.UserID
		label  string
		want   string
		asText string
	}{
		{"named", "@alice:example.org", "Alice", `<a href="https://matrix.to/#/@alice:example.org">Alice</a>`, "Alice"},
		{"no name", "@alice:example.org", "", `<a href="https://matrix.to/#/@alice:example.org">@alice:example.org</a>`, "@alice:example.org"},
		{"name with markup", "@eve:example.org", `<img src=x onerror=alert(1)>"Eve"`,
			`<a href="https://matrix.to/#/@eve:example.org">&lt;img src=x onerror=alert(1)&gt;&#34;Eve&#34;</a>`, `<img src=x onerror=alert(1)>"Eve"`},
		{"historical user id needing escapes", `@a"b<c:example.org`, "x", `<a href="https://matrix.to/#/@a%22b%3Cc:example.org">x</a>`, "x"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := UserPill(tc.user, tc.label)
			if got != tc.want {
				t.Errorf("UserPill(%q, %q)\n got %q\nwant %q", tc.user, tc.label, got, tc.want)
			}
			// A pill is itself permitted HTML, and its text is the name.
			if Sanitize(got) != strings.ReplaceAll(strings.ReplaceAll(got, "&#34;", `"`), "&#39;", "'") {
				t.Errorf("Sanitize changes the pill: %q", Sanitize(got))
			}
			c := HTMLContent(got, "")
			if c.Body != tc.asText {
				t.Errorf("body %q, want %q", c.Body, tc.asText)
			}
			if !c.Mentions.Has(tc.user) {
				t.Errorf("m.mentions %+v lacks %s", *c.Mentions, tc.user)
			}
		})
	}
}

func TestEscapeHTML(t *testing.T) {
	in := `<a href="x" title='y'>&amp;</a>`
	want := `&lt;a href=&#34;x&#34; title=&#39;y&#39;&gt;&amp;amp;&lt;/a&gt;`
	if got := EscapeHTML(in); got != want {
		t.Errorf("EscapeHTML(%q) = %q, want %q", in, got, want)
	}
	// Escaped text is shown as exactly that text.
	if got := HTMLToPlain(EscapeHTML(in)); got != in {
		t.Errorf("round trip: %q", got)
	}
}
