// Package render owns the translation of an incoming webhook request body
// into the one Matrix message it becomes: which sender format the body is
// in, what it says as plain text and as sanitised HTML, who it should
// appear to come from, and whether it belongs to an alert that an earlier
// message announced. It does no I/O: the webhook intake parses a body with
// Parse, renders it with Render, and hands the Message to delivery.
//
// # Detection
//
// Unless Options.Format forces one, Render recognises the payload by its
// shape, trying the formats in this order (first match wins):
//
//  1. alertmanager: an object with an "alerts" array and a "groupKey",
//     and no "orgId". That is Prometheus Alertmanager's webhook_config
//     body (version "4"); the version is not checked, so senders that copy
//     the schema without it (vmalert, Karma) are recognised too.
//  2. grafana: an object with an "alerts" array and an "orgId" (Grafana's
//     unified alerting contact point, version "1"), or with "ruleName" or
//     "ruleUrl" and a "state" (Grafana's legacy dashboard alerts).
//  3. appservice-webhooks: an object with "text" and any of the keys only
//     matrix-appservice-webhooks defines: "format", "displayName",
//     "avatarUrl", "avatar_url", "msgtype", "emoji".
//  4. slack: an object with "text", "blocks" or "attachments".
//  5. generic: anything else, arrays and scalars included.
//
// A hook with a template (Options.Template) renders every payload through
// it, whatever its shape, unless Options.Format forces another format:
// whoever wrote the template wrote it for what this hook receives.
//
// # Output
//
// Every Message has a plain Body. HTML is empty when the body says it all,
// and otherwise has passed through framework/format.Sanitize. Body and
// HTML together stay within Options.MaxSize bytes of canonical JSON, cut
// with "…" where they would not. Payload numbers are kept as the text the
// sender wrote (json.Number) from Parse to the output, so a float is never
// rounded and nothing in a Message is a float.
package render
