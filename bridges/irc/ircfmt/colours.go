package ircfmt

import "strconv"

// palette holds the mIRC colours 0–98 as "#rrggbb": 0–15 are the classic
// mIRC colours, 16–98 the extended table that mIRC, WeeChat, irssi, The
// Lounge, IRCCloud and others implement (colour 99 means "default" and has
// no value). The values are those of modern.ircdocs.horse.
var palette = [99]string{
	// 0–15
	"#ffffff", "#000000", "#00007f", "#009300", "#ff0000", "#7f0000", "#9c009c", "#fc7f00",
	"#ffff00", "#00fc00", "#009393", "#00ffff", "#0000fc", "#ff00ff", "#7f7f7f", "#d2d2d2",
	// 16–27
	"#470000", "#472100", "#474700", "#324700", "#004700", "#00472c",
	"#004747", "#002747", "#000047", "#2e0047", "#470047", "#47002a",
	// 28–39
	"#740000", "#743a00", "#747400", "#517400", "#007400", "#007449",
	"#007474", "#004074", "#000074", "#4b0074", "#740074", "#740045",
	// 40–51
	"#b50000", "#b56300", "#b5b500", "#7db500", "#00b500", "#00b571",
	"#00b5b5", "#0063b5", "#0000b5", "#7500b5", "#b500b5", "#b5006b",
	// 52–63
	"#ff0000", "#ff8c00", "#ffff00", "#b2ff00", "#00ff00", "#00ffa0",
	"#00ffff", "#008cff", "#0000ff", "#a500ff", "#ff00ff", "#ff0098",
	// 64–75
	"#ff5959", "#ffb459", "#ffff71", "#cfff60", "#6fff6f", "#65ffc9",
	"#6dffff", "#59b4ff", "#5959ff", "#c459ff", "#ff66ff", "#ff59bc",
	// 76–87
	"#ff9c9c", "#ffd39c", "#ffff9c", "#e2ff9c", "#9cff9c", "#9cffdb",
	"#9cffff", "#9cd3ff", "#9c9cff", "#dc9cff", "#ff9cff", "#ff94d3",
	// 88–98
	"#000000", "#131313", "#282828", "#363636", "#4d4d4d", "#656565",
	"#818181", "#9f9f9f", "#bcbcbc", "#e2e2e2", "#ffffff",
}

// defaultColour is the mIRC number for "the client's default colour".
const defaultColour = 99

// classicColours is how many palette entries every IRC client knows.
const classicColours = 16

// parseHex reads "#rrggbb" (either case) into its components.
func parseHex(s string) (r, g, b int, ok bool) {
	if len(s) != 7 || s[0] != '#' {
		return 0, 0, 0, false
	}
	v, err := strconv.ParseUint(s[1:], 16, 32)
	if err != nil {
		return 0, 0, 0, false
	}
	return int(v >> 16 & 0xff), int(v >> 8 & 0xff), int(v & 0xff), true
}

// nearestColour returns the palette number closest to the "#rrggbb"
// colour hex, among the 16 classic colours or, with extended, among all
// 99. An exact match always wins, and of two equally close colours the
// lower number wins, so that red is 4 rather than 52. Closeness is the
// "redmean" weighted distance, a cheap approximation of how different two
// colours look that is much better than plain RGB distance at telling
// greys from dark blues.
func nearestColour(hex string, extended bool) (int, bool) {
	r1, g1, b1, ok := parseHex(hex)
	if !ok {
		return 0, false
	}
	n := classicColours
	if extended {
		n = len(palette)
	}
	best, bestDist := 0, -1
	for i, p := range palette[:n] {
		r2, g2, b2, _ := parseHex(p)
		rmean := (r1 + r2) / 2
		dr, dg, db := r1-r2, g1-g2, b1-b2
		d := ((512+rmean)*dr*dr)>>8 + 4*dg*dg + ((767-rmean)*db*db)>>8
		if bestDist < 0 || d < bestDist {
			best, bestDist = i, d
		}
	}
	return best, true
}
