package bridge

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
)

// ChangePortalID gives a portal a new remote ID, for a remote channel or
// user that was renamed (an IRC user's nick change moves their direct
// chats), keeping its room and its message map (replies, reactions and
// edits of earlier messages still find them). The portal's remote events
// and Matrix deliveries wait while it moves; a delivery that waited is
// handed the portal under its new ID. The room's bridge info (m.bridge)
// follows.
//
// A portal without a room has nothing to move: ErrNotLinked. When newID is
// bridged to a room already, ErrAlreadyLinked, and nothing changes; a
// record of newID without a room (a channel seen, never bridged) is
// replaced.
func (b *Bridge) ChangePortalID(ctx context.Context, oldID, newID string) (*Portal, error) {
	if oldID == "" || newID == "" {
		return nil, errors.New("empty portal ID")
	}
	p, err := b.existingPortal(ctx, oldID)
	if err != nil {
		return nil, err
	}
	if p == nil {
		return nil, fmt.Errorf("%s is %w", oldID, ErrNotLinked)
	}
	if oldID == newID {
		return p, nil
	}
	p.remote.Lock()
	defer p.remote.Unlock()
	room := p.RoomID()
	if room == "" {
		return nil, fmt.Errorf("%s is %w", oldID, ErrNotLinked)
	}
	err = b.DB.DoTxn(ctx, nil, func(ctx context.Context) error {
		var other sql.NullString
		switch err := b.DB.QueryRow(ctx, `SELECT room_id FROM bridge_portals WHERE portal_id = $1`, newID).Scan(&other); {
		case errors.Is(err, sql.ErrNoRows):
		case err != nil:
			return err
		case other.Valid:
			return fmt.Errorf("%s is %w to %s", newID, ErrAlreadyLinked, other.String)
		default:
			for _, table := range []string{"bridge_portals", "bridge_messages", "bridge_reactions"} {
				if _, err := b.DB.Exec(ctx, `DELETE FROM `+table+` WHERE portal_id = $1`, newID); err != nil {
					return err
				}
			}
		}
		for _, table := range []string{"bridge_portals", "bridge_messages", "bridge_reactions"} {
			if _, err := b.DB.Exec(ctx, `UPDATE `+table+` SET portal_id = $2 WHERE portal_id = $1`, oldID, newID); err != nil {
				return err
			}
		}
		return nil
	})
	if errors.Is(err, ErrAlreadyLinked) {
		return nil, err
	} else if err != nil {
		return nil, fmt.Errorf("change portal ID %s to %s: %w", oldID, newID, err)
	}
	// A new Portal, since IDs are read without locks; the old one loses
	// its room, so that whoever holds it sees it unlinked.
	p.mu.Lock()
	moved := &Portal{ID: newID, bridge: b, roomID: room, name: p.name, topic: p.topic, linked: p.linked,
		relay: p.relay, dmUser: p.dmUser, createdBy: p.createdBy}
	oldState := p.bridgeStateKey()
	p.roomID = ""
	p.mu.Unlock()
	b.mu.Lock()
	delete(b.portalsByID, oldID)
	b.portalsByID[newID] = moved
	b.portalsByRoom[room] = moved
	b.mu.Unlock()
	b.Log.Info().Str("portal", newID).Str("was", oldID).Stringer("room_id", room).Msg("Portal ID changed")

	if err := moved.sendBridgeInfo(ctx, &ChannelInfo{ID: newID, Name: moved.Name()}); err != nil {
		b.Log.Debug().Err(err).Stringer("room_id", room).Msg("Could not update the bridge info of a moved portal")
	} else {
		b.clearBridgeInfo(ctx, room, oldState)
	}
	return moved, nil
}
