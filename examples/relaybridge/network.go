package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/rs/zerolog"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/switchboard-im/switchboard/framework/bridge"
)

// relayNetwork is the bridge.Network of the chat: it runs the chat server,
// hands Matrix messages to it and what TCP clients do to the bridge.
type relayNetwork struct {
	listen string
	log    zerolog.Logger

	br     *bridge.Bridge
	chat   *chatServer
	ctx    context.Context // of the calls into the bridge; ends at Stop
	cancel context.CancelFunc
}

func (n *relayNetwork) Info() bridge.NetworkInfo {
	return bridge.NetworkInfo{ID: "relay", DisplayName: "Relay chat"}
}

func (n *relayNetwork) Start(ctx context.Context, b *bridge.Bridge) error {
	// Message IDs go on from where the last run stopped.
	kv := b.AS.GlobalKV()
	var lastID int64
	if _, err := kv.Get(ctx, "last_message_id", &lastID); err != nil {
		return err
	}
	ln, err := net.Listen("tcp", n.listen)
	if err != nil {
		return fmt.Errorf("chat_listen: %w", err)
	}
	n.br = b
	n.ctx, n.cancel = context.WithCancel(context.WithoutCancel(ctx))
	n.chat = newChatServer(ln, lastID, n.fromChat)
	n.chat.saveLastID = func(id int64) {
		if err := kv.Set(n.ctx, "last_message_id", id); err != nil {
			n.log.Err(err).Msg("Failed to save the last message ID")
		}
	}
	go n.chat.serve()
	b.SetState(bridge.StateConnected, "chat on "+ln.Addr().String())
	return nil
}

func (n *relayNetwork) Stop() {
	n.chat.close()
	n.cancel()
}

// ResolveChannel: every well-formed #name is a public channel.
func (n *relayNetwork) ResolveChannel(ctx context.Context, channelID string) (*bridge.ChannelInfo, error) {
	name := strings.ToLower(channelID)
	if !channelRE.MatchString(name) {
		return nil, bridge.ErrUnknownChannel
	}
	return &bridge.ChannelInfo{ID: name, Name: name, Topic: "The relay chat's " + name, Public: true}, nil
}

// SendMessage posts a Matrix message (or a reply) to its channel.
func (n *relayNetwork) SendMessage(ctx context.Context, msg *bridge.MatrixMessage) (string, error) {
	e := chatEvent{Kind: "MSG", Channel: msg.Portal.ID, Nick: n.nick(ctx, msg.Portal, msg.Sender.ID), Text: msg.Content.Body}
	if msg.Relayed {
		e.Nick = "matrix" // the relay: Content.Body says who wrote it
	}
	if msg.ReplyTo != nil {
		e.Kind, e.Target = "REPLY", msg.ReplyTo.RemoteID
	}
	return n.chat.post(e)
}

func (n *relayNetwork) SendEdit(ctx context.Context, msg *bridge.MatrixMessage) (string, error) {
	if msg.EditOf.Sender != msg.Event.Sender {
		return "", errors.New("only the author can edit a message")
	}
	_, err := n.chat.post(chatEvent{Kind: "EDIT", Channel: msg.Portal.ID, ID: msg.EditOf.RemoteID,
		Nick: n.nick(ctx, msg.Portal, msg.Sender.ID), Text: msg.Content.Body})
	return "", err
}

func (n *relayNetwork) SendReaction(ctx context.Context, r *bridge.MatrixReaction) (string, error) {
	_, err := n.chat.post(chatEvent{Kind: "REACT", Channel: r.Portal.ID, ID: r.Target.RemoteID,
		Nick: n.nick(ctx, r.Portal, r.Sender.ID), Text: r.Key})
	return "", err
}

// RemoveReaction: the chat cannot take a reaction back.
func (n *relayNetwork) RemoveReaction(ctx context.Context, r *bridge.MatrixReaction) error {
	return nil
}

func (n *relayNetwork) SendRedaction(ctx context.Context, p *bridge.Portal, sender *bridge.User, _ *bridge.Login, target *bridge.Message) error {
	_, err := n.chat.post(chatEvent{Kind: "DELETE", Channel: p.ID, ID: target.RemoteID, Nick: n.nick(ctx, p, sender.ID)})
	return err
}

// PortalLinked brings the channel's TCP users into a new portal room.
func (n *relayNetwork) PortalLinked(ctx context.Context, p *bridge.Portal) error {
	var members []bridge.RemoteUser
	for _, nick := range n.chat.members(p.ID) {
		members = append(members, bridge.RemoteUser{ID: nick, Name: nick})
	}
	return n.br.SyncMembers(ctx, p.ID, members)
}

func (n *relayNetwork) PortalUnlinked(context.Context, *bridge.Portal) {}

// nick is how a Matrix user appears in the chat: their display name in the
// room, as one word.
func (n *relayNetwork) nick(ctx context.Context, p *bridge.Portal, userID id.UserID) string {
	name := userID.Localpart()
	if m, err := n.br.AS.StateStore.TryGetMember(ctx, p.RoomID(), userID); err == nil && m != nil && m.Displayname != "" {
		name = m.Displayname
	}
	return strings.Join(strings.Fields(name), "_")
}

// fromChat shows on Matrix what a TCP client did. Channels without a
// portal room are not bridged (bridge.ErrNoRoom).
func (n *relayNetwork) fromChat(e chatEvent) {
	ctx, cancel := context.WithTimeout(n.ctx, time.Minute)
	defer cancel()
	user := bridge.RemoteUser{ID: e.Nick, Name: e.Nick}
	text := &event.MessageEventContent{MsgType: event.MsgText, Body: e.Text}
	var err error
	switch e.Kind {
	case "JOIN":
		err = n.br.RemoteJoin(ctx, e.Channel, user)
	case "PART":
		err = n.br.RemoteLeave(ctx, e.Channel, e.Nick, e.Text)
	case "MSG", "REPLY":
		_, err = n.br.RemoteMessage(ctx, &bridge.RemoteMessage{PortalID: e.Channel, Sender: user, ID: e.ID, Content: text, ReplyTo: e.Target})
	case "EDIT":
		err = n.br.RemoteEdit(ctx, e.Channel, user, e.ID, text)
	case "REACT":
		err = n.br.RemoteReaction(ctx, e.Channel, user, e.ID, e.Text, "")
	case "DELETE":
		err = n.br.RemoteDelete(ctx, e.Channel, user, e.ID)
	}
	if err != nil && !errors.Is(err, bridge.ErrNoRoom) {
		n.log.Warn().Err(err).Str("line", e.String()).Msg("Failed to bridge a chat event")
	}
}
