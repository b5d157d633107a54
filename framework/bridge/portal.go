package bridge

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// Portal is a remote channel and the Matrix room it is bridged to.
type Portal struct {
	// ID is the remote channel's ID.
	ID string

	bridge *Bridge
	// remote serialises the remote events of the portal (and the room's
	// creation), so they reach Matrix in the order the network saw them.
	remote sync.Mutex

	mu        sync.RWMutex
	roomID    id.RoomID
	name      string
	topic     string
	linked    bool
	relay     bool
	dmUser    id.UserID
	createdBy id.UserID
}

// RoomID is the portal's room ("" while it has none).
func (p *Portal) RoomID() id.RoomID {
	p.mu.RLock()
	defer p.mu.RUnlock()
	return p.roomID
}

// Name is the channel's name as last bridged.
func (p *Portal) Name() string {
	p.mu.RLock()
	defer p.mu.RUnlock()
	return p.name
}

// Relay says whether Matrix users without a login are relayed.
func (p *Portal) Relay() bool {
	p.mu.RLock()
	defer p.mu.RUnlock()
	return p.relay
}

// Linked says the room existed before and was linked by a user (the bridge
// did not create it).
func (p *Portal) Linked() bool {
	p.mu.RLock()
	defer p.mu.RUnlock()
	return p.linked
}

// DMUser is the Matrix user of a direct-chat portal ("" for channels).
func (p *Portal) DMUser() id.UserID {
	p.mu.RLock()
	defer p.mu.RUnlock()
	return p.dmUser
}

const portalColumns = `portal_id, room_id, name, topic, linked, relay, dm_user, created_by`

func (b *Bridge) scanPortal(row dbutilScanner) (*Portal, error) {
	p := &Portal{bridge: b}
	var roomID sql.NullString
	err := row.Scan(&p.ID, &roomID, &p.name, &p.topic, &p.linked, &p.relay, &p.dmUser, &p.createdBy)
	if err != nil {
		return nil, err
	}
	p.roomID = id.RoomID(roomID.String)
	return p, nil
}

type dbutilScanner interface{ Scan(dest ...any) error }

// Portal returns the portal of a remote channel, creating its record (with
// no room) when it is new.
func (b *Bridge) Portal(ctx context.Context, portalID string) (*Portal, error) {
	if portalID == "" {
		return nil, errors.New("empty portal ID")
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	p, err := b.loadPortal(ctx, portalID)
	if err == nil && p == nil {
		p = &Portal{ID: portalID, bridge: b, relay: b.Config.Relay.Enabled && b.Config.Relay.Default}
		_, err = b.DB.Exec(ctx, `INSERT INTO bridge_portals (portal_id, relay, created_at) VALUES ($1, $2, $3)`,
			portalID, p.relay, time.Now().UnixMilli())
		if err == nil {
			b.cachePortal(p)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("portal %s: %w", portalID, err)
	}
	return p, nil
}

// existingPortal returns the portal of portalID, or nil when there is no
// record of it (where Portal would make one).
func (b *Bridge) existingPortal(ctx context.Context, portalID string) (*Portal, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	p, err := b.loadPortal(ctx, portalID)
	if err != nil {
		return nil, fmt.Errorf("portal %s: %w", portalID, err)
	}
	return p, nil
}

// loadPortal returns the portal of portalID from the cache or the
// database (and caches it), or nil; b.mu is held.
func (b *Bridge) loadPortal(ctx context.Context, portalID string) (*Portal, error) {
	if p := b.portalsByID[portalID]; p != nil {
		return p, nil
	}
	p, err := b.scanPortal(b.DB.QueryRow(ctx, `SELECT `+portalColumns+` FROM bridge_portals WHERE portal_id = $1`, portalID))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	} else if err != nil {
		return nil, err
	}
	b.cachePortal(p)
	return p, nil
}

// PortalByRoom returns the portal bridged to roomID, or nil.
func (b *Bridge) PortalByRoom(ctx context.Context, roomID id.RoomID) (*Portal, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if p, ok := b.portalsByRoom[roomID]; ok {
		return p, nil // nil too: a room known not to be a portal
	}
	p, err := b.scanPortal(b.DB.QueryRow(ctx, `SELECT `+portalColumns+` FROM bridge_portals WHERE room_id = $1`, roomID))
	if errors.Is(err, sql.ErrNoRows) {
		b.portalsByRoom[roomID] = nil
		return nil, nil
	} else if err != nil {
		return nil, fmt.Errorf("portal of %s: %w", roomID, err)
	}
	if cached := b.portalsByID[p.ID]; cached != nil {
		p = cached
	}
	b.cachePortal(p)
	return p, nil
}

// Portals lists the portals that have a room.
func (b *Bridge) Portals(ctx context.Context) ([]*Portal, error) {
	rows, err := b.DB.Query(ctx, `SELECT `+portalColumns+` FROM bridge_portals WHERE room_id IS NOT NULL ORDER BY portal_id`)
	if err != nil {
		return nil, fmt.Errorf("list portals: %w", err)
	}
	defer rows.Close()
	var out []*Portal
	b.mu.Lock()
	defer b.mu.Unlock()
	for rows.Next() {
		p, err := b.scanPortal(rows)
		if err != nil {
			return nil, fmt.Errorf("list portals: %w", err)
		}
		if cached := b.portalsByID[p.ID]; cached != nil {
			p = cached
		} else {
			b.cachePortal(p)
		}
		out = append(out, p)
	}
	return out, rows.Err()
}

// cachePortal remembers p by ID and room; b.mu is held.
func (b *Bridge) cachePortal(p *Portal) {
	b.portalsByID[p.ID] = p
	if room := p.RoomID(); room != "" {
		b.portalsByRoom[room] = p
	}
}

// setRoom records that p is bridged to roomID (or to none, "").
func (p *Portal) setRoom(ctx context.Context, roomID id.RoomID, linked bool, createdBy id.UserID, info *ChannelInfo) error {
	b := p.bridge
	var room any
	if roomID != "" {
		room = roomID
	}
	p.mu.Lock()
	name, topic := p.name, p.topic
	if info != nil {
		name, topic = info.Name, info.Topic
	}
	p.mu.Unlock()
	_, err := b.DB.Exec(ctx, `UPDATE bridge_portals SET room_id = $2, linked = $3, created_by = $4, name = $5, topic = $6 WHERE portal_id = $1`,
		p.ID, room, linked, createdBy, name, topic)
	if err != nil {
		return fmt.Errorf("portal %s: record room: %w", p.ID, err)
	}
	b.mu.Lock()
	p.mu.Lock()
	if p.roomID != "" {
		delete(b.portalsByRoom, p.roomID)
	}
	p.roomID, p.linked, p.createdBy, p.name, p.topic = roomID, linked, createdBy, name, topic
	p.mu.Unlock()
	if roomID != "" {
		b.portalsByRoom[roomID] = p
	}
	b.mu.Unlock()
	return nil
}

// SetRelay turns relay mode on or off in the portal.
func (p *Portal) SetRelay(ctx context.Context, on bool) error {
	if _, err := p.bridge.DB.Exec(ctx, `UPDATE bridge_portals SET relay = $2 WHERE portal_id = $1`, p.ID, on); err != nil {
		return fmt.Errorf("portal %s: set relay: %w", p.ID, err)
	}
	p.mu.Lock()
	p.relay = on
	p.mu.Unlock()
	return nil
}

// RoomOptions says how CreateRoom makes a portal's room.
type RoomOptions struct {
	// Alias is the local part of an alias to give the room (the one a
	// user joined by, for portals created on demand).
	Alias string
	// Invite lists Matrix users to invite (a direct chat's user).
	Invite []id.UserID
	// DirectWith, when set, makes the room a direct chat between the
	// invited user and this ghost, which creates it.
	DirectWith *Ghost
}

// EnsureRoom returns the portal's room, creating it when it has none: the
// bot creates it (a ghost for a direct chat) with the channel's name and
// topic, the bridge info state, public when the channel is public.
func (b *Bridge) EnsureRoom(ctx context.Context, p *Portal, info *ChannelInfo, opts RoomOptions) (id.RoomID, error) {
	p.remote.Lock()
	room, created, err := b.createRoom(ctx, p, info, opts)
	p.remote.Unlock()
	if err != nil || !created {
		return room, err
	}
	if err := b.portalLinked(ctx, p); err != nil {
		return "", err
	}
	return room, nil
}

// createRoom creates the portal's room unless it has one; p.remote is held.
func (b *Bridge) createRoom(ctx context.Context, p *Portal, info *ChannelInfo, opts RoomOptions) (room id.RoomID, created bool, err error) {
	if room := p.RoomID(); room != "" {
		return room, false, nil
	}
	if info == nil {
		if info, err = b.Network.ResolveChannel(ctx, p.ID); err != nil {
			return "", false, err
		}
	}
	creator := b.AS.Bot()
	botID := b.AS.Config.BotID()
	req := &mautrix.ReqCreateRoom{
		Name:   info.Name,
		Topic:  info.Topic,
		Invite: opts.Invite,
		Preset: "private_chat",
		InitialState: []*event.Event{
			{Type: event.StateBridge, StateKey: ptr(p.bridgeStateKey()), Content: event.Content{Parsed: p.bridgeInfo(info)}},
			{Type: event.StateHalfShotBridge, StateKey: ptr(p.bridgeStateKey()), Content: event.Content{Parsed: p.bridgeInfo(info)}},
		},
	}
	// Ghosts speak at the default level 0; the bridge bot, the creator,
	// moderates (and in room v12 must not be listed in the power levels).
	if !info.Avatar.IsEmpty() {
		req.InitialState = append(req.InitialState, &event.Event{Type: event.StateRoomAvatar, StateKey: ptr(""),
			Content: event.Content{Parsed: &event.RoomAvatarEventContent{URL: info.Avatar.CUString()}}})
	}
	if info.Public {
		req.Preset = "public_chat"
		req.Visibility = "private" // joinable by alias, not listed unless an admin publishes it
	}
	if opts.Alias != "" {
		req.RoomAliasName = opts.Alias
	}
	var dmUser id.UserID
	if opts.DirectWith != nil {
		creator = opts.DirectWith.Intent
		req.IsDirect = true
		req.Preset = "trusted_private_chat"
		req.Invite = append(req.Invite, botID)
		req.PowerLevelOverride = &event.PowerLevelsEventContent{Users: map[id.UserID]int{botID: 100}}
		if len(opts.Invite) == 1 {
			dmUser = opts.Invite[0]
		}
	}
	resp, err := creator.CreateRoom(ctx, req)
	if err != nil {
		return "", false, fmt.Errorf("create the room of %s: %w", p.ID, err)
	}
	if opts.DirectWith != nil {
		if err := b.AS.Bot().EnsureJoined(ctx, resp.RoomID); err != nil {
			return "", false, fmt.Errorf("bot join %s: %w", resp.RoomID, err)
		}
	}
	if dmUser != "" {
		if err := p.setDMUser(ctx, dmUser); err != nil {
			return "", false, err
		}
	}
	if err := p.setRoom(ctx, resp.RoomID, false, "", info); err != nil {
		return "", false, err
	}
	b.Log.Info().Str("portal", p.ID).Stringer("room_id", resp.RoomID).Msg("Created portal room")
	return resp.RoomID, true, nil
}

func ptr[T any](v T) *T { return &v }

// bridgeStateKey is the state key of the portal's m.bridge event: unique
// per bridge and channel (MSC2346).
func (p *Portal) bridgeStateKey() string {
	return "im.switchboard://" + p.bridge.AS.Config.ID + "/" + p.ID
}

// bridgeInfo is the content of the portal's m.bridge (and
// uk.half-shot.bridge) state event.
func (p *Portal) bridgeInfo(info *ChannelInfo) *event.BridgeEventContent {
	b := p.bridge
	netInfo := b.Network.Info()
	p.mu.RLock()
	creator := p.createdBy
	p.mu.RUnlock()
	return &event.BridgeEventContent{
		BridgeBot: b.AS.Config.BotID(),
		Creator:   creator,
		Protocol: event.BridgeInfoSection{
			ID:          netInfo.ID,
			DisplayName: netInfo.DisplayName,
			AvatarURL:   netInfo.AvatarURL,
			ExternalURL: netInfo.ExternalURL,
		},
		Channel: event.BridgeInfoSection{
			ID:          info.ID,
			DisplayName: info.Name,
			ExternalURL: info.ExternalURL,
		},
	}
}

// ErrAlreadyLinked and ErrNotLinked are the errors of Link and Unlink.
var (
	ErrAlreadyLinked = errors.New("already bridged")
	ErrNotLinked     = errors.New("not bridged")
)

// Link bridges an existing room to a remote channel, for user (who must be
// allowed to: see CanLink). The bot must be in the room, or able to join
// it. It returns the portal and a warning when the room's power levels
// keep the bot from setting the bridge info.
func (b *Bridge) Link(ctx context.Context, roomID id.RoomID, channelID string, user id.UserID) (*Portal, string, error) {
	info, err := b.Network.ResolveChannel(ctx, channelID)
	if err != nil {
		return nil, "", err
	}
	if existing, err := b.PortalByRoom(ctx, roomID); err != nil {
		return nil, "", err
	} else if existing != nil {
		return nil, "", fmt.Errorf("this room is %w to %s", ErrAlreadyLinked, existing.ID)
	}
	p, err := b.Portal(ctx, info.ID)
	if err != nil {
		return nil, "", err
	}
	warning, err := b.linkRoom(ctx, p, roomID, user, info)
	if err != nil {
		return nil, "", err
	}
	if err := b.portalLinked(ctx, p); err != nil {
		return nil, "", err
	}
	b.Log.Info().Str("portal", p.ID).Stringer("room_id", roomID).Stringer("by", user).Msg("Linked room")
	return p, warning, nil
}

// linkRoom records roomID as p's room; see Link.
func (b *Bridge) linkRoom(ctx context.Context, p *Portal, roomID id.RoomID, user id.UserID, info *ChannelInfo) (warning string, err error) {
	p.remote.Lock()
	defer p.remote.Unlock()
	if room := p.RoomID(); room != "" {
		return "", fmt.Errorf("%s is %w to %s", info.ID, ErrAlreadyLinked, room)
	}
	if err := b.AS.Bot().EnsureJoined(ctx, roomID); err != nil {
		return "", fmt.Errorf("the bridge bot %s cannot join the room (invite it first): %w", b.AS.Config.BotID(), err)
	}
	// The state store learns the members who joined before the bot (from
	// here on, transactions keep it current).
	if _, err := b.AS.Bot().Members(ctx, roomID); err != nil {
		return "", fmt.Errorf("members of %s: %w", roomID, err)
	}
	p.mu.Lock()
	p.createdBy = user
	p.mu.Unlock()
	if err := p.setRoom(ctx, roomID, true, user, info); err != nil {
		return "", err
	}
	if err := p.sendBridgeInfo(ctx, info); err != nil {
		warning = "The bridge bot could not mark the room as bridged (m.bridge): give it power to send state events."
		b.Log.Warn().Err(err).Stringer("room_id", roomID).Msg("Failed to set bridge info")
	}
	return warning, nil
}

// portalLinked tells the network a portal has a room; if it refuses, the
// link is undone.
func (b *Bridge) portalLinked(ctx context.Context, p *Portal) error {
	h, ok := b.Network.(PortalHandler)
	if !ok {
		return nil
	}
	if err := h.PortalLinked(ctx, p); err != nil {
		if undo := p.setRoom(ctx, "", false, "", nil); undo != nil {
			err = errors.Join(err, undo)
		}
		return fmt.Errorf("%s: %w", b.Network.Info().ID, err)
	}
	return nil
}

func (p *Portal) sendBridgeInfo(ctx context.Context, info *ChannelInfo) error {
	room, bot, content := p.RoomID(), p.bridge.AS.Bot(), p.bridgeInfo(info)
	if _, err := bot.SendStateEvent(ctx, room, event.StateBridge, p.bridgeStateKey(), content); err != nil {
		return err
	}
	_, err := bot.SendStateEvent(ctx, room, event.StateHalfShotBridge, p.bridgeStateKey(), content)
	return err
}

// clearBridgeInfo empties the room's bridge info (m.bridge and
// uk.half-shot.bridge) of stateKey.
func (b *Bridge) clearBridgeInfo(ctx context.Context, room id.RoomID, stateKey string) {
	empty := map[string]any{}
	for _, t := range []event.Type{event.StateBridge, event.StateHalfShotBridge} {
		if _, err := b.AS.Bot().SendStateEvent(ctx, room, t, stateKey, empty); err != nil {
			b.Log.Debug().Err(err).Stringer("room_id", room).Msg("Could not clear bridge info")
		}
	}
}

// Unlink ends the bridging of a portal's room: its ghosts leave, the bridge
// info is removed, the message map is forgotten, and the bot leaves a
// linked room (a room the bridge created stays, without ghosts).
func (b *Bridge) Unlink(ctx context.Context, p *Portal) error {
	p.remote.Lock()
	defer p.remote.Unlock()
	room := p.RoomID()
	if room == "" {
		return fmt.Errorf("%s is %w", p.ID, ErrNotLinked)
	}
	if h, ok := b.Network.(PortalHandler); ok {
		h.PortalUnlinked(ctx, p)
	}
	members, err := b.AS.StateStore.GetRoomJoinedOrInvitedMembers(ctx, room)
	if err != nil {
		return fmt.Errorf("members of %s: %w", room, err)
	}
	for _, m := range members {
		if b.AS.Config.IsGhost(m) {
			if _, err := b.AS.Intent(m).LeaveRoom(ctx, room); err != nil {
				b.Log.Warn().Err(err).Stringer("ghost", m).Stringer("room_id", room).Msg("Ghost failed to leave an unlinked room")
			}
		}
	}
	bot := b.AS.Bot()
	b.clearBridgeInfo(ctx, room, p.bridgeStateKey())
	linked := p.Linked()
	err = b.DB.DoTxn(ctx, nil, func(ctx context.Context) error {
		if _, err := b.DB.Exec(ctx, `DELETE FROM bridge_messages WHERE portal_id = $1`, p.ID); err != nil {
			return err
		}
		_, err := b.DB.Exec(ctx, `DELETE FROM bridge_reactions WHERE portal_id = $1`, p.ID)
		return err
	})
	if err != nil {
		return fmt.Errorf("forget messages of %s: %w", p.ID, err)
	}
	if err := p.setRoom(ctx, "", false, "", nil); err != nil {
		return err
	}
	if linked {
		if _, err := bot.LeaveRoom(ctx, room); err != nil {
			b.Log.Warn().Err(err).Stringer("room_id", room).Msg("Bot failed to leave an unlinked room")
		}
	}
	b.Log.Info().Str("portal", p.ID).Stringer("room_id", room).Msg("Unlinked room")
	return nil
}

// aliasQueries answers the homeserver's alias queries: a user joining
// #{alias_prefix}{channel}:server gets the channel's portal, created there
// and then.
type aliasQueries struct{ b *Bridge }

func (q aliasQueries) QueryAlias(alias id.RoomAlias) bool {
	b := q.b
	localpart, server, _ := strings.Cut(strings.TrimPrefix(string(alias), "#"), ":")
	prefix := b.AS.Config.AliasPrefix
	if prefix == "" || server != b.AS.Config.ServerName || !strings.HasPrefix(localpart, prefix) {
		return false
	}
	channelID := strings.TrimPrefix(localpart, prefix)
	if r, ok := b.Network.(AliasResolver); ok {
		if channelID, ok = r.ChannelForAlias(channelID); !ok {
			return false
		}
	}
	ctx, cancel := context.WithTimeout(b.Log.WithContext(context.Background()), time.Minute)
	defer cancel()
	info, err := b.Network.ResolveChannel(ctx, channelID)
	if err != nil {
		if !errors.Is(err, ErrUnknownChannel) {
			b.Log.Warn().Err(err).Stringer("alias", alias).Msg("Failed to resolve the channel of an alias")
		}
		return false
	}
	p, err := b.Portal(ctx, info.ID)
	if err == nil {
		if room := p.RoomID(); room != "" {
			// A linked room, or one created under another alias: this
			// alias points to it from now on.
			_, err = b.AS.Bot().CreateAlias(ctx, alias, room)
		} else {
			_, err = b.EnsureRoom(ctx, p, info, RoomOptions{Alias: localpart})
		}
	}
	if err != nil {
		b.Log.Warn().Err(err).Stringer("alias", alias).Msg("Failed to create a portal for an alias")
		return false
	}
	return true
}

// QueryUser: ghosts are registered when the remote side first shows them,
// or, with a GhostResolver, when a Matrix user names one first (an invite,
// a direct chat) and the network knows the remote user.
func (q aliasQueries) QueryUser(userID id.UserID) bool {
	b := q.b
	r, ok := b.Network.(GhostResolver)
	if !ok || !b.AS.Config.IsGhost(userID) {
		return false
	}
	ctx, cancel := context.WithTimeout(b.Log.WithContext(context.Background()), time.Minute)
	defer cancel()
	remote, err := r.ResolveGhost(ctx, userID)
	if err == nil {
		_, err = b.Ghost(ctx, remote)
	}
	if err != nil {
		if !errors.Is(err, ErrUnknownChannel) {
			b.Log.Warn().Err(err).Stringer("user_id", userID).Msg("Failed to resolve a ghost")
		}
		return false
	}
	return true
}

// AliasFor is the alias localpart of a channel's portal.
func (b *Bridge) AliasFor(channelID string) string {
	if r, ok := b.Network.(AliasResolver); ok {
		channelID = r.AliasForChannel(channelID)
	}
	return b.AS.Config.AliasPrefix + channelID
}
