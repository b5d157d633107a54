package ircx

import (
	"maps"
	"strconv"
	"strings"
)

// CaseMapping is how a server folds the case of nicks and channel names
// (ISUPPORT CASEMAPPING). The zero value is RFC1459, the default when a
// server names none.
type CaseMapping uint8

const (
	// RFC1459 folds A-Z to a-z and []\~ to {}|^.
	RFC1459 CaseMapping = iota
	// StrictRFC1459 folds A-Z to a-z and []\ to {}| (not ~).
	StrictRFC1459
	// ASCII folds A-Z to a-z only.
	ASCII
)

// String is the CASEMAPPING token's value.
func (cm CaseMapping) String() string {
	switch cm {
	case StrictRFC1459:
		return "strict-rfc1459"
	case ASCII:
		return "ascii"
	}
	return "rfc1459"
}

func parseCaseMapping(v string) CaseMapping {
	switch strings.ToLower(v) {
	case "ascii":
		return ASCII
	case "strict-rfc1459":
		return StrictRFC1459
	}
	// rfc1459 and anything unknown (rfc7613 folds more, never less,
	// than ascii; rfc1459 is the safe superset for the ASCII range).
	return RFC1459
}

func (cm CaseMapping) lower(b byte) byte {
	switch {
	case 'A' <= b && b <= 'Z':
		return b + ('a' - 'A')
	case cm == ASCII:
		return b
	case '[' <= b && b <= '\\' || b == ']':
		return b + ('{' - '[')
	case b == '~' && cm == RFC1459:
		return '^'
	}
	return b
}

// Fold returns name in its canonical case, for comparing and map keys. It
// does not allocate when name is already folded.
func (cm CaseMapping) Fold(name string) string {
	for i := 0; i < len(name); i++ {
		if cm.lower(name[i]) != name[i] {
			b := []byte(name)
			for j := i; j < len(b); j++ {
				b[j] = cm.lower(b[j])
			}
			return string(b)
		}
	}
	return name
}

// Equal reports whether a and b name the same nick or channel.
func (cm CaseMapping) Equal(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		if cm.lower(a[i]) != cm.lower(b[i]) {
			return false
		}
	}
	return true
}

// ISupport is what a server announced in RPL_ISUPPORT (005), with the
// RFC 1459 defaults for what it did not. A Conn's ISupport is replaced,
// never modified, when the server sends 005 again: treat it as read-only.
type ISupport struct {
	CaseMapping CaseMapping
	// ChanTypes are the characters that start a channel name ("#&").
	ChanTypes string
	// PrefixModes and PrefixChars are PREFIX's two halves, highest rank
	// first and of equal length: "ov" and "@+" for (ov)@+.
	PrefixModes string
	PrefixChars string
	// ChanModesA..D are CHANMODES' classes: A lists (always a parameter,
	// e.g. b), B always a parameter (k), C a parameter when set (l), D
	// never (imnpst).
	ChanModesA, ChanModesB, ChanModesC, ChanModesD string
	// NickLen, ChannelLen and TopicLen are 0 when unlimited or unknown.
	NickLen, ChannelLen, TopicLen int
	// LineLen is the longest line in bytes, CRLF and without tags
	// included (512).
	LineLen int
	// Network is the network's name, "" when not announced.
	Network string
	// Modes is how many parameter modes one MODE may carry (3).
	Modes int
	// TargMax maps a command (upper case) to how many targets it takes at
	// most; 0 means no limit. Commands not in it: unknown.
	TargMax map[string]int
	// Raw holds every token announced, with its value unescaped ("" for
	// a token without one).
	Raw map[string]string
}

// defaultISupport is what a server that sends no 005 supports. Shared by
// every Conn until its server sends 005: never modify it.
var defaultISupport = &ISupport{
	CaseMapping: RFC1459,
	ChanTypes:   "#&",
	PrefixModes: "ov",
	PrefixChars: "@+",
	ChanModesA:  "b",
	ChanModesB:  "k",
	ChanModesC:  "l",
	ChanModesD:  "imnpst",
	NickLen:     9,
	LineLen:     512,
	Modes:       3,
}

// Fold returns name in the server's canonical case.
func (is *ISupport) Fold(name string) string { return is.CaseMapping.Fold(name) }

// Equal reports whether a and b are the same nick or channel on this
// server.
func (is *ISupport) Equal(a, b string) bool { return is.CaseMapping.Equal(a, b) }

// IsChannel reports whether target names a channel (starts with one of
// ChanTypes).
func (is *ISupport) IsChannel(target string) bool {
	return target != "" && strings.IndexByte(is.ChanTypes, target[0]) >= 0
}

// PrefixFor returns the prefix character of a prefix mode ('o' → '@'),
// or 0.
func (is *ISupport) PrefixFor(mode byte) byte {
	if i := strings.IndexByte(is.PrefixModes, mode); i >= 0 && i < len(is.PrefixChars) {
		return is.PrefixChars[i]
	}
	return 0
}

// ModeFor returns the prefix mode of a prefix character ('@' → 'o'), or
// 0.
func (is *ISupport) ModeFor(prefix byte) byte {
	if i := strings.IndexByte(is.PrefixChars, prefix); i >= 0 && i < len(is.PrefixModes) {
		return is.PrefixModes[i]
	}
	return 0
}

// rank orders prefix modes: 0 is the highest; -1 is not a prefix mode.
func (is *ISupport) rank(mode byte) int { return strings.IndexByte(is.PrefixModes, mode) }

// ModeClass returns 'A', 'B', 'C' or 'D' for a channel mode of CHANMODES,
// 'P' for a prefix mode, or 0 for a mode the server did not announce.
func (is *ISupport) ModeClass(mode byte) byte {
	switch {
	case strings.IndexByte(is.PrefixModes, mode) >= 0:
		return 'P'
	case strings.IndexByte(is.ChanModesA, mode) >= 0:
		return 'A'
	case strings.IndexByte(is.ChanModesB, mode) >= 0:
		return 'B'
	case strings.IndexByte(is.ChanModesC, mode) >= 0:
		return 'C'
	case strings.IndexByte(is.ChanModesD, mode) >= 0:
		return 'D'
	}
	return 0
}

// ParseISupport returns base (nil: the defaults) updated with tokens from
// a 005 line ("NICKLEN=30", "-EXCEPTS": the parameters between the nick
// and the trailing text). base is not modified.
func ParseISupport(base *ISupport, tokens []string) *ISupport {
	if base == nil {
		base = defaultISupport
	}
	is := *base
	is.Raw = maps.Clone(base.Raw)
	if is.Raw == nil {
		is.Raw = make(map[string]string)
	}
	for _, tok := range tokens {
		if tok == "" || strings.ContainsRune(tok, ' ') {
			continue
		}
		if name, ok := strings.CutPrefix(tok, "-"); ok {
			delete(is.Raw, strings.ToUpper(name))
			is.set(strings.ToUpper(name), "", true)
			continue
		}
		name, value, _ := strings.Cut(tok, "=")
		name = strings.ToUpper(name)
		value = unescapeISupport(value)
		is.Raw[name] = value
		is.set(name, value, false)
	}
	return &is
}

// set applies one token; reset restores the default.
func (is *ISupport) set(name, value string, reset bool) {
	d := defaultISupport
	atoi := func(def int) int {
		if reset || value == "" {
			return def
		}
		n, err := strconv.Atoi(value)
		if err != nil || n < 0 {
			return def
		}
		return n
	}
	switch name {
	case "CASEMAPPING":
		is.CaseMapping = d.CaseMapping
		if !reset {
			is.CaseMapping = parseCaseMapping(value)
		}
	case "CHANTYPES":
		is.ChanTypes = d.ChanTypes
		if !reset {
			is.ChanTypes = value
		}
	case "PREFIX":
		is.PrefixModes, is.PrefixChars = d.PrefixModes, d.PrefixChars
		if !reset {
			is.PrefixModes, is.PrefixChars = "", ""
			if modes, chars, ok := strings.Cut(strings.TrimPrefix(value, "("), ")"); ok && len(modes) == len(chars) {
				is.PrefixModes, is.PrefixChars = modes, chars
			}
		}
	case "CHANMODES":
		is.ChanModesA, is.ChanModesB, is.ChanModesC, is.ChanModesD = d.ChanModesA, d.ChanModesB, d.ChanModesC, d.ChanModesD
		if !reset {
			classes := append(strings.SplitN(value, ",", 5), "", "", "", "")
			is.ChanModesA, is.ChanModesB, is.ChanModesC, is.ChanModesD = classes[0], classes[1], classes[2], classes[3]
		}
	case "NICKLEN":
		is.NickLen = atoi(d.NickLen)
	case "CHANNELLEN":
		is.ChannelLen = atoi(0)
	case "TOPICLEN":
		is.TopicLen = atoi(0)
	case "LINELEN":
		is.LineLen = max(atoi(d.LineLen), 512)
	case "NETWORK":
		is.Network = value
	case "MODES":
		is.Modes = atoi(d.Modes)
		if !reset && value == "" {
			is.Modes = 0 // MODES without a value: no limit
		}
	case "TARGMAX":
		is.TargMax = nil
		if !reset {
			is.TargMax = make(map[string]int)
			for item := range strings.SplitSeq(value, ",") {
				cmd, n, _ := strings.Cut(item, ":")
				if cmd == "" {
					continue
				}
				limit, _ := strconv.Atoi(n)
				is.TargMax[strings.ToUpper(cmd)] = max(limit, 0)
			}
		}
	}
}

// unescapeISupport decodes \xHH escapes in an ISUPPORT value.
func unescapeISupport(v string) string {
	if !strings.Contains(v, `\x`) {
		return v
	}
	var b strings.Builder
	for i := 0; i < len(v); i++ {
		if v[i] == '\\' && i+3 < len(v) && v[i+1] == 'x' {
			if n, err := strconv.ParseUint(v[i+2:i+4], 16, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(v[i])
	}
	return b.String()
}
