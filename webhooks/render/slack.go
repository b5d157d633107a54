package render

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Slack's limits on an incoming-webhook message.
const (
	maxAttachments = 100
	maxBlocks      = 50
)

// slackRenderer renders a Slack message and remembers what it found that
// matters beyond the text: a mention of the room.
type slackRenderer struct {
	roomMention bool
}

// renderSlack renders a Slack incoming-webhook message. As in Slack,
// blocks replace text when there are any (text is then only the
// notification fallback), and attachments follow. username and icon_url
// choose the sender. Fields that only make sense inside Slack are
// ignored: channel (a hook posts to its room), thread_ts (Slack
// timestamps name no Matrix event), icon_emoji (a Matrix avatar is an
// image, and putting the emoji in front of every message would change
// its text), unfurl_links, link_names, response_type.
func renderSlack(v any, _ Options) (*Message, error) {
	o := asObject(v)
	if o == nil {
		return nil, &Error{CodeInvalidPayload, "the payload is not a JSON object"}
	}
	blocks, err := embeddedList(o, "blocks", CodeInvalidBlocks)
	if err != nil {
		return nil, err
	}
	attachments, err := embeddedList(o, "attachments", CodeInvalidAttachments)
	if err != nil {
		return nil, err
	}
	if len(attachments) > maxAttachments {
		return nil, &Error{CodeTooManyAttachments, fmt.Sprintf("a message has at most %d attachments", maxAttachments)}
	}
	text := o.str("text")
	if text == "" && len(blocks) == 0 && len(attachments) == 0 {
		return nil, &Error{CodeNoText, "the message has no text, blocks or attachments"}
	}

	r := &slackRenderer{}
	var b strings.Builder
	main, err := r.blocks(blocks)
	if err != nil {
		return nil, err
	}
	if main == "" {
		main = r.mrkdwn(text, o.flag("mrkdwn", true))
	}
	b.WriteString(main)
	for i, v := range attachments {
		a := asObject(v)
		if a == nil {
			return nil, &Error{CodeInvalidAttachments, fmt.Sprintf("attachment %d is not an object", i)}
		}
		h, err := r.attachment(a)
		if err != nil {
			return nil, err
		}
		b.WriteString(h)
	}
	return &Message{
		HTML:        b.String(),
		SenderName:  o.str("username"),
		AvatarURL:   o.str("icon_url"),
		RoomMention: r.roomMention,
	}, nil
}

// embeddedList reads an array member, which Slack also accepts as a
// string of JSON (form-encoded senders often send blocks that way).
func embeddedList(o object, key, code string) ([]any, error) {
	switch v := o[key].(type) {
	case nil:
		return nil, nil
	case []any:
		return v, nil
	case string:
		if strings.TrimSpace(v) == "" {
			return nil, nil
		}
		dec := json.NewDecoder(bytes.NewReader([]byte(v)))
		dec.UseNumber()
		var l []any
		if err := dec.Decode(&l); err == nil {
			return l, nil
		}
	}
	return nil, &Error{code, key + " is not an array"}
}

// attachment renders a legacy attachment as a quote: Slack shows it as a
// box with a coloured bar, here the bar is a coloured mark at its start.
// Pretext goes above the box, as in Slack.
func (r *slackRenderer) attachment(a object) (string, error) {
	var lines []string
	if author := a.str("author_name"); author != "" {
		lines = append(lines, link(a.str("author_link"), esc(emojify(author))))
	}
	if title := a.str("title"); title != "" {
		lines = append(lines, "<strong>"+link(a.str("title_link"), esc(emojify(title)))+"</strong>")
	}
	if text := a.str("text"); text != "" {
		lines = append(lines, r.mrkdwn(text, true))
	}
	for _, f := range a.list("fields") {
		if h := r.field(asObject(f)); h != "" {
			lines = append(lines, h)
		}
	}
	blocks, err := embeddedList(a, "blocks", CodeInvalidBlocks)
	if err != nil {
		return "", err
	}
	blocksHTML, err := r.blocks(blocks)
	if err != nil {
		return "", err
	}
	if blocksHTML != "" {
		lines = append(lines, blocksHTML)
	}
	if image := a.str("image_url"); validURL(image) {
		lines = append(lines, link(image, "Image"))
	}
	if thumb := a.str("thumb_url"); validURL(thumb) {
		lines = append(lines, link(thumb, "Thumbnail"))
	}
	if footer := joinNonEmpty(" · ", esc(emojify(a.str("footer"))), esc(slackTimestamp(a.str("ts")))); footer != "" {
		lines = append(lines, coloured(colourMuted, footer))
	}
	if len(lines) == 0 {
		if fallback := a.str("fallback"); fallback != "" {
			lines = append(lines, breakLines(fallback))
		}
	}
	var b strings.Builder
	if pretext := a.str("pretext"); pretext != "" {
		b.WriteString("<p>" + r.mrkdwn(pretext, true) + "</p>")
	}
	if len(lines) > 0 {
		b.WriteString("<blockquote>")
		if c := attachmentColour(a.str("color")); c != "" {
			b.WriteString(coloured(c, "▌") + " ")
		}
		b.WriteString(strings.Join(lines, "<br>"))
		b.WriteString("</blockquote>")
	}
	return b.String(), nil
}

// field renders an attachment field: a short one on one line, a long one
// with its value under its title.
func (r *slackRenderer) field(f object) string {
	title, value := esc(emojify(f.str("title"))), r.mrkdwn(f.str("value"), true)
	switch {
	case title == "":
		return value
	case value == "":
		return "<strong>" + title + "</strong>"
	case f.flag("short", false):
		return "<strong>" + title + ":</strong> " + value
	}
	return "<strong>" + title + "</strong><br>" + value
}

// attachmentColour reads an attachment's color: Slack's names or a hex
// colour, with or without '#'.
func attachmentColour(c string) string {
	switch c {
	case "good":
		return "#2eb886"
	case "warning":
		return "#daa038"
	case "danger":
		return "#a30200"
	}
	return hexColour(c)
}

// hexColour normalises #rgb, #rrggbb (or either without '#') to the
// spec's #rrggbb; "" if c is not one.
func hexColour(c string) string {
	c = strings.ToLower(strings.TrimPrefix(c, "#"))
	if len(c) == 3 {
		c = string([]byte{c[0], c[0], c[1], c[1], c[2], c[2]})
	}
	if len(c) != 6 || strings.Trim(c, "0123456789abcdef") != "" {
		return ""
	}
	return "#" + c
}

// slackTimestamp shows a Slack ts (Unix seconds, optionally with a
// fraction, as a number or a string) as a UTC date.
func slackTimestamp(ts string) string {
	secs, _, _ := strings.Cut(ts, ".")
	n, err := strconv.ParseInt(secs, 10, 64)
	if err != nil || n <= 0 {
		return ""
	}
	return time.Unix(n, 0).UTC().Format("2006-01-02 15:04 UTC")
}

// blocks renders Block Kit blocks. A block must be an object with a type
// (Slack answers invalid_blocks otherwise); types that show nothing in a
// message, or that Slack adds later, are skipped.
func (r *slackRenderer) blocks(list []any) (string, error) {
	if len(list) > maxBlocks {
		return "", &Error{CodeInvalidBlocks, fmt.Sprintf("a message has at most %d blocks", maxBlocks)}
	}
	var b strings.Builder
	for i, v := range list {
		block := asObject(v)
		typ := block.str("type")
		if typ == "" {
			return "", &Error{CodeInvalidBlocks, fmt.Sprintf("block %d has no type", i)}
		}
		switch typ {
		case "section":
			parts := []string{r.textObject(block.obj("text"))}
			for _, f := range block.list("fields") {
				parts = append(parts, r.textObject(asObject(f)))
			}
			parts = append(parts, r.element(block.obj("accessory")))
			for _, p := range parts {
				if p != "" {
					b.WriteString("<p>" + p + "</p>")
				}
			}
		case "header":
			if h := r.textObject(block.obj("text")); h != "" {
				b.WriteString("<h3>" + h + "</h3>")
			}
		case "divider":
			b.WriteString("<hr>")
		case "image":
			label := firstOf(r.textObject(block.obj("title")), esc(block.str("alt_text")), "Image")
			b.WriteString("<p>" + link(block.str("image_url"), label) + "</p>")
		case "context":
			// Context images are icons and avatars; only the text is kept.
			var parts []string
			for _, e := range block.list("elements") {
				if e := asObject(e); e.str("type") != "image" {
					parts = append(parts, r.textObject(e))
				}
			}
			if h := joinNonEmpty(" ", parts...); h != "" {
				b.WriteString("<p>" + coloured(colourMuted, h) + "</p>")
			}
		case "actions":
			var parts []string
			for _, e := range block.list("elements") {
				parts = append(parts, r.element(asObject(e)))
			}
			if h := joinNonEmpty(" · ", parts...); h != "" {
				b.WriteString("<p>" + h + "</p>")
			}
		case "rich_text":
			b.WriteString(r.richText(block.list("elements")))
		case "markdown":
			b.WriteString(markdownHTML(block.str("text")))
		case "video":
			label := firstOf(r.textObject(block.obj("title")), esc(block.str("alt_text")), "Video")
			b.WriteString("<p>" + link(firstOf(block.str("title_url"), block.str("video_url")), label) + "</p>")
		}
	}
	return b.String(), nil
}

// textObject renders a composition text object: mrkdwn, or plain_text
// with its shortcodes turned into emoji unless "emoji" is false.
func (r *slackRenderer) textObject(t object) string {
	text := t.str("text")
	if text == "" {
		return ""
	}
	if t.str("type") == "mrkdwn" {
		return r.mrkdwn(text, true)
	}
	text = capSource(text)
	if t.flag("emoji", true) {
		text = emojify(text)
	}
	return breakLines(text)
}

// element renders the interactive elements that mean something without
// Slack: an image, and a button that opens a URL. Buttons that call back
// into a Slack app, menus and pickers do nothing here and are left out.
func (r *slackRenderer) element(e object) string {
	switch e.str("type") {
	case "image":
		return link(e.str("image_url"), esc(firstOf(e.str("alt_text"), "Image")))
	case "button":
		if u := e.str("url"); validURL(u) {
			return link(u, r.textObject(e.obj("text")))
		}
	}
	return ""
}

// richText renders a rich_text block: sections as paragraphs, quotes,
// preformatted text and lists, nested by their indent.
func (r *slackRenderer) richText(elements []any) string {
	var b strings.Builder
	var lists richLists
	for _, v := range elements {
		el := asObject(v)
		typ := el.str("type")
		if typ == "rich_text_list" {
			lists.add(r, el)
			continue
		}
		b.WriteString(lists.flush())
		inner := el.list("elements")
		switch typ {
		case "rich_text_section":
			if h := r.richInline(inner, false); h != "" {
				b.WriteString("<p>" + h + "</p>")
			}
		case "rich_text_quote":
			if h := r.richInline(inner, false); h != "" {
				b.WriteString("<blockquote>" + h + "</blockquote>")
			}
		case "rich_text_preformatted":
			if h := r.richInline(inner, true); h != "" {
				b.WriteString("<pre><code>" + h + "</code></pre>")
			}
		}
	}
	b.WriteString(lists.flush())
	return b.String()
}

// richInline renders the inline elements of a rich text section. In code
// (a preformatted block) styles and links are left out and line breaks
// kept as they are. A trailing line break, which Slack puts at the end
// of a section, is dropped.
func (r *slackRenderer) richInline(elements []any, code bool) string {
	var b strings.Builder
	for _, v := range elements {
		el := asObject(v)
		var h string
		switch el.str("type") {
		case "text":
			h = esc(capSource(el.str("text")))
			if !code {
				h = strings.ReplaceAll(h, "\n", "<br>")
			}
		case "link":
			label := esc(firstOf(el.str("text"), el.str("url")))
			h = label
			if !code {
				h = link(el.str("url"), label)
			}
		case "emoji":
			h = esc(richEmoji(el))
		case "user":
			h = esc("@" + el.str("user_id"))
		case "usergroup":
			h = esc("@" + el.str("usergroup_id"))
		case "channel":
			h = esc("#" + el.str("channel_id"))
		case "broadcast":
			if code {
				h = esc("@" + el.str("range"))
			} else {
				r.roomMention = true
				h = "@room"
			}
		case "date":
			h = esc(slackDate(el.str("timestamp")+"^"+firstOf(el.str("format"), "{date_num} {time}"), el.str("fallback")))
		case "color":
			value := el.str("value")
			h = esc(value)
			if c := hexColour(value); c != "" && !code {
				h = coloured(c, "■") + " " + h
			}
		}
		if !code {
			h = styled(h, el.obj("style"))
		}
		b.WriteString(h)
	}
	if code {
		return strings.TrimSuffix(b.String(), "\n")
	}
	return strings.TrimSuffix(b.String(), "<br>")
}

// styled applies a rich text style object.
func styled(h string, style object) string {
	if h == "" {
		return h
	}
	for _, s := range []struct{ key, open, close string }{
		{"code", "<code>", "</code>"},
		{"strike", "<del>", "</del>"},
		{"underline", "<u>", "</u>"},
		{"italic", "<em>", "</em>"},
		{"bold", "<strong>", "</strong>"},
	} {
		if style.flag(s.key, false) {
			h = s.open + h + s.close
		}
	}
	return h
}

// richEmoji reads a rich text emoji element: its Unicode code points if
// given ("1f44d" or "1f468-200d-1f4bb"), else its name, with its skin
// tone; a custom emoji stays as its :name:.
func richEmoji(el object) string {
	name := el.str("name")
	tone := ""
	if t := el.str("skin_tone"); t != "" {
		tone = ":skin-tone-" + t + ":"
	}
	if u := el.str("unicode"); u != "" {
		var runes []rune
		for _, part := range strings.Split(u, "-") {
			n, err := strconv.ParseUint(part, 16, 32)
			if err != nil || n > 0x10FFFF {
				runes = nil
				break
			}
			runes = append(runes, rune(n))
		}
		if runes != nil {
			return string(runes)
		}
	}
	code := ":" + name + ":" + tone
	if e, n := shortcodeAt(code); n == len(code) {
		return e
	}
	return ":" + name + ":"
}

// richLists nests consecutive rich_text_list elements by their indent:
// Slack sends a nested list as a separate list with a larger indent.
type richLists struct {
	roots []*richList
	open  []*richList // the lists that a deeper list would nest in
}

type richList struct {
	ordered bool
	start   int
	indent  int
	items   []*richItem
}

type richItem struct {
	html  string
	lists []*richList
}

// maxIndent bounds list nesting; Slack's editor goes to 8.
const maxIndent = 8

func (l *richLists) add(r *slackRenderer, el object) {
	indent, _ := strconv.Atoi(el.str("indent"))
	offset, _ := strconv.Atoi(el.str("offset"))
	list := &richList{
		ordered: el.str("style") == "ordered",
		start:   max(offset, 0) + 1,
		indent:  min(max(indent, 0), maxIndent),
	}
	for _, item := range el.list("elements") {
		list.items = append(list.items, &richItem{html: r.richInline(asObject(item).list("elements"), false)})
	}
	for len(l.open) > 0 && l.open[len(l.open)-1].indent >= list.indent {
		l.open = l.open[:len(l.open)-1]
	}
	if len(l.open) == 0 {
		l.roots = append(l.roots, list)
	} else {
		parent := l.open[len(l.open)-1]
		if len(parent.items) == 0 {
			parent.items = append(parent.items, &richItem{})
		}
		last := parent.items[len(parent.items)-1]
		last.lists = append(last.lists, list)
	}
	l.open = append(l.open, list)
}

func (l *richLists) flush() string {
	var b strings.Builder
	for _, list := range l.roots {
		list.write(&b)
	}
	l.roots, l.open = nil, nil
	return b.String()
}

func (l *richList) write(b *strings.Builder) {
	switch {
	case !l.ordered:
		b.WriteString("<ul>")
	case l.start != 1:
		b.WriteString(`<ol start="` + strconv.Itoa(l.start) + `">`)
	default:
		b.WriteString("<ol>")
	}
	for _, item := range l.items {
		b.WriteString("<li>" + item.html)
		for _, sub := range item.lists {
			sub.write(b)
		}
		b.WriteString("</li>")
	}
	if l.ordered {
		b.WriteString("</ol>")
	} else {
		b.WriteString("</ul>")
	}
}
