package webhooks

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"go.mau.fi/util/random"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/switchboard-im/switchboard/framework/bot"
	"github.com/switchboard-im/switchboard/framework/format"
	"github.com/switchboard-im/switchboard/internal/netguard"
)

// Outgoing webhooks POST a room's new messages to a URL:
//
//	{"room_id", "event_id", "sender", "msgtype", "body", "formatted_body", "origin_server_ts", "hook_id"}
//
// signed with the hook's secret: X-Signature-256: sha256=<hex HMAC-SHA256
// of the body>. A 2xx answer with a JSON {"text": "…"} (markdown) is
// posted back to the room by the bot, as a reply. Other answers and
// network errors are retried with backoff (1 s, doubling, at most 5 min
// apart) up to outgoing.max_attempts, then the delivery goes to
// webhook_dead_letters. A hook's deliveries are made in order: one waiting
// for a retry holds back those after it.

// OutgoingHook is a room's outgoing webhook.
type OutgoingHook struct {
	ID            string
	RoomID        id.RoomID
	URL           string
	SigningSecret string
	// MsgTypes filters by msgtype (empty: all but notices, which are
	// bots' output).
	MsgTypes []event.MessageType
	// Prefix filters by the body's start ("!deploy"); empty: all.
	Prefix    string
	CreatedBy id.UserID
}

// matches reports whether a message goes to the hook.
func (h *OutgoingHook) matches(c *event.MessageEventContent) bool {
	if len(h.MsgTypes) == 0 {
		if c.MsgType == event.MsgNotice {
			return false
		}
	} else if !slices.Contains(h.MsgTypes, c.MsgType) {
		return false
	}
	return strings.HasPrefix(c.Body, h.Prefix)
}

type outgoing struct {
	s      *Service
	client *http.Client
	wake   chan struct{}

	mu     sync.Mutex
	byRoom map[id.RoomID][]*OutgoingHook // cache; nil slice: none
}

// allowPrivateTargetsKey is the setting that lets outgoing hooks reach
// non-public addresses.
const allowPrivateTargetsKey = "outgoing.allow_private_targets"

func newOutgoing(s *Service) *outgoing {
	// Receivers are reached through a netguard client: loopback, private,
	// link-local and other non-public addresses are refused, on the
	// address actually dialled, unless outgoing.allow_private_targets
	// allows every address. No redirect is followed: a receiver answers
	// itself, and a redirect would let it point the bridge anywhere.
	var allowed []string
	if s.Config.Outgoing.AllowPrivateTargets {
		allowed = []string{"0.0.0.0/0", "::/0"}
	}
	guard, _ := netguard.New(allowPrivateTargetsKey, allowed) // no error: fixed, valid networks
	return &outgoing{
		s:      s,
		client: guard.Client(netguard.ClientOptions{Timeout: s.Config.Outgoing.Timeout}),
		wake:   make(chan struct{}, 1),
		byRoom: map[id.RoomID][]*OutgoingHook{},
	}
}

const outgoingColumns = `outgoing_id, room_id, url, signing_secret, msgtypes, prefix, created_by`

func (o *outgoing) hooksOf(ctx context.Context, room id.RoomID) ([]*OutgoingHook, error) {
	o.mu.Lock()
	hooks, ok := o.byRoom[room]
	o.mu.Unlock()
	if ok {
		return hooks, nil
	}
	rows, err := o.s.DB.Query(ctx, `SELECT `+outgoingColumns+` FROM webhook_outgoing WHERE room_id = $1 ORDER BY created_at`, room)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	for rows.Next() {
		var h OutgoingHook
		var types string
		if err := rows.Scan(&h.ID, &h.RoomID, &h.URL, &h.SigningSecret, &types, &h.Prefix, &h.CreatedBy); err != nil {
			return nil, err
		}
		for _, t := range strings.Split(types, ",") {
			if t != "" {
				h.MsgTypes = append(h.MsgTypes, event.MessageType(t))
			}
		}
		hooks = append(hooks, &h)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	o.mu.Lock()
	o.byRoom[room] = hooks
	o.mu.Unlock()
	return hooks, nil
}

func (o *outgoing) forget(room id.RoomID) {
	o.mu.Lock()
	delete(o.byRoom, room)
	o.mu.Unlock()
}

// outgoingPayload is what a receiver gets.
type outgoingPayload struct {
	HookID         string            `json:"hook_id"`
	RoomID         id.RoomID         `json:"room_id"`
	EventID        id.EventID        `json:"event_id"`
	Sender         id.UserID         `json:"sender"`
	MsgType        event.MessageType `json:"msgtype"`
	Body           string            `json:"body"`
	FormattedBody  string            `json:"formatted_body,omitempty"`
	OriginServerTS int64             `json:"origin_server_ts"`
}

// handleEvent queues a room message for the room's outgoing hooks that
// want it. The bot's own messages and those of the webhook ghosts are not
// sent (a receiver's answer must not loop back to it).
func (o *outgoing) handleEvent(ctx context.Context, evt *event.Event) {
	if evt.Type != event.EventMessage || evt.Sender == o.s.Config.BotID() || o.s.Config.IsGhost(evt.Sender) {
		return
	}
	hooks, err := o.hooksOf(ctx, evt.RoomID)
	if err != nil {
		o.s.Log.Err(err).Msg("Failed to read outgoing hooks")
		return
	}
	content := evt.Content.AsMessage()
	if content.RelatesTo.GetReplaceID() != "" {
		return // edits are not new messages
	}
	queued := false
	for _, h := range hooks {
		if !h.matches(content) || o.s.Bot.IsCommand(content.Body) {
			continue
		}
		payload, err := json.Marshal(outgoingPayload{HookID: h.ID, RoomID: evt.RoomID, EventID: evt.ID, Sender: evt.Sender,
			MsgType: content.MsgType, Body: content.Body, FormattedBody: content.FormattedBody, OriginServerTS: evt.Timestamp})
		if err != nil {
			continue
		}
		_, err = o.s.DB.Exec(ctx, `INSERT INTO webhook_outgoing_queue (outgoing_id, payload, next_attempt) VALUES ($1, $2, $3)`,
			h.ID, string(payload), time.Now().UnixMilli())
		if err != nil {
			o.s.Log.Err(err).Str("outgoing", h.ID).Msg("Failed to queue an outgoing webhook")
			continue
		}
		queued = true
	}
	if queued {
		select {
		case o.wake <- struct{}{}:
		default:
		}
	}
}

// loop delivers the outgoing queue.
func (o *outgoing) loop(ctx context.Context) {
	for {
		next, err := o.deliverDue(ctx)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			o.s.Log.Err(err).Msg("Outgoing webhook queue")
			next = 5 * time.Second
		}
		select {
		case <-ctx.Done():
			return
		case <-o.wake:
		case <-time.After(next):
		}
	}
}

type outgoingDelivery struct {
	seq      int64
	hookID   string
	payload  string
	attempts int
}

// deliverDue sends what is due and says when the next delivery is.
func (o *outgoing) deliverDue(ctx context.Context) (time.Duration, error) {
	now := time.Now().UnixMilli()
	rows, err := o.s.DB.Query(ctx, `SELECT seq, outgoing_id, payload, attempts FROM webhook_outgoing_queue
		WHERE next_attempt <= $1 ORDER BY seq LIMIT 50`, now)
	if err != nil {
		return 0, err
	}
	var due []outgoingDelivery
	for rows.Next() {
		var d outgoingDelivery
		if err := rows.Scan(&d.seq, &d.hookID, &d.payload, &d.attempts); err != nil {
			rows.Close()
			return 0, err
		}
		due = append(due, d)
	}
	rows.Close()
	held := map[string]bool{} // hooks with a failed delivery in this round
	for _, d := range due {
		if held[d.hookID] {
			continue
		}
		if !o.deliver(ctx, d) {
			held[d.hookID] = true
		}
	}
	var nextAt int64
	err = o.s.DB.QueryRow(ctx, `SELECT COALESCE(MIN(next_attempt), 0) FROM webhook_outgoing_queue`).Scan(&nextAt)
	if err != nil {
		return 0, err
	}
	if nextAt == 0 {
		return time.Minute, nil
	}
	return max(time.Until(time.UnixMilli(nextAt)), 10*time.Millisecond), nil
}

// deliver makes one attempt; ok is false when the delivery must wait.
func (o *outgoing) deliver(ctx context.Context, d outgoingDelivery) (ok bool) {
	var h OutgoingHook
	err := o.s.DB.QueryRow(ctx, `SELECT url, signing_secret, room_id FROM webhook_outgoing WHERE outgoing_id = $1`, d.hookID).
		Scan(&h.URL, &h.SigningSecret, &h.RoomID)
	if err != nil {
		// The hook was removed: its deliveries go with it.
		_, _ = o.s.DB.Exec(ctx, `DELETE FROM webhook_outgoing_queue WHERE seq = $1`, d.seq)
		return true
	}
	answer, err := o.post(ctx, &h, []byte(d.payload))
	if err == nil {
		_, _ = o.s.DB.Exec(ctx, `DELETE FROM webhook_outgoing_queue WHERE seq = $1`, d.seq)
		if answer != "" {
			o.postAnswer(ctx, h.RoomID, d.payload, answer)
		}
		return true
	}
	attempts := d.attempts + 1
	if attempts >= o.s.Config.Outgoing.MaxAttempts {
		o.s.Log.Warn().Err(err).Str("outgoing", d.hookID).Int("attempts", attempts).Msg("Outgoing webhook given up; see webhook_dead_letters")
		err2 := o.s.DB.DoTxn(ctx, nil, func(ctx context.Context) error {
			if _, err := o.s.DB.Exec(ctx, `INSERT INTO webhook_dead_letters (outgoing_id, payload, error, failed_at) VALUES ($1, $2, $3, $4)`,
				d.hookID, d.payload, err.Error(), time.Now().UnixMilli()); err != nil {
				return err
			}
			_, err := o.s.DB.Exec(ctx, `DELETE FROM webhook_outgoing_queue WHERE seq = $1`, d.seq)
			return err
		})
		if err2 != nil {
			o.s.Log.Err(err2).Msg("Failed to move an outgoing webhook to the dead letters")
		}
		return true
	}
	wait := min(time.Second<<(attempts-1), 5*time.Minute)
	next := time.Now().Add(wait).UnixMilli()
	// Later deliveries of the hook wait too, to stay in order.
	_, _ = o.s.DB.Exec(ctx, `UPDATE webhook_outgoing_queue SET attempts = CASE WHEN seq = $2 THEN $3 ELSE attempts END,
		next_attempt = CASE WHEN next_attempt < $4 THEN $4 ELSE next_attempt END WHERE outgoing_id = $1`,
		d.hookID, d.seq, attempts, next)
	o.s.Log.Debug().Err(err).Str("outgoing", d.hookID).Dur("retry_in", wait).Msg("Outgoing webhook failed")
	return false
}

// post sends one delivery and returns the receiver's {"text"} answer.
func (o *outgoing) post(ctx context.Context, h *OutgoingHook, body []byte) (answer string, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, h.URL, bytes.NewReader(body))
	if err != nil {
		return "", err
	}
	mac := hmac.New(sha256.New, []byte(h.SigningSecret))
	mac.Write(body)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "Switchboard-Webhooks")
	req.Header.Set(headerSignature, "sha256="+hex.EncodeToString(mac.Sum(nil)))
	resp, err := o.client.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return "", fmt.Errorf("receiver answered HTTP %d", resp.StatusCode)
	}
	var reply struct {
		Text string `json:"text"`
	}
	if json.Unmarshal(data, &reply) == nil {
		return strings.TrimSpace(reply.Text), nil
	}
	return "", nil
}

// postAnswer posts a receiver's answer in the room, replying to the
// message that was sent to it.
func (o *outgoing) postAnswer(ctx context.Context, room id.RoomID, payload, answer string) {
	var p outgoingPayload
	_ = json.Unmarshal([]byte(payload), &p)
	content := format.MarkdownToContent(answer)
	content.MsgType = event.MsgNotice
	content.FormattedBody = format.Sanitize(content.FormattedBody)
	if p.EventID != "" {
		content.RelatesTo = (&event.RelatesTo{}).SetReplyTo(p.EventID)
	}
	if _, err := o.s.Bot.Client.SendMessageEvent(ctx, room, event.EventMessage, content); err != nil {
		o.s.Log.Warn().Err(err).Stringer("room_id", room).Msg("Failed to post an outgoing webhook's answer")
	}
}

// outgoingCommands are `!webhook outgoing add|list|remove`.
func (s *Service) outgoingCommands() []*bot.Command {
	return []*bot.Command{{
		Name: "outgoing", Help: "Send this room's messages to a URL.",
		Subcommands: []*bot.Command{
			{Name: "add", Usage: "<url> [prefix=!deploy] [msgtypes=m.text,m.emote]", MinArgs: 1, MaxArgs: 3,
				Help: "POST each new message to a URL (the signing secret comes to you privately).", Run: s.cmdOutgoingAdd},
			{Name: "list", Help: "List the outgoing webhooks.", Run: s.cmdOutgoingList},
			{Name: "remove", Usage: "<id>", MinArgs: 1, MaxArgs: 1, Help: "Stop an outgoing webhook.", Run: s.cmdOutgoingRemove},
		},
	}}
}

// AddOutgoing creates an outgoing hook and returns it with its secret.
func (s *Service) AddOutgoing(ctx context.Context, room id.RoomID, rawURL, prefix string, types []event.MessageType, creator id.UserID) (*OutgoingHook, error) {
	u, err := url.Parse(rawURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, errors.New("the URL must be http(s)://host/…")
	}
	h := &OutgoingHook{ID: strings.ToLower(random.String(8)), RoomID: room, URL: rawURL, SigningSecret: random.String(40),
		MsgTypes: types, Prefix: prefix, CreatedBy: creator}
	typeNames := make([]string, len(types))
	for i, t := range types {
		typeNames[i] = string(t)
	}
	_, err = s.DB.Exec(ctx, `INSERT INTO webhook_outgoing (`+outgoingColumns+`, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`,
		h.ID, room, rawURL, h.SigningSecret, strings.Join(typeNames, ","), prefix, creator, time.Now().UnixMilli())
	if err != nil {
		return nil, err
	}
	s.outgoing.forget(room)
	return h, nil
}

func (s *Service) cmdOutgoingAdd(ctx context.Context, c *bot.CommandContext) error {
	var prefix string
	var types []event.MessageType
	for _, arg := range c.Args[1:] {
		key, value, _ := strings.Cut(arg, "=")
		switch key {
		case "prefix":
			prefix = value
		case "msgtypes":
			for _, t := range strings.Split(value, ",") {
				types = append(types, event.MessageType(strings.TrimSpace(t)))
			}
		default:
			return bot.Errorf("Unknown option %q (prefix=… or msgtypes=…).", arg)
		}
	}
	h, err := s.AddOutgoing(ctx, c.RoomID(), c.Args[0], prefix, types, c.Sender())
	if err != nil {
		return bot.Errorf("Not added: %v.", err)
	}
	if err := s.tellPrivately(ctx, c.Sender(), fmt.Sprintf("Outgoing webhook **%s** of %s signs each request with HMAC-SHA256 under this secret, "+
		"in `X-Signature-256: sha256=<hex>`: `%s`", h.ID, c.RoomID(), h.SigningSecret)); err != nil {
		return err
	}
	_, err = c.Reply(ctx, fmt.Sprintf("Outgoing webhook **%s** sends this room's messages to %s; its signing secret was sent to you privately.", h.ID, h.URL))
	return err
}

func (s *Service) cmdOutgoingList(ctx context.Context, c *bot.CommandContext) error {
	hooks, err := s.outgoing.hooksOf(ctx, c.RoomID())
	if err != nil {
		return err
	}
	if len(hooks) == 0 {
		_, err = c.Reply(ctx, "This room has no outgoing webhooks.")
		return err
	}
	var sb strings.Builder
	sb.WriteString("Outgoing webhooks:\n\n")
	for _, h := range hooks {
		fmt.Fprintf(&sb, "- **%s** → %s", h.ID, h.URL)
		if h.Prefix != "" {
			fmt.Fprintf(&sb, ", messages starting with `%s`", h.Prefix)
		}
		if len(h.MsgTypes) > 0 {
			fmt.Fprintf(&sb, ", msgtypes %v", h.MsgTypes)
		}
		sb.WriteString("\n")
	}
	_, err = c.Reply(ctx, sb.String())
	return err
}

func (s *Service) cmdOutgoingRemove(ctx context.Context, c *bot.CommandContext) error {
	res, err := s.DB.Exec(ctx, `DELETE FROM webhook_outgoing WHERE outgoing_id = $1 AND room_id = $2`, c.Args[0], c.RoomID())
	if err != nil {
		return err
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return bot.Errorf("This room has no outgoing webhook %q.", c.Args[0])
	}
	s.outgoing.forget(c.RoomID())
	_, err = c.Reply(ctx, fmt.Sprintf("Outgoing webhook **%s** removed.", c.Args[0]))
	return err
}
