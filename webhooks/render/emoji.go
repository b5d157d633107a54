package render

import (
	"strings"
	"sync"

	"go.mau.fi/util/emojishortcodes"
	"go.mau.fi/util/variationselector"
)

// emojiByName maps Slack's emoji shortcodes to emoji. Slack's names are
// those of iamcal/emoji-data, which go.mau.fi/util embeds (as a map from
// emoji to its main name); emojiAliases adds the other names in common
// use, which that map leaves out.
var emojiByName = sync.OnceValue(func() map[string]string {
	byEmoji := emojishortcodes.GetMap()
	m := make(map[string]string, len(byEmoji)+len(emojiAliases))
	for e, name := range byEmoji {
		m[name] = e
	}
	for alias, name := range emojiAliases {
		if e, ok := m[name]; ok {
			m[alias] = e
		}
	}
	return m
})

// emojiAliases are second names of emoji, from emoji-data's alias lists
// and GitHub's names (which matrix-appservice-webhooks used), each mapped
// to the main name.
var emojiAliases = map[string]string{
	"thumbsup":                "+1",
	"thumbsdown":              "-1",
	"satisfied":               "laughing",
	"poop":                    "hankey",
	"shit":                    "hankey",
	"punch":                   "facepunch",
	"raised_hand":             "hand",
	"thinking":                "thinking_face",
	"simple_smile":            "slightly_smiling_face",
	"tshirt":                  "shirt",
	"red_car":                 "car",
	"knife":                   "hocho",
	"honeybee":                "bee",
	"flag-us":                 "us",
	"uk":                      "gb",
	"flag-gb":                 "gb",
	"green_circle":            "large_green_circle",
	"yellow_circle":           "large_yellow_circle",
	"orange_circle":           "large_orange_circle",
	"purple_circle":           "large_purple_circle",
	"stop_sign":               "octagonal_sign",
	"robot":                   "robot_face",
	"rofl":                    "rolling_on_the_floor_laughing",
	"roll_eyes":               "face_with_rolling_eyes",
	"star_struck":             "star-struck",
	"cowboy_hat_face":         "face_with_cowboy_hat",
	"hugs":                    "hugging_face",
	"heavy_exclamation_mark":  "exclamation",
	"collision":               "boom",
	"pencil":                  "memo",
	"envelope":                "email",
	"white_flag":              "waving_white_flag",
	"black_flag":              "waving_black_flag",
	"rainbow_flag":            "rainbow-flag",
	"metal":                   "the_horns",
	"sign_of_the_horns":       "the_horns",
	"facepalm":                "face_palm",
	"running":                 "runner",
	"shoe":                    "mans_shoe",
	"pen":                     "lower_left_ballpoint_pen",
	"fountain_pen":            "lower_left_fountain_pen",
	"paintbrush":              "lower_left_paintbrush",
	"crayon":                  "lower_left_crayon",
	"frowning_face":           "white_frowning_face",
	"heavy_heart_exclamation": "heavy_heart_exclamation_mark_ornament",
	"spiral_notepad":          "spiral_note_pad",
	"spiral_calendar":         "spiral_calendar_pad",
	"ballot_box":              "ballot_box_with_ballot",
	"dagger":                  "dagger_knife",
}

// skinTones are Slack's skin tone suffixes, ":+1::skin-tone-3:", as
// Unicode modifiers.
var skinTones = map[string]string{
	"skin-tone-2": "\U0001F3FB",
	"skin-tone-3": "\U0001F3FC",
	"skin-tone-4": "\U0001F3FD",
	"skin-tone-5": "\U0001F3FE",
	"skin-tone-6": "\U0001F3FF",
}

// maxShortcode bounds how far a ':' looks for its closing ':'.
const maxShortcode = 64

// shortcodeAt reads an emoji shortcode (with an optional skin tone) at
// the start of s, which begins with ':'. It returns the emoji and the
// length of the shortcode, or n == 0 if s does not start with a known one.
// Unknown names (a workspace's custom emoji) stay as they are written.
func shortcodeAt(s string) (emoji string, n int) {
	name, ok := shortcodeName(s)
	if !ok {
		return "", 0
	}
	emoji, ok = emojiByName()[name]
	if !ok {
		return "", 0
	}
	n = len(name) + 2
	if tone, ok := shortcodeName(s[n:]); ok && skinTones[tone] != "" {
		// The modifier goes straight after the base emoji, in place of
		// its variation selector.
		emoji = variationselector.Remove(emoji) + skinTones[tone]
		n += len(tone) + 2
	}
	return emoji, n
}

// shortcodeName reads ":name:" at the start of s.
func shortcodeName(s string) (string, bool) {
	if len(s) < 3 || s[0] != ':' {
		return "", false
	}
	for i := 1; i < len(s) && i <= maxShortcode; i++ {
		c := s[i]
		switch {
		case c == ':':
			return s[1:i], i > 1
		case 'a' <= c && c <= 'z', '0' <= c && c <= '9', c == '_', c == '-', c == '+', c == '\'':
		default:
			return "", false
		}
	}
	return "", false
}

// emojify replaces the known shortcodes in plain text by their emoji.
func emojify(s string) string {
	if !strings.Contains(s, ":") {
		return s
	}
	var b strings.Builder
	for {
		i := strings.IndexByte(s, ':')
		if i < 0 {
			b.WriteString(s)
			return b.String()
		}
		b.WriteString(s[:i])
		s = s[i:]
		if e, n := shortcodeAt(s); n > 0 {
			b.WriteString(e)
			s = s[n:]
		} else {
			b.WriteByte(':')
			s = s[1:]
		}
	}
}
