package irc

import (
	"context"
	"strings"

	"maunium.net/go/mautrix/id"

	"github.com/switchboard-im/switchboard/framework/bridge"
)

// The third-party protocol "irc" (spec: third-party networks): one
// instance per configured network; locations are channels, found by
// {"network", "channel"} and leading to the portal alias
// #{alias_prefix}{network}_{#channel}; users are nicks, found by
// {"network", "nickname"} and leading to the ghost (or to the Matrix user
// whose puppet has the nick). The field names and examples follow
// matrix-appservice-irc's, so clients that know that bridge read ours.
// "network" takes a network's ID or, when only one network has it, its
// host.

const thirdPartyProtocol = "irc"

var _ bridge.ThirdPartyProvider = (*core)(nil)

func (c *core) ThirdPartyProtocols() map[string]*bridge.Protocol {
	instances := make([]bridge.ProtocolInstance, 0, len(c.order))
	for _, n := range c.order {
		instances = append(instances, bridge.ProtocolInstance{
			NetworkID: n.cfg.ID,
			Desc:      n.cfg.Name,
			Fields:    map[string]string{"network": n.cfg.ID},
			BotUserID: c.cfg.BotID(),
		})
	}
	return map[string]*bridge.Protocol{thirdPartyProtocol: {
		UserFields:     []string{"network", "nickname"},
		LocationFields: []string{"network", "channel"},
		FieldTypes: map[string]bridge.FieldType{
			"network":  {Regexp: `[a-z0-9]([a-z0-9.-]*[a-z0-9])?`, Placeholder: "irc.example.net"},
			"channel":  {Regexp: `[#&+!][^\s,:]+`, Placeholder: "#foo"},
			"nickname": {Regexp: `[^#&+!\s\d-][^\s]*`, Placeholder: "SomeNick"},
		},
		Instances: instances,
	}}
}

// networksNamed are the networks a "network" field names: all of them for
// "", the one with that ID, else the one with that host.
func (c *core) networksNamed(name string) []*network {
	name = strings.TrimSpace(name)
	if name == "" {
		return c.order
	}
	if n := c.networks[strings.ToLower(name)]; n != nil {
		return []*network{n}
	}
	var byHost []*network
	for _, n := range c.order {
		if strings.EqualFold(n.cfg.Host, name) {
			byHost = append(byHost, n)
		}
	}
	if len(byHost) != 1 {
		return nil
	}
	return byHost
}

// location is the third-party location of a channel's portal.
func (c *core) location(n *network, channel string) bridge.ThirdPartyLocation {
	folded := n.fold(channel)
	return bridge.ThirdPartyLocation{
		Alias:    id.NewRoomAlias(c.br.AliasFor(channelPortalID(n.cfg.ID, folded)), c.cfg.ServerName),
		Protocol: thirdPartyProtocol,
		Fields:   map[string]string{"network": n.cfg.ID, "channel": folded},
	}
}

// ThirdPartyLocations: with a channel, its portal alias on each network
// named (joining the alias creates the portal); without one, the bridged
// channels of the networks named.
func (c *core) ThirdPartyLocations(ctx context.Context, _ string, fields map[string]string) ([]bridge.ThirdPartyLocation, error) {
	channel := strings.TrimSpace(fields["channel"])
	var out []bridge.ThirdPartyLocation
	for _, n := range c.networksNamed(fields["network"]) {
		if channel != "" {
			if n.validChannel(channel) {
				out = append(out, c.location(n, channel))
			}
			continue
		}
		portals, err := n.portals(ctx)
		if err != nil {
			return nil, err
		}
		for _, p := range portals {
			if _, ch, _, _, ok := parsePortalID(p.ID); ok && ch != "" {
				out = append(out, c.location(n, ch))
			}
		}
	}
	return out, nil
}

// thirdPartyUser is who nick is on n: the bridge bot, a Matrix user's
// puppet, or an IRC user's ghost.
func (c *core) thirdPartyUser(n *network, nick string) bridge.ThirdPartyUser {
	userID := n.ghostID(nick)
	if n.equal(nick, n.bot.Nick()) {
		userID = c.cfg.BotID()
	} else if p := n.ownPuppet(nick); p != nil {
		userID = p.userID
	}
	return bridge.ThirdPartyUser{UserID: userID, Protocol: thirdPartyProtocol, Fields: map[string]string{"network": n.cfg.ID, "nickname": nick}}
}

func (c *core) ThirdPartyUsers(_ context.Context, _ string, fields map[string]string) ([]bridge.ThirdPartyUser, error) {
	nick := strings.TrimSpace(fields["nickname"])
	if nick == "" {
		return nil, nil
	}
	var out []bridge.ThirdPartyUser
	for _, n := range c.networksNamed(fields["network"]) {
		if validNick(nick, n.bot.ISupport().NickLen) {
			out = append(out, c.thirdPartyUser(n, nick))
		}
	}
	return out, nil
}

// ThirdPartyLocationsByAlias reads a portal alias, or finds the portal of
// the room another local alias points to (a linked room's own alias).
func (c *core) ThirdPartyLocationsByAlias(ctx context.Context, alias id.RoomAlias) ([]bridge.ThirdPartyLocation, error) {
	localpart, server, _ := strings.Cut(strings.TrimPrefix(string(alias), "#"), ":")
	if server != c.cfg.ServerName {
		return nil, nil
	}
	if rest, ok := strings.CutPrefix(localpart, c.cfg.AliasPrefix); ok {
		// Our namespace: read it, never resolve it (that creates portals).
		channelID, ok := c.ChannelForAlias(rest)
		if !ok {
			return nil, nil
		}
		n, channel, _, err := c.route(channelID)
		if err != nil || channel == "" || !n.validChannel(channel) {
			return nil, nil
		}
		loc := c.location(n, channel)
		loc.Alias = alias
		return []bridge.ThirdPartyLocation{loc}, nil
	}
	resolved, err := c.br.AS.Bot().ResolveAlias(ctx, alias)
	if err != nil {
		return nil, nil // no such alias (or the homeserver would not say)
	}
	p, err := c.br.PortalByRoom(ctx, resolved.RoomID)
	if err != nil || p == nil {
		return nil, err
	}
	n, channel, _, err := c.route(p.ID)
	if err != nil || channel == "" {
		return nil, nil
	}
	loc := c.location(n, channel)
	loc.Alias = alias
	return []bridge.ThirdPartyLocation{loc}, nil
}

// ThirdPartyUsersByID: a ghost is its IRC user; a Matrix user is their
// puppet's nick on each network where it is connected; the bot is the
// bot's nicks.
func (c *core) ThirdPartyUsersByID(_ context.Context, userID id.UserID) ([]bridge.ThirdPartyUser, error) {
	var out []bridge.ThirdPartyUser
	for _, n := range c.order {
		var nick string
		switch {
		case userID == c.cfg.BotID():
			if n.bot.Connected() {
				nick = n.bot.Nick()
			}
		case c.cfg.IsGhost(userID):
			nick, _ = n.nickOfGhost(userID)
		default:
			if p := n.existingPuppet(userID); p != nil {
				nick = p.nick()
			}
		}
		if nick != "" {
			out = append(out, bridge.ThirdPartyUser{UserID: userID, Protocol: thirdPartyProtocol,
				Fields: map[string]string{"network": n.cfg.ID, "nickname": nick}})
		}
	}
	return out, nil
}
