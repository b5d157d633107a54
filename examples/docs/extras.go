package docs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"maunium.net/go/mautrix/id"

	"github.com/switchboard-im/switchboard/framework/bot"
	"github.com/switchboard-im/switchboard/framework/bridge"
	"github.com/switchboard-im/switchboard/framework/format"
)

// onInvite: the remote side invited the bridge's account to a channel.
// The channel gets its room now, instead of when a Matrix user joins its
// alias.
func (n *chatNetwork) onInvite(ctx context.Context, channelID string) error {
	p, err := n.br.Portal(ctx, channelID)
	if err != nil {
		return err
	}
	_, err = n.br.EnsureRoom(ctx, p, nil, bridge.RoomOptions{Alias: n.br.AliasFor(channelID)})
	return err
}

// onDirectMessage: a remote user writes to a Matrix user. The portal is a
// direct chat, created by the sender's ghost, which invites the user.
func (n *chatNetwork) onDirectMessage(ctx context.Context, from bridge.RemoteUser, to id.UserID, msgID, text string) error {
	portalID := "dm:" + from.ID + ":" + string(to)
	p, err := n.br.Portal(ctx, portalID)
	if err != nil {
		return err
	}
	ghost, err := n.br.Ghost(ctx, from)
	if err != nil {
		return err
	}
	info := &bridge.ChannelInfo{ID: portalID, Name: from.Name}
	if _, err := n.br.EnsureRoom(ctx, p, info, bridge.RoomOptions{Invite: []id.UserID{to}, DirectWith: ghost}); err != nil {
		return err
	}
	_, err = n.br.RemoteMessage(ctx, &bridge.RemoteMessage{PortalID: portalID, Sender: from, ID: msgID,
		Content: format.TextToContent(text)})
	return err
}

// loginData is what the bridge keeps of a login (bridge.Login.Data).
type loginData struct {
	Token string `json:"token"`
}

func (n *chatNetwork) LoginUsage() string { return "<token>" }

// Login checks the token the user gave (`!chat login <token>`, in their
// management room) and returns the login to store.
func (n *chatNetwork) Login(ctx context.Context, user *bridge.User, args []string) (*bridge.Login, error) {
	if len(args) != 1 {
		return nil, errors.New("give one token")
	}
	accountID, name, err := n.remote.WhoAmI(ctx, args[0])
	if err != nil {
		return nil, err
	}
	data, err := json.Marshal(loginData{Token: args[0]})
	if err != nil {
		return nil, err
	}
	return &bridge.Login{ID: accountID, RemoteName: name, Data: data}, nil
}

func (n *chatNetwork) Logout(ctx context.Context, user *bridge.User, login *bridge.Login) error {
	return nil // the token stays valid on the remote side; the bridge forgets it
}

// tokenOf is the token to send as: the user's own, or "" — the bridge's
// account — for users without a login (relayed messages).
func tokenOf(login *bridge.Login) (string, error) {
	if login == nil {
		return "", nil
	}
	var data loginData
	if err := json.Unmarshal(login.Data, &data); err != nil {
		return "", fmt.Errorf("login %s: %w", login.ID, err)
	}
	return data.Token, nil
}

// addCommands gives the bridge bot a command of the network's own:
// `!chat whois <nick>`.
func addCommands(br *bridge.Bridge, remote remoteClient) {
	br.Bot.Command(&bot.Command{
		Name: "whois", Usage: "<nick>", MinArgs: 1, MaxArgs: 1,
		Help: "Show who a remote user is.",
		Run: func(ctx context.Context, c *bot.CommandContext) error {
			about, err := remote.WhoIs(ctx, c.Args[0])
			if err != nil {
				return bot.Errorf("I know nobody called %s.", c.Args[0])
			}
			_, err = c.Reply(ctx, about)
			return err
		},
	})
}
