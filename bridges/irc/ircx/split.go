package ircx

import (
	"strings"
	"unicode/utf8"
)

// SplitMessage splits text into PRIVMSG texts that each fit, in bytes, in
// a line of lineLen bytes (0: 512; ISupport.LineLen) as the server relays
// it to the other users:
//
//	":" source " PRIVMSG " target " :" text "\r\n"
//
// where prefixLen is len(source), the sender's "nick!user@host" as the
// server shows it (Conn.SourceLen). Message tags are not counted: IRCv3
// gives them their own budget (message-tags), apart from these bytes.
//
// Newlines (LF, CRLF or CR) end a line; empty lines are left out (IRC has
// no empty message) and NUL bytes are removed. A line that is too long is
// cut after the last word that fits, the spaces going to the start of the
// next part (servers such as ngircd strip trailing spaces but keep
// leading ones, so joining the parts gives the line back); a word longer
// than a whole part (a long URL, text without spaces) is cut, filling the
// part, after the last whole UTF-8 sequence that fits: a multi-byte
// character is never cut. Spaces at the very end of a line may
// still be stripped by the server.
//
// For a NOTICE the same parts fit; for a CTCP ACTION add
// len("\x01ACTION \x01") (9) to prefixLen.
func SplitMessage(prefixLen int, target, text string, lineLen int) []string {
	if lineLen <= 0 {
		lineLen = 512
	}
	budget := lineLen - len(":") - prefixLen - len(" PRIVMSG ") - len(target) - len(" :") - len("\r\n")
	// Always make progress, even with a budget the server cannot meet.
	budget = max(budget, utf8.UTFMax)
	if strings.IndexByte(text, 0) >= 0 {
		text = strings.ReplaceAll(text, "\x00", "")
	}
	var out []string
	for text != "" {
		var line string
		if i := strings.IndexAny(text, "\r\n"); i >= 0 {
			// CRLF leaves an empty line between CR and LF: dropped.
			line, text = text[:i], text[i+1:]
		} else {
			line, text = text, ""
		}
		out = splitLine(out, line, budget)
	}
	return out
}

// splitLine appends line's parts of at most budget bytes to out.
func splitLine(out []string, line string, budget int) []string {
	for len(line) > budget {
		cut := budget
		for cut > 0 && !utf8.RuneStart(line[cut]) {
			cut--
		}
		if cut == 0 { // not UTF-8: cut at the byte budget
			cut = budget
		}
		if sp := strings.LastIndexByte(line[:cut], ' '); sp > 0 {
			// A next word longer than a whole part is cut anyway: fill
			// this part rather than leave it short.
			next := line[sp+1:]
			if end := strings.IndexByte(next, ' '); end >= 0 {
				next = next[:end]
			}
			for sp > 0 && line[sp-1] == ' ' { // the whole run of spaces
				sp--
			}
			if sp > 0 && len(next) < budget {
				cut = sp
			}
		}
		out = append(out, line[:cut])
		line = line[cut:]
	}
	if line != "" {
		out = append(out, line)
	}
	return out
}
