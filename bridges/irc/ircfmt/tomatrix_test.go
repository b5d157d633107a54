package ircfmt

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/switchboard-im/switchboard/framework/format"
)

type toMatrixCase struct {
	name, in, body, html string
}

var toMatrixCases = []toMatrixCase{
	// Plain text stays plain.
	{"plain", "hello world", "hello world", ""},
	{"empty", "", "", ""},
	{"plain with markup characters", `a < b & "c" > 'd'`, `a < b & "c" > 'd'`, ""},
	{"plain URL is left to the client", "see https://example.org", "see https://example.org", ""},
	{"codes without visible effect", "\x02\x02a\x1D\x1D\x0F", "a", ""},
	{"reverse without colours shows nothing", "\x16rev\x16", "rev", ""},
	{"colour 99 is the default", "\x0399,99x", "x", ""},

	// Each code.
	{"bold", "a \x02b\x02 c", "a b c", "a <strong>b</strong> c"},
	{"italic", "\x1Di\x1D", "i", "<em>i</em>"},
	{"underline", "\x1Fu\x1F", "u", "<u>u</u>"},
	{"strikethrough", "\x1Es\x1E", "s", "<del>s</del>"},
	{"monospace", "\x11m\x11", "m", "<code>m</code>"},
	{"colour fg", "\x034red", "red", `<span data-mx-color="#ff0000">red</span>`},
	{"colour fg two digits", "\x0304red\x03 plain", "red plain", `<span data-mx-color="#ff0000">red</span> plain`},
	{"colour fg,bg", "\x0308,02yob", "yob", `<span data-mx-color="#ffff00" data-mx-bg-color="#00007f">yob</span>`},
	{"colour bg keeps after fg change", "\x034,2a\x033b", "ab",
		`<span data-mx-color="#ff0000" data-mx-bg-color="#00007f">a</span><span data-mx-color="#009300" data-mx-bg-color="#00007f">b</span>`},
	{"colour bg only via 99", "\x0399,04x", "x", `<span data-mx-bg-color="#ff0000">x</span>`},
	{"extended colour", "\x0352x\x0388y\x0398z", "xyz",
		`<span data-mx-color="#ff0000">x</span><span data-mx-color="#000000">y</span><span data-mx-color="#ffffff">z</span>`},
	{"hex colour", "\x04FF8800orange", "orange", `<span data-mx-color="#ff8800">orange</span>`},
	{"hex colour with bg", "\x04ff8800,102030x\x04y", "xy", `<span data-mx-color="#ff8800" data-mx-bg-color="#102030">x</span>y`},
	{"hex colour, bad bg is text", "\x04ff8800,zz", ",zz", `<span data-mx-color="#ff8800">,zz</span>`},
	{"hex colour too short resets", "\x034a\x04abcb", "aabcb", `<span data-mx-color="#ff0000">a</span>abcb`},
	{"reverse swaps colours", "\x034,2a\x16b\x16c", "abc",
		`<span data-mx-color="#ff0000" data-mx-bg-color="#00007f">a</span><span data-mx-color="#00007f" data-mx-bg-color="#ff0000">b</span><span data-mx-color="#ff0000" data-mx-bg-color="#00007f">c</span>`},
	{"reverse with fg only", "\x16\x034x", "x", `<span data-mx-bg-color="#ff0000">x</span>`},
	{"reset", "\x02\x1D\x1F\x034ab\x0Fc", "abc", `<span data-mx-color="#ff0000"><strong><em><u>ab</u></em></strong></span>c`},

	// Nesting and overlapping.
	{"nested", "\x02b\x1Dbi\x1Db\x02", "bbib", "<strong>b<em>bi</em>b</strong>"},
	{"overlapping", "\x02a\x1Db\x02c\x1D", "abc", "<strong>a<em>b</em></strong><em>c</em>"},
	{"all at once", "\x0304,01\x02\x1D\x1F\x1E\x11x", "x",
		`<span data-mx-color="#ff0000" data-mx-bg-color="#000000"><strong><em><u><del><code>x</code></del></u></em></strong></span>`},

	// Odd sequences.
	{"unbalanced bold runs to the end", "\x02bold", "bold", "<strong>bold</strong>"},
	{"trailing codes", "\x02a\x02\x1D\x03\x0304", "a", "<strong>a</strong>"},
	{"lone colour resets both", "\x034,2a\x03b", "ab", `<span data-mx-color="#ff0000" data-mx-bg-color="#00007f">a</span>b`},
	{"three digits: two are the colour", "\x03123x", "3x", `<span data-mx-color="#0000fc">3x</span>`},
	{"comma without digit is text", "\x034,x", ",x", `<span data-mx-color="#ff0000">,x</span>`},
	{"comma before fg is text", "\x02\x03,4x", ",4x", `<strong>,4x</strong>`},
	{"bg three digits", "\x034,123", "3", `<span data-mx-color="#ff0000" data-mx-bg-color="#0000fc">3</span>`},
	{"codes at the very end", "\x02x\x03", "x", "<strong>x</strong>"},
	{"only codes", "\x02\x03\x04\x1D", "", ""},

	// Escaping, URLs, lines.
	{"escaping", "\x02<b>&amp;\"'</b>", `<b>&amp;"'</b>`, `<strong>&lt;b&gt;&amp;amp;"'&lt;/b&gt;</strong>`},
	{"url linkified", "\x02see\x02 https://example.org/a?b=1&c=2.", "see https://example.org/a?b=1&c=2.",
		`<strong>see</strong> <a href="https://example.org/a?b=1&amp;c=2">https://example.org/a?b=1&amp;c=2</a>.`},
	{"url in formatting", "\x02go to http://x.org/ now\x02", "go to http://x.org/ now",
		`<strong>go to </strong><a href="http://x.org/"><strong>http://x.org/</strong></a><strong> now</strong>`},
	{"url with formatting inside stays one link", "\x02x https://a.org/\x1Db\x1D", "x https://a.org/b",
		`<strong>x </strong><a href="https://a.org/b"><strong>https://a.org/<em>b</em></strong></a>`},
	{"url brackets", "\x02(https://en.wikipedia.org/wiki/Go_(game))", "(https://en.wikipedia.org/wiki/Go_(game))",
		`<strong>(</strong><a href="https://en.wikipedia.org/wiki/Go_(game)"><strong>https://en.wikipedia.org/wiki/Go_(game)</strong></a><strong>)</strong>`},
	{"url in angle brackets", "\x02<https://x.org/>", "<https://x.org/>",
		`<strong>&lt;</strong><a href="https://x.org/"><strong>https://x.org/</strong></a><strong>&gt;</strong>`},
	{"www url", "\x1Dwww.example.org!", "www.example.org!",
		`<a href="https://www.example.org"><em>www.example.org</em></a><em>!</em>`},
	{"scheme alone is no url", "\x02http:// www.", "http:// www.", "<strong>http:// www.</strong>"},
	{"javascript is no url", "\x02javascript:alert(1)", "javascript:alert(1)", "<strong>javascript:alert(1)</strong>"},
	{"line feed ends formatting", "\x02a\nb", "a\nb", "<strong>a</strong><br>b"},
	{"CR LF is one line end", "\x02a\r\n\x02b\rc", "a\nb\nc", "<strong>a</strong><br><strong>b</strong><br>c"},
	{"other controls dropped", "\x01ACTION x\x01 \x00\x07\x7F\x02y", "ACTION x y", "ACTION x <strong>y</strong>"},
	{"tab kept", "\x02a\tb", "a\tb", "<strong>a\tb</strong>"},

	// Unicode.
	{"unicode", "\x02héllo 世界 🎉\x02 ok", "héllo 世界 🎉 ok", "<strong>héllo 世界 🎉</strong> ok"},
	{"invalid UTF-8 replaced", "\x02a\xffb", "a\uFFFDb", "<strong>a\uFFFDb</strong>"},
	{"digits after colour in unicode", "\x0304١٢", "١٢", `<span data-mx-color="#ff0000">١٢</span>`},
}

func TestToMatrix(t *testing.T) {
	for _, tc := range toMatrixCases {
		t.Run(tc.name, func(t *testing.T) {
			body, html := ToMatrix(tc.in)
			if body != tc.body {
				t.Errorf("body = %q, want %q", body, tc.body)
			}
			if html != tc.html {
				t.Errorf("html = %q\n      want %q", html, tc.html)
			}
			if clean := format.Sanitize(html); clean != html {
				t.Errorf("Sanitize changes the html:\n %q\n %q", html, clean)
			}
			if s := Strip(tc.in); s != body {
				t.Errorf("Strip = %q, body %q", s, body)
			}
		})
	}
}

// TestToMatrixPalette checks every colour number against the published
// table, in both positions.
func TestToMatrixPalette(t *testing.T) {
	want := map[int]string{
		0: "#ffffff", 1: "#000000", 2: "#00007f", 3: "#009300", 4: "#ff0000", 5: "#7f0000",
		6: "#9c009c", 7: "#fc7f00", 8: "#ffff00", 9: "#00fc00", 10: "#009393", 11: "#00ffff",
		12: "#0000fc", 13: "#ff00ff", 14: "#7f7f7f", 15: "#d2d2d2",
		16: "#470000", 27: "#47002a", 28: "#740000", 40: "#b50000", 52: "#ff0000", 59: "#008cff",
		64: "#ff5959", 76: "#ff9c9c", 87: "#ff94d3", 88: "#000000", 97: "#e2e2e2", 98: "#ffffff",
	}
	for n := 0; n <= 98; n++ {
		_, html := ToMatrix(fmt.Sprintf("\x03%02d,%02dx", n, n))
		hex := palette[n]
		if w, ok := want[n]; ok && w != hex {
			t.Errorf("colour %d = %s, want %s", n, hex, w)
		}
		if wantHTML := `<span data-mx-color="` + hex + `" data-mx-bg-color="` + hex + `">x</span>`; html != wantHTML {
			t.Errorf("colour %d: %q, want %q", n, html, wantHTML)
		}
	}
	if _, html := ToMatrix("\x0399x"); html != "" {
		t.Errorf("colour 99: %q, want no formatting", html)
	}
}

// TestToMatrixLong checks that long and code-heavy lines convert in
// linear time and stay well-formed.
func TestToMatrixLong(t *testing.T) {
	inputs := map[string]string{
		"toggles":  strings.Repeat("\x02a\x1Db\x1Fc\x0304,05d\x16e\x0Ff ", 20000),
		"colours":  strings.Repeat("\x03", 200000),
		"hex":      strings.Repeat("\x04ffffff,000000x", 20000),
		"urls":     strings.Repeat("\x02https://example.org/"+strings.Repeat("a", 50)+" ", 5000),
		"one word": "\x02" + strings.Repeat("é", 200000),
	}
	for name, in := range inputs {
		start := time.Now()
		body, html := ToMatrix(in)
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("%s: %d bytes took %v", name, len(in), d)
		}
		if format.Sanitize(html) != html {
			t.Errorf("%s: html is not sanitised", name)
		}
		if strings.ContainsAny(body, "\x02\x03\x04\x0F\x16\x1D") {
			t.Errorf("%s: codes left in body", name)
		}
	}
}
