package render

import (
	"os"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"maunium.net/go/mautrix/event"

	"github.com/switchboard-im/switchboard/framework/format"
)

// checkMessage checks what Render promises of every message.
func checkMessage(t testing.TB, m *Message, maxSize int) {
	t.Helper()
	if strings.TrimSpace(m.Body) == "" {
		t.Errorf("empty body")
	}
	for field, s := range map[string]string{"body": m.Body, "html": m.HTML, "sender": m.SenderName, "avatar": m.AvatarURL, "key": m.AlertKey} {
		if !utf8.ValidString(s) {
			t.Errorf("%s is not valid UTF-8: %q", field, s)
		}
	}
	if m.HTML != format.Sanitize(m.HTML) {
		t.Errorf("HTML is not sanitised:\n%s", m.HTML)
	}
	if n := jsonLen(m.Body) + jsonLen(m.HTML); n > maxSize {
		t.Errorf("body and HTML take %d bytes, more than %d", n, maxSize)
	}
	if m.AvatarURL != "" && !validURL(m.AvatarURL) {
		t.Errorf("avatar %q is not an http(s) URL", m.AvatarURL)
	}
	switch m.MsgType {
	case event.MsgText, event.MsgNotice, event.MsgEmote:
	default:
		t.Errorf("msgtype %q", m.MsgType)
	}
	if !m.Format.Valid() {
		t.Errorf("format %q", m.Format)
	}
}

// FuzzRender feeds arbitrary bodies through Parse and Render in every
// format, with and without a template, and checks that nothing panics
// and that every message keeps Render's promises.
func FuzzRender(f *testing.F) {
	for _, file := range testPayloads(f) {
		body, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(body, uint8(0))
	}
	f.Add([]byte(`{"text":"*a _b ~c~ d_ e* <!here> <http://x|y> :fire::skin-tone-2: &amp;"}`), uint8(0))
	f.Add([]byte(`{"text":"`+strings.Repeat("<*_`", 50)+`"}`), uint8(3))
	tmpl, err := ParseTemplate("{{range $k, $v := .}}**{{$k}}**: {{toJSON $v}} {{default \"-\" $v}}\n{{end}}")
	if err != nil {
		f.Fatal(err)
	}
	formats := []Format{"", FormatAlertmanager, FormatGrafana, FormatAppservice, FormatSlack, FormatGeneric}
	f.Fuzz(func(t *testing.T, body []byte, mode uint8) {
		contentType := "application/json"
		if mode&0x80 != 0 {
			contentType = "application/x-www-form-urlencoded"
		}
		p, err := Parse(contentType, body)
		if err != nil {
			return
		}
		opts := Options{Format: formats[int(mode&0x0f)%len(formats)], MaxSize: 2048 + int(mode&0x30)*256}
		if mode&0x40 != 0 {
			opts.Template = tmpl
		}
		// An input that takes seconds is a bug too (somewhere quadratic);
		// crashing the worker makes the fuzzer keep the input.
		watchdog := time.AfterFunc(10*time.Second, func() { panic("Render took more than 10s") })
		m, err := Render(p, opts)
		watchdog.Stop()
		if err != nil {
			if _, ok := err.(*Error); !ok {
				t.Fatalf("error of type %T: %v", err, err)
			}
			return
		}
		checkMessage(t, m, opts.MaxSize)
	})
}
