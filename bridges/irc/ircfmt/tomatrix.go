package ircfmt

import (
	"regexp"
	"strings"
	"unicode/utf8"

	"github.com/switchboard-im/switchboard/framework/format"
)

// mIRC formatting codes.
const (
	codeBold          = '\x02'
	codeColour        = '\x03'
	codeHexColour     = '\x04'
	codeReset         = '\x0F'
	codeMonospace     = '\x11'
	codeReverse       = '\x16'
	codeItalic        = '\x1D'
	codeStrikethrough = '\x1E'
	codeUnderline     = '\x1F'
)

// style is the formatting in force at one point of an IRC line.
type style struct {
	bold, italic, underline, strike, mono, reverse bool
	fg, bg                                         string // "#rrggbb", or "" for the client's default
}

// colours are the colours a reader sees: reverse swaps them. Reverse
// without colours swaps the client's defaults, which a Matrix client has
// no way to express (it does not know the IRC client's theme), so it shows
// as nothing.
func (s style) colours() (fg, bg string) {
	if s.reverse {
		return s.bg, s.fg
	}
	return s.fg, s.bg
}

// visible reports whether text in this style looks different from plain
// text.
func (s style) visible() bool {
	fg, bg := s.colours()
	return s.bold || s.italic || s.underline || s.strike || s.mono || fg != "" || bg != ""
}

// run is a stretch of text in one style.
type run struct {
	text  string
	style style
}

// ToMatrix converts an IRC message into the body and formatted_body of a
// Matrix message. body is the text with every control code removed; html
// is "" when the text has no visible formatting, so that plain messages
// stay plain (Matrix clients linkify URLs in a plain body themselves).
// Otherwise html uses only the tags and attributes the Matrix spec permits
// (strong, em, u, del, code, span with data-mx-color and data-mx-bg-color,
// a with an http, https or ftp href, br), with URLs linkified, and is
// already sanitised: framework/format.Sanitize leaves it unchanged.
//
// The text is expected to be UTF-8 (the bridge decodes the network's
// charset first); invalid bytes become U+FFFD. Line feeds, which IRC lines
// cannot contain but joined lines can, end the formatting as the end of an
// IRC line does and become <br>. Control characters other than the
// formatting codes, tab and line feed are dropped: they have no meaning in
// Matrix, and \x01 would be CTCP.
func ToMatrix(text string) (body, html string) {
	runs := parseIRC(text)
	var b strings.Builder
	formatted := false
	for _, r := range runs {
		b.WriteString(r.text)
		formatted = formatted || r.style.visible()
	}
	body = b.String()
	if !formatted {
		return body, ""
	}

	links := findLinks(body)
	var w htmlWriter
	w.out.Grow(len(body) * 2)
	pos, next := 0, 0 // byte offset in body; first link not yet behind pos
	for _, r := range runs {
		for t := r.text; t != ""; {
			for next < len(links) && links[next].end <= pos {
				next++
			}
			n, href := len(t), ""
			if next < len(links) {
				if l := links[next]; pos < l.start {
					n = min(n, l.start-pos)
				} else {
					n, href = min(n, l.end-pos), l.href
				}
			}
			w.write(t[:n], r.style, href)
			t, pos = t[n:], pos+n
		}
	}
	w.closeTo(0)
	return body, w.out.String()
}

// Strip removes every IRC formatting code (and any other control
// character but tab and line feed) from text: the plain text an IRC user
// reads, for places that take no formatting, such as room topics and
// names.
func Strip(text string) string {
	body, _ := ToMatrix(text)
	return body
}

// parseIRC splits an IRC line into runs of text in one style, dropping
// the codes. Runs are never empty.
func parseIRC(text string) []run {
	text = strings.ToValidUTF8(text, "\uFFFD")
	var (
		runs []run
		cur  style
		buf  strings.Builder
	)
	flush := func() {
		if buf.Len() > 0 {
			runs = append(runs, run{buf.String(), cur})
			buf.Reset()
		}
	}
	set := func(s style) {
		if s != cur {
			flush()
			cur = s
		}
	}
	for i := 0; i < len(text); {
		c := text[i]
		i++
		s := cur
		switch c {
		case codeBold:
			s.bold = !s.bold
		case codeItalic:
			s.italic = !s.italic
		case codeUnderline:
			s.underline = !s.underline
		case codeStrikethrough:
			s.strike = !s.strike
		case codeMonospace:
			s.mono = !s.mono
		case codeReverse:
			s.reverse = !s.reverse
		case codeReset:
			s = style{}
		case codeColour:
			i = parseColour(text, i, &s)
		case codeHexColour:
			i = parseHexColour(text, i, &s)
		case '\r', '\n':
			// Formatting ends with the line. A CR LF pair is one line end.
			if c == '\r' && i < len(text) && text[i] == '\n' {
				i++
			}
			set(style{})
			buf.WriteByte('\n')
			continue
		case '\t':
			buf.WriteByte(c)
			continue
		default:
			if c >= 0x20 && c != 0x7F {
				buf.WriteByte(c)
			}
			continue
		}
		set(s)
	}
	flush()
	return runs
}

// parseColour reads the arguments of \x03 starting at text[i]: up to two
// digits of foreground, then, only if a comma is followed by a digit, up to
// two digits of background. \x03 without digits resets both colours; 99
// is the default colour. A comma that is not followed by a digit is text.
func parseColour(text string, i int, s *style) int {
	fg, n := readNumber(text, i)
	if n == 0 {
		s.fg, s.bg = "", ""
		return i
	}
	i += n
	s.fg = paletteHex(fg)
	if i+1 < len(text) && text[i] == ',' && isDigit(text[i+1]) {
		bg, n := readNumber(text, i+1)
		s.bg = paletteHex(bg)
		i += 1 + n
	}
	return i
}

// parseHexColour reads the arguments of \x04: six hex digits of
// foreground, then, if a comma is followed by six hex digits, the
// background. \x04 without six hex digits resets both colours.
func parseHexColour(text string, i int, s *style) int {
	fg, ok := readHex(text, i)
	if !ok {
		s.fg, s.bg = "", ""
		return i
	}
	s.fg = fg
	i += 6
	if i < len(text) && text[i] == ',' {
		if bg, ok := readHex(text, i+1); ok {
			s.bg = bg
			i += 7
		}
	}
	return i
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

func isHexDigit(c byte) bool {
	return isDigit(c) || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

// readNumber reads one or two decimal digits at text[i].
func readNumber(text string, i int) (value, n int) {
	for n < 2 && i+n < len(text) && isDigit(text[i+n]) {
		value = value*10 + int(text[i+n]-'0')
		n++
	}
	return value, n
}

// readHex reads six hex digits at text[i] as "#rrggbb".
func readHex(text string, i int) (string, bool) {
	if i+6 > len(text) {
		return "", false
	}
	for j := i; j < i+6; j++ {
		if !isHexDigit(text[j]) {
			return "", false
		}
	}
	return "#" + strings.ToLower(text[i:i+6]), true
}

// paletteHex is the colour of an mIRC colour number, "" for 99 (default).
func paletteHex(n int) string {
	if n < len(palette) {
		return palette[n]
	}
	return ""
}

// link is a URL found in the body, by byte offsets.
type link struct {
	start, end int
	href       string
}

// urlPattern finds what people paste as links: absolute http, https and
// ftp URLs, and www. addresses. It stops at white space and at the
// characters that cannot appear in a URL unescaped and that surround URLs
// in text ("<https://…>", "\"https://…\"").
var urlPattern = regexp.MustCompile(`(?i)\b(?:(?:https?|ftp)://|www\.)[^\s\p{Z}<>"]+`)

// findLinks returns the URLs in text, in order. Punctuation at the end of
// a match belongs to the sentence, not the URL ("see https://x.org/."),
// and so does a closing bracket without its opening one
// ("(https://x.org/a)"), while "https://en.wikipedia.org/wiki/Go_(game)"
// keeps its own.
func findLinks(text string) []link {
	var links []link
	for _, m := range urlPattern.FindAllStringIndex(text, -1) {
		u := text[m[0]:m[1]]
		www := strings.HasPrefix(strings.ToLower(u), "www.")
		prefix := len("www.")
		if !www {
			prefix = strings.Index(u, "://") + len("://")
		}
		if u = trimURLEnd(u); len(u) <= prefix {
			continue // nothing after the scheme
		}
		href := u
		if www {
			href = "https://" + u
		}
		links = append(links, link{m[0], m[0] + len(u), href})
	}
	return links
}

func trimURLEnd(u string) string {
	for u != "" {
		last, size := utf8.DecodeLastRuneInString(u)
		var open rune
		switch last {
		case '.', ',', ':', ';', '!', '?', '\'', '*':
			u = u[:len(u)-size]
			continue
		case ')':
			open = '('
		case ']':
			open = '['
		case '}':
			open = '{'
		default:
			return u
		}
		if strings.Count(u, string(open)) >= strings.Count(u, string(last)) {
			return u
		}
		u = u[:len(u)-size]
	}
	return u
}

// htmlWriter writes runs as HTML, keeping a stack of open tags. Tags are
// always opened in the same order (a, colour, strong, em, u, del, code),
// so a change of style closes only the tags from the first one that
// differs, and the output is well-formed by construction. The link is
// outermost so that a change of style inside a URL never splits it into
// two links.
type htmlWriter struct {
	out  strings.Builder
	open []string // start tags, outermost first
}

// tagsFor returns the start tags for text in style s inside a link to
// href ("" outside links). The strings are what is written and what is
// compared.
func tagsFor(s style, href string) []string {
	tags := make([]string, 0, 7)
	if href != "" {
		var b strings.Builder
		b.WriteString(`<a href="`)
		format.WriteEscaped(&b, href, true)
		b.WriteString(`">`)
		tags = append(tags, b.String())
	}
	if fg, bg := s.colours(); fg != "" || bg != "" {
		var b strings.Builder
		b.WriteString("<span")
		if fg != "" {
			b.WriteString(` data-mx-color="` + fg + `"`)
		}
		if bg != "" {
			b.WriteString(` data-mx-bg-color="` + bg + `"`)
		}
		b.WriteByte('>')
		tags = append(tags, b.String())
	}
	for _, t := range []struct {
		on  bool
		tag string
	}{
		{s.bold, "<strong>"},
		{s.italic, "<em>"},
		{s.underline, "<u>"},
		{s.strike, "<del>"},
		{s.mono, "<code>"},
	} {
		if t.on {
			tags = append(tags, t.tag)
		}
	}
	return tags
}

func (w *htmlWriter) write(text string, s style, href string) {
	want := tagsFor(s, href)
	same := 0
	for same < len(want) && same < len(w.open) && want[same] == w.open[same] {
		same++
	}
	w.closeTo(same)
	for _, t := range want[same:] {
		w.out.WriteString(t)
		w.open = append(w.open, t)
	}
	for {
		line, rest, found := strings.Cut(text, "\n")
		format.WriteEscaped(&w.out, line, false)
		if !found {
			return
		}
		w.out.WriteString("<br>")
		text = rest
	}
}

// closeTo closes open tags until n remain.
func (w *htmlWriter) closeTo(n int) {
	for len(w.open) > n {
		t := w.open[len(w.open)-1]
		w.open = w.open[:len(w.open)-1]
		name, _, _ := strings.Cut(t[1:len(t)-1], " ")
		w.out.WriteString("</" + name + ">")
	}
}
