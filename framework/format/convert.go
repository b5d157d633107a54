package format

import (
	"context"
	"fmt"
	stdhtml "html"
	"strings"

	"maunium.net/go/mautrix/event"
	mformat "maunium.net/go/mautrix/format"
	"maunium.net/go/mautrix/id"
)

// EscapeHTML escapes text for use anywhere in HTML: element content and
// single- or double-quoted attribute values.
func EscapeHTML(text string) string {
	return stdhtml.EscapeString(text)
}

// TextToContent returns an m.text message with a plain body. Set MsgType
// to event.MsgNotice for automated output (bots, alerts), which clients
// show differently and other bots do not answer.
//
// m.mentions is present and empty: with it, clients notify only the users
// it lists, not everyone whose name happens to appear in the text.
func TextToContent(text string) *event.MessageEventContent {
	return &event.MessageEventContent{
		MsgType:  event.MsgText,
		Body:     text,
		Mentions: &event.Mentions{},
	}
}

// HTMLContent returns an m.text message from HTML of any origin: the HTML
// is sanitised, the body is plain (HTMLToPlain of the HTML, or plain if it
// is not empty), and formatted_body is set only if the HTML says more than
// the body. Every user pill in the HTML is listed in m.mentions, as a
// Matrix client does when its user inserts a pill; reset Mentions if the
// HTML comes from somewhere that must not notify anyone.
func HTMLContent(htmlText, plain string) *event.MessageEventContent {
	clean := Sanitize(htmlText)
	text, mentions := ConvertHTML(PlainParser(), htmlText)
	if plain == "" {
		plain = text
	}
	content := TextToContent(plain)
	content.Mentions = mentions
	if clean != "" && !sameAsText(clean, plain) {
		content.Format = event.FormatHTML
		content.FormattedBody = clean
	}
	return content
}

// MarkdownToContent renders markdown (CommonMark with strikethrough, tables
// and ||spoilers||, as mautrix renders it) into an m.text message. Inline
// HTML in the markdown is allowed and sanitised like any other HTML; the
// body is the plain text of the result rather than the markdown source,
// so it shows what the formatted version shows.
//
// The markdown renderer (goldmark) takes more than linear time on some
// crafted input: about a second for 100 KB of nested quotes or unclosed
// links. Callers converting markdown from outside should cap its size
// first; a Matrix event cannot exceed 64 KiB anyway.
func MarkdownToContent(md string) *event.MessageEventContent {
	rendered := mformat.RenderMarkdown(md, true, true)
	htmlText := rendered.FormattedBody
	if rendered.Format != event.FormatHTML {
		// mautrix leaves formatted_body out when the HTML and its text
		// are the same string; the body is then that HTML.
		htmlText = rendered.Body
	}
	return HTMLContent(htmlText, "")
}

// HTMLToPlain converts HTML into readable plain text, the kind that goes
// into a message body: links as "label (url)" when the label is not the
// URL, list items with "* " or their number, quotes with "> ", code blocks
// fenced with ``` and their text untouched, table rows as lines with a tab
// between cells, user pills as the user's name, spoilers as "[Spoiler]"
// (the spec says a body must not give a spoiler away), images as their
// alt text. Emphasis keeps mautrix's markers (**bold**, _italic_,
// ~~strike~~, `code`), as Matrix bodies conventionally do. The HTML is
// sanitised first, so script and style text never shows.
func HTMLToPlain(htmlText string) string {
	text, _ := ConvertHTML(PlainParser(), htmlText)
	return text
}

// HTMLToMarkdown converts HTML into the markdown a person would have
// typed for it (mautrix's conversion): like HTMLToPlain, but links are
// [label](url), spoilers ||text|| and maths $latex$. Text that happens to
// look like markdown is not escaped.
func HTMLToMarkdown(htmlText string) string {
	parser := *mformat.MarkdownHTMLParser
	parser.TabsToSpaces = keepTabs
	text, _ := ConvertHTML(&parser, htmlText)
	return text
}

// UserPill returns the HTML that Matrix clients show as a mention of
// userID, labelled with name (the user ID if name is empty). Content made
// from it with HTMLContent lists the user in m.mentions, which is what
// makes the user's client notify them.
func UserPill(userID id.UserID, name string) string {
	if name == "" {
		name = userID.String()
	}
	if userID == "" {
		return EscapeHTML(name)
	}
	return fmt.Sprintf(`<a href="%s">%s</a>`, EscapeHTML(userID.URI().MatrixToURL()), EscapeHTML(name))
}

// PlainParser returns the mautrix parser behind HTMLToPlain, for bridges
// to start from: set its converters to their protocol's formatting (IRC
// control codes, Slack mrkdwn) and run it with ConvertHTML. Each call
// returns a new parser because HTMLParser is a struct of exported fields,
// and a shared one would be state any caller could change.
func PlainParser() *mformat.HTMLParser {
	return &mformat.HTMLParser{
		TabsToSpaces:     keepTabs,
		Newline:          "\n",
		HorizontalLine:   "---", // hr is a block: mautrix puts it on its own line
		PillConverter:    mformat.DefaultPillConverter,
		SpoilerConverter: hideSpoiler,
	}
}

// keepTabs tells mautrix to leave tabs alone: code keeps its indentation,
// and table cells stay tab-separated (spaces would be collapsed).
const keepTabs = -1

// hideSpoiler follows the spec's fallback for spoilers in a body: say that
// there is one, and why, but not what it hides.
func hideSpoiler(_, reason string, _ mformat.Context) string {
	if reason == "" {
		return "[Spoiler]"
	}
	return "[Spoiler: " + reason + "]"
}

// ConvertHTML sanitises HTML and converts it to text with a mautrix
// parser, returning the users its pills mention. Going through here rather
// than calling parser.Parse directly matters for HTML from outside:
// script and style text is dropped; nesting is bounded by MaxNesting, well
// inside the 512 levels the HTML parser under mautrix accepts (beyond
// those mautrix returns an empty string); line breaks inside text read as
// spaces, and table rows as lines with a tab between cells (keep the
// parser's TabsToSpaces at -1, or the cells run together).
func ConvertHTML(parser *mformat.HTMLParser, htmlText string) (text string, mentions *event.Mentions) {
	ctx := mformat.NewContext(context.Background())
	mentions = ctx.Mentions()
	return parser.Parse(readyForText(Sanitize(htmlText)), ctx), mentions
}

// sameAsText reports whether sanitised HTML shows nothing but text: the
// escaped text itself, or with its line breaks written as <br> (the form
// goldmark renders, "<br>\n", included).
func sameAsText(clean, text string) bool {
	escaped := Sanitize(EscapeHTML(text))
	return clean == escaped ||
		clean == strings.ReplaceAll(escaped, "\n", "<br>") ||
		clean == strings.ReplaceAll(escaped, "\n", "<br>\n")
}
