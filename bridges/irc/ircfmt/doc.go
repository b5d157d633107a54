// Package ircfmt owns the conversion of message formatting between IRC and
// Matrix: mIRC control codes (bold, italic, underline, strikethrough,
// monospace, colours, reverse, reset) on one side, and the HTML that the
// Matrix spec permits in formatted_body on the other.
//
// Everything here is a pure function of its input: no I/O, no state. The
// bridge decides what a message is (emote, notice, reply, media) and how
// long lines are split; this package only translates text.
//
// IRC formatting codes are toggles that apply until they are repeated or
// reset, and formatting ends with the line (each line is its own message).
// HTML formatting is a tree. Both converters therefore work on a "style"
// per stretch of text rather than mapping tags to codes one to one: that
// keeps nested HTML (<b>a<b>b</b>c</b>) and overlapping IRC codes
// (\x02a\x1Db\x02c\x1D) correct in both directions.
package ircfmt
