package render

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"text/template"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden from the current output")

// testPayloads are the sample bodies in testdata: NAME.json is sent as
// JSON, NAME.form as a form; NAME.tmpl, if present, is the hook's
// template.
func testPayloads(t testing.TB) map[string]string {
	t.Helper()
	files, err := filepath.Glob("testdata/*")
	if err != nil {
		t.Fatal(err)
	}
	payloads := map[string]string{}
	for _, f := range files {
		switch filepath.Ext(f) {
		case ".json", ".form":
			payloads[strings.TrimSuffix(filepath.Base(f), filepath.Ext(f))] = f
		}
	}
	if len(payloads) == 0 {
		t.Fatal("no payloads in testdata")
	}
	return payloads
}

func renderFile(t *testing.T, name, file string) (*Message, error) {
	t.Helper()
	body, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	contentType := "application/json"
	if filepath.Ext(file) == ".form" {
		contentType = "application/x-www-form-urlencoded"
	}
	p, err := Parse(contentType, body)
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	var opts Options
	if src, err := os.ReadFile(filepath.Join("testdata", name+".tmpl")); err == nil {
		if opts.Template, err = ParseTemplate(string(src)); err != nil {
			t.Fatal(err)
		}
	}
	return Render(p, opts)
}

// describe writes out everything a Message says, for golden files.
func describe(m *Message) string {
	return fmt.Sprintf("format: %s\nmsgtype: %s\nsender: %s\navatar: %s\nroom_mention: %t\nalert_key: %s\nresolved: %t\n-- body --\n%s\n-- html --\n%s\n",
		m.Format, m.MsgType, m.SenderName, m.AvatarURL, m.RoomMention, m.AlertKey, m.Resolved, m.Body, m.HTML)
}

// TestRenderGolden renders every sample payload and compares the whole
// message, body and HTML exactly, with testdata/NAME.golden. Run with
// -update to rewrite the golden files, then read the diff.
func TestRenderGolden(t *testing.T) {
	for name, file := range testPayloads(t) {
		t.Run(name, func(t *testing.T) {
			m, err := renderFile(t, name, file)
			if err != nil {
				t.Fatalf("Render: %v", err)
			}
			got := describe(m)
			golden := filepath.Join("testdata", name+".golden")
			if *update {
				if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test -update to create it)", err)
			}
			if got != string(want) {
				t.Errorf("%s differs from %s:\n--- got\n%s\n--- want\n%s", name, golden, got, want)
			}
			checkMessage(t, m, DefaultMaxSize)
		})
	}
}

// TestDetect checks that each sample is read as the format its name says.
func TestDetect(t *testing.T) {
	for name, file := range testPayloads(t) {
		t.Run(name, func(t *testing.T) {
			m, err := renderFile(t, name, file)
			if err != nil {
				t.Fatal(err)
			}
			want, _, _ := strings.Cut(name, "-")
			if want == "appservice" {
				want = string(FormatAppservice)
			}
			if string(m.Format) != want {
				t.Errorf("format %q, want %q", m.Format, want)
			}
		})
	}
}

func TestDetectRules(t *testing.T) {
	for _, tc := range []struct {
		body string
		want Format
	}{
		{`{"alerts":[],"groupKey":"k","version":"4"}`, FormatAlertmanager},
		{`{"alerts":[],"groupKey":"k"}`, FormatAlertmanager},
		{`{"alerts":[],"groupKey":"k","orgId":1}`, FormatGrafana},
		{`{"alerts":[],"orgId":1}`, FormatGrafana},
		{`{"ruleName":"r","state":"ok"}`, FormatGrafana},
		{`{"ruleUrl":"http://g/","state":"alerting"}`, FormatGrafana},
		{`{"text":"x","format":"html"}`, FormatAppservice},
		{`{"text":"x","emoji":false}`, FormatAppservice},
		{`{"text":"x","avatar_url":"http://a/"}`, FormatAppservice},
		{`{"text":"x"}`, FormatSlack},
		{`{"text":"x","username":"u","icon_url":"http://a/"}`, FormatSlack},
		{`{"blocks":[]}`, FormatSlack},
		{`{"attachments":[]}`, FormatSlack},
		{`{"alerts":"not an array","groupKey":"k"}`, FormatGeneric},
		{`{"status":"firing"}`, FormatGeneric},
		{`[{"text":"x"}]`, FormatGeneric},
		{`"text"`, FormatGeneric},
	} {
		p, err := Parse("application/json", []byte(tc.body))
		if err != nil {
			t.Fatal(err)
		}
		if got := detect(p.Value); got != tc.want {
			t.Errorf("%s: detected %q, want %q", tc.body, got, tc.want)
		}
	}
}

func TestErrors(t *testing.T) {
	many := `{"attachments":[` + strings.Repeat(`{"text":"a"},`, 100) + `{"text":"a"}]}`
	blocks := `{"blocks":[` + strings.Repeat(`{"type":"divider"},`, 50) + `{"type":"divider"}]}`
	for _, tc := range []struct {
		contentType, body string
		opts              Options
		code              string
	}{
		{"application/json", `{"text":`, Options{}, CodeInvalidPayload},
		{"application/json", `{"text":"a"} {"text":"b"}`, Options{}, CodeInvalidPayload},
		{"application/json", ``, Options{}, CodeInvalidPayload},
		{"image/png", "\x89PNG", Options{}, CodeInvalidPayload},
		{"application/x-www-form-urlencoded", "payload=%7Bbroken", Options{}, CodeInvalidPayload},
		{"application/json", `{"text":""}`, Options{}, CodeNoText},
		{"application/json", `{"text":"   "}`, Options{}, CodeNoText},
		{"application/json", `{"text":"x","format":"html","displayName":"d"}`, Options{}, ""},
		{"application/json", `{"text":"<b></b>","format":"html"}`, Options{}, CodeNoText},
		{"application/json", `{"text":"","format":"plain"}`, Options{}, CodeNoText},
		{"application/json", `{"blocks":[{"type":"divider"}]}`, Options{}, ""},
		{"application/json", `{"blocks":[{"type":"actions","elements":[]}]}`, Options{}, CodeNoText},
		{"application/json", many, Options{}, CodeTooManyAttachments},
		{"application/json", `{"attachments":["a"]}`, Options{}, CodeInvalidAttachments},
		{"application/json", `{"attachments":{"text":"a"}}`, Options{}, CodeInvalidAttachments},
		{"application/json", `{"blocks":{"type":"divider"}}`, Options{}, CodeInvalidBlocks},
		{"application/json", `{"blocks":[{"text":"no type"}]}`, Options{}, CodeInvalidBlocks},
		{"application/json", `{"blocks":["divider"]}`, Options{}, CodeInvalidBlocks},
		{"application/json", `{"blocks":"[not json"}`, Options{}, CodeInvalidBlocks},
		{"application/json", blocks, Options{}, CodeInvalidBlocks},
		{"application/json", `{"text":"x","attachments":[{"blocks":[{}]}]}`, Options{}, CodeInvalidBlocks},
		{"application/json", `[1,2]`, Options{Format: FormatSlack}, CodeInvalidPayload},
		{"application/json", `{}`, Options{}, CodeNoText},
		{"application/json", `null`, Options{}, CodeNoText},
		{"application/json", `{"alerts":[],"groupKey":"k"}`, Options{}, CodeInvalidPayload},
		{"application/json", `{"a":1}`, Options{Template: mustTemplate(t, `{{.a.b.c}}`)}, CodeTemplate},
		{"application/json", `{"a":1}`, Options{Template: mustTemplate(t, `{{if .b}}x{{end}}  `)}, CodeNoText},
	} {
		p, err := Parse(tc.contentType, []byte(tc.body))
		if err == nil {
			_, err = Render(p, tc.opts)
		}
		var rerr *Error
		switch {
		case tc.code == "" && err != nil:
			t.Errorf("%.60s: unexpected error %v", tc.body, err)
		case tc.code != "" && (!errors.As(err, &rerr) || rerr.Code != tc.code):
			t.Errorf("%.60s: error %v, want code %s", tc.body, err, tc.code)
		}
	}
}

func TestUnknownFormat(t *testing.T) {
	p, _ := Parse("application/json", []byte(`{"text":"x"}`))
	if _, err := Render(p, Options{Format: "discord"}); err == nil {
		t.Fatal("no error for an unknown format")
	}
}

func mustTemplate(t testing.TB, src string) *template.Template {
	t.Helper()
	tmpl, err := ParseTemplate(src)
	if err != nil {
		t.Fatal(err)
	}
	return tmpl
}

// BenchmarkRender parses and renders each sample payload; the intake's
// target is 2,000 accepted requests/s, and rendering should be a small
// part of that.
func BenchmarkRender(b *testing.B) {
	for name, file := range testPayloads(b) {
		body, err := os.ReadFile(file)
		if err != nil {
			b.Fatal(err)
		}
		contentType := "application/json"
		if filepath.Ext(file) == ".form" {
			contentType = "application/x-www-form-urlencoded"
		}
		var opts Options
		if src, err := os.ReadFile(filepath.Join("testdata", name+".tmpl")); err == nil {
			opts.Template = mustTemplate(b, string(src))
		}
		b.Run(name, func(b *testing.B) {
			b.SetBytes(int64(len(body)))
			for b.Loop() {
				p, err := Parse(contentType, body)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := Render(p, opts); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
