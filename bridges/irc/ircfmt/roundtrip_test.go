package ircfmt

import (
	"fmt"
	"reflect"
	"strings"
	"testing"

	"golang.org/x/net/html"
	"golang.org/x/net/html/atom"
	"maunium.net/go/mautrix/event"
)

// styledChar is one character as a reader sees it: the character and the
// formatting it is shown in. Both directions are compared through it, so a
// test does not depend on how tags or codes happen to be arranged.
type styledChar struct {
	r                                     rune
	bold, italic, underline, strike, mono bool
	fg, bg                                string
}

func (c styledChar) String() string {
	return fmt.Sprintf("%q%+v", c.r, struct {
		B, I, U, S, M bool
		Fg, Bg        string
	}{c.bold, c.italic, c.underline, c.strike, c.mono, c.fg, c.bg})
}

// htmlChars reads HTML as a Matrix client shows it, with an independent
// reading of the tags (not the converter's).
func htmlChars(t testing.TB, h string) []styledChar {
	t.Helper()
	body := &html.Node{Type: html.ElementNode, Data: "body", DataAtom: atom.Body}
	nodes, err := html.ParseFragment(strings.NewReader(h), body)
	if err != nil {
		t.Fatalf("parsing %q: %v", h, err)
	}
	var out []styledChar
	var walk func(n *html.Node, st styledChar)
	walk = func(n *html.Node, st styledChar) {
		switch n.Type {
		case html.TextNode:
			for _, r := range n.Data {
				st.r = r
				out = append(out, st)
			}
			return
		case html.ElementNode:
		default:
			return
		}
		switch n.Data {
		case "br":
			out = append(out, styledChar{r: '\n'})
		case "b", "strong":
			st.bold = true
		case "i", "em":
			st.italic = true
		case "u":
			st.underline = true
		case "del", "s", "strike":
			st.strike = true
		case "code":
			st.mono = true
		case "span", "font":
			for _, a := range n.Attr {
				switch a.Key {
				case "data-mx-color", "color":
					st.fg = strings.ToLower(a.Val)
				case "data-mx-bg-color":
					st.bg = strings.ToLower(a.Val)
				}
			}
		}
		for c := n.FirstChild; c != nil; c = c.NextSibling {
			walk(c, st)
		}
	}
	for _, n := range nodes {
		walk(n, styledChar{})
	}
	return out
}

// ircChars reads IRC text as an IRC client shows it. Reverse is resolved
// into the colours it shows. mapColour, if set, maps every colour first.
func ircChars(text string, mapColour func(string) string) []styledChar {
	var out []styledChar
	for _, r := range parseIRC(text) {
		fg, bg := r.style.colours()
		if mapColour != nil {
			fg, bg = mapColour(fg), mapColour(bg)
		}
		for _, c := range r.text {
			out = append(out, styledChar{
				r: c, bold: r.style.bold, italic: r.style.italic, underline: r.style.underline,
				strike: r.style.strike, mono: r.style.mono, fg: fg, bg: bg,
			})
		}
	}
	return out
}

// lines splits characters into lines without the white space at their
// ends and without empty lines at the start and end: the parts of a
// message that the HTML reading of it does not keep.
func lines(chars []styledChar) [][]styledChar {
	var ls [][]styledChar
	cur := []styledChar{}
	for _, c := range chars {
		if c.r == '\n' {
			ls = append(ls, cur)
			cur = []styledChar{}
			continue
		}
		cur = append(cur, c)
	}
	ls = append(ls, cur)
	isBlank := func(c styledChar) bool { return c.r == ' ' || c.r == '\t' }
	for i, l := range ls {
		for len(l) > 0 && isBlank(l[0]) {
			l = l[1:]
		}
		for len(l) > 0 && isBlank(l[len(l)-1]) {
			l = l[:len(l)-1]
		}
		ls[i] = l
	}
	for len(ls) > 0 && len(ls[0]) == 0 {
		ls = ls[1:]
	}
	for len(ls) > 0 && len(ls[len(ls)-1]) == 0 {
		ls = ls[:len(ls)-1]
	}
	return ls
}

func nearestHex(extended bool) func(string) string {
	return func(hex string) string {
		if n, ok := nearestColour(hex, extended); ok {
			return palette[n]
		}
		return hex
	}
}

// TestRoundTripMatrix: Matrix HTML sent to IRC and read back from IRC
// shows the same text with the same formatting.
func TestRoundTripMatrix(t *testing.T) {
	cases := []string{
		"<strong>bold</strong> <em>italic</em> <u>underline</u> <del>strike</del> <code>mono</code>",
		"<b>b</b><i>i</i><s>s</s><strike>st</strike>",
		"<b>a<i>b<u>c<del>d<code>e</code>f</del>g</u>h</i>i</b>j",
		"<b>a<b>b</b>c</b>d",
		`<span data-mx-color="#ff0000">red</span> <span data-mx-color="#009300" data-mx-bg-color="#ffff00">green on yellow</span>`,
		`<span data-mx-bg-color="#000000">bg only</span> then <span data-mx-color="#ffffff">fg</span>`,
		`<span data-mx-color="#ff0000"><b>red bold</b> red <span data-mx-color="#00007f">blue</span> red</span> plain`,
		`<span data-mx-color="#ff0000">1</span>2<span data-mx-color="#ff0000" data-mx-bg-color="#000000">,3</span>,4`,
		`<font color="#9c009c">font</font> <span data-mx-color="#D2D2D2">upper case hex</span>`,
		"line one<br><b>line two</b><br><i>three</i>",
		"<b>héllo</b> <i>世界</i> <u>🎉🎉</u> <del>ünïcödé</del>",
		`<b>see https://example.org/ and <a href="https://example.org/x">https://example.org/x</a></b>`,
		"<em>" + strings.Repeat("long ", 2000) + "end</em>",
	}
	for _, in := range cases {
		name := in
		if len(name) > 40 {
			name = name[:40]
		}
		t.Run(name, func(t *testing.T) {
			irc := FromMatrix(htmlContent(in), Options{})
			body, out := ToMatrix(irc)
			want, got := htmlChars(t, in), htmlChars(t, out)
			if !reflect.DeepEqual(got, want) {
				t.Errorf("in   %q\nirc  %q\nout  %q\n%s", short(in), short(irc), short(out), diff(want, got))
			}
			var text []rune
			for _, c := range want {
				text = append(text, c.r)
			}
			if body != string(text) {
				t.Errorf("body %q, want %q", short(body), short(string(text)))
			}
		})
	}
}

// TestRoundTripMatrixColours: any colour comes back as the nearest mIRC
// colour, classic or extended.
func TestRoundTripMatrixColours(t *testing.T) {
	for _, extended := range []bool{false, true} {
		for _, hex := range []string{"#123456", "#fe0000", "#ffa500", "#808080", "#deadbe", "#00ffa0"} {
			in := `<span data-mx-color="` + hex + `" data-mx-bg-color="` + hex + `">x</span>`
			_, out := ToMatrix(FromMatrix(htmlContent(in), Options{ExtendedColours: extended}))
			n, _ := nearestColour(hex, extended)
			if want := `<span data-mx-color="` + palette[n] + `" data-mx-bg-color="` + palette[n] + `">x</span>`; out != want {
				t.Errorf("%s (extended %v): %q, want %q", hex, extended, out, want)
			}
		}
	}
}

// TestRoundTripIRC: IRC text read into Matrix and sent back shows the same
// text with the same formatting, colours mapped to the nearest mIRC colour
// and reverse resolved into the colours it shows.
func TestRoundTripIRC(t *testing.T) {
	cases := []string{
		"\x02bold\x02 \x1Ditalic\x1D \x1Funder\x1F \x1Estrike\x1E \x11mono\x11 plain",
		"\x02a\x1Db\x02c\x1D",
		"\x0304red \x0303,08green on yellow\x03 none \x0399,02bg",
		"\x0304,02x\x16reversed\x16y",
		"\x0304colour then digits\x03 2 3 \x03045\x03,6",
		"\x0352extended \x0388colours \x0398here",
		"\x04ff0000hex red \x04ff8800,000000orange on black",
		"\x02bold\x0F reset \x1Dto the end",
		"\x02see https://example.org/a_(b) and www.example.org\x02!",
		"\x02héllo\x02 世界 \x1D🎉\x1D",
		"\x02" + strings.Repeat("\x0304,01a\x03b\x1Dc\x1D", 1000),
	}
	for _, in := range cases {
		name := in
		if len(name) > 40 {
			name = name[:40]
		}
		t.Run(name, func(t *testing.T) {
			body, h := ToMatrix(in)
			out := FromMatrix(&event.MessageEventContent{Body: body, Format: event.FormatHTML, FormattedBody: h}, Options{ExtendedColours: true})
			want := lines(ircChars(in, nearestHex(true)))
			got := lines(ircChars(out, nil))
			if !reflect.DeepEqual(got, want) {
				t.Errorf("in   %q\nhtml %q\nout  %q", short(in), short(h), short(out))
			}
		})
	}
}

func diff(want, got []styledChar) string {
	for i := 0; i < len(want) || i < len(got); i++ {
		switch {
		case i >= len(want):
			return fmt.Sprintf("extra at %d: %v", i, got[i])
		case i >= len(got):
			return fmt.Sprintf("missing at %d: %v", i, want[i])
		case want[i] != got[i]:
			return fmt.Sprintf("at %d: got %v, want %v", i, got[i], want[i])
		}
	}
	return ""
}

// short keeps failure messages about long inputs readable.
func short(s string) string {
	if len(s) > 300 {
		return s[:300] + "…"
	}
	return s
}
