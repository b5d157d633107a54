package docs

import (
	"context"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/rs/zerolog"

	"github.com/switchboard-im/switchboard/framework/bridge"
)

// remoteClient is the protocol library a bridge wraps (an IRC or Slack
// client): only what the snippets use.
type remoteClient interface {
	// Run holds a connection until ctx ends or the connection drops;
	// connected is called once it is up.
	Run(ctx context.Context, connected func()) error
	// Send posts text to a channel as the account of token ("" is the
	// bridge's own account) and returns the message's ID.
	Send(ctx context.Context, token, channel, text string) (messageID string, err error)
	// WhoAmI names the account of a token.
	WhoAmI(ctx context.Context, token string) (accountID, name string, err error)
	// WhoIs describes a user.
	WhoIs(ctx context.Context, nick string) (string, error)
	Close()
}

// chatNetwork is the bridge.Network of a chat whose messages are limited
// to maxPart bytes and whose users may log in (puppeting).
type chatNetwork struct {
	br     *bridge.Bridge
	remote remoteClient
}

const maxPart = 400

var (
	_ bridge.Network      = (*chatNetwork)(nil)
	_ bridge.LoginHandler = (*chatNetwork)(nil)
)

func (n *chatNetwork) Info() bridge.NetworkInfo {
	// Users send as themselves once logged in; without a login they are
	// relayed (where the portal relays) or told to log in.
	return bridge.NetworkInfo{ID: "chat", DisplayName: "Chat", RequiresLogin: true}
}

func (n *chatNetwork) Start(ctx context.Context, b *bridge.Bridge) error {
	n.br = b
	go n.stayConnected(ctx)
	return nil
}

func (n *chatNetwork) Stop() { n.remote.Close() }

func (n *chatNetwork) ResolveChannel(ctx context.Context, channelID string) (*bridge.ChannelInfo, error) {
	if !strings.HasPrefix(channelID, "#") {
		return nil, bridge.ErrUnknownChannel
	}
	return &bridge.ChannelInfo{ID: channelID, Name: channelID, Public: true}, nil
}

// SendMessage sends a long Matrix message as several remote messages. The
// framework records the first ID it returns; the other parts are recorded
// here, so that a remote reply to any part finds the Matrix event.
func (n *chatNetwork) SendMessage(ctx context.Context, msg *bridge.MatrixMessage) (string, error) {
	token, err := tokenOf(msg.Login)
	if err != nil {
		return "", err
	}
	var firstID string
	for i, part := range splitText(msg.Content.Body, maxPart) {
		remoteID, err := n.remote.Send(ctx, token, msg.Portal.ID, part)
		if err != nil {
			return "", err
		}
		if i == 0 {
			firstID = remoteID
			continue
		}
		err = n.br.AddMessage(ctx, &bridge.Message{PortalID: msg.Portal.ID, RemoteID: remoteID,
			EventID: msg.Event.ID, RoomID: msg.Event.RoomID, Sender: msg.Event.Sender})
		if err != nil {
			return "", err
		}
	}
	return firstID, nil
}

// splitText cuts text into parts of at most max bytes, at spaces where it
// can, never inside a character.
func splitText(text string, max int) []string {
	var parts []string
	for len(text) > max {
		cut := strings.LastIndexByte(text[:max], ' ')
		if cut <= 0 {
			cut = max
			for !utf8.RuneStart(text[cut]) {
				cut--
			}
		}
		parts = append(parts, text[:cut])
		text = strings.TrimLeft(text[cut:], " ")
	}
	return append(parts, text)
}

// stayConnected keeps the connection up and reports it as the bridge
// state, which the status command and the provisioning API show.
func (n *chatNetwork) stayConnected(ctx context.Context) {
	for ctx.Err() == nil {
		n.br.SetState(bridge.StateConnecting, "")
		err := n.remote.Run(ctx, func() { n.br.SetState(bridge.StateConnected, "") })
		if ctx.Err() != nil {
			return
		}
		n.br.SetState(bridge.StateTransientDisconnect, err.Error())
		select {
		case <-ctx.Done():
		case <-time.After(10 * time.Second):
		}
	}
}

// run starts the bridge: the network, then bridge.New, then the
// network's own commands, then Run until ctx ends.
func run(ctx context.Context, cfg *bridge.Config, remote remoteClient, log zerolog.Logger) error {
	n := &chatNetwork{remote: remote}
	br, err := bridge.New(ctx, cfg, n, log)
	if err != nil {
		return err
	}
	addCommands(br, remote)
	return br.Run(ctx)
}
