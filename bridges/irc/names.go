package irc

import (
	"strings"
	"unicode/utf8"

	"maunium.net/go/mautrix/id"
)

// IDs. A channel's portal ID is "{network}/{channel}" with the channel
// case-folded by the network's case mapping ("libera/#go"); a direct chat
// between an IRC user and a Matrix user is "{network}/dm/{nick}/{user ID}"
// (the nick folded). An IRC user's ghost has the ID suffix
// "{network}_{nick}" (folded): @irc_libera__alice:server once the
// framework escaped it for the localpart grammar ("_" doubles).

func channelPortalID(network, foldedChannel string) string { return network + "/" + foldedChannel }

func dmPortalID(network, foldedNick string, userID id.UserID) string {
	return network + "/dm/" + foldedNick + "/" + string(userID)
}

// parsePortalID splits a portal ID into its network and either a channel
// (folded) or, for a direct chat, the nick and the Matrix user.
func parsePortalID(portalID string) (network, channel, nick string, user id.UserID, ok bool) {
	network, rest, ok := strings.Cut(portalID, "/")
	if !ok || rest == "" {
		return "", "", "", "", false
	}
	if dm, isDM := strings.CutPrefix(rest, "dm/"); isDM {
		nick, u, ok := strings.Cut(dm, "/")
		if !ok || nick == "" || u == "" {
			return "", "", "", "", false
		}
		return network, "", nick, id.UserID(u), true
	}
	return network, rest, "", "", true
}

func ghostSuffix(network, foldedNick string) string { return network + "_" + foldedNick }

// splitChannelArg reads a channel as a user names it: "network/#channel",
// "network #channel", or "#channel" alone (network "").
func splitChannelArg(arg string) (network, channel string) {
	arg = strings.TrimSpace(arg)
	if arg == "" {
		return "", ""
	}
	if strings.IndexByte("#&+!", arg[0]) >= 0 {
		return "", arg
	}
	if network, channel, ok := strings.Cut(arg, "/"); ok {
		return network, strings.TrimSpace(channel)
	}
	if network, channel, ok := strings.Cut(arg, " "); ok {
		return network, strings.TrimSpace(channel)
	}
	return arg, ""
}

// isNickSpecial: the characters RFC 2812 allows in nicks besides letters
// and digits ("-" only after the first).
func isNickSpecial(b byte) bool { return b >= '[' && b <= '`' || b >= '{' && b <= '}' }

func isNickChar(b byte, first bool) bool {
	switch {
	case b >= 'a' && b <= 'z', b >= 'A' && b <= 'Z', isNickSpecial(b):
		return true
	case b >= '0' && b <= '9', b == '-':
		return !first
	}
	return false
}

// sanitizeNick makes s a valid IRC nick: runs of characters IRC does not
// allow (spaces, dots, non-ASCII…) become one "_", and a nick that would
// start with a digit or "-" gets a "_" in front.
func sanitizeNick(s string) string {
	var b strings.Builder
	replaced := false
	for i := 0; i < len(s); {
		c := s[i]
		size := 1
		if c >= utf8.RuneSelf {
			_, size = utf8.DecodeRuneInString(s[i:])
		}
		if size == 1 && isNickChar(c, false) {
			if b.Len() == 0 && !isNickChar(c, true) {
				b.WriteByte('_')
			}
			b.WriteByte(c)
			replaced = false
		} else if !replaced {
			b.WriteByte('_')
			replaced = true
		}
		i += size
	}
	return b.String()
}

// validNick reports whether s is a nick the server should take (maxLen 0:
// no limit known).
func validNick(s string, maxLen int) bool {
	if s == "" || (maxLen > 0 && len(s) > maxLen) {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !isNickChar(s[i], i == 0) {
			return false
		}
	}
	return true
}

// makeNick renders a nick template for a user, sanitised and no longer
// than maxLen (0: no limit): when it is too long the localpart (and the
// display name) are shortened first, so that a suffix such as "[m]"
// survives; then the nick itself is cut.
func makeNick(n *NetworkConfig, d userData, maxLen int) string {
	nick := sanitizeNick(execTemplate(n.nickTmpl, d))
	if maxLen > 0 && len(nick) > maxLen {
		excess := len(nick) - maxLen
		short := d
		short.Localpart = d.Localpart[:max(1, len(d.Localpart)-excess)]
		name := d.DisplayName()
		short.displayName = func() string { return truncateUTF8(name, max(1, len(name)-excess)) }
		nick = sanitizeNick(execTemplate(n.nickTmpl, short))
		if len(nick) > maxLen {
			nick = nick[:maxLen]
		}
	}
	if nick == "" || nick == "_" {
		nick = "matrix"
	}
	return nick
}

// makeIdent renders the ident template: a-z and 0-9, at most 10 bytes.
func makeIdent(n *NetworkConfig, d userData) string {
	var b strings.Builder
	for _, r := range strings.ToLower(execTemplate(n.identTmpl, d)) {
		if (r >= 'a' && r <= 'z' || r >= '0' && r <= '9') && b.Len() < 10 {
			b.WriteRune(r)
		}
	}
	if b.Len() == 0 {
		return "matrix"
	}
	return b.String()
}

func truncateUTF8(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}
