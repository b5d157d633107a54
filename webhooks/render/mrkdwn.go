package render

import (
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// This file converts Slack mrkdwn, the text format of Slack messages.

// maxSource bounds text before conversion. A message ends up far smaller
// (see DefaultMaxSize); this only keeps the work on a huge payload small.
const maxSource = 64 * 1024

func capSource(s string) string {
	if len(s) <= maxSource {
		return s
	}
	cut := maxSource
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + ellipsis
}

// mrkdwn converts Slack mrkdwn to HTML: *bold*, _italic_, ~strike~,
// `code`, ```preformatted```, "> " and ">>> " quotes, line breaks, the
// &amp; &lt; &gt; escapes, emoji shortcodes, and the <…> sequences for
// links, mentions and dates (see control). With formatting false (the
// payload's "mrkdwn": false) only the escapes, sequences and emoji
// convert, as in Slack.
func (t *slackRenderer) mrkdwn(s string, formatting bool) string {
	// Slack drops blank lines and spaces around a message.
	s = strings.TrimRight(strings.TrimLeft(capSource(s), "\n"), " \t\n")
	if !formatting {
		lines := strings.Split(s, "\n")
		for i, line := range lines {
			lines[i] = t.inline(line, false)
		}
		return strings.Join(lines, "<br>")
	}
	var b strings.Builder
	for s != "" {
		// A fence opens a code block anywhere in a line, and the next
		// fence closes it; without one it is text.
		open := strings.Index(s, "```")
		if open < 0 {
			b.WriteString(t.lines(s))
			break
		}
		length := strings.Index(s[open+3:], "```")
		if length < 0 {
			b.WriteString(t.lines(s))
			break
		}
		b.WriteString(t.lines(strings.TrimSuffix(s[:open], "\n")))
		code := s[open+3 : open+3+length]
		code = strings.TrimSuffix(strings.TrimPrefix(code, "\n"), "\n")
		b.WriteString("<pre><code>" + esc(t.plain(code)) + "</code></pre>")
		s = strings.TrimPrefix(s[open+3+length+3:], "\n")
	}
	return b.String()
}

// lines converts text outside code blocks: lines, with runs of quoted
// lines as a blockquote.
func (t *slackRenderer) lines(s string) string {
	var b strings.Builder
	var quote []string
	needBreak := false
	flush := func() {
		if quote != nil {
			b.WriteString("<blockquote>" + strings.Join(quote, "<br>") + "</blockquote>")
			quote, needBreak = nil, false
		}
	}
	lines := strings.Split(s, "\n")
	for i, line := range lines {
		if rest, ok := cutQuoteMarker(line, 3); ok {
			// ">>>" quotes the rest of the text.
			flush()
			quote = []string{t.inline(rest, true)}
			for _, l := range lines[i+1:] {
				quote = append(quote, t.inline(l, true))
			}
			break
		}
		if rest, ok := cutQuoteMarker(line, 1); ok {
			quote = append(quote, t.inline(rest, true))
			continue
		}
		flush()
		if needBreak {
			b.WriteString("<br>")
		}
		b.WriteString(t.inline(line, true))
		needBreak = true
	}
	flush()
	return b.String()
}

// cutQuoteMarker removes n quote markers (">", or "&gt;" as Slack asks
// senders to escape it) and one following space from the start of line.
func cutQuoteMarker(line string, n int) (string, bool) {
	for range n {
		switch {
		case strings.HasPrefix(line, ">"):
			line = line[1:]
		case strings.HasPrefix(line, "&gt;"):
			line = line[4:]
		default:
			return "", false
		}
	}
	return strings.TrimPrefix(line, " "), true
}

// atom is one unit of a line for emphasis: a character, or something
// already converted (a code span, link, mention or emoji) that emphasis
// markers cannot look into.
type atom struct {
	r    rune
	html string
}

func (a atom) isSpace() bool { return a.html == "" && unicode.IsSpace(a.r) }
func (a atom) isWord() bool {
	return a.html == "" && (unicode.IsLetter(a.r) || unicode.IsDigit(a.r))
}

// inline converts one line.
func (t *slackRenderer) inline(line string, formatting bool) string {
	var atoms []atom
	tick := finder{s: line, c: '`', at: -1}
	angle := finder{s: line, c: '>', at: -1}
	for i := 0; i < len(line); {
		switch line[i] {
		case '`':
			if j := tick.from(i + 1); formatting && j > i+1 {
				atoms = append(atoms, atom{html: "<code>" + esc(t.plain(line[i+1:j])) + "</code>"})
				i = j + 1
				continue
			}
		case '<':
			if j := angle.from(i + 1); j > i+1 {
				if h, _, ok := t.control(line[i+1:j], false); ok {
					atoms = append(atoms, atom{html: h})
					i = j + 1
					continue
				}
			}
		case '&':
			if r, n := entityAt(line[i:]); n > 0 {
				atoms = append(atoms, atom{r: r})
				i += n
				continue
			}
		case ':':
			if e, n := shortcodeAt(line[i:]); n > 0 {
				atoms = append(atoms, atom{html: e})
				i += n
				continue
			}
		}
		r, size := utf8.DecodeRuneInString(line[i:])
		atoms = append(atoms, atom{r: r})
		i += size
	}
	if !formatting {
		var b strings.Builder
		(&emphasis{atoms: atoms}).write(&b, 0, len(atoms), 0)
		return b.String()
	}
	e := &emphasis{atoms: atoms}
	for i := range atoms {
		if k := markerKind(atoms[i]); k >= 0 && e.canClose(i) {
			e.closers[k] = append(e.closers[k], i)
		}
	}
	var b strings.Builder
	e.write(&b, 0, len(atoms), allMarkers)
	return b.String()
}

// plain converts text where Slack shows no formatting (code): the escapes
// and <…> sequences become the text they stand for.
func (t *slackRenderer) plain(s string) string {
	var b strings.Builder
	angle := finder{s: s, c: '>', at: -1}
	for i := 0; i < len(s); {
		switch s[i] {
		case '<':
			if j := angle.from(i + 1); j > i+1 {
				if _, text, ok := t.control(s[i+1:j], true); ok {
					b.WriteString(text)
					i = j + 1
					continue
				}
			}
		case '&':
			if r, n := entityAt(s[i:]); n > 0 {
				b.WriteRune(r)
				i += n
				continue
			}
		}
		b.WriteByte(s[i])
		i++
	}
	return b.String()
}

// finder finds the next c in s at or after a position that only grows, in
// linear time overall: a line of many unmatched '<' must not be read once
// per '<'.
type finder struct {
	s  string
	c  byte
	at int // the next c at or after the last query, len(s) if none, -1 before the first
}

func (f *finder) from(i int) int {
	if f.at < i && f.at != len(f.s) {
		if j := strings.IndexByte(f.s[i:], f.c); j >= 0 {
			f.at = i + j
		} else {
			f.at = len(f.s)
		}
	}
	if f.at >= len(f.s) {
		return -1
	}
	return f.at
}

// entityAt reads one of the three escapes Slack uses at the start of s.
func entityAt(s string) (rune, int) {
	switch {
	case strings.HasPrefix(s, "&amp;"):
		return '&', 5
	case strings.HasPrefix(s, "&lt;"):
		return '<', 4
	case strings.HasPrefix(s, "&gt;"):
		return '>', 4
	}
	return 0, 0
}

var entityDecoder = strings.NewReplacer("&amp;", "&", "&lt;", "<", "&gt;", ">")

// control converts the inside of a <…> sequence: <url>, <url|label>,
// <@U123>, <@U123|name>, <#C123|name>, <!here>, <!channel>, <!everyone>,
// <!subteam^S123|@team>, <!date^ts^format|fallback>. Slack IDs mean
// nothing outside the workspace, so a mention without a name shows the
// ID. In code (inCode) a room mention is only text and notifies nobody,
// as in Slack. ok is false for anything else, which stays literal text.
func (t *slackRenderer) control(s string, inCode bool) (html, text string, ok bool) {
	if s == "" {
		return "", "", false
	}
	body, label, _ := strings.Cut(s, "|")
	label = emojify(entityDecoder.Replace(label))
	switch s[0] {
	case '@', '#':
		id := body[1:]
		if id == "" {
			return "", "", false
		}
		text = string(s[0]) + strings.TrimPrefix(firstOf(label, id), string(s[0]))
	case '!':
		cmd, arg, _ := strings.Cut(body[1:], "^")
		switch cmd {
		case "here", "channel", "everyone", "group":
			if inCode {
				text = "@" + cmd
				break
			}
			t.roomMention = true
			text = "@room"
		case "date":
			text = slackDate(arg, label)
		case "subteam":
			text = "@" + strings.TrimPrefix(firstOf(label, arg), "@")
		default:
			if cmd == "" {
				return "", "", false
			}
			text = firstOf(label, "@"+cmd)
		}
	default:
		// A link needs a scheme, or a label: Slack's own examples write
		// <fakeLink.toEmployeeProfile.com|Fred Enriquez>, which shows the
		// label (link drops an href that is not an absolute URL).
		if !hasScheme(body) && label == "" {
			return "", "", false
		}
		href := entityDecoder.Replace(body)
		text = firstOf(label, href)
		return link(href, esc(text)), text, true
	}
	return esc(text), text, true
}

// hasScheme reports whether s starts like an absolute URI ("https:",
// "mailto:"); "<b>" or "< 3 >" do not.
func hasScheme(s string) bool {
	i := strings.IndexByte(s, ':')
	if i < 1 {
		return false
	}
	for j, c := range []byte(s[:i]) {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || j > 0 && ('0' <= c && c <= '9' || c == '+' || c == '-' || c == '.')) {
			return false
		}
	}
	return true
}

func firstOf(values ...string) string {
	for _, v := range values {
		if v != "" {
			return v
		}
	}
	return ""
}

// slackDate shows a Slack date: the sender's fallback text if there is
// one (Slack would show the date in the reader's time zone, which a
// Matrix message cannot), or else the format's tokens, in UTC.
// arg is "timestamp^format" with an optional "^link".
func slackDate(arg, fallback string) string {
	if fallback != "" {
		return fallback
	}
	tsText, layout, _ := strings.Cut(arg, "^")
	layout, _, _ = strings.Cut(layout, "^")
	ts, err := strconv.ParseInt(tsText, 10, 64)
	if err != nil {
		return layout
	}
	return formatSlackDate(ts, layout)
}

// formatSlackDate replaces Slack's date tokens in layout by the time ts
// (Unix seconds) in UTC. The "pretty" tokens, which say "today" or
// "yesterday", and {ago} depend on when the message is read: they show
// the plain date and time instead.
func formatSlackDate(ts int64, layout string) string {
	t := time.Unix(ts, 0).UTC()
	day := strconv.Itoa(t.Day()) + ordinal(t.Day())
	return strings.NewReplacer(
		"{date_num}", t.Format("2006-01-02"),
		"{date}", t.Format("January ")+day+t.Format(", 2006"),
		"{date_pretty}", t.Format("January ")+day+t.Format(", 2006"),
		"{date_short}", t.Format("Jan 2, 2006"),
		"{date_short_pretty}", t.Format("Jan 2, 2006"),
		"{date_long}", t.Format("Monday, January ")+day+t.Format(", 2006"),
		"{date_long_pretty}", t.Format("Monday, January ")+day+t.Format(", 2006"),
		"{time}", t.Format("15:04 UTC"),
		"{time_secs}", t.Format("15:04:05 UTC"),
		"{ago}", t.Format("2006-01-02 15:04 UTC"),
	).Replace(layout)
}

func ordinal(n int) string {
	switch {
	case n%100 >= 11 && n%100 <= 13:
		return "th"
	case n%10 == 1:
		return "st"
	case n%10 == 2:
		return "nd"
	case n%10 == 3:
		return "rd"
	}
	return "th"
}

// Emphasis markers, in the order of emphasisTags.
const (
	markers    = "*_~"
	allMarkers = 1<<len(markers) - 1
)

var emphasisTags = [len(markers)][2]string{
	{"<strong>", "</strong>"},
	{"<em>", "</em>"},
	{"<del>", "</del>"},
}

func markerKind(a atom) int {
	if a.html != "" || a.r > unicode.MaxASCII {
		return -1
	}
	return strings.IndexByte(markers, byte(a.r))
}

// emphasis pairs markers in a line as Slack does: an opening marker
// follows the start of the line or a character that is not a letter or
// digit, and is followed by a non-space; a closing marker follows a
// non-space and is followed by the end of the line or a character that
// is not a letter or digit. So snake_case_names and 2*3*4 stay as they
// are. Each opener takes the nearest closer; kinds nest, but not in
// themselves.
type emphasis struct {
	atoms   []atom
	closers [len(markers)][]int // positions of possible closers, ascending
}

func (e *emphasis) canOpen(i int) bool {
	return (i == 0 || !e.atoms[i-1].isWord()) && i+1 < len(e.atoms) && !e.atoms[i+1].isSpace()
}

func (e *emphasis) canClose(i int) bool {
	return i > 0 && !e.atoms[i-1].isSpace() && (i+1 == len(e.atoms) || !e.atoms[i+1].isWord())
}

// write writes atoms[lo:hi] with the marker kinds in allowed still open
// to pairing.
func (e *emphasis) write(b *strings.Builder, lo, hi int, allowed int) {
	for i := lo; i < hi; i++ {
		a := e.atoms[i]
		if a.html != "" {
			b.WriteString(a.html)
			continue
		}
		if k := markerKind(a); k >= 0 && allowed&(1<<k) != 0 && e.canOpen(i) {
			c := e.closers[k]
			if n := sort.SearchInts(c, i+2); n < len(c) && c[n] < hi {
				b.WriteString(emphasisTags[k][0])
				e.write(b, i+1, c[n], allowed&^(1<<k))
				b.WriteString(emphasisTags[k][1])
				i = c[n]
				continue
			}
		}
		b.WriteString(esc(string(a.r)))
	}
}
