package ircfmt

import (
	"strconv"
	"strings"

	"golang.org/x/net/html"
	"golang.org/x/net/html/atom"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/switchboard-im/switchboard/framework/format"
)

// Options says how FromMatrix writes what IRC has no direct form for.
// The zero value is usable: pills become their labels, code is monospace,
// colours map to the 16 classic mIRC colours.
type Options struct {
	// Pill writes a mention of a Matrix user (a link to
	// https://matrix.to/#/@user:server or matrix:u/user:server); label is
	// the pill's text, usually the display name. The bridge maps the user
	// to the nick IRC knows them by. Without it the label is written (the
	// user ID if the label is empty).
	Pill func(userID id.UserID, label string) string

	// RoomPill writes a link to a room alias; the bridge can map an alias
	// of a portal to its IRC channel. Without it the alias is written.
	RoomPill func(alias id.RoomAlias, label string) string

	// NoMonospace writes code as plain text instead of in \x11
	// (monospace), for networks whose clients show \x11 as garbage.
	NoMonospace bool

	// ExtendedColours maps Matrix colours onto all 99 mIRC colours
	// instead of the 16 classic ones that every IRC client shows.
	ExtendedColours bool
}

// FromMatrix converts the text of a Matrix message into IRC text with
// mIRC formatting codes. It uses formatted_body when format is
// org.matrix.custom.html and body otherwise. Lines are separated by "\n"
// and each line carries its own formatting codes, so the caller can send
// every line as its own message; the output never contains \r or \x00, nor
// any other control character but \n, \t and the formatting codes.
//
// The HTML is sanitised with framework/format.Sanitize first, which drops
// the reply fallback (mx-reply), scripts and styles and bounds nesting.
// Then:
//
//	<strong>, <b>                        \x02 bold
//	<em>, <i>                            \x1D italic
//	<u>                                  \x1F underline
//	<del>, <s>, <strike>                 \x1E strikethrough
//	<code> (not in <pre>)                \x11 monospace, or plain with NoMonospace
//	<span>/<font> data-mx-color,
//	  data-mx-bg-color, color            \x03 with the nearest mIRC colour
//	<span data-mx-spoiler>               black on black (\x0301,01), IRC's spoiler
//	<a href="URL">label</a>              "label <URL>"; just the label when it is the URL
//	                                       (with or without the scheme)
//	user pill (matrix.to / matrix:u)     Options.Pill(userID, label)
//	room alias pill                      Options.RoomPill(alias, label), else the alias
//	<h1>…<h6>                            a bold line
//	<p>, <div>, <br>                     line breaks
//	<ul>/<ol> <li>                       "- item" / "1. item", nested lists indented
//	<blockquote>                         lines prefixed with "> "
//	<pre>                                lines as they are, without formatting codes
//	<hr>                                 "---"
//	<table>                              a line per row, " | " between cells
//	<img>                                its alt text (media is the caller's)
//
// Entities are decoded; white space is read as a browser reads it,
// except that runs of spaces are kept.
func FromMatrix(content *event.MessageEventContent, opts Options) string {
	if content == nil {
		return ""
	}
	if content.Format == event.FormatHTML && content.FormattedBody != "" {
		// HTML that shows nothing IRC can show (an image without alt
		// text, say) falls back to the body rather than sending nothing.
		if text, ok := htmlToIRC(content.FormattedBody, opts); ok && text != "" {
			return text
		}
	}
	body := content.Body
	if content.RelatesTo.GetReplyTo() != "" {
		body = event.TrimReplyFallbackText(body)
	}
	body = strings.ReplaceAll(body, "\r\n", "\n")
	body = strings.ReplaceAll(body, "\r", "\n")
	return strings.ToValidUTF8(dropControls(body), "\uFFFD")
}

// htmlToIRC converts formatted_body; ok is false if it cannot be parsed.
func htmlToIRC(formatted string, opts Options) (string, bool) {
	clean := format.Sanitize(formatted)
	context := &html.Node{Type: html.ElementNode, Data: "body", DataAtom: atom.Body}
	nodes, err := html.ParseFragment(strings.NewReader(clean), context)
	if err != nil {
		return "", false
	}
	c := converter{opts: opts, emitted: noStyle}
	for _, n := range nodes {
		c.walk(n, noStyle)
	}
	c.trimLineEnd()
	return strings.ToValidUTF8(string(c.out), "\uFFFD"), true
}

// ircStyle is the formatting wanted for, or already set at, a point of the
// output.
type ircStyle struct {
	bold, italic, underline, strike, mono bool
	fg, bg                                int // mIRC colour number, -1 for none
}

var noStyle = ircStyle{fg: -1, bg: -1}

// count is how many things are set: a measure of what a reset saves.
func (s ircStyle) count() int {
	n := 0
	for _, on := range []bool{s.bold, s.italic, s.underline, s.strike, s.mono, s.fg >= 0 || s.bg >= 0} {
		if on {
			n++
		}
	}
	return n
}

// linePrefix is written at the start of every line inside a blockquote or
// list item: first on the first line, rest on the others.
type linePrefix struct {
	first, rest string
	used        bool
}

// list counts the items of an open list.
type list struct {
	ordered bool
	next    int
}

// absorb says what the colour code just written would take from the text
// that follows as its own arguments.
type absorb int

const (
	absorbNothing absorb = iota
	absorbDigits         // a bare \x03 takes digits (and some clients a comma)
	absorbComma          // \x03NN takes ",NN"
)

type converter struct {
	opts    Options
	out     []byte
	emitted ircStyle // what the codes written so far on this line have set
	absorb  absorb
	keep    int // length of out up to the last character that is not white space

	// Line breaks are written lazily, when text follows them, so that
	// empty blocks and trailing breaks leave no empty lines.
	pendingBreak    bool // a block boundary: a line break unless at a line start already
	pendingNewlines int  // explicit line breaks (<br>, new lines in <pre>)

	prefixes []*linePrefix
	lists    []*list
	pre      int // depth of <pre>
}

func (c *converter) atLineStart() bool {
	return len(c.out) == 0 || c.out[len(c.out)-1] == '\n'
}

func (c *converter) children(n *html.Node, st ircStyle) {
	for ch := n.FirstChild; ch != nil; ch = ch.NextSibling {
		c.walk(ch, st)
	}
}

func (c *converter) block(n *html.Node, st ircStyle) {
	c.pendingBreak = true
	c.children(n, st)
	c.pendingBreak = true
}

func (c *converter) walk(n *html.Node, st ircStyle) {
	switch n.Type {
	case html.TextNode:
		c.text(n.Data, st)
		return
	case html.ElementNode, html.DocumentNode:
	default:
		return // comments, doctypes
	}
	switch n.DataAtom {
	case atom.B, atom.Strong:
		st.bold = true
	case atom.I, atom.Em:
		st.italic = true
	case atom.U:
		st.underline = true
	case atom.Del, atom.S, atom.Strike:
		st.strike = true
	case atom.Code, atom.Tt:
		st.mono = !c.opts.NoMonospace
	case atom.Span, atom.Font:
		c.colour(n, &st)
	case atom.A:
		c.link(n, st)
		return
	case atom.Img:
		alt, ok := attr(n, "alt")
		if !ok {
			alt, _ = attr(n, "title")
		}
		c.text(alt, st)
		return
	case atom.Br:
		c.pendingNewlines++
		return
	case atom.Hr:
		c.pendingBreak = true
		c.text("---", noStyle)
		c.pendingBreak = true
		return
	case atom.H1, atom.H2, atom.H3, atom.H4, atom.H5, atom.H6:
		st.bold = true
		c.block(n, st)
		return
	case atom.Blockquote:
		c.prefixes = append(c.prefixes, &linePrefix{first: "> ", rest: "> "})
		c.block(n, st)
		c.prefixes = c.prefixes[:len(c.prefixes)-1]
		return
	case atom.Ul, atom.Ol:
		l := &list{ordered: n.DataAtom == atom.Ol, next: 1}
		if start, ok := attr(n, "start"); ok {
			if v, err := strconv.Atoi(start); err == nil {
				l.next = v
			}
		}
		c.lists = append(c.lists, l)
		c.block(n, st)
		c.lists = c.lists[:len(c.lists)-1]
		return
	case atom.Li:
		marker := "- "
		if len(c.lists) > 0 {
			if l := c.lists[len(c.lists)-1]; l.ordered {
				marker = strconv.Itoa(l.next) + ". "
				l.next++
			}
		}
		c.prefixes = append(c.prefixes, &linePrefix{first: marker, rest: strings.Repeat(" ", len(marker))})
		c.block(n, st)
		c.prefixes = c.prefixes[:len(c.prefixes)-1]
		return
	case atom.Pre:
		c.pendingBreak = true
		c.pre++
		c.children(n, st)
		c.pre--
		// The new line that ends the last line of a code block is not an
		// empty line after it.
		c.pendingNewlines = 0
		c.pendingBreak = true
		return
	case atom.Td, atom.Th:
		for s := n.PrevSibling; s != nil; s = s.PrevSibling {
			if s.DataAtom == atom.Td || s.DataAtom == atom.Th {
				c.text(" | ", noStyle)
				break
			}
		}
	case atom.P, atom.Div, atom.Table, atom.Tr, atom.Caption, atom.Details, atom.Summary:
		c.block(n, st)
		return
	}
	c.children(n, st)
}

// colour applies the colours of a span (font is a span after Sanitize).
func (c *converter) colour(n *html.Node, st *ircStyle) {
	if _, ok := attr(n, "data-mx-spoiler"); ok {
		st.fg, st.bg = 1, 1
		return
	}
	if v, ok := attr(n, "data-mx-color"); ok {
		if col, ok := nearestColour(v, c.opts.ExtendedColours); ok {
			st.fg = col
		}
	}
	if v, ok := attr(n, "data-mx-bg-color"); ok {
		if col, ok := nearestColour(v, c.opts.ExtendedColours); ok {
			st.bg = col
		}
	}
}

// link writes an <a>: a pill as what the bridge calls the user or room, a
// link as its label followed by its URL, unless the label already is the
// URL.
func (c *converter) link(n *html.Node, st ircStyle) {
	href, _ := attr(n, "href")
	label := strings.Join(strings.Fields(textContent(n)), " ")
	if uri, err := id.ParseMatrixURIOrMatrixToURL(href); err == nil && uri.Sigil2 == 0 {
		switch uri.Sigil1 {
		case '@':
			userID := uri.UserID()
			if _, _, err := userID.Parse(); err == nil {
				switch {
				case c.opts.Pill != nil:
					c.text(c.opts.Pill(userID, label), st)
				case label != "":
					c.text(label, st)
				default:
					c.text(string(userID), st)
				}
				return
			}
		case '#':
			alias := uri.RoomAlias()
			if c.opts.RoomPill != nil {
				c.text(c.opts.RoomPill(alias, label), st)
			} else {
				c.text(string(alias), st)
			}
			return
		}
	}
	switch {
	case href == "":
		c.children(n, st)
	case label == "":
		c.text(href, st)
	case sameURL(label, href), sameURL(label, stripScheme(href)):
		// The label is the URL, or the URL without its scheme: what a
		// client shows for a linkified "example.org" or "www.example.org",
		// or "a@example.org" linking to mailto:a@example.org.
		c.children(n, st)
	default:
		c.children(n, st)
		c.text(" <"+href+">", st)
	}
}

func sameURL(a, b string) bool {
	return strings.TrimSuffix(a, "/") == strings.TrimSuffix(b, "/")
}

func stripScheme(u string) string {
	if scheme, rest, ok := strings.Cut(u, ":"); ok {
		if strings.EqualFold(scheme, "mailto") {
			return rest
		}
		return strings.TrimPrefix(rest, "//")
	}
	return u
}

func attr(n *html.Node, key string) (string, bool) {
	for _, a := range n.Attr {
		if a.Namespace == "" && a.Key == key {
			return a.Val, true
		}
	}
	return "", false
}

func textContent(n *html.Node) string {
	var b strings.Builder
	var walk func(*html.Node)
	walk = func(n *html.Node) {
		if n.Type == html.TextNode {
			b.WriteString(n.Data)
		}
		for ch := n.FirstChild; ch != nil; ch = ch.NextSibling {
			walk(ch)
		}
	}
	walk(n)
	return b.String()
}

// text writes the text of a text node (or text made for one) in style st.
func (c *converter) text(s string, st ircStyle) {
	s = dropControls(s)
	if c.pre > 0 {
		s = strings.ReplaceAll(s, "\r\n", "\n")
		s = strings.ReplaceAll(s, "\r", "\n")
		for i, line := range strings.Split(s, "\n") {
			if i > 0 {
				c.pendingNewlines++
			}
			if line != "" {
				c.emit(line, noStyle)
			}
		}
		return
	}
	s = joinLines(s)
	if c.atLineStart() || c.pendingBreak || c.pendingNewlines > 0 {
		// A browser shows no white space at the start of a line.
		s = strings.TrimLeft(s, " \t")
	}
	if s != "" {
		c.emit(s, st)
	}
}

// emit writes text that is not empty, after the line breaks waiting for
// it, the line's prefixes and the codes that give it style st.
func (c *converter) emit(s string, st ircStyle) {
	if c.pendingBreak {
		if !c.atLineStart() && c.pendingNewlines == 0 {
			c.pendingNewlines = 1
		}
		c.pendingBreak = false
	}
	if len(c.out) == 0 {
		c.pendingNewlines = 0
	}
	for ; c.pendingNewlines > 0; c.pendingNewlines-- {
		c.newline()
	}
	if c.atLineStart() {
		for _, p := range c.prefixes {
			if p.used {
				c.out = append(c.out, p.rest...)
			} else {
				c.out = append(c.out, p.first...)
				p.used = true
			}
		}
	}
	c.sync(st)
	if c.absorb == absorbDigits && (isDigit(s[0]) || s[0] == ',') ||
		c.absorb == absorbComma && s[0] == ',' {
		// Two bold codes cancel out and end the colour code's arguments.
		c.out = append(c.out, codeBold, codeBold)
	}
	c.absorb = absorbNothing
	c.out = append(c.out, s...)
	if shown := len(strings.TrimRight(s, " \t")); shown > 0 {
		c.keep = len(c.out) - len(s) + shown
	}
}

// newline ends the line. The next line is a new IRC message, which starts
// without formatting.
func (c *converter) newline() {
	c.trimLineEnd()
	c.out = append(c.out, '\n')
	c.keep = len(c.out)
	c.emitted = noStyle
	c.absorb = absorbNothing
}

// trimLineEnd removes what no one sees at the end of a line: white space,
// and the codes written before it.
func (c *converter) trimLineEnd() {
	c.out = c.out[:c.keep]
}

// sync writes the codes that change the style in force from c.emitted to
// want. Colours come first, so that a formatting code after them ends
// their arguments.
func (c *converter) sync(want ircStyle) {
	have := c.emitted
	if want == have {
		return
	}
	if want == noStyle && have.count() > 1 {
		c.out = append(c.out, codeReset)
		c.emitted, c.absorb = noStyle, absorbNothing
		return
	}
	if want.fg != have.fg || want.bg != have.bg {
		if want.fg < 0 && have.fg >= 0 || want.bg < 0 && have.bg >= 0 {
			// Only a bare \x03 unsets a colour.
			c.out = append(c.out, codeColour)
			have.fg, have.bg = -1, -1
			c.absorb = absorbDigits
		}
		if want.fg != have.fg || want.bg != have.bg {
			fg := want.fg
			if fg < 0 {
				fg = defaultColour
			}
			c.out = append(c.out, codeColour)
			c.out = appendTwoDigits(c.out, fg)
			c.absorb = absorbComma
			if want.bg != have.bg {
				c.out = append(c.out, ',')
				c.out = appendTwoDigits(c.out, want.bg)
				c.absorb = absorbNothing
			}
		}
	}
	for _, t := range []struct {
		want, have bool
		code       byte
	}{
		{want.bold, have.bold, codeBold},
		{want.italic, have.italic, codeItalic},
		{want.underline, have.underline, codeUnderline},
		{want.strike, have.strike, codeStrikethrough},
		{want.mono, have.mono, codeMonospace},
	} {
		if t.want != t.have {
			c.out = append(c.out, t.code)
			c.absorb = absorbNothing
		}
	}
	c.emitted = want
}

// appendTwoDigits writes a colour number as two digits, so that text
// starting with a digit is not read as part of it.
func appendTwoDigits(b []byte, n int) []byte {
	return append(b, byte('0'+n/10), byte('0'+n%10))
}

// joinLines reads white space that holds a line break as a browser does:
// as one space. Line breaks in HTML source are formatting, not text.
func joinLines(s string) string {
	if !strings.ContainsAny(s, "\n\r") {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		if !isSpace(s[i]) {
			b.WriteByte(s[i])
			i++
			continue
		}
		j := i
		for j < len(s) && isSpace(s[j]) {
			j++
		}
		if run := s[i:j]; strings.ContainsAny(run, "\n\r") {
			b.WriteByte(' ')
		} else {
			b.WriteString(run)
		}
		i = j
	}
	return b.String()
}

func isSpace(c byte) bool {
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f'
}

// dropControls removes the C0 control characters (and DEL) other than tab,
// line feed and carriage return: formatting codes a Matrix user typed, NUL,
// and \x01, which would make the message a CTCP request.
func dropControls(s string) string {
	keep := func(c byte) bool { return c >= 0x20 && c != 0x7F || c == '\t' || c == '\n' || c == '\r' }
	i := 0
	for i < len(s) && keep(s[i]) {
		i++
	}
	if i == len(s) {
		return s
	}
	b := []byte(s[:i])
	for ; i < len(s); i++ {
		if keep(s[i]) {
			b = append(b, s[i])
		}
	}
	return string(b)
}
