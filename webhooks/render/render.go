package render

import (
	"fmt"
	"strings"
	"text/template"
	"unicode/utf8"

	"maunium.net/go/mautrix/event"

	"github.com/switchboard-im/switchboard/framework/format"
)

// Message is what a webhook request becomes in the room.
type Message struct {
	MsgType event.MessageType // m.text, m.notice or m.emote
	Body    string            // plain text, never empty
	HTML    string            // sanitised formatted_body; "" when Body says it all

	// SenderName and AvatarURL are who the payload asked to appear as;
	// empty means the hook's own sender. AvatarURL is an http(s) URL of
	// an image, for delivery to upload.
	SenderName string
	AvatarURL  string

	// RoomMention is set when the payload asked to notify the whole room
	// (Slack's <!here>, <!channel>, <!everyone>, or "@room" in a text
	// message): the message should set m.mentions.room. Body then says
	// "@room" where the sender put the mention.
	RoomMention bool

	// AlertKey is shared by the notifications about one alert group, so
	// that delivery can thread them; "" for anything that is not an alert.
	// Resolved marks a notification that the group's alerts have all
	// resolved: delivery replies to or edits the message that announced
	// them.
	AlertKey string
	Resolved bool

	Format Format // the format the payload was read as
}

// Format names a payload format.
type Format string

const (
	FormatAlertmanager Format = "alertmanager"
	FormatGrafana      Format = "grafana"
	FormatAppservice   Format = "appservice-webhooks" // matrix-appservice-webhooks (t2bot)
	FormatSlack        Format = "slack"
	FormatGeneric      Format = "generic"
)

// Valid reports whether f names a format Render knows, for checking a
// hook's configuration.
func (f Format) Valid() bool {
	switch f {
	case FormatAlertmanager, FormatGrafana, FormatAppservice, FormatSlack, FormatGeneric:
		return true
	}
	return false
}

// Error is a payload Render or Parse refuses. Code is the error code Slack
// answers the same mistake with, which Slack clients look for in the body
// of the 400 response.
type Error struct {
	Code    string
	Message string
}

func (e *Error) Error() string { return e.Code + ": " + e.Message }

// Error codes. The first five are Slack's own.
const (
	CodeInvalidPayload     = "invalid_payload"
	CodeNoText             = "no_text"
	CodeTooManyAttachments = "too_many_attachments"
	CodeInvalidAttachments = "invalid_attachments"
	CodeInvalidBlocks      = "invalid_blocks"
	CodeTemplate           = "template_error" // the hook's template failed on this payload
)

// DefaultMaxSize is the default for Options.MaxSize. An event may take
// 64 KiB of canonical JSON, and an edit (which delivery sends for a
// resolved alert, if so configured) carries its content twice; 30 KiB
// leaves room for both copies and the event's envelope.
const DefaultMaxSize = 30 * 1024

// Options are a hook's rendering settings.
type Options struct {
	// Format forces a format; "" detects it (see the package comment).
	Format Format
	// Template, when set, renders every payload as markdown (see
	// ParseTemplate), unless Format forces a format other than generic.
	Template *template.Template
	// MsgType is the msgtype of messages whose payload does not choose
	// one; "" means m.notice, as a message from a program should be.
	MsgType event.MessageType
	// MaxSize bounds Body and HTML together, in bytes of canonical JSON;
	// 0 means DefaultMaxSize.
	MaxSize int
}

// Render turns a parsed payload into the message it shows in the room.
// Errors are *Error, for the intake to answer with a 400.
func Render(p *Payload, opts Options) (*Message, error) {
	if opts.MaxSize <= 0 {
		opts.MaxSize = DefaultMaxSize
	}
	switch opts.MsgType {
	case "":
		opts.MsgType = event.MsgNotice
	case event.MsgText, event.MsgNotice, event.MsgEmote:
	default:
		return nil, fmt.Errorf("render: msgtype %q is not a text msgtype", opts.MsgType)
	}
	f := opts.Format
	switch {
	case f == "" && opts.Template != nil:
		f = FormatGeneric
	case f == "":
		f = detect(p.Value)
	case !f.Valid():
		return nil, fmt.Errorf("render: unknown format %q", f)
	}
	var (
		m   *Message
		err error
	)
	switch f {
	case FormatAlertmanager:
		m, err = renderAlertmanager(asObject(p.Value), opts)
	case FormatGrafana:
		m, err = renderGrafana(asObject(p.Value), opts)
	case FormatAppservice:
		m, err = renderAppservice(asObject(p.Value), opts)
	case FormatSlack:
		m, err = renderSlack(p.Value, opts)
	default:
		m, err = renderGeneric(p, opts)
	}
	if err != nil {
		return nil, err
	}
	m.Format = f
	if m.MsgType == "" {
		m.MsgType = opts.MsgType
	}
	if err := m.finish(opts.MaxSize); err != nil {
		return nil, err
	}
	return m, nil
}

// detect implements the rules in the package comment.
func detect(v any) Format {
	o := asObject(v)
	if o == nil {
		return FormatGeneric
	}
	_, alerts := o["alerts"].([]any)
	switch {
	case alerts && o.has("groupKey") && !o.has("orgId"):
		return FormatAlertmanager
	case alerts && o.has("orgId"),
		(o.has("ruleName") || o.has("ruleUrl")) && o.has("state"):
		return FormatGrafana
	}
	if o.has("text") {
		for _, k := range []string{"format", "displayName", "avatarUrl", "avatar_url", "msgtype", "emoji"} {
			if o.has(k) {
				return FormatAppservice
			}
		}
	}
	if o.has("text") || o.has("blocks") || o.has("attachments") {
		return FormatSlack
	}
	return FormatGeneric
}

// finish makes the renderer's output into what the package promises: HTML
// sanitised and dropped when the body says the same, a body that is
// valid UTF-8 and not empty, and both within maxSize.
func (m *Message) finish(maxSize int) error {
	if m.HTML != "" {
		content := format.HTMLContent(m.HTML, m.Body)
		m.Body, m.HTML = content.Body, content.FormattedBody
	}
	m.Body = strings.ToValidUTF8(m.Body, "\uFFFD")
	// Empty HTML elements leave their markers in the body ("****").
	if strings.Trim(m.Body, " \t\n*_~`") == "" {
		return &Error{CodeNoText, "the message has no text"}
	}
	bodyMax := maxSize
	if m.HTML != "" {
		bodyMax = maxSize / 2
	}
	m.Body = truncateText(m.Body, bodyMax)
	if m.HTML != "" {
		m.HTML = truncateHTML(m.HTML, maxSize-jsonLen(m.Body))
	}
	if !validURL(m.AvatarURL) {
		m.AvatarURL = ""
	}
	m.SenderName = truncateText(strings.TrimSpace(strings.ToValidUTF8(m.SenderName, "")), maxDisplayName)
	return nil
}

// maxDisplayName bounds SenderName; 256 bytes is what Synapse accepts
// for a display name.
const maxDisplayName = 256

// ellipsis marks text cut short.
const ellipsis = "…"

// jsonLen is the length of s as a canonical JSON string, without the
// quotes: what it adds to the size of an event.
func jsonLen(s string) int {
	n := 0
	for i := 0; i < len(s); i++ {
		n += escapedLen(s[i])
	}
	return n
}

func escapedLen(c byte) int {
	switch {
	case c == '"' || c == '\\' || c == '\n' || c == '\t' || c == '\r' || c == '\b' || c == '\f':
		return 2
	case c < 0x20:
		return 6
	}
	return 1
}

// truncateText cuts s to at most limit bytes of JSON, ellipsis included,
// at a space if there is one shortly before the limit.
func truncateText(s string, limit int) string {
	if jsonLen(s) <= limit {
		return s
	}
	cut, n := 0, 0
	for i, r := range s {
		size := utf8.RuneLen(r)
		if r == utf8.RuneError {
			size = 1
		}
		w := 0
		for j := i; j < i+size && j < len(s); j++ {
			w += escapedLen(s[j])
		}
		if n+w > limit-len(ellipsis) {
			break
		}
		n += w
		cut = i + size
	}
	if cut < len(s) && s[cut] != ' ' && s[cut] != '\n' {
		if space := strings.LastIndexAny(s[:cut], " \n"); space > 0 && cut-space < 64 {
			cut = space
		}
	}
	return strings.TrimRight(s[:cut], " \n") + ellipsis
}

// truncateHTML cuts sanitised HTML to at most limit bytes of JSON. The cut
// is made between tags and outside entities, and sanitising again closes
// what the cut left open; reserve is room for those end tags (at most
// format.MaxNesting of them). HTML that cannot be cut to fit is dropped:
// the body still carries the message.
func truncateHTML(h string, limit int) string {
	if jsonLen(h) <= limit {
		return h
	}
	reserve := min(2048, limit/4)
	cut, n := 0, 0
	for cut < len(h) && n+escapedLen(h[cut]) <= limit-reserve {
		n += escapedLen(h[cut])
		cut++
	}
	for cut > 0 && cut < len(h) && !utf8.RuneStart(h[cut]) {
		cut--
	}
	// In Sanitize's output '<' and '&' only ever start a tag or an entity.
	if i := strings.LastIndexByte(h[:cut], '<'); i >= 0 && !strings.Contains(h[i:cut], ">") {
		cut = i
	}
	if i := strings.LastIndexByte(h[:cut], '&'); i >= 0 && !strings.Contains(h[i:cut], ";") {
		cut = i
	}
	out := format.Sanitize(h[:cut] + ellipsis)
	if cut == 0 || jsonLen(out) > limit {
		return ""
	}
	return out
}
