package irc

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"maunium.net/go/mautrix"

	"github.com/switchboard-im/switchboard/framework/bot"
	"github.com/switchboard-im/switchboard/framework/bridge"
)

// addCommands gives the bridge bot the IRC commands, and a link command
// that takes the network and the channel as two words.
func (c *core) addCommands() {
	b := c.br.Bot
	b.Command(&bot.Command{
		Name: "link", Usage: "<network> <#channel> [operator nick] [key=<channel key>]",
		Help: "Bridge this room to an IRC channel (`network/#channel` works too; with one network, `#channel` alone). " +
			"Unless you are an operator of the channel on IRC or a bridge admin, name one of its operators: they are asked to approve. " +
			"A channel with a key (+k) needs `key=…` (the message is removed once read); in a room bridged to the channel already, it gives the bridge the channel's new key. Needs power level 50.",
		Run: c.cmdLink,
	})
	b.Command(&bot.Command{
		Name: "nick", Usage: "[network] [nick]", MaxArgs: 2,
		Help: "Show your IRC nicks, or change yours (on this room's network, or the one named).",
		Run:  c.cmdNick,
	})
	b.Command(&bot.Command{
		Name: "whois", Usage: "[network] <nick>", MinArgs: 1, MaxArgs: 2,
		Help: "Ask the IRC server about a user.",
		Run:  c.cmdWhois,
	})
	b.Command(&bot.Command{
		Name: "networks",
		Help: "List the IRC networks and their state.",
		Run:  c.cmdNetworks,
	})
	c.addUserCommands()
}

func (c *core) networkIDs() string {
	ids := make([]string, len(c.order))
	for i, n := range c.order {
		ids[i] = n.cfg.ID
	}
	return strings.Join(ids, ", ")
}

// commandUser is the user running a command, who needs the permission
// "user".
func (c *core) commandUser(ctx context.Context, cc *bot.CommandContext) (*bridge.User, error) {
	u, err := c.br.User(ctx, cc.Sender())
	if err != nil {
		return nil, err
	}
	if u.Permission < bridge.PermissionUser {
		return nil, bot.Errorf("You need the bridge permission \"user\" for `%s`; you have %q.", cc.Path, u.Permission)
	}
	return u, nil
}

// networkFor is the network a command means: the one named, else the
// room's portal's, else the only one.
func (c *core) networkFor(ctx context.Context, cc *bot.CommandContext, name string) (*network, error) {
	if name != "" {
		if n := c.networks[name]; n != nil {
			return n, nil
		}
		return nil, bot.Errorf("There is no IRC network %q; the networks are %s.", name, c.networkIDs())
	}
	if p, err := c.br.PortalByRoom(ctx, cc.RoomID()); err == nil && p != nil {
		if n, _, _, err := c.route(p.ID); err == nil {
			return n, nil
		}
	}
	if len(c.order) == 1 {
		return c.order[0], nil
	}
	return nil, bot.Errorf("Which network? Name one of %s.", c.networkIDs())
}

func (c *core) cmdLink(ctx context.Context, cc *bot.CommandContext) error {
	args, key, hasKey := takeKeyArg(cc.Args)
	if hasKey {
		// The key is out: remove it from the room before anything else
		// (a refusal too), as for storepass.
		c.redactSecret(ctx, cc, "contained a channel key")
	}
	u, err := c.commandUser(ctx, cc)
	if err != nil {
		return err
	}
	// The power level is checked here, not by the bot before the command
	// runs, so that the message with a key is removed first.
	if level, err := c.br.Bot.PowerLevel(ctx, cc.RoomID(), cc.Sender()); err != nil {
		return err
	} else if level < linkPower {
		return bot.Errorf("`%s` needs power level %d in this room; you have %d.", cc.Path, linkPower, level)
	}
	if len(args) == 0 || len(args) > 3 {
		return bot.Errorf("Usage: `%s %s`", cc.Path, cc.Command.Usage)
	}
	if hasKey && !validKey(key) {
		return bot.Errorf("That key cannot be sent to IRC: it has no spaces, commas or line breaks, and does not start with `:`.")
	}
	op := ""
	// An operator's nick comes last: after "network #channel", or after
	// "network/#channel" or "#channel".
	if len(args) == 3 || (len(args) == 2 && c.networks[args[0]] == nil) {
		args, op = args[:len(args)-1], args[len(args)-1]
	}
	channel := strings.Join(args, " ")
	info, err := c.ResolveChannel(ctx, channel)
	if errors.Is(err, bridge.ErrUnknownChannel) {
		return bot.Errorf("There is no channel %q: write `%slink <network> <#channel>` (networks: %s).", channel, c.br.Bot.CommandPrefix, c.networkIDs())
	} else if err != nil {
		return err
	}
	n, ch, _, _ := c.route(info.ID)
	if hasKey {
		// Linked to this channel already: the key is new.
		if p, err := c.br.PortalByRoom(ctx, cc.RoomID()); err != nil {
			return err
		} else if p != nil && p.ID == info.ID {
			if err := n.updateKey(ctx, p, ch, key); err != nil {
				return err
			}
			_, err := cc.Reply(ctx, fmt.Sprintf("The bridge joins %s on %s with the new key.", ch, n.cfg.Name))
			return err
		}
	}
	if err := c.MayLink(ctx, u, info.ID); err != nil {
		if op == "" {
			return bot.Errorf("Not linked: %v", err)
		}
		if perr := c.prov.requestApproval(ctx, n, ch, info.ID, cc.RoomID(), u.ID, op, key); perr != nil {
			return bot.Errorf("Not linked: %v", perr)
		}
		return nil // the approval request told the room
	}
	_, warning, err := n.link(ctx, cc.RoomID(), ch, info.ID, cc.Sender(), key)
	switch {
	case errors.Is(err, bridge.ErrAlreadyLinked):
		return bot.Errorf("Not linked: %v.", err)
	case err != nil:
		return err
	}
	reply := fmt.Sprintf("This room is now bridged to %s on %s.", ch, n.cfg.Name)
	if warning != "" {
		reply += " " + warning
	}
	_, err = cc.Reply(ctx, reply)
	return err
}

// takeKeyArg takes a channel key ("key=SECRET") off a command's
// arguments.
func takeKeyArg(args []string) (rest []string, key string, ok bool) {
	for i, a := range args {
		if k, found := strings.CutPrefix(a, "key="); found {
			return append(slices.Clone(args[:i]), args[i+1:]...), k, true
		}
	}
	return args, "", false
}

// redactSecret removes a command's message, which holds a secret, from
// the room; when the bot may not, the sender is told to.
func (c *core) redactSecret(ctx context.Context, cc *bot.CommandContext, reason string) {
	_, err := c.br.AS.Bot().RedactEvent(ctx, cc.RoomID(), cc.Event.ID, mautrix.ReqRedact{Reason: reason})
	if err == nil {
		return
	}
	c.log.Warn().Err(err).Str("command", cc.Path).Msg("Could not redact a command holding a secret")
	if _, err := cc.Reply(ctx, "⚠️ I could not remove your message, which holds a secret: remove it yourself (I need the power to remove messages here)."); err != nil {
		c.log.Warn().Err(err).Msg("Failed to reply")
	}
}

var _ bridge.LinkAuthorizer = (*core)(nil)

// MayLink: bridge admins, and users whose puppet is an operator of the
// channel, may link it; others need an operator's approval (the link
// command with an operator's nick, or the provisioning API's op_nick).
func (c *core) MayLink(ctx context.Context, u *bridge.User, channelID string) error {
	if u.Permission >= bridge.PermissionAdmin {
		return nil
	}
	n, channel, _, err := c.route(channelID)
	if err != nil || channel == "" {
		return nil // not a channel: Link says so
	}
	if !n.isUp() {
		return n.errDown()
	}
	lctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	members, is, err := n.members(lctx, channel)
	if err != nil {
		return fmt.Errorf("could not list the operators of %s: %w", channel, err)
	}
	var ops []string
	mine := ""
	if p := n.existingPuppet(u.ID); p != nil {
		mine = p.nick()
	}
	for _, m := range members {
		if !isOp(is, m) || (n.isBridge(m.Nick) && !n.equal(m.Nick, mine)) {
			continue
		}
		if mine != "" && n.equal(m.Nick, mine) {
			return nil
		}
		ops = append(ops, "`"+m.Nick+"`")
	}
	if len(ops) == 0 {
		return fmt.Errorf("%s has no operator on %s to approve bridging it; a bridge admin can link it", channel, n.cfg.Name)
	}
	return fmt.Errorf("only an operator of %s, or a bridge admin, may bridge it. Ask one to approve: `%slink %s %s <operator>` (operators: %s)",
		channel, c.br.Bot.CommandPrefix, n.cfg.ID, channel, strings.Join(ops, ", "))
}

func (c *core) cmdNick(ctx context.Context, cc *bot.CommandContext) error {
	if _, err := c.commandUser(ctx, cc); err != nil {
		return err
	}
	if len(cc.Args) == 0 {
		var sb strings.Builder
		for _, n := range c.order {
			var nick string
			if p := n.existingPuppet(cc.Sender()); p != nil {
				nick = p.nick()
			}
			if nick != "" {
				fmt.Fprintf(&sb, "- %s: you are `%s`\n", n.cfg.Name, nick)
			} else {
				fmt.Fprintf(&sb, "- %s: not connected; you will be `%s`\n", n.cfg.Name, n.puppet(cc.Sender()).desiredNick(ctx))
			}
		}
		_, err := cc.Reply(ctx, sb.String())
		return err
	}
	var netName string
	nick := cc.Args[0]
	if len(cc.Args) == 2 {
		netName, nick = cc.Args[0], cc.Args[1]
	}
	n, err := c.networkFor(ctx, cc, netName)
	if err != nil {
		return err
	}
	if !validNick(nick, n.bot.ISupport().NickLen) {
		return bot.Errorf("`%s` is not a nick %s takes (letters, digits and `[]\\`^_{|}-`, not starting with a digit or `-`, at most %d bytes).",
			nick, n.cfg.Name, n.bot.ISupport().NickLen)
	}
	p := n.puppet(cc.Sender())
	err = p.setNick(ctx, nick)
	if err != nil && !errors.Is(err, errNotConnected) {
		return bot.Errorf("%s refused the nick `%s`: %v", n.cfg.Name, nick, err)
	}
	p.setWantNick("") // the user's choice replaces a nick being reclaimed
	if serr := c.br.AS.UserKV(cc.Sender()).Set(ctx, n.kvKey("nick"), nick); serr != nil {
		return serr
	}
	if errors.Is(err, errNotConnected) {
		_, err = cc.Reply(ctx, fmt.Sprintf("You will be `%s` on %s when you next connect.", nick, n.cfg.Name))
	} else {
		_, err = cc.Reply(ctx, fmt.Sprintf("You are now `%s` on %s.", nick, n.cfg.Name))
	}
	return err
}

func (c *core) cmdWhois(ctx context.Context, cc *bot.CommandContext) error {
	if _, err := c.commandUser(ctx, cc); err != nil {
		return err
	}
	var netName string
	nick := cc.Args[0]
	if len(cc.Args) == 2 {
		netName, nick = cc.Args[0], cc.Args[1]
	}
	n, err := c.networkFor(ctx, cc, netName)
	if err != nil {
		return err
	}
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	lines, err := n.whoisUser(wctx, nick)
	if err != nil {
		return bot.Errorf("%s: %v.", n.cfg.Name, err)
	}
	_, err = cc.Reply(ctx, "```\n"+strings.ReplaceAll(strings.Join(lines, "\n"), "```", "'''")+"\n```")
	return err
}

func (c *core) cmdNetworks(ctx context.Context, cc *bot.CommandContext) error {
	var sb strings.Builder
	for _, n := range c.order {
		up, _, why := n.status()
		state := "disconnected (" + orUnknown(why) + ")"
		if up {
			state = "connected as `" + n.bot.Nick() + "`"
		}
		puppets := 0
		for _, p := range n.allPuppets() {
			if p.connected() {
				puppets++
			}
		}
		portals, err := n.portals(ctx)
		if err != nil {
			return err
		}
		tls := ""
		if n.cfg.TLS {
			tls = ", TLS"
		}
		fmt.Fprintf(&sb, "- **%s** (`%s`, %s%s): %s; %d Matrix users connected; %d bridged rooms\n",
			n.cfg.Name, n.cfg.ID, n.addr, tls, state, puppets, len(portals))
	}
	_, err := cc.Reply(ctx, sb.String())
	return err
}
