package ircfmt

import (
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"

	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/switchboard-im/switchboard/framework/format"
)

// FuzzToMatrix checks, for any IRC text, that ToMatrix does not panic; that
// its HTML is already sanitised and shows exactly the body; that the body
// holds no control characters; and that sending the result back to IRC
// shows the same text with the same formatting (colours mapped to the
// nearest mIRC colour, white space at line ends aside).
func FuzzToMatrix(f *testing.F) {
	for _, tc := range toMatrixCases {
		f.Add(tc.in)
	}
	f.Add("\x0304,05\x16\x02https://x.org/\x1D(a)\x0F\x03,\x04zz\x041234567,abcdef\n\r\x11")
	f.Fuzz(func(t *testing.T, in string) {
		body, h := ToMatrix(in)
		if !utf8.ValidString(body) || !utf8.ValidString(h) {
			t.Fatalf("invalid UTF-8: body %q html %q", body, h)
		}
		for _, c := range []byte(body) {
			if c < 0x20 && c != '\t' && c != '\n' || c == 0x7F {
				t.Fatalf("control %#x in body %q", c, body)
			}
		}
		if Strip(in) != body {
			t.Fatalf("Strip differs from body")
		}
		if clean := format.Sanitize(h); clean != h {
			t.Fatalf("html not sanitised:\n in %q\nout %q\nsan %q", in, h, clean)
		}
		if h == "" {
			for _, c := range ircChars(in, nil) {
				if c.bold || c.italic || c.underline || c.strike || c.mono || c.fg != "" || c.bg != "" {
					t.Fatalf("formatted text %q without html", in)
				}
			}
			return
		}
		var shown []rune
		for _, c := range htmlChars(t, h) {
			shown = append(shown, c.r)
		}
		if string(shown) != body {
			t.Fatalf("html shows %q, body is %q", string(shown), body)
		}

		out := FromMatrix(&event.MessageEventContent{Body: body, Format: event.FormatHTML, FormattedBody: h},
			Options{ExtendedColours: true})
		if want, got := lines(ircChars(in, nearestHex(true))), lines(ircChars(out, nil)); !reflect.DeepEqual(got, want) {
			t.Fatalf("round trip differs\n in %q\nhtml %q\nout %q", in, h, out)
		}
	})
}

// FuzzFromMatrix checks, for any formatted_body, that FromMatrix does not
// panic and writes valid UTF-8 with no control characters but line feed,
// tab and the formatting codes it uses (no \r, \x00 or \x01 that could
// break out of an IRC message or start a CTCP), and that reading its
// output back into Matrix gives sanitised HTML.
func FuzzFromMatrix(f *testing.F) {
	for _, tc := range fromMatrixCases {
		f.Add(tc.html, false)
	}
	f.Add(`<a href="https://matrix.to/#/@a:b.c">x</a><a href="matrix:r/x:y">r</a>`, true)
	f.Add("<ol start=-5><li><pre>a\r\nb</pre><blockquote><ul><li><h1>x</h1></li></ul></blockquote></li></ol>", true)
	f.Add(strings.Repeat("<b><span data-mx-color=\"#123456\">", 150), false)
	pill := func(userID id.UserID, label string) string { return label + "\r\n\x00" + string(userID) }
	f.Fuzz(func(t *testing.T, h string, alt bool) {
		opts := Options{NoMonospace: alt, ExtendedColours: alt}
		if alt {
			opts.Pill = pill
		}
		out := FromMatrix(&event.MessageEventContent{Body: h, Format: event.FormatHTML, FormattedBody: h}, opts)
		checkIRC(t, h, out)
		checkIRC(t, h, FromMatrix(&event.MessageEventContent{Body: h}, opts))
		if _, back := ToMatrix(out); format.Sanitize(back) != back {
			t.Fatalf("ToMatrix(%q) is not sanitised: %q", out, back)
		}
	})
}

func checkIRC(t *testing.T, in, out string) {
	t.Helper()
	if !utf8.ValidString(out) {
		t.Fatalf("invalid UTF-8 from %q: %q", in, out)
	}
	for _, c := range []byte(out) {
		switch c {
		case '\n', '\t', codeBold, codeColour, codeReset, codeMonospace, codeItalic, codeStrikethrough, codeUnderline:
			continue
		}
		if c < 0x20 || c == 0x7F {
			t.Fatalf("control %#x from %q: %q", c, in, out)
		}
	}
}
