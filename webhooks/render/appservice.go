package render

import (
	"strings"

	"golang.org/x/net/html"
	"maunium.net/go/mautrix/event"
)

// renderAppservice renders the body of matrix-appservice-webhooks (t2bot):
//
//	{"text": "Hello", "format": "plain" or "html", "displayName": "CI",
//	 "avatarUrl" or "avatar_url": "https://…", "msgtype": "text", "notice"
//	 or "emote", "emoji": true}
//
// Plain text is sent as it is, HTML sanitised. Emoji shortcodes are
// converted unless emoji is false, as in t2bot. msgtype also accepts the
// Matrix names (m.notice); without it, the hook's msgtype applies.
func renderAppservice(o object, _ Options) (*Message, error) {
	text := capSource(o.str("text"))
	if strings.TrimSpace(text) == "" {
		return nil, &Error{CodeNoText, "text is empty"}
	}
	emoji := o.flag("emoji", true)
	m := &Message{
		SenderName: o.str("displayName"),
		AvatarURL:  firstOf(o.str("avatarUrl"), o.str("avatar_url")),
	}
	switch strings.TrimPrefix(o.str("msgtype"), "m.") {
	case "text":
		m.MsgType = event.MsgText
	case "notice":
		m.MsgType = event.MsgNotice
	case "emote":
		m.MsgType = event.MsgEmote
	}
	if strings.EqualFold(o.str("format"), "html") {
		if emoji {
			text = emojifyHTML(text)
		}
		m.HTML = text
	} else {
		if emoji {
			text = emojify(text)
		}
		m.Body = text
	}
	m.RoomMention = mentionsRoom(m.Body) || mentionsRoom(m.HTML)
	return m, nil
}

// mentionsRoom reports whether text says "@room" as a word: how a
// message asks to notify the room in a body, which the hook's message
// now has to say in m.mentions.
func mentionsRoom(text string) bool {
	for rest := text; ; {
		i := strings.Index(rest, "@room")
		if i < 0 {
			return false
		}
		before := i == 0 || !isWordByte(rest[i-1])
		after := i+5 == len(rest) || !isWordByte(rest[i+5])
		if before && after {
			return true
		}
		rest = rest[i+5:]
	}
}

func isWordByte(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c >= 0x80
}

// emojifyHTML converts shortcodes in the text of HTML, leaving tags and
// attribute values (URLs may contain colons) as they are. Shortcodes hold
// no characters that HTML escapes, so the raw text can be converted.
func emojifyHTML(h string) string {
	var b strings.Builder
	z := html.NewTokenizer(strings.NewReader(h))
	for {
		tt := z.Next()
		if tt == html.ErrorToken {
			return b.String()
		}
		raw := string(z.Raw())
		if tt == html.TextToken {
			raw = emojify(raw)
		}
		b.WriteString(raw)
	}
}
