package bridge

import (
	"context"
	"errors"
	"fmt"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// GhostResolver tells which remote user a ghost ID stands for, so that
// Matrix users can name ghosts the remote side has not shown yet (invite
// one, start a direct chat): the homeserver asks the bridge about unknown
// users in its namespace, and the ghost is registered then.
type GhostResolver interface {
	// ResolveGhost returns the remote user of ghost, or
	// ErrUnknownChannel when it stands for none.
	ResolveGhost(ctx context.Context, ghost id.UserID) (RemoteUser, error)
}

// DirectChatStarter lets Matrix users start a direct chat with a remote
// user by inviting their ghost to a room marked is_direct, as Element's
// "Start chat" does. Without it, such invites are left alone.
type DirectChatStarter interface {
	// DirectChat returns the portal ID of user's direct chat with the
	// remote user whose ghost is ghost (the same ID the network uses for
	// that chat's messages), and the remote user. ErrUnknownChannel, or
	// another error, refuses the invite with the error as the reason.
	DirectChat(ctx context.Context, user *User, ghost id.UserID) (portalID string, remote RemoteUser, err error)
}

// startDirectChat bridges the room a Matrix user invited a ghost to as
// their direct chat with the remote user: the ghost joins and invites the
// bot, which links the room. A chat they already had with that user is
// unlinked: the new room takes its place.
func (b *Bridge) startDirectChat(ctx context.Context, ds DirectChatStarter, evt *event.Event) error {
	ghostID := id.UserID(evt.GetStateKey())
	intent := b.AS.Intent(ghostID)
	refuse := func(why string) error {
		if err := intent.EnsureRegistered(ctx); err != nil {
			return err
		}
		_, err := intent.LeaveRoom(ctx, evt.RoomID, &mautrix.ReqLeave{Reason: why})
		return err
	}
	u, err := b.User(ctx, evt.Sender)
	if err != nil {
		return err
	}
	if u.Permission < PermissionUser {
		return refuse("You are not allowed to use this bridge.")
	}
	portalID, remote, err := ds.DirectChat(ctx, u, ghostID)
	if errors.Is(err, ErrUnknownChannel) {
		return refuse("This user cannot be messaged.")
	} else if err != nil {
		return refuse(err.Error())
	}
	p, err := b.Portal(ctx, portalID)
	if err != nil {
		return err
	}
	if old := p.RoomID(); old != "" {
		if err := b.Unlink(ctx, p); err != nil && !errors.Is(err, ErrNotLinked) {
			return fmt.Errorf("unlink the previous direct chat %s: %w", old, err)
		}
	}
	if _, err := b.Ghost(ctx, remote); err != nil {
		return err
	}
	if err := intent.EnsureJoined(ctx, evt.RoomID); err != nil {
		return fmt.Errorf("ghost join: %w", err)
	}
	botID := b.AS.Config.BotID()
	if _, err := intent.InviteUser(ctx, evt.RoomID, &mautrix.ReqInviteUser{UserID: botID}); err != nil {
		_ = refuse("The bridge bot could not be invited: " + err.Error())
		return fmt.Errorf("invite the bot: %w", err)
	}
	info := &ChannelInfo{ID: portalID, Name: remote.Name}
	if _, err := b.linkRoom(ctx, p, evt.RoomID, u.ID, info); err != nil {
		_ = refuse(err.Error())
		return err
	}
	if err := p.setDMUser(ctx, u.ID); err != nil {
		return err
	}
	if err := b.portalLinked(ctx, p); err != nil {
		return err
	}
	b.Log.Info().Str("portal", p.ID).Stringer("room_id", evt.RoomID).Stringer("user", u.ID).Msg("Direct chat started from Matrix")
	return nil
}

// setDMUser records the Matrix user of a direct chat portal.
func (p *Portal) setDMUser(ctx context.Context, user id.UserID) error {
	p.mu.Lock()
	p.dmUser = user
	p.mu.Unlock()
	_, err := p.bridge.DB.Exec(ctx, `UPDATE bridge_portals SET dm_user = $2 WHERE portal_id = $1`, p.ID, user)
	return err
}
