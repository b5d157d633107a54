package bridge

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/switchboard-im/switchboard/framework/bot"
)

// linkPower is the room power level needed to link, unlink or change a
// portal's relay mode: a room moderator's.
const linkPower = 50

// registerCommands adds the management commands to the bridge bot.
func (b *Bridge) registerCommands() {
	b.Bot.Command(&bot.Command{
		Name: "link", Usage: "<channel>", MinArgs: 1, MaxArgs: 1, MinPower: linkPower,
		Help: "Bridge this room to a remote channel.",
		Run:  b.cmdLink,
	})
	b.Bot.Command(&bot.Command{
		Name: "unlink", MaxArgs: 0, MinPower: linkPower,
		Help: "Stop bridging this room.",
		Run:  b.cmdUnlink,
	})
	b.Bot.Command(&bot.Command{
		Name: "relay", Usage: "on|off", MinArgs: 1, MaxArgs: 1, MinPower: linkPower,
		Help: "Relay the messages of users without a remote login in this room (or stop).",
		Run:  b.cmdRelay,
	})
	b.Bot.Command(&bot.Command{
		Name: "status", MaxArgs: 0,
		Help: "Show the bridge's state, your login and this room's portal.",
		Run:  b.cmdStatus,
	})
	b.Bot.Command(&bot.Command{
		Name: "portals", MaxArgs: 0,
		Help: "List the bridged rooms (bridge admins).",
		Run:  b.cmdPortals,
	})
	if lh, ok := b.Network.(LoginHandler); ok {
		b.Bot.Command(&bot.Command{
			Name: "login", Usage: lh.LoginUsage(),
			Help: "Log in to the remote network (in your management room).",
			Run:  func(ctx context.Context, c *bot.CommandContext) error { return b.cmdLogin(ctx, c, lh) },
		})
		b.Bot.Command(&bot.Command{
			Name: "logout", MaxArgs: 0,
			Help: "Log out of the remote network.",
			Run:  func(ctx context.Context, c *bot.CommandContext) error { return b.cmdLogout(ctx, c, lh) },
		})
	}
}

// commandUser is the user running a command, who needs at least perm.
func (b *Bridge) commandUser(ctx context.Context, c *bot.CommandContext, perm Permission) (*User, error) {
	u, err := b.User(ctx, c.Sender())
	if err != nil {
		return nil, err
	}
	if u.Permission < perm {
		return nil, bot.Errorf("You need the bridge permission %q for `%s`; you have %q.", perm, c.Path, u.Permission)
	}
	return u, nil
}

func (b *Bridge) cmdLink(ctx context.Context, c *bot.CommandContext) error {
	u, err := b.commandUser(ctx, c, PermissionUser)
	if err != nil {
		return err
	}
	if err := b.mayLink(ctx, u, c.Args[0]); err != nil {
		return bot.Errorf("Not linked: %v", err)
	}
	p, warning, err := b.Link(ctx, c.RoomID(), c.Args[0], c.Sender())
	switch {
	case errors.Is(err, ErrUnknownChannel):
		return bot.Errorf("There is no channel %s.", c.Args[0])
	case errors.Is(err, ErrAlreadyLinked):
		return bot.Errorf("Not linked: %v.", err)
	case err != nil:
		return err
	}
	reply := fmt.Sprintf("This room is now bridged to %s.", p.ID)
	if warning != "" {
		reply += " " + warning
	}
	_, err = c.Reply(ctx, reply)
	return err
}

// mayLink asks the network's LinkAuthorizer, when it has one.
func (b *Bridge) mayLink(ctx context.Context, u *User, channelID string) error {
	if la, ok := b.Network.(LinkAuthorizer); ok {
		return la.MayLink(ctx, u, channelID)
	}
	return nil
}

// portalOf is the portal of the command's room, or a user error.
func (b *Bridge) portalOf(ctx context.Context, c *bot.CommandContext) (*Portal, error) {
	p, err := b.PortalByRoom(ctx, c.RoomID())
	if err != nil {
		return nil, err
	}
	if p == nil {
		return nil, bot.Errorf("This room is not bridged.")
	}
	return p, nil
}

func (b *Bridge) cmdUnlink(ctx context.Context, c *bot.CommandContext) error {
	if _, err := b.commandUser(ctx, c, PermissionUser); err != nil {
		return err
	}
	p, err := b.portalOf(ctx, c)
	if err != nil {
		return err
	}
	// Answer first: a linked room's bot leaves it when unlinking.
	if _, err := c.Reply(ctx, fmt.Sprintf("Unlinking %s.", p.ID)); err != nil {
		return err
	}
	return b.Unlink(ctx, p)
}

func (b *Bridge) cmdRelay(ctx context.Context, c *bot.CommandContext) error {
	if _, err := b.commandUser(ctx, c, PermissionUser); err != nil {
		return err
	}
	if !b.Config.Relay.Enabled {
		return bot.Errorf("Relay mode is disabled in the bridge's config (relay.enabled).")
	}
	p, err := b.portalOf(ctx, c)
	if err != nil {
		return err
	}
	var on bool
	switch strings.ToLower(c.Args[0]) {
	case "on":
		on = true
	case "off":
	default:
		return bot.Errorf("Usage: `%s on|off`", c.Path)
	}
	if err := p.SetRelay(ctx, on); err != nil {
		return err
	}
	state := "no longer relays"
	if on {
		state = "now relays"
	}
	_, err = c.Reply(ctx, fmt.Sprintf("This room %s the messages of users without a login.", state))
	return err
}

func (b *Bridge) cmdStatus(ctx context.Context, c *bot.CommandContext) error {
	u, err := b.User(ctx, c.Sender())
	if err != nil {
		return err
	}
	st := b.State()
	var sb strings.Builder
	fmt.Fprintf(&sb, "%s bridge: **%s**", b.Network.Info().DisplayName, st.Name)
	if st.Message != "" {
		fmt.Fprintf(&sb, " (%s)", st.Message)
	}
	fmt.Fprintf(&sb, "\n\nYour permission: %s.", u.Permission)
	if logins := u.Logins(); len(logins) > 0 {
		names := make([]string, len(logins))
		for i, l := range logins {
			names[i] = l.RemoteName
			if names[i] == "" {
				names[i] = l.ID
			}
		}
		fmt.Fprintf(&sb, " Logged in as %s.", strings.Join(names, ", "))
	} else if b.Network.Info().RequiresLogin {
		sb.WriteString(" Not logged in.")
	}
	if p, err := b.PortalByRoom(ctx, c.RoomID()); err != nil {
		return err
	} else if p != nil {
		relay := "off"
		if p.Relay() {
			relay = "on"
		}
		fmt.Fprintf(&sb, "\n\nThis room is bridged to %s (relay %s).", p.ID, relay)
	}
	_, err = c.Reply(ctx, sb.String())
	return err
}

func (b *Bridge) cmdPortals(ctx context.Context, c *bot.CommandContext) error {
	if _, err := b.commandUser(ctx, c, PermissionAdmin); err != nil {
		return err
	}
	portals, err := b.Portals(ctx)
	if err != nil {
		return err
	}
	if len(portals) == 0 {
		_, err = c.Reply(ctx, "No rooms are bridged.")
		return err
	}
	var sb strings.Builder
	fmt.Fprintf(&sb, "%d bridged rooms:\n\n", len(portals))
	for _, p := range portals {
		fmt.Fprintf(&sb, "- %s → %s\n", p.ID, p.RoomID())
	}
	_, err = c.Reply(ctx, sb.String())
	return err
}

func (b *Bridge) cmdLogin(ctx context.Context, c *bot.CommandContext, lh LoginHandler) error {
	u, err := b.commandUser(ctx, c, PermissionUser)
	if err != nil {
		return err
	}
	if room := u.ManagementRoom(); room == "" || room != c.RoomID() {
		return bot.Errorf("Log in in your management room: start a direct chat with %s.", b.AS.Config.BotID())
	}
	login, err := lh.Login(ctx, u, c.Args)
	if err != nil {
		return bot.Errorf("Login failed: %v", err)
	}
	if err := u.SaveLogin(ctx, login); err != nil {
		return err
	}
	name := login.RemoteName
	if name == "" {
		name = login.ID
	}
	_, err = c.Reply(ctx, fmt.Sprintf("Logged in as %s.", name))
	return err
}

func (b *Bridge) cmdLogout(ctx context.Context, c *bot.CommandContext, lh LoginHandler) error {
	u, err := b.commandUser(ctx, c, PermissionUser)
	if err != nil {
		return err
	}
	login := u.Login()
	if login == nil {
		return bot.Errorf("You are not logged in.")
	}
	if err := lh.Logout(ctx, u, login); err != nil {
		b.Log.Warn().Err(err).Stringer("user", u.ID).Msg("Remote logout failed; forgetting the login anyway")
	}
	if err := u.DeleteLogin(ctx, login.ID); err != nil {
		return err
	}
	_, err = c.Reply(ctx, "Logged out.")
	return err
}
