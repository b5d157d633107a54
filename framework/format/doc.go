// Package format owns the conversion of message text between Matrix and
// the outside world for every Switchboard bridge and bot: sanitising HTML
// that arrives from remote networks and webhooks down to what the Matrix
// spec permits in formatted_body, turning markdown, HTML and plain text
// into m.room.message content with a readable plain body, and writing
// mentions (pills plus m.mentions).
//
// It exists so that no bridge sends unsanitised HTML into a room, and so
// that all of them agree on what a plain body looks like. Bridges add
// their protocol's own format (IRC control codes, Slack mrkdwn) on top:
// they adjust the converters of PlainParser and run it with ConvertHTML.
// The markdown and HTML parsing itself is mautrix's
// (maunium.net/go/mautrix/format); this package adds the sanitiser, which
// mautrix does not have, and the defaults every bridge should share.
package format
