package render

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"mime"
	"net/url"
	"strings"
)

// Payload is a parsed request body.
type Payload struct {
	// Raw is the JSON document as the sender wrote it (for a form, the
	// payload field, or the fields encoded as an object).
	Raw json.RawMessage
	// Value is Raw decoded, with numbers as json.Number so that they
	// keep the digits the sender wrote.
	Value any
}

// Parse reads a request body given its Content-Type header:
//
//   - JSON, whatever the content type says (Slack accepts a JSON body
//     sent as form data, which is what curl -d does without -H);
//   - a form (application/x-www-form-urlencoded) with a payload field
//     holding JSON, as Slack's form-encoded webhooks send it;
//   - any other form: its fields as an object of strings, first value
//     of each;
//   - text/plain that is not JSON: {"text": body}, a message as is.
//
// Anything else is an *Error with code invalid_payload.
func Parse(contentType string, body []byte) (*Payload, error) {
	mediaType, _, err := mime.ParseMediaType(contentType)
	if err != nil {
		mediaType = ""
	}
	trimmed := bytes.TrimSpace(body)
	if len(trimmed) > 0 && (trimmed[0] == '{' || trimmed[0] == '[') {
		return parseJSON(trimmed)
	}
	switch {
	case mediaType == "application/x-www-form-urlencoded":
		form, err := url.ParseQuery(string(body))
		if err != nil {
			return nil, &Error{CodeInvalidPayload, "the form cannot be parsed: " + err.Error()}
		}
		if p, ok := form["payload"]; ok {
			return parseJSON([]byte(p[0]))
		}
		if len(form) == 0 {
			return nil, &Error{CodeInvalidPayload, "the form is empty"}
		}
		fields := make(map[string]any, len(form))
		for k, v := range form {
			fields[k] = v[0]
		}
		return fromValue(fields)
	case strings.HasPrefix(mediaType, "text/") && len(trimmed) > 0:
		if p, err := parseJSON(trimmed); err == nil {
			return p, nil
		}
		return fromValue(map[string]any{"text": string(body)})
	}
	return parseJSON(trimmed)
}

func parseJSON(data []byte) (*Payload, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, &Error{CodeInvalidPayload, "the body is not JSON: " + err.Error()}
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, &Error{CodeInvalidPayload, "the body has data after its JSON value"}
	}
	return &Payload{Raw: bytes.TrimSpace(data), Value: v}, nil
}

func fromValue(v map[string]any) (*Payload, error) {
	raw, err := json.Marshal(v)
	if err != nil {
		return nil, &Error{CodeInvalidPayload, err.Error()}
	}
	return &Payload{Raw: raw, Value: v}, nil
}

// object is a decoded JSON object. Its getters never fail: a missing
// member, or one of another type, reads as the zero value, because
// webhook senders are loose with types and a half-understood alert is
// better than a refused one.
type object map[string]any

func asObject(v any) object {
	m, _ := v.(map[string]any)
	return m
}

func (o object) has(key string) bool {
	_, ok := o[key]
	return ok
}

// str returns a string member, or a number or boolean as its JSON text.
func (o object) str(key string) string { return scalar(o[key]) }

func (o object) obj(key string) object { return asObject(o[key]) }

func (o object) list(key string) []any {
	l, _ := o[key].([]any)
	return l
}

// flag reads a boolean written as true/false or "true"/"false".
func (o object) flag(key string, def bool) bool {
	switch v := o[key].(type) {
	case bool:
		return v
	case string:
		switch strings.ToLower(v) {
		case "true":
			return true
		case "false":
			return false
		}
	}
	return def
}

// stringMap returns an object of scalars as a map of strings, leaving out
// members that are not scalars.
func (o object) stringMap(key string) map[string]string {
	m := map[string]string{}
	for k, v := range o.obj(key) {
		if s := scalar(v); s != "" {
			m[k] = s
		}
	}
	return m
}

// scalar is the text of a JSON string, number or boolean; "" otherwise.
func scalar(v any) string {
	switch v := v.(type) {
	case string:
		return v
	case json.Number:
		return v.String()
	case bool:
		if v {
			return "true"
		}
		return "false"
	}
	return ""
}
