package syncapi

import "testing"

func TestParseToken(t *testing.T) {
	for raw, want := range map[string]Token{
		"s0":          {},
		"s12":         {Pos: 12},
		"s12_3":       {Pos: 12, Typing: 3},
		"s12_3_d7":    {Pos: 12, Typing: 3, ToDevice: 7},
		"s12_0_d12":   {Pos: 12, ToDevice: 12},
		"s9007_12345": {Pos: 9007, Typing: 12345},
	} {
		got, err := ParseToken(raw)
		if err != nil || got != want {
			t.Errorf("%s: %+v, %v; want %+v", raw, got, err, want)
		}
		if err == nil && raw != "s0" && raw != "s12" && got.String() != raw {
			t.Errorf("%+v prints as %s, want %s", got, got.String(), raw)
		}
	}
	for _, raw := range []string{"", "12", "t12", "s", "s-1", "sx", "s12_x", "s12_-1", "s12_3_7", "s12_3_d", "s12_3_d0",
		"s12_3_d-1", "s12_3_d13", "s12_3_d7_1"} {
		if got, err := ParseToken(raw); err == nil {
			t.Errorf("%q parsed as %+v", raw, got)
		}
	}
}
