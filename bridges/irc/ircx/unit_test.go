package ircx

import (
	"encoding/base64"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"gopkg.in/irc.v3"
)

func TestSplitMessage(t *testing.T) {
	const src = "alice!~alice@127.0.0.1"
	// Texts without trailing spaces: servers strip them from the last part.
	long := strings.TrimSpace(strings.Repeat("héllo wörld 日本語 🎉 ", 60))
	cases := []struct {
		name, text string
		lines      []string // the message's lines, each to be given back by its parts
	}{
		{"short", "hello", []string{"hello"}},
		{"empty", "", nil},
		{"words", long, []string{long}},
		{"one long word", strings.Repeat("日本語🎉", 200), []string{strings.Repeat("日本語🎉", 200)}},
		{"newlines", "one\ntwo\r\nthree\rfour\n\n", []string{"one", "two", "three", "four"}},
		{"runs of spaces", strings.Repeat("word     ", 200) + "end", []string{strings.Repeat("word     ", 200) + "end"}},
		{"NUL removed", "a\x00b", []string{"ab"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			parts := SplitMessage(len(src), "#room", tc.text, 512)
			var got []string
			cur := ""
			for i, p := range parts {
				relayed := ":" + src + " PRIVMSG #room :" + p + "\r\n"
				if len(relayed) > 512 {
					t.Errorf("part %d: %d bytes relayed, more than 512", i, len(relayed))
				}
				if !utf8.ValidString(p) {
					t.Errorf("part %d is not valid UTF-8: %q", i, p)
				}
				if p == "" || strings.ContainsAny(p, "\r\n\x00") {
					t.Errorf("part %d is empty or has CR, LF or NUL: %q", i, p)
				}
				if strings.HasSuffix(p, " ") {
					t.Errorf("part %d ends with a space (ngircd strips it): %q", i, p)
				}
				cur += p
				// A part shorter than the budget ends a line unless
				// the next part starts with the spaces cut off.
				if i+1 == len(parts) || len(relayed) < 512-4 && !strings.HasPrefix(parts[i+1], " ") {
					got = append(got, cur)
					cur = ""
				}
			}
			if strings.Join(got, "\n") != strings.Join(tc.lines, "\n") {
				t.Errorf("parts do not give the text back:\n got %q\nwant %q", got, tc.lines)
			}
		})
	}

	// Word boundaries are preferred: every part of "words" but the last
	// ends at the end of a word.
	for _, p := range SplitMessage(len(src), "#room", long, 512) {
		if !strings.HasSuffix(p, " ") && !strings.HasSuffix(p, "🎉") && !strings.HasSuffix(p, "wörld") &&
			!strings.HasSuffix(p, "héllo") && !strings.HasSuffix(p, "日本語") {
			t.Errorf("part cut inside a word: ...%q", p[max(0, len(p)-12):])
		}
	}
	// A budget smaller than a character still makes progress.
	if parts := SplitMessage(600, "#room", "日本語", 512); strings.Join(parts, "") != "日本語" {
		t.Errorf("tiny budget: %q", parts)
	}
}

func TestISupport(t *testing.T) {
	// ngircd 26.1's tokens, and some of other servers.
	is := ParseISupport(nil, strings.Fields("NETWORK=SwitchboardTest RFC2812 IRCD=ngIRCd CHARSET=UTF-8 CASEMAPPING=ascii PREFIX=(qaohv)~&@%+ CHANTYPES=#&+ CHANMODES=beI,k,l,imMnOPQRstVz CHANLIMIT=#&+:0"))
	is = ParseISupport(is, strings.Fields(`CHANNELLEN=50 NICKLEN=30 TOPICLEN=490 MODES=5 TARGMAX=PRIVMSG:4,NOTICE:4,JOIN:,KICK:1 LINELEN=2048 EXCEPTS=e ESCAPED=a\x20b`))
	if is.CaseMapping != ASCII || is.ChanTypes != "#&+" || is.PrefixModes != "qaohv" || is.PrefixChars != "~&@%+" ||
		is.ChanModesA != "beI" || is.ChanModesB != "k" || is.ChanModesC != "l" || is.ChanModesD != "imMnOPQRstVz" ||
		is.NickLen != 30 || is.ChannelLen != 50 || is.TopicLen != 490 || is.Modes != 5 || is.LineLen != 2048 ||
		is.Network != "SwitchboardTest" {
		t.Errorf("parsed: %+v", is)
	}
	if is.TargMax["PRIVMSG"] != 4 || is.TargMax["KICK"] != 1 || is.TargMax["JOIN"] != 0 {
		t.Errorf("TARGMAX: %v", is.TargMax)
	}
	if _, ok := is.TargMax["JOIN"]; !ok {
		t.Error("TARGMAX JOIN: (no limit) missing")
	}
	if is.Raw["ESCAPED"] != "a b" || is.Raw["EXCEPTS"] != "e" {
		t.Errorf("raw: %v", is.Raw)
	}
	if is.PrefixFor('h') != '%' || is.ModeFor('~') != 'q' || is.PrefixFor('x') != 0 {
		t.Error("PrefixFor/ModeFor")
	}
	for mode, class := range map[byte]byte{'b': 'A', 'k': 'B', 'l': 'C', 'm': 'D', 'o': 'P', 'X': 0} {
		if got := is.ModeClass(mode); got != class {
			t.Errorf("ModeClass(%c) = %q, want %q", mode, got, class)
		}
	}
	if !is.IsChannel("+chan") || is.IsChannel("nick") {
		t.Error("IsChannel")
	}
	// Negation restores the default; the base is not modified.
	reset := ParseISupport(is, []string{"-CASEMAPPING", "-PREFIX", "-LINELEN", "-ESCAPED"})
	if reset.CaseMapping != RFC1459 || reset.PrefixModes != "ov" || reset.LineLen != 512 || reset.Raw["ESCAPED"] != "" {
		t.Errorf("reset: %+v", reset)
	}
	if is.CaseMapping != ASCII || is.Raw["ESCAPED"] != "a b" {
		t.Error("ParseISupport modified its base")
	}
	if d := ParseISupport(nil, nil); d.LineLen != 512 || d.CaseMapping != RFC1459 || d.ChanTypes != "#&" || d.PrefixChars != "@+" {
		t.Errorf("defaults: %+v", d)
	}
}

func TestCaseMapping(t *testing.T) {
	cases := []struct {
		cm         CaseMapping
		in, folded string
	}{
		{ASCII, "Nick[]\\~^", "nick[]\\~^"},
		{RFC1459, "Nick[]\\~^", "nick{}|^^"},
		{StrictRFC1459, "Nick[]\\~^", "nick{}|~^"},
		{RFC1459, "already{}", "already{}"},
		{RFC1459, "ÜTF-8", "Ütf-8"}, // bytes above ASCII are left alone
	}
	for _, tc := range cases {
		if got := tc.cm.Fold(tc.in); got != tc.folded {
			t.Errorf("%s.Fold(%q) = %q, want %q", tc.cm, tc.in, got, tc.folded)
		}
		if !tc.cm.Equal(tc.in, tc.folded) {
			t.Errorf("%s.Equal(%q, %q) = false", tc.cm, tc.in, tc.folded)
		}
	}
	if ASCII.Equal("a[", "A{") || !RFC1459.Equal("a[", "A{") || RFC1459.Equal("ab", "abc") {
		t.Error("Equal")
	}
	for v, cm := range map[string]CaseMapping{"ascii": ASCII, "rfc1459": RFC1459, "strict-rfc1459": StrictRFC1459, "rfc7613": RFC1459} {
		if got := ParseISupport(nil, []string{"CASEMAPPING=" + v}).CaseMapping; got != cm {
			t.Errorf("CASEMAPPING=%s: %s", v, got)
		}
	}
}

func TestAltNick(t *testing.T) {
	cases := []struct {
		nick      string
		n, maxLen int
		want      string
	}{
		{"alice", 1, 0, "alice_"},
		{"alice", 2, 0, "alice__"},
		{"alice", 3, 0, "alice1"},
		{"alice", 12, 0, "alice10"},
		{"alice", 1, 5, "alic_"},
		{"alice", 3, 3, "al1"},
		{"a", 4, 1, "a2"}, // cannot shorten below one character
	}
	for _, tc := range cases {
		if got := altNick(tc.nick, tc.n, tc.maxLen); got != tc.want {
			t.Errorf("altNick(%q, %d, %d) = %q, want %q", tc.nick, tc.n, tc.maxLen, got, tc.want)
		}
	}
}

func TestAuthenticateLines(t *testing.T) {
	for _, n := range []int{0, 10, 299, 300, 301, 600, 1000} {
		payload := strings.Repeat("x", n)
		lines := authenticateLines(payload)
		var enc string
		for i, l := range lines {
			chunk, ok := strings.CutPrefix(l, "AUTHENTICATE ")
			if !ok {
				t.Fatalf("%d bytes: line %q", n, l)
			}
			if len(chunk) > 400 || (i < len(lines)-1 && len(chunk) != 400) {
				t.Errorf("%d bytes: chunk %d is %d bytes", n, i, len(chunk))
			}
			if chunk != "+" {
				enc += chunk
			}
		}
		last := strings.TrimPrefix(lines[len(lines)-1], "AUTHENTICATE ")
		// A payload whose encoding is a multiple of 400 (or empty) ends
		// with "+".
		if wantPlus := len(base64.StdEncoding.EncodeToString([]byte(payload)))%400 == 0; wantPlus != (last == "+") {
			t.Errorf("%d bytes: last line %q", n, lines[len(lines)-1])
		}
		dec, err := base64.StdEncoding.DecodeString(enc)
		if err != nil || string(dec) != payload {
			t.Errorf("%d bytes: decoded %d bytes, %v", n, len(dec), err)
		}
	}
}

func TestBackoff(t *testing.T) {
	b := &Backoff{Min: 100 * time.Millisecond, Max: time.Second}
	for n, ceiling := range []time.Duration{100, 200, 400, 800, 1000, 1000} {
		ceiling *= time.Millisecond
		d := b.Next()
		if d < ceiling/2 || d > ceiling {
			t.Errorf("delay %d = %s, want within [%s, %s]", n, d, ceiling/2, ceiling)
		}
	}
	if b.Attempts() != 6 {
		t.Errorf("attempts = %d", b.Attempts())
	}
	b.Reset()
	if d := b.Next(); d > 100*time.Millisecond {
		t.Errorf("after Reset: %s", d)
	}
	// Jitter: delays at the same step differ.
	seen := map[time.Duration]bool{}
	for range 20 {
		b.Reset()
		seen[b.Next()] = true
	}
	if len(seen) < 2 {
		t.Error("no jitter")
	}
	var zero Backoff
	if d := zero.Next(); d < time.Second || d > 2*time.Second {
		t.Errorf("default first delay %s", d)
	}
}

// TestTrackModes follows MODE changes by CHANMODES class, and NAMES with
// multi-prefix, on ngircd's ISUPPORT.
func TestTrackModes(t *testing.T) {
	is := ParseISupport(nil, strings.Fields("CASEMAPPING=rfc1459 PREFIX=(qaohv)~&@%+ CHANMODES=beI,k,l,imMnOPQRstVz"))
	s := &session{c: New(Config{Nick: "me"}), nick: "me", is: is}
	feed := func(line string) *Event {
		t.Helper()
		m := mustParse(t, line)
		ev := &Event{Message: m, Time: time.Now()}
		s.track(ev)
		return ev
	}
	feed(":me!u@h JOIN #Chan")
	feed(":srv 353 me = #chan :~@me +%Bob[x] carol!c@h")
	feed(":srv 366 me #chan :End")
	mb := func(nick string) string {
		if m := s.channels["#chan"].members[is.Fold(nick)]; m != nil {
			return m.Modes
		}
		return "<absent>"
	}
	if mb("me") != "qo" || mb("bob{X}") != "hv" || mb("carol") != "" {
		t.Fatalf("after NAMES: me %q bob %q carol %q", mb("me"), mb("bob{X}"), mb("carol"))
	}
	feed(":me!u@h MODE #chan +kvlo-h key carol 10 Bob[x] bob[X]")
	if mb("carol") != "v" || mb("bob[x]") != "ov" {
		t.Errorf("prefixes: carol %q bob %q", mb("carol"), mb("bob[x]"))
	}
	modes := s.channels["#chan"].modes
	if modes['k'] != "key" || modes['l'] != "10" {
		t.Errorf("modes %q", modes)
	}
	// -l takes no parameter, -k does; b lists are not kept but take one.
	feed(":me!u@h MODE #chan -lk+bm-v key *!*@x carol")
	if _, ok := s.channels["#chan"].modes['l']; ok || mb("carol") != "" || s.channels["#chan"].modes['k'] != "" {
		t.Errorf("after removal: modes %q carol %q", s.channels["#chan"].modes, mb("carol"))
	}
	if _, ok := s.channels["#chan"].modes['m']; !ok {
		t.Errorf("+m not kept: %q", s.channels["#chan"].modes)
	}
	ev := feed(":bob[x]!b@h NICK :robert")
	if mb("robert") != "ov" || mb("bob[x]") != "<absent>" || len(ev.Channels) != 1 {
		t.Errorf("nick change: robert %q, channels %v", mb("robert"), ev.Channels)
	}
	ev = feed(":robert!b@h QUIT :bye")
	if mb("robert") != "<absent>" || len(ev.Channels) != 1 || ev.Channels[0] != "#Chan" {
		t.Errorf("quit: channels %v", ev.Channels)
	}
	feed(":me!u@h KICK #chan Carol :out")
	if mb("carol") != "<absent>" || mb("me") != "qo" {
		t.Error("KICK of someone else")
	}
	feed(":carol!c@h KICK #chan ME :out")
	if s.channels["#chan"] != nil {
		t.Error("KICK of us: channel kept")
	}
}

func mustParse(t *testing.T, line string) *irc.Message {
	t.Helper()
	m, err := irc.ParseMessage(line)
	if err != nil {
		t.Fatalf("parse %q: %v", line, err)
	}
	return m
}
