package render

import (
	"encoding/json"
	"net/url"
	"reflect"
	"testing"
)

func TestParse(t *testing.T) {
	form := url.Values{"payload": {`{"text":"from a form","n":0.1}`}}.Encode()
	for _, tc := range []struct {
		name, contentType, body string
		want                    any
		raw                     string
	}{
		{"json", "application/json", ` {"text":"hi","n":1.10} `,
			map[string]any{"text": "hi", "n": json.Number("1.10")}, `{"text":"hi","n":1.10}`},
		{"json with charset", "application/json; charset=utf-8", `[1e400]`,
			[]any{json.Number("1e400")}, `[1e400]`},
		{"json sent as a form", "application/x-www-form-urlencoded", `{"text":"curl -d"}`,
			map[string]any{"text": "curl -d"}, `{"text":"curl -d"}`},
		{"json without a content type", "", `{"text":"x"}`,
			map[string]any{"text": "x"}, `{"text":"x"}`},
		{"slack form", "application/x-www-form-urlencoded", form,
			map[string]any{"text": "from a form", "n": json.Number("0.1")}, `{"text":"from a form","n":0.1}`},
		{"form fields", "application/x-www-form-urlencoded", "text=hello+there&text=second&username=sh",
			map[string]any{"text": "hello there", "username": "sh"}, `{"text":"hello there","username":"sh"}`},
		{"text", "text/plain; charset=utf-8", "Deploy *done*\n",
			map[string]any{"text": "Deploy *done*\n"}, `{"text":"Deploy *done*\n"}`},
		{"json as text", "text/plain", `{"text":"x"}`,
			map[string]any{"text": "x"}, `{"text":"x"}`},
		{"scalar", "application/json", `"just a string"`, "just a string", `"just a string"`},
	} {
		p, err := Parse(tc.contentType, []byte(tc.body))
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		if !reflect.DeepEqual(p.Value, tc.want) {
			t.Errorf("%s: value %#v, want %#v", tc.name, p.Value, tc.want)
		}
		if string(p.Raw) != tc.raw {
			t.Errorf("%s: raw %s, want %s", tc.name, p.Raw, tc.raw)
		}
	}
}

func TestObjectGetters(t *testing.T) {
	p, err := Parse("application/json", []byte(`{"s":"x","n":-0.50,"b":true,"o":{"k":1,"l":[1],"e":null},"l":[1,"a"],"f":"false"}`))
	if err != nil {
		t.Fatal(err)
	}
	o := asObject(p.Value)
	if o.str("s") != "x" || o.str("n") != "-0.50" || o.str("b") != "true" || o.str("o") != "" || o.str("missing") != "" {
		t.Errorf("str: %q %q %q %q", o.str("s"), o.str("n"), o.str("b"), o.str("o"))
	}
	if got := o.stringMap("o"); !reflect.DeepEqual(got, map[string]string{"k": "1"}) {
		t.Errorf("stringMap: %v", got)
	}
	if len(o.list("l")) != 2 || o.list("s") != nil {
		t.Errorf("list")
	}
	if !o.flag("b", false) || o.flag("f", true) || !o.flag("missing", true) || o.flag("s", false) {
		t.Errorf("flag")
	}
	if o.obj("s") != nil || o.obj("o").str("k") != "1" {
		t.Errorf("obj")
	}
}
