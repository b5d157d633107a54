package irc

// Channel keys (+k). A keyed channel's key comes from the config (a
// mapping's key), from the link command or the provisioning API, or from
// a MODE +k the bot sees in the channel; it is kept in the bridge's
// database (the global KV, "irc/{network}/key/{folded channel}") so that
// the bot and every puppet join with it (JOIN #channel key), across
// restarts, and forgotten when the channel's room is unlinked. Keys are
// secrets: never logged, never shown.

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"gopkg.in/irc.v3"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/switchboard-im/switchboard/bridges/irc/ircx"
	"github.com/switchboard-im/switchboard/framework/bot"
	"github.com/switchboard-im/switchboard/framework/bridge"
)

// storedKey is a channel's key as the database keeps it.
type storedKey struct {
	Key string `json:"key"`
	// Config is the mapping's key in the config when the record was made
	// from it: a key changed in the config replaces the stored one, which
	// otherwise follows the channel (a MODE +k seen since).
	Config string `json:"config,omitempty"`
}

func (n *network) keyKVKey(channel string) string { return n.kvKey("key/" + n.fold(channel)) }

// loadKeys reads the stored keys, then takes the config's where it is new
// or changed. Called at start, after the case mapping is known.
func (n *network) loadKeys(ctx context.Context) error {
	kv := n.c.br.AS.GlobalKV()
	names, err := kv.Keys(ctx)
	if err != nil {
		return err
	}
	prefix := n.kvKey("key/")
	keys := map[string]storedKey{}
	for _, name := range names {
		folded, ok := strings.CutPrefix(name, prefix)
		if !ok {
			continue
		}
		var k storedKey
		if _, err := kv.Get(ctx, name, &k); err != nil {
			return err
		}
		keys[folded] = k
	}
	for ch, m := range n.cfg.Mappings {
		if m.Key == "" || keys[n.fold(ch)].Config == m.Key {
			continue
		}
		k := storedKey{Key: m.Key, Config: m.Key}
		if err := kv.Set(ctx, n.keyKVKey(ch), k); err != nil {
			return err
		}
		keys[n.fold(ch)] = k
	}
	n.mu.Lock()
	n.keys = keys
	n.mu.Unlock()
	return nil
}

// channelKey is the key to join channel with ("" for none known).
func (n *network) channelKey(channel string) string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.keys[n.fold(channel)].Key
}

// setChannelKey records channel's key ("": it has none any more). It
// returns the record it replaced, for restoreKey.
func (n *network) setChannelKey(ctx context.Context, channel, key string) (prev storedKey, err error) {
	folded := n.fold(channel)
	n.mu.Lock()
	prev = n.keys[folded]
	n.mu.Unlock()
	k := storedKey{Key: key, Config: prev.Config}
	if k == prev {
		return prev, nil
	}
	return prev, n.storeKey(ctx, channel, k)
}

// storeKey writes a channel's key record; an empty one is deleted.
func (n *network) storeKey(ctx context.Context, channel string, k storedKey) error {
	kv := n.c.br.AS.GlobalKV()
	var err error
	if k == (storedKey{}) {
		err = kv.Delete(ctx, n.keyKVKey(channel))
	} else {
		err = kv.Set(ctx, n.keyKVKey(channel), k)
	}
	if err != nil {
		return fmt.Errorf("store the key of %s: %w", channel, err)
	}
	n.mu.Lock()
	if k == (storedKey{}) {
		delete(n.keys, n.fold(channel))
	} else {
		n.keys[n.fold(channel)] = k
	}
	delete(n.joinRefused, n.fold(channel)) // a new key: a refusal is worth telling again
	n.mu.Unlock()
	return nil
}

// forgetKey drops a channel's key (its room was unlinked). A mapping's
// key in the config comes back with the mapping.
func (n *network) forgetKey(ctx context.Context, channel string) {
	if n.channelKey(channel) == "" {
		return
	}
	if err := n.storeKey(ctx, channel, storedKey{}); err != nil {
		n.log.Warn().Err(err).Str("channel", channel).Msg("Failed to forget a channel key")
	}
}

// keyChanged follows a MODE that set or removed a channel's key, as the
// bot's state shows it now (a key shown as "*" is hidden from the bot:
// kept as it was).
func (n *network) keyChanged(conn *ircx.Conn, channel string) {
	st, ok := conn.Channel(channel)
	if !ok {
		return
	}
	key, set := st.Modes['k']
	if set && (key == "" || key == "*" || !validKey(key)) {
		return
	}
	n.lane(n.portalID(channel), func(ctx context.Context) {
		if _, err := n.setChannelKey(ctx, channel, key); err != nil {
			n.log.Warn().Err(err).Str("channel", channel).Msg("Failed to record a channel's new key")
		}
	})
}

// joinLine is the JOIN of one channel, with its key.
func (n *network) joinLine(channel string) *irc.Message {
	params := []string{channel}
	if key := n.channelKey(channel); key != "" {
		params = append(params, key)
	}
	return &irc.Message{Command: "JOIN", Params: params}
}

// sendJoins joins channels in JOIN lines of up to ~400 bytes (and the
// server's TARGMAX for JOIN), with their keys: keyed channels first in
// each line, as keys go to the channels in order.
func (n *network) sendJoins(ctx context.Context, conn *ircx.Conn, channels []string) error {
	maxTargets := 0
	if is := conn.ISupport(); is.TargMax != nil {
		maxTargets = is.TargMax["JOIN"]
	}
	type join struct{ channel, key string }
	joins := make([]join, len(channels))
	for i, ch := range channels {
		joins[i] = join{ch, n.channelKey(ch)}
	}
	slices.SortStableFunc(joins, func(a, b join) int {
		switch {
		case a.key != "" && b.key == "":
			return -1
		case a.key == "" && b.key != "":
			return 1
		}
		return 0
	})
	var names, keys []string
	size := 0
	flush := func() error {
		if len(names) == 0 {
			return nil
		}
		params := []string{strings.Join(names, ",")}
		if len(keys) > 0 {
			params = append(params, strings.Join(keys, ","))
		}
		err := conn.Send(ctx, &irc.Message{Command: "JOIN", Params: params})
		names, keys, size = names[:0], keys[:0], 0
		return err
	}
	for _, j := range joins {
		if size+len(j.channel)+len(j.key)+2 > 400 || (maxTargets > 0 && len(names) >= maxTargets) {
			if err := flush(); err != nil {
				return err
			}
		}
		names = append(names, j.channel)
		size += len(j.channel) + 1
		if j.key != "" {
			keys = append(keys, j.key)
			size += len(j.key) + 1
		}
	}
	return flush()
}

// joinRefusal explains a server's refusal of a JOIN to Matrix users.
func joinRefusal(numeric, serverText string) string {
	switch numeric {
	case "475": // ERR_BADCHANNELKEY
		return "the channel has a key (+k), and the bridge's is wrong or missing"
	case "474":
		return "banned from the channel"
	case "473":
		return "the channel is invite-only"
	case "471":
		return "the channel is full"
	}
	return serverText
}

// keyHint is what a room moderator can do about a refused key.
func (c *core) keyHint(n *network, channel string) string {
	return fmt.Sprintf(" A room moderator who knows the key can give it to the bridge: `%slink %s %s key=<key>` (the message is removed once read).",
		c.br.Bot.CommandPrefix, n.cfg.ID, channel)
}

// botJoinRefused tells a channel's room, once until the bot gets in,
// that the server refused the bot's JOIN.
func (n *network) botJoinRefused(numeric, channel, serverText string) {
	folded := n.fold(channel)
	n.mu.Lock()
	told := n.joinRefused[folded]
	n.mu.Unlock()
	if told {
		return
	}
	pid := n.portalID(channel)
	n.lane(pid, func(ctx context.Context) {
		p, err := n.c.br.Portal(ctx, pid)
		if err != nil || p.RoomID() == "" {
			n.log.Warn().Str("channel", channel).Str("numeric", numeric).Msg("The IRC server refused the bot's JOIN of a channel")
			return
		}
		n.mu.Lock()
		told := n.joinRefused[folded]
		n.joinRefused[folded] = true
		n.mu.Unlock()
		if told {
			return
		}
		msg := fmt.Sprintf("⚠️ The bridge could not join %s on %s: %s. Nothing is bridged until it can.", channel, n.cfg.Name, joinRefusal(numeric, serverText))
		if numeric == "475" {
			msg += n.c.keyHint(n, channel)
		}
		if _, err := n.c.br.Bot.Send(ctx, p.RoomID(), msg); err != nil {
			n.log.Warn().Err(err).Stringer("room_id", p.RoomID()).Msg("Failed to tell a room the bot cannot join its channel")
		}
	})
}

// resetBotRefusal: the bot is in channel (again).
func (n *network) resetBotRefusal(channel string) {
	n.mu.Lock()
	delete(n.joinRefused, n.fold(channel))
	n.mu.Unlock()
}

// joinRefused tells the Matrix user, in the channel's room, once until
// the puppet gets in, that the server refused the puppet's JOIN.
func (p *puppet) joinRefused(numeric, channel, serverText string) {
	folded := p.n.fold(channel)
	p.wmu.Lock()
	told := p.refusedTold[folded]
	if p.refusedTold == nil {
		p.refusedTold = map[string]bool{}
	}
	p.refusedTold[folded] = true
	p.wmu.Unlock()
	if told {
		return
	}
	n := p.n
	pid := n.portalID(channel)
	n.c.bg(func(ctx context.Context) {
		portal, err := n.c.br.Portal(ctx, pid)
		if err != nil || portal.RoomID() == "" {
			return
		}
		msg := fmt.Sprintf("⚠️ %s: your IRC connection could not join %s on %s: %s. Your messages here do not reach IRC until it can.",
			p.userID, channel, n.cfg.Name, joinRefusal(numeric, serverText))
		if numeric == "475" {
			msg += n.c.keyHint(n, channel)
		}
		content := bot.Notice(msg)
		content.Mentions = &event.Mentions{UserIDs: []id.UserID{p.userID}}
		if _, err := n.c.br.AS.Bot().SendMessageEvent(ctx, portal.RoomID(), event.EventMessage, &content); err != nil {
			n.log.Warn().Err(err).Stringer("room_id", portal.RoomID()).Msg("Failed to tell a user their puppet cannot join")
		}
	})
}

// resetRefusal: the puppet is in channel (again), or it has a new key:
// a refusal is worth telling again.
func (p *puppet) resetRefusal(channel string) {
	p.wmu.Lock()
	delete(p.refusedTold, p.n.fold(channel))
	p.wmu.Unlock()
}

// link links room to a channel for by (the link command, the
// provisioning API), with the channel's key when one is given: stored
// first, since the bot joins as the portal is linked, and put back as it
// was when linking fails.
func (n *network) link(ctx context.Context, room id.RoomID, channel, portalID string, by id.UserID, key string) (*bridge.Portal, string, error) {
	if key == "" {
		return n.c.br.Link(ctx, room, portalID, by)
	}
	prev, err := n.setChannelKey(ctx, channel, key)
	if err != nil {
		return nil, "", err
	}
	p, warning, err := n.c.br.Link(ctx, room, portalID, by)
	if err != nil {
		if rerr := n.storeKey(ctx, channel, prev); rerr != nil {
			n.log.Warn().Err(rerr).Str("channel", channel).Msg("Failed to put a channel's key back")
		}
	}
	return p, warning, err
}

// updateKey gives a bridged channel a new key (its room's moderator
// knows it): the bot joins with it, and the puppets of the room's users.
func (n *network) updateKey(ctx context.Context, p *bridge.Portal, channel, key string) error {
	if _, err := n.setChannelKey(ctx, channel, key); err != nil {
		return err
	}
	n.lane(p.ID, func(ctx context.Context) { n.ensureBotIn(ctx, channel) })
	members, err := n.c.br.AS.StateStore.GetRoomMembers(ctx, p.RoomID(), event.MembershipJoin)
	if err != nil {
		return err
	}
	for userID := range members {
		if userID == n.c.br.AS.Config.BotID() || n.c.br.AS.Config.IsGhost(userID) {
			continue
		}
		u, err := n.c.br.User(ctx, userID)
		if err != nil || u.Permission < bridge.PermissionUser {
			continue
		}
		pup := n.puppet(userID)
		pup.resetRefusal(channel)
		n.lane(pup.laneKey(), func(ctx context.Context) {
			if err := pup.joinChannel(ctx, channel); err != nil {
				n.log.Info().Err(err).Stringer("user", userID).Str("channel", channel).Msg("Puppet did not join a channel with its new key")
			}
		})
	}
	return nil
}
