package render

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"text/template"
	"unicode/utf8"

	mformat "maunium.net/go/mautrix/format"

	"github.com/switchboard-im/switchboard/framework/format"
)

// ParseTemplate parses a hook's template for generic JSON payloads. It is
// a Go text/template executed with the decoded payload as dot (objects
// are maps, so fields read as {{.status}} or {{index . "odd-key"}});
// its output is markdown. Numbers print as the sender wrote them; a
// missing member prints as "<no value>", which default avoids.
// Besides the built-in functions it has:
//
//	toJSON v          v as compact JSON
//	json v            v as indented JSON, for a ```json block
//	default d v       v, or d when v is missing, empty or zero
//	upper s, lower s  case conversion
//	join sep list     the items of a list as text, separated by sep
//	truncate n s      s cut to n characters, with "…" if it was longer
//	escape s          s with markdown and HTML escaped, to show as written
//
// text/template can do no I/O, so nothing needs forbidding; output is
// bounded when the template runs.
func ParseTemplate(src string) (*template.Template, error) {
	t, err := template.New("hook").Funcs(templateFuncs).Parse(src)
	if err != nil {
		return nil, fmt.Errorf("parse template: %w", err)
	}
	return t, nil
}

var templateFuncs = template.FuncMap{
	"toJSON": func(v any) (string, error) { return marshal(v, "") },
	"json":   func(v any) (string, error) { return marshal(v, "  ") },
	"default": func(def, v any) any {
		if isEmpty(v) {
			return def
		}
		return v
	},
	"upper": func(v any) string { return strings.ToUpper(text(v)) },
	"lower": func(v any) string { return strings.ToLower(text(v)) },
	"join": func(sep string, list any) string {
		var parts []string
		switch l := list.(type) {
		case []any:
			for _, v := range l {
				parts = append(parts, text(v))
			}
		case []string:
			parts = l
		default:
			return text(list)
		}
		return strings.Join(parts, sep)
	},
	"escape": func(v any) string { return mformat.EscapeMarkdown(text(v)) },
	"truncate": func(n int, v any) string {
		s := text(v)
		if n < 0 || utf8.RuneCountInString(s) <= n {
			return s
		}
		return string([]rune(s)[:n]) + ellipsis
	},
}

// marshal writes v as JSON without escaping <, > and & (which would show
// as \u003c in a message; the markdown renderer escapes what it must).
func marshal(v any, indent string) (string, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", indent)
	if err := enc.Encode(v); err != nil {
		return "", err
	}
	return strings.TrimSuffix(b.String(), "\n"), nil
}

// text is how a template value prints: scalars as their JSON text (a
// number as the sender wrote it), anything else as compact JSON.
func text(v any) string {
	switch v := v.(type) {
	case nil:
		return ""
	case string, json.Number, bool:
		return scalar(v)
	}
	s, err := marshal(v, "")
	if err != nil {
		return fmt.Sprint(v)
	}
	return s
}

func isEmpty(v any) bool {
	if v == nil {
		return true
	}
	rv := reflect.ValueOf(v)
	switch rv.Kind() {
	case reflect.String, reflect.Map, reflect.Slice, reflect.Array:
		return rv.Len() == 0
	}
	return rv.IsZero()
}

// maxTemplateOutput bounds what a template may write. The markdown
// renderer takes more than linear time on some input, so its input is
// kept small; the message is cut to Options.MaxSize anyway.
const maxTemplateOutput = maxSource

var errOutputFull = errors.New("template output is too long")

// limitedWriter stops a template once its output is long enough.
type limitedWriter struct {
	buf   bytes.Buffer
	limit int
	full  bool
}

func (w *limitedWriter) Write(p []byte) (int, error) {
	if room := w.limit - w.buf.Len(); len(p) > room {
		w.buf.Write(p[:max(room, 0)])
		w.full = true
		return max(room, 0), errOutputFull
	}
	return w.buf.Write(p)
}

// renderGeneric renders any payload: through the hook's template if it
// has one, else as a readable dump of the JSON.
func renderGeneric(p *Payload, opts Options) (*Message, error) {
	if opts.Template == nil {
		return renderDump(p)
	}
	w := &limitedWriter{limit: maxTemplateOutput}
	if err := opts.Template.Execute(w, p.Value); err != nil && !w.full {
		return nil, &Error{CodeTemplate, err.Error()}
	}
	md := strings.ToValidUTF8(w.buf.String(), "\uFFFD")
	if w.full {
		md += ellipsis
	}
	if strings.TrimSpace(md) == "" {
		return nil, &Error{CodeNoText, "the template wrote nothing for this payload"}
	}
	content := format.MarkdownToContent(md)
	return &Message{
		Body:        content.Body,
		HTML:        content.FormattedBody,
		RoomMention: mentionsRoom(content.Body),
	}, nil
}

// markdownHTML renders markdown to sanitised HTML.
func markdownHTML(md string) string {
	content := format.MarkdownToContent(capSource(md))
	if content.FormattedBody != "" {
		return content.FormattedBody
	}
	return breakLines(content.Body)
}

// maxDump bounds the JSON shown by a dump, in bytes of indented JSON.
// It is shown twice (body and HTML), and should be readable in a room.
const maxDump = 8 * 1024

// renderDump shows a payload no format recognised and no template
// renders: a heading and the JSON, indented, cut at a line if long.
func renderDump(p *Payload) (*Message, error) {
	var indented bytes.Buffer
	if err := json.Indent(&indented, p.Raw, "", "  "); err != nil {
		return nil, &Error{CodeInvalidPayload, "the payload is not JSON"}
	}
	dump := strings.ToValidUTF8(indented.String(), "\uFFFD")
	switch dump {
	case "{}", "[]", "null", `""`:
		return nil, &Error{CodeNoText, "the payload is empty"}
	}
	note := ""
	if len(dump) > maxDump {
		cut := strings.LastIndexByte(dump[:maxDump], '\n')
		if cut <= 0 {
			cut = maxDump
			for !utf8.RuneStart(dump[cut]) {
				cut--
			}
		}
		note = fmt.Sprintf("<p><em>Cut at %d of %d bytes.</em></p>", cut, len(dump))
		dump = dump[:cut] + "\n" + ellipsis
	}
	return &Message{
		HTML: "<p><strong>Webhook payload</strong> (no format recognised, and the hook has no template)</p>" +
			`<pre><code class="language-json">` + esc(dump) + "</code></pre>" + note,
	}, nil
}
