package bridge

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"
)

// RemoteJoin shows a remote user joining the channel: their ghost joins
// the portal room.
func (b *Bridge) RemoteJoin(ctx context.Context, portalID string, u RemoteUser) error {
	_, room, unlock, err := b.portalRoom(ctx, portalID)
	if err != nil {
		return err
	}
	defer unlock()
	_, err = b.joinedGhost(ctx, room, u)
	return err
}

// RemoteLeave shows a remote user leaving the channel (reason: the part or
// quit message).
func (b *Bridge) RemoteLeave(ctx context.Context, portalID, remoteUserID, reason string) error {
	_, room, unlock, err := b.portalRoom(ctx, portalID)
	if err != nil {
		return err
	}
	defer unlock()
	return b.ghostLeave(ctx, room, b.AS.Config.GhostID(remoteUserID), reason)
}

func (b *Bridge) ghostLeave(ctx context.Context, room id.RoomID, ghost id.UserID, reason string) error {
	if !b.AS.StateStore.IsInRoom(ctx, room, ghost) {
		return nil
	}
	req := &mautrix.ReqLeave{Reason: reason}
	if _, err := b.AS.Intent(ghost).LeaveRoom(ctx, room, req); err != nil {
		return fmt.Errorf("%s leave %s: %w", ghost, room, err)
	}
	return nil
}

// RemoteKick shows a remote user being removed from the channel by
// another: the actor's ghost kicks the target (a ghost or a Matrix user),
// or the bot does when the actor's ghost lacks the power.
func (b *Bridge) RemoteKick(ctx context.Context, portalID string, actor RemoteUser, target id.UserID, reason string) error {
	_, room, unlock, err := b.portalRoom(ctx, portalID)
	if err != nil {
		return err
	}
	defer unlock()
	g, err := b.joinedGhost(ctx, room, actor)
	if err != nil {
		return err
	}
	req := &mautrix.ReqKickUser{UserID: target, Reason: reason}
	if _, err = g.Intent.KickUser(ctx, room, req); errors.Is(err, mautrix.MForbidden) {
		req.Reason = fmt.Sprintf("Kicked by %s: %s", actor.Name, reason)
		_, err = b.AS.Bot().KickUser(ctx, room, req)
	}
	return err
}

// SyncMembers makes the ghosts in the portal room the channel's remote
// members: those missing join, those no longer there leave. Ghosts are
// joined a few at a time. Matrix users (and their puppets, which are not
// ghosts) are left alone.
func (b *Bridge) SyncMembers(ctx context.Context, portalID string, members []RemoteUser) error {
	_, room, unlock, err := b.portalRoom(ctx, portalID)
	if err != nil {
		return err
	}
	defer unlock()
	current, err := b.AS.StateStore.GetRoomJoinedOrInvitedMembers(ctx, room)
	if err != nil {
		return fmt.Errorf("members of %s: %w", room, err)
	}
	want := make(map[id.UserID]bool, len(members))
	for _, m := range members {
		want[b.AS.Config.GhostID(m.ID)] = true
	}
	var errs []error
	var errMu sync.Mutex
	fail := func(err error) {
		errMu.Lock()
		errs = append(errs, err)
		errMu.Unlock()
	}
	for _, m := range current {
		if b.AS.Config.IsGhost(m) && !want[m] {
			if err := b.ghostLeave(ctx, room, m, ""); err != nil {
				fail(err)
			}
		}
	}
	sem := make(chan struct{}, 8)
	var wg sync.WaitGroup
	for _, m := range members {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			if _, err := b.joinedGhost(ctx, room, m); err != nil {
				fail(err)
			}
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}
