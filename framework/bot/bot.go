// Package bot is the framework's API for simple bots: handlers for
// messages, commands, reactions, invites and joins, replies, threads and
// edits, and persistent per-room and per-user state — on top of the
// appservice runtime (package framework), so a bot is a few dozen lines:
//
//	b, err := bot.New(ctx, cfg, log)
//	b.OnMessage(func(ctx context.Context, m *bot.Message) error {
//		_, err := m.Reply(ctx, m.Body())
//		return err
//	})
//	return b.Run(ctx)
//
// The bot ignores its own events and those of the appservice's ghosts, and
// never answers m.notice messages (the convention that keeps two bots from
// talking to each other forever).
package bot

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"

	"github.com/rs/zerolog"
	"go.mau.fi/util/dbutil"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/format"
	"maunium.net/go/mautrix/id"

	"github.com/switchboard-im/switchboard/framework"
)

// InvitePolicy decides whether the bot joins a room it is invited to.
type InvitePolicy func(ctx context.Context, roomID id.RoomID, inviter id.UserID) bool

// AcceptAll accepts every invite.
func AcceptAll(context.Context, id.RoomID, id.UserID) bool { return true }

// AcceptFromServers accepts invites from users of the listed servers.
func AcceptFromServers(servers ...string) InvitePolicy {
	return func(_ context.Context, _ id.RoomID, inviter id.UserID) bool {
		for _, s := range servers {
			if inviter.Homeserver() == s {
				return true
			}
		}
		return false
	}
}

// Bot is a bot: an appservice's bot user (New), or a plain user syncing
// (NewSync) where no appservice can be registered.
type Bot struct {
	// AS is the appservice the bot runs in (nil in sync mode).
	AS *framework.Appservice
	// Client acts as the bot user.
	Client *mautrix.Client
	UserID id.UserID
	Log    zerolog.Logger
	// DB holds the bot's state (KV) and the framework's tables.
	DB *dbutil.Database
	// CommandPrefix starts a command ("!" by default: "!help").
	CommandPrefix string
	// InvitePolicy decides invites; the default accepts invites from users
	// of the bot's own homeserver.
	InvitePolicy InvitePolicy

	start func(context.Context) error
	stop  func()

	mu        sync.Mutex
	messages  []func(context.Context, *Message) error
	reactions []func(context.Context, *Reaction) error
	joins     []func(ctx context.Context, roomID id.RoomID, userID id.UserID) error
	commands  map[string]*Command
}

// New creates the bot's appservice (see framework.New).
func New(ctx context.Context, cfg *framework.Config, log zerolog.Logger) (*Bot, error) {
	as, err := framework.New(ctx, cfg, log)
	if err != nil {
		return nil, err
	}
	b := newBot(as.Bot().Client, as.DB, cfg.ServerName, log)
	b.AS = as
	b.start, b.stop = as.Start, as.Stop
	as.OnEvent(b.handle)
	return b, nil
}

// Attach returns a bot for the bot user of an appservice whose events
// another handler dispatches — a bridge, which passes the events of rooms
// that are not portals (management rooms, invites) to HandleEvent and asks
// HandleCommand about messages in portals. Start and Stop are the
// appservice's.
func Attach(as *framework.Appservice) *Bot {
	b := newBot(as.Bot().Client, as.DB, as.Config.ServerName, as.Log)
	b.AS = as
	b.start, b.stop = as.Start, as.Stop
	return b
}

func newBot(client *mautrix.Client, db *dbutil.Database, serverName string, log zerolog.Logger) *Bot {
	b := &Bot{
		Client:        client,
		UserID:        client.UserID,
		Log:           log,
		DB:            db,
		CommandPrefix: "!",
		InvitePolicy:  AcceptFromServers(serverName),
		commands:      map[string]*Command{},
	}
	b.Command(&Command{Name: "help", Usage: "[command]", Help: "List the commands, or explain one.", Run: b.help})
	return b
}

// Start starts receiving events; Stop stops (events not handled yet are
// handled after the next start).
func (b *Bot) Start(ctx context.Context) error { return b.start(ctx) }
func (b *Bot) Stop()                           { b.stop() }

// RoomKV, UserKV and GlobalKV are the bot's persistent state per room, per
// user and bot-wide.
func (b *Bot) RoomKV(roomID id.RoomID) framework.KV {
	return framework.NewKV(b.DB, "room:"+string(roomID))
}
func (b *Bot) UserKV(userID id.UserID) framework.KV {
	return framework.NewKV(b.DB, "user:"+string(userID))
}
func (b *Bot) GlobalKV() framework.KV { return framework.NewKV(b.DB, "global") }

// OnMessage adds a handler for messages (m.text, m.emote, m.notice is
// skipped, media too) that are not commands.
func (b *Bot) OnMessage(h func(context.Context, *Message) error) {
	b.mu.Lock()
	b.messages = append(b.messages, h)
	b.mu.Unlock()
}

// OnReaction adds a handler for reactions (m.reaction annotations).
func (b *Bot) OnReaction(h func(context.Context, *Reaction) error) {
	b.mu.Lock()
	b.reactions = append(b.reactions, h)
	b.mu.Unlock()
}

// OnJoin adds a handler for users (the bot included) joining a room the
// bot is in.
func (b *Bot) OnJoin(h func(ctx context.Context, roomID id.RoomID, userID id.UserID) error) {
	b.mu.Lock()
	b.joins = append(b.joins, h)
	b.mu.Unlock()
}

// Run runs the bot until ctx ends.
func (b *Bot) Run(ctx context.Context) error {
	if err := b.Start(ctx); err != nil {
		return err
	}
	<-ctx.Done()
	b.Stop()
	return nil
}

func (b *Bot) ignored(sender id.UserID) bool {
	return sender == b.UserID || (b.AS != nil && b.AS.Config.IsGhost(sender))
}

// HandleEvent handles one event as a bot created with New would (see
// Attach).
func (b *Bot) HandleEvent(ctx context.Context, evt *event.Event) { b.handle(ctx, evt) }

// HandleCommand runs the command evt carries, if it is a text message
// naming a registered command; handled reports whether it did.
func (b *Bot) HandleCommand(ctx context.Context, evt *event.Event) (handled bool, err error) {
	if evt.Type != event.EventMessage || b.ignored(evt.Sender) {
		return false, nil
	}
	content := evt.Content.AsMessage()
	if content.MsgType != event.MsgText || content.RelatesTo.GetReplaceID() != "" || !strings.HasPrefix(content.Body, b.CommandPrefix) {
		return false, nil
	}
	return b.runCommand(ctx, &Message{Event: evt, Content: content, bot: b})
}

func (b *Bot) handle(ctx context.Context, evt *event.Event) {
	log := b.Log.With().Stringer("room_id", evt.RoomID).Stringer("event_id", evt.ID).Logger()
	ctx = log.WithContext(ctx)
	var err error
	switch evt.Type {
	case event.StateMember:
		err = b.handleMember(ctx, evt)
	case event.EventMessage:
		if b.ignored(evt.Sender) {
			return
		}
		err = b.handleMessage(ctx, evt)
	case event.EventReaction:
		if b.ignored(evt.Sender) {
			return
		}
		err = b.handleReaction(ctx, evt)
	}
	if err != nil {
		log.Warn().Err(err).Str("event_type", evt.Type.Type).Msg("Handler failed")
	}
}

func (b *Bot) handleMember(ctx context.Context, evt *event.Event) error {
	content := evt.Content.AsMember()
	target := id.UserID(evt.GetStateKey())
	switch content.Membership {
	case event.MembershipInvite:
		if target != b.UserID {
			return nil
		}
		if b.InvitePolicy == nil || !b.InvitePolicy(ctx, evt.RoomID, evt.Sender) {
			zerolog.Ctx(ctx).Info().Stringer("inviter", evt.Sender).Msg("Rejecting invite")
			_, err := b.Client.LeaveRoom(ctx, evt.RoomID, &mautrix.ReqLeave{Reason: "This bot does not accept invites from you"})
			return err
		}
		_, err := b.Client.JoinRoomByID(ctx, evt.RoomID)
		return err
	case event.MembershipJoin:
		if prev := evt.Unsigned.PrevContent; prev != nil {
			_ = prev.ParseRaw(event.StateMember)
			if prev.AsMember().Membership == event.MembershipJoin {
				return nil // a profile change, not a join
			}
		}
		b.mu.Lock()
		joins := b.joins
		b.mu.Unlock()
		for _, h := range joins {
			if err := h(ctx, evt.RoomID, target); err != nil {
				return err
			}
		}
	}
	return nil
}

func (b *Bot) handleMessage(ctx context.Context, evt *event.Event) error {
	content := evt.Content.AsMessage()
	if content.MsgType == event.MsgNotice || content.RelatesTo.GetReplaceID() != "" {
		return nil // bots' output, and edits
	}
	m := &Message{Event: evt, Content: content, bot: b}
	if content.MsgType == event.MsgText && strings.HasPrefix(content.Body, b.CommandPrefix) {
		if handled, err := b.runCommand(ctx, m); handled {
			return err
		}
	}
	b.mu.Lock()
	handlers := b.messages
	b.mu.Unlock()
	for _, h := range handlers {
		if err := h(ctx, m); err != nil {
			return err
		}
	}
	return nil
}

func (b *Bot) handleReaction(ctx context.Context, evt *event.Event) error {
	content := evt.Content.AsReaction()
	if content.RelatesTo.Type != event.RelAnnotation {
		return nil
	}
	r := &Reaction{Event: evt, Key: content.RelatesTo.Key, Target: content.RelatesTo.EventID, bot: b}
	b.mu.Lock()
	handlers := b.reactions
	b.mu.Unlock()
	for _, h := range handlers {
		if err := h(ctx, r); err != nil {
			return err
		}
	}
	return nil
}

// Send sends markdown text to a room as an m.notice (bots speak in notices).
func (b *Bot) Send(ctx context.Context, roomID id.RoomID, markdown string) (id.EventID, error) {
	content := Notice(markdown)
	resp, err := b.Client.SendMessageEvent(ctx, roomID, event.EventMessage, &content)
	if err != nil {
		return "", err
	}
	return resp.EventID, nil
}

// Edit replaces the text of one of the bot's messages.
func (b *Bot) Edit(ctx context.Context, roomID id.RoomID, eventID id.EventID, markdown string) (id.EventID, error) {
	content := Notice(markdown)
	content.SetEdit(eventID)
	resp, err := b.Client.SendMessageEvent(ctx, roomID, event.EventMessage, &content)
	if err != nil {
		return "", err
	}
	return resp.EventID, nil
}

// Notice renders markdown as m.notice content (formatted_body only when
// the markdown formats something).
func Notice(markdown string) event.MessageEventContent {
	content := format.RenderMarkdown(markdown, true, false)
	content.MsgType = event.MsgNotice
	return content
}

// PowerLevel returns a user's power level in a room (from the state store,
// else asked of the homeserver).
func (b *Bot) PowerLevel(ctx context.Context, roomID id.RoomID, userID id.UserID) (int, error) {
	var pl *event.PowerLevelsEventContent
	if store := b.Client.StateStore; store != nil {
		if cached, err := store.GetPowerLevels(ctx, roomID); err == nil {
			pl = cached
		}
	}
	if pl == nil {
		pl = &event.PowerLevelsEventContent{}
		// StateEvent also stores what it fetched in the state store.
		if err := b.Client.StateEvent(ctx, roomID, event.StatePowerLevels, "", pl); err != nil {
			return 0, fmt.Errorf("power levels of %s: %w", roomID, err)
		}
	}
	if pl.CreateEvent == nil {
		// Room v12: the creators' power comes from the create event.
		create, err := b.Client.FullStateEvent(ctx, roomID, event.StateCreate, "")
		if err != nil {
			return 0, fmt.Errorf("create event of %s: %w", roomID, err)
		}
		pl.CreateEvent = create
	}
	return pl.GetUserLevel(userID), nil
}

// Message is a message the bot received.
type Message struct {
	Event   *event.Event
	Content *event.MessageEventContent
	bot     *Bot
}

// Body is the message's plain text.
func (m *Message) Body() string { return m.Content.Body }

// RoomID and Sender say where the message came from.
func (m *Message) RoomID() id.RoomID { return m.Event.RoomID }
func (m *Message) Sender() id.UserID { return m.Event.Sender }

// Reply answers the message with a reply (markdown, as a notice); in a
// thread the reply stays in the thread.
func (m *Message) Reply(ctx context.Context, markdown string) (id.EventID, error) {
	content := Notice(markdown)
	content.SetReply(m.Event)
	return m.send(ctx, &content)
}

// ReplyInThread answers in the message's thread (starting one on it when
// it is not in a thread).
func (m *Message) ReplyInThread(ctx context.Context, markdown string) (id.EventID, error) {
	content := Notice(markdown)
	content.SetThread(m.Event)
	return m.send(ctx, &content)
}

// React adds a reaction to the message.
func (m *Message) React(ctx context.Context, key string) (id.EventID, error) {
	resp, err := m.bot.Client.SendReaction(ctx, m.Event.RoomID, m.Event.ID, key)
	if err != nil {
		return "", err
	}
	return resp.EventID, nil
}

func (m *Message) send(ctx context.Context, content *event.MessageEventContent) (id.EventID, error) {
	resp, err := m.bot.Client.SendMessageEvent(ctx, m.Event.RoomID, event.EventMessage, content)
	if err != nil {
		return "", err
	}
	return resp.EventID, nil
}

// Reaction is a reaction the bot received.
type Reaction struct {
	Event  *event.Event
	Key    string
	Target id.EventID
	bot    *Bot
}

// sortedCommands lists the registered commands by name (for help).
func (b *Bot) sortedCommands() []*Command {
	b.mu.Lock()
	defer b.mu.Unlock()
	names := make([]string, 0, len(b.commands))
	for n := range b.commands {
		names = append(names, n)
	}
	sort.Strings(names)
	out := make([]*Command, len(names))
	for i, n := range names {
		out[i] = b.commands[n]
	}
	return out
}
