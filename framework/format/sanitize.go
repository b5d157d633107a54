package format

import (
	"strconv"
	"strings"

	"golang.org/x/net/html"
	"maunium.net/go/mautrix/id"
)

// MaxNesting is how deep Sanitize lets tags nest. The spec says tags "must
// not be nested more than 100 levels deep"; deeper tags are unwrapped.
const MaxNesting = 100

// Sanitize reduces HTML from outside Matrix (remote networks, webhooks) to
// what the Matrix spec permits in formatted_body (client-server API,
// "m.room.message msgtypes": the suggested tags and their permitted
// attributes):
//
//   - tags outside the list are unwrapped: the tag goes, its text stays;
//   - script, style, mx-reply and the other elements whose content is never
//     shown as text lose their content too;
//   - attributes outside the per-tag list are dropped; a keeps href only for
//     the https, http, ftp, mailto, magnet and matrix schemes (an a without
//     one is unwrapped); img keeps src only for mxc:// URIs (an img without
//     one is replaced by its alt text); colours must be #rrggbb; ol start
//     must be an integer; code keeps only language-* classes;
//   - the deprecated font, strike and tt become span, del and code, so old
//     colour and strike-through markup keeps its meaning;
//   - tags nest at most MaxNesting deep;
//   - the output is well-formed: every tag is closed, text and attribute
//     values are escaped, and sanitising it again gives the same string.
//
// It works on the token stream rather than a parsed tree because the HTML
// parser of golang.org/x/net/html refuses documents nested more than 512
// deep, and a sanitiser has to accept everything. Where HTML closes
// elements implicitly (<p> before a block, <li> after <li>, table cells),
// Sanitize closes them the same way, so its output keeps the structure a
// browser would have seen.
func Sanitize(htmlText string) string {
	// Invalid UTF-8 would come out of the JSON encoder as U+FFFD anyway;
	// replacing it first keeps Sanitize idempotent.
	htmlText = strings.ToValidUTF8(htmlText, "\uFFFD")
	s := sanitizer{
		open:  map[string][]int{},
		shown: map[string][]int{},
	}
	s.out.Grow(len(htmlText))
	z := html.NewTokenizer(strings.NewReader(htmlText))
	for {
		switch z.Next() {
		case html.ErrorToken:
			// The reader is a strings.Reader, so the only error is io.EOF.
			s.popTo(0)
			return s.out.String()
		case html.TextToken:
			if s.dropping == 0 {
				WriteEscaped(&s.out, z.Text(), false)
			}
		case html.StartTagToken, html.SelfClosingTagToken:
			// A self-closing slash means nothing on an HTML element: <b/>
			// opens a b, exactly as in a browser. Void elements never open.
			s.startTag(z)
		case html.EndTagToken:
			s.endTag(z)
		}
		// Comments and doctypes are dropped.
	}
}

type openElement struct {
	name  string // tag name in the input, lower case
	shown string // tag name written to the output; "" if unwrapped
	drop  bool   // content is dropped while this element is open
}

// sanitizer keeps the stack of open elements. open indexes every stack
// entry by input name, shown indexes the written ones by output name, so
// "is there a p in scope" is a map lookup rather than a walk down the stack,
// which would make crafted input quadratic.
//
// Every decision about implicit closing looks only at written elements.
// That is what makes the output a fixed point: sanitising it again sees the
// same written elements, so it makes the same decisions.
type sanitizer struct {
	out      strings.Builder
	stack    []openElement
	open     map[string][]int
	shown    map[string][]int
	written  []int // stack indices of the written elements
	dropping int   // number of content-dropping elements on the stack
}

func topOf(m map[string][]int, name string) int {
	if l := m[name]; len(l) > 0 {
		return l[len(l)-1]
	}
	return -1
}

// topShown is the stack index of the innermost written element among names.
func (s *sanitizer) topShown(names []string) int {
	top := -1
	for _, name := range names {
		top = max(top, topOf(s.shown, name))
	}
	return top
}

// closeInScope closes the innermost written element among targets if no
// written element among boundaries is open inside it.
func (s *sanitizer) closeInScope(targets, boundaries []string) {
	if i := s.topShown(targets); i >= 0 && i > s.topShown(boundaries) {
		s.popTo(i)
	}
}

func (s *sanitizer) push(e openElement) {
	i := len(s.stack)
	s.stack = append(s.stack, e)
	s.open[e.name] = append(s.open[e.name], i)
	if e.shown != "" {
		s.shown[e.shown] = append(s.shown[e.shown], i)
		s.written = append(s.written, i)
	}
	if e.drop {
		s.dropping++
	}
}

// popTo closes stack entries down to and including index i, writing end
// tags for the written ones.
func (s *sanitizer) popTo(i int) {
	for len(s.stack) > i {
		e := s.stack[len(s.stack)-1]
		s.stack = s.stack[:len(s.stack)-1]
		s.open[e.name] = s.open[e.name][:len(s.open[e.name])-1]
		if e.shown != "" {
			s.shown[e.shown] = s.shown[e.shown][:len(s.shown[e.shown])-1]
			s.written = s.written[:len(s.written)-1]
			s.out.WriteString("</")
			s.out.WriteString(e.shown)
			s.out.WriteByte('>')
		}
		if e.drop {
			s.dropping--
		}
	}
}

// canWrite says whether an element may be written here.
func (s *sanitizer) canWrite() bool {
	return s.dropping == 0 && len(s.written) < MaxNesting
}

func (s *sanitizer) startTag(z *html.Tokenizer) {
	nameBytes, hasAttr := z.TagName()
	name := string(nameBytes)
	s.implicitClose(name)

	if voidElements[name] {
		if s.dropping == 0 {
			s.void(name, z, hasAttr)
		}
		return
	}
	e := openElement{name: name, drop: dropContent[name]}
	if rule, ok := allowedTags[name]; ok && s.canWrite() {
		attrs, ok := rule.filter(z, hasAttr)
		if ok {
			e.shown = rule.out
			s.writeStartTag(rule.out, attrs)
		}
	}
	s.push(e)
}

// void handles an element that has no content and no end tag.
func (s *sanitizer) void(name string, z *html.Tokenizer, hasAttr bool) {
	switch name {
	case "br", "hr":
		if s.canWrite() {
			s.writeStartTag(name, nil)
		}
	case "img":
		attrs, ok := allowedTags["img"].filter(z, hasAttr)
		if ok && s.canWrite() {
			s.writeStartTag("img", attrs)
			return
		}
		// An image hosted outside Matrix cannot be shown (clients load
		// only mxc:// media), and one nested too deep is not shown either;
		// its alt text says what it was.
		for _, a := range attrs {
			if a.key == "alt" {
				WriteEscaped(&s.out, []byte(a.val), false)
			}
		}
	}
}

func (s *sanitizer) endTag(z *html.Tokenizer) {
	nameBytes, _ := z.TagName()
	name := string(nameBytes)
	if name == "br" {
		// Browsers read </br> as <br>.
		if s.canWrite() {
			s.writeStartTag("br", nil)
		}
		return
	}
	i := topOf(s.open, name)
	if headingTargets[name] {
		// Any heading's end tag ends whichever heading is open: "<h1>a</h2>".
		for h := range headingTargets {
			i = max(i, topOf(s.open, h))
		}
	}
	if i < 0 {
		return // nothing to close: a stray end tag is ignored
	}
	var boundaries []string
	switch name {
	case "table":
		// Nothing stops </table>; it closes whatever is open inside.
	case "td", "th", "tr", "thead", "tbody", "tfoot", "caption":
		boundaries = tableScope
	case "li":
		boundaries = listItemEndScope
	default:
		boundaries = cellScope
	}
	// An end tag does not reach out of a table cell (or a list, for </li>):
	// "<b><table><tr><td></b>" leaves the cell open, as in a browser.
	if i > s.topShown(boundaries) {
		s.popTo(i)
	}
}

// implicitClose closes the elements that HTML ends implicitly when a start
// tag called name appears, so that "<p>a<p>b" or "<li>a<li>b" come out as
// siblings, not as nested elements a browser would have split anyway.
func (s *sanitizer) implicitClose(name string) {
	switch name {
	case "li":
		s.closeInScope(liTargets, listItemScope)
	case "td", "th":
		s.closeInScope(cellTargets, tableScope)
	case "tr":
		s.closeInScope(cellTargets, tableScope)
		s.closeInScope(rowTargets, tableScope)
	case "thead", "tbody", "tfoot":
		s.closeInScope(cellTargets, tableScope)
		s.closeInScope(rowTargets, tableScope)
		s.closeInScope(sectionTargets, tableScope)
	case "a":
		// Links do not nest.
		s.closeInScope(linkTargets, cellScope)
	}
	if closesParagraph[name] {
		s.closeInScope(paragraphTargets, cellScope)
	}
	switch name {
	case "h1", "h2", "h3", "h4", "h5", "h6":
		// A heading directly inside a heading ends the first one.
		if n := len(s.written); n > 0 && headingTargets[s.stack[s.written[n-1]].shown] {
			s.popTo(s.written[n-1])
		}
	}
}

type attribute struct{ key, val string }

func (s *sanitizer) writeStartTag(name string, attrs []attribute) {
	s.out.WriteByte('<')
	s.out.WriteString(name)
	for _, a := range attrs {
		s.out.WriteByte(' ')
		s.out.WriteString(a.key)
		// An empty value is written bare: <span data-mx-spoiler> is how
		// the spec writes a spoiler without a reason.
		if a.val != "" {
			s.out.WriteString(`="`)
			WriteEscaped(&s.out, []byte(a.val), true)
			s.out.WriteByte('"')
		}
	}
	s.out.WriteByte('>')
}

// WriteEscaped escapes text for an element's content (attr false) or a
// double-quoted attribute value exactly as Sanitize writes it, so HTML
// built with it passes Sanitize unchanged. NUL is dropped: browsers drop
// it in body text, and it has no business in a message. A carriage return
// (which can only come from "&#13;", as HTML turns raw ones into line
// feeds) stays a reference, or the next reader would turn it into a line
// feed.
func WriteEscaped[T ~string | ~[]byte](b *strings.Builder, t T, attr bool) {
	for i := 0; i < len(t); i++ {
		c := t[i]
		switch {
		case c == '&':
			b.WriteString("&amp;")
		case c == '<':
			b.WriteString("&lt;")
		case c == '>':
			b.WriteString("&gt;")
		case c == '"' && attr:
			b.WriteString("&quot;")
		case c == '\r':
			b.WriteString("&#13;")
		case c == 0:
		default:
			b.WriteByte(c)
		}
	}
}

// tagRule says how an allowed input tag is written.
type tagRule struct {
	out   string              // output tag name
	attrs map[string]attrRule // by input attribute name
	need  string              // the element is unwrapped without this output attribute
}

// attrRule validates one attribute value and names it in the output.
type attrRule struct {
	out   string
	check func(string) (string, bool)
}

// filter reads the tag's attributes and keeps the permitted ones, in input
// order; the first of two attributes with the same output name wins, as
// the first of two equal attributes does in HTML. ok is false when the
// rule's required attribute is missing. For img, the alt text is returned
// even then, so the caller can show it.
func (r tagRule) filter(z *html.Tokenizer, hasAttr bool) (attrs []attribute, ok bool) {
	more := hasAttr
	for more {
		var k, v []byte
		k, v, more = z.TagAttr()
		rule, allowed := r.attrs[string(k)]
		if !allowed {
			continue
		}
		val, valid := rule.check(string(v))
		if !valid || hasKey(attrs, rule.out) {
			continue
		}
		attrs = append(attrs, attribute{rule.out, val})
	}
	return attrs, r.need == "" || hasKey(attrs, r.need)
}

func hasKey(attrs []attribute, key string) bool {
	for _, a := range attrs {
		if a.key == key {
			return true
		}
	}
	return false
}

func anyValue(v string) (string, bool) { return v, true }

// present keeps a boolean attribute; its value carries no meaning.
func present(string) (string, bool) { return "", true }

// trimURL removes what browsers remove around a URL: leading and trailing
// C0 controls and spaces. The trimmed value is what is checked and written.
func trimURL(v string) string {
	return strings.TrimFunc(v, func(r rune) bool { return r <= ' ' })
}

// linkURL accepts absolute URLs whose scheme is on the spec's list (plus
// matrix:, the spec's own URI scheme). The scheme is everything before the
// first colon, so "java\tscript:" and entity-encoded variants, which
// arrive here decoded, do not match anything on the list.
func linkURL(v string) (string, bool) {
	v = trimURL(v)
	scheme, _, found := strings.Cut(v, ":")
	if !found {
		return "", false // relative
	}
	switch strings.ToLower(scheme) {
	case "https", "http", "ftp", "mailto", "magnet", "matrix":
		return v, true
	}
	return "", false
}

// mxcURI accepts only Matrix content URIs: clients must not be made to
// fetch images from arbitrary hosts (that would leak who reads the room).
func mxcURI(v string) (string, bool) {
	v = trimURL(v)
	uri, err := id.ParseContentURI(v)
	if err != nil || !uri.IsValid() {
		return "", false
	}
	return v, true
}

// colour accepts the spec's "#" followed by six hex digits.
func colour(v string) (string, bool) {
	if len(v) != 7 || v[0] != '#' {
		return "", false
	}
	for _, c := range []byte(v[1:]) {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
			return "", false
		}
	}
	return v, true
}

// integer accepts ol's start (any integer, negative included) and writes
// it in its plain form.
func integer(v string) (string, bool) {
	n, err := strconv.Atoi(strings.TrimSpace(v))
	if err != nil {
		return "", false
	}
	return strconv.Itoa(n), true
}

// pixels accepts a plain number of pixels, at most five digits: six or
// more can only be meant to break the client's layout.
func pixels(v string) (string, bool) {
	v = strings.TrimSpace(v)
	if v == "" || len(v) > 5 || strings.Trim(v, "0123456789") != "" {
		return "", false
	}
	return v, true
}

// languageClass keeps the language-* classes that clients use to pick a
// syntax highlighter, and nothing else: other classes could pull in the
// client's own styles. Language names are kept to the characters real
// ones use (c++, c#, objective-c, vb.net).
func languageClass(v string) (string, bool) {
	var kept []string
	for _, c := range strings.Fields(v) {
		lang, ok := strings.CutPrefix(c, "language-")
		if ok && lang != "" && strings.Trim(lang, languageChars) == "" {
			kept = append(kept, c)
		}
	}
	return strings.Join(kept, " "), len(kept) > 0
}

const languageChars = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_+#."

// allowedTags is the spec's list of suggested tags with their permitted
// attributes, plus the deprecated tags that have a permitted equivalent.
var allowedTags = func() map[string]tagRule {
	plain := []string{
		"del", "h1", "h2", "h3", "h4", "h5", "h6", "blockquote", "p", "ul",
		"sup", "sub", "li", "b", "i", "u", "strong", "em", "s", "hr", "br",
		"table", "thead", "tbody", "tr", "th", "td", "caption", "pre",
		"details", "summary",
	}
	rules := map[string]tagRule{}
	for _, t := range plain {
		rules[t] = tagRule{out: t}
	}
	colours := map[string]attrRule{
		"data-mx-color":    {"data-mx-color", colour},
		"data-mx-bg-color": {"data-mx-bg-color", colour},
	}
	rules["span"] = tagRule{out: "span", attrs: map[string]attrRule{
		"data-mx-color":    colours["data-mx-color"],
		"data-mx-bg-color": colours["data-mx-bg-color"],
		"data-mx-spoiler":  {"data-mx-spoiler", anyValue},
		"data-mx-maths":    {"data-mx-maths", anyValue},
	}}
	rules["font"] = tagRule{out: "span", attrs: map[string]attrRule{
		"data-mx-color":    colours["data-mx-color"],
		"data-mx-bg-color": colours["data-mx-bg-color"],
		"color":            {"data-mx-color", colour},
	}}
	rules["strike"] = tagRule{out: "del"}
	rules["tt"] = tagRule{out: "code"}
	rules["div"] = tagRule{out: "div", attrs: map[string]attrRule{
		"data-mx-maths": {"data-mx-maths", anyValue},
	}}
	rules["a"] = tagRule{out: "a", need: "href", attrs: map[string]attrRule{
		"href":   {"href", linkURL},
		"target": {"target", anyValue},
	}}
	rules["img"] = tagRule{out: "img", need: "src", attrs: map[string]attrRule{
		"src":    {"src", mxcURI},
		"alt":    {"alt", anyValue},
		"title":  {"title", anyValue},
		"width":  {"width", pixels},
		"height": {"height", pixels},
		// Not in the spec's table, but every client marks custom emoji
		// with it (MSC2545) and shows them inline at text size; without
		// it a bridged emoji would render as a full-size picture.
		"data-mx-emoticon": {"data-mx-emoticon", present},
	}}
	rules["ol"] = tagRule{out: "ol", attrs: map[string]attrRule{
		"start": {"start", integer},
	}}
	rules["code"] = tagRule{out: "code", attrs: map[string]attrRule{
		"class": {"class", languageClass},
	}}
	return rules
}()

var headingTargets = map[string]bool{
	"h1": true, "h2": true, "h3": true, "h4": true, "h5": true, "h6": true,
}

// voidElements never have content or an end tag.
var voidElements = map[string]bool{
	"area": true, "base": true, "br": true, "col": true, "embed": true,
	"hr": true, "img": true, "input": true, "keygen": true, "link": true,
	"meta": true, "param": true, "source": true, "track": true, "wbr": true,
}

// dropContent are elements whose content is code, styling, metadata or an
// embedded document, not text the sender meant to show; mx-reply is the
// old reply fallback, which the spec says to strip with its content.
var dropContent = map[string]bool{
	"script": true, "style": true, "mx-reply": true, "template": true,
	"title": true, "iframe": true, "noscript": true, "noembed": true,
	"noframes": true,
}

// closesParagraph are the start tags that end an open p (HTML's "close a p
// element" rule).
var closesParagraph = map[string]bool{
	"address": true, "article": true, "aside": true, "blockquote": true,
	"center": true, "details": true, "dialog": true, "dir": true, "div": true,
	"dl": true, "dd": true, "dt": true, "fieldset": true, "figcaption": true,
	"figure": true, "footer": true, "form": true, "h1": true, "h2": true,
	"h3": true, "h4": true, "h5": true, "h6": true, "header": true,
	"hgroup": true, "hr": true, "li": true, "listing": true, "main": true,
	"menu": true, "nav": true, "ol": true, "p": true, "plaintext": true,
	"pre": true, "search": true, "section": true, "summary": true,
	"table": true, "ul": true, "xmp": true,
}

var (
	paragraphTargets = []string{"p"}
	liTargets        = []string{"li"}
	cellTargets      = []string{"td", "th"}
	rowTargets       = []string{"tr"}
	sectionTargets   = []string{"thead", "tbody", "tfoot"}
	linkTargets      = []string{"a"}

	tableScope = []string{"table"}
	// cellScope: nothing outside a table cell or caption is closed from
	// inside it.
	cellScope = []string{"table", "td", "th", "caption"}
	// listItemScope: a new li closes an open li unless one of these
	// ("special" elements other than div and p) is open inside it.
	listItemScope = []string{
		"ul", "ol", "blockquote", "caption", "details", "summary", "pre",
		"h1", "h2", "h3", "h4", "h5", "h6", "table", "thead", "tbody",
		"tfoot", "tr", "td", "th",
	}
	listItemEndScope = []string{"ul", "ol", "table", "td", "th", "caption"}
)
