package bridge

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"maunium.net/go/mautrix/id"
)

// Message is an entry of the message map: a remote message and the Matrix
// event that shows it or that it was sent from.
type Message struct {
	PortalID string
	RemoteID string
	EventID  id.EventID
	RoomID   id.RoomID
	// Sender is the Matrix user that sent the event (a ghost for remote
	// messages).
	Sender    id.UserID
	Timestamp time.Time
}

const messageColumns = `portal_id, remote_id, event_id, room_id, sender, ts`

func scanMessage(row dbutilScanner) (*Message, error) {
	var m Message
	var ts int64
	err := row.Scan(&m.PortalID, &m.RemoteID, &m.EventID, &m.RoomID, &m.Sender, &ts)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	} else if err != nil {
		return nil, err
	}
	m.Timestamp = time.UnixMilli(ts)
	return &m, nil
}

// AddMessage records a message in the map. Bridges call it for the extra
// parts of a message they split (each remote part maps to the one event);
// the framework records the messages it bridges itself. Recording the
// same remote message again changes nothing.
func (b *Bridge) AddMessage(ctx context.Context, m *Message) error {
	if m.Timestamp.IsZero() {
		m.Timestamp = time.Now()
	}
	_, err := b.DB.Exec(ctx, `INSERT INTO bridge_messages (`+messageColumns+`) VALUES ($1, $2, $3, $4, $5, $6)
		ON CONFLICT (portal_id, remote_id) DO NOTHING`,
		m.PortalID, m.RemoteID, m.EventID, m.RoomID, m.Sender, m.Timestamp.UnixMilli())
	if err != nil {
		return fmt.Errorf("record message %s: %w", m.RemoteID, err)
	}
	return nil
}

// MessageByRemoteID returns the map entry of a remote message, or nil.
func (b *Bridge) MessageByRemoteID(ctx context.Context, portalID, remoteID string) (*Message, error) {
	if remoteID == "" {
		return nil, nil
	}
	m, err := scanMessage(b.DB.QueryRow(ctx, `SELECT `+messageColumns+` FROM bridge_messages WHERE portal_id = $1 AND remote_id = $2`, portalID, remoteID))
	if err != nil {
		return nil, fmt.Errorf("message %s: %w", remoteID, err)
	}
	return m, nil
}

// MessageByEventID returns the map entry of a Matrix event (its first
// remote part), or nil.
func (b *Bridge) MessageByEventID(ctx context.Context, eventID id.EventID) (*Message, error) {
	if eventID == "" {
		return nil, nil
	}
	m, err := scanMessage(b.DB.QueryRow(ctx, `SELECT `+messageColumns+` FROM bridge_messages WHERE event_id = $1 ORDER BY ts, remote_id LIMIT 1`, eventID))
	if err != nil {
		return nil, fmt.Errorf("message of %s: %w", eventID, err)
	}
	return m, nil
}

// deleteMessage forgets a message (all its parts) once it was deleted.
func (b *Bridge) deleteMessage(ctx context.Context, m *Message) error {
	_, err := b.DB.Exec(ctx, `DELETE FROM bridge_messages WHERE event_id = $1`, m.EventID)
	if err == nil {
		_, err = b.DB.Exec(ctx, `DELETE FROM bridge_reactions WHERE portal_id = $1 AND target_id = $2`, m.PortalID, m.RemoteID)
	}
	return err
}

// reaction is a bridged reaction.
type reaction struct {
	portalID, targetID string
	sender             id.UserID
	key                string
	eventID            id.EventID
	remoteID           string
}

func (b *Bridge) addReaction(ctx context.Context, r *reaction) error {
	_, err := b.DB.Exec(ctx, `INSERT INTO bridge_reactions (portal_id, target_id, sender, key, event_id, remote_id)
		VALUES ($1, $2, $3, $4, $5, $6)
		ON CONFLICT (portal_id, target_id, sender, key) DO UPDATE SET event_id = excluded.event_id, remote_id = excluded.remote_id`,
		r.portalID, r.targetID, r.sender, r.key, r.eventID, r.remoteID)
	return err
}

// reactionBy finds a reaction by its Matrix event, or by target, sender and
// key (eventID "").
func (b *Bridge) findReaction(ctx context.Context, eventID id.EventID, portalID, targetID string, sender id.UserID, key string) (*reaction, error) {
	var row dbutilScanner
	const cols = `SELECT portal_id, target_id, sender, key, event_id, remote_id FROM bridge_reactions `
	if eventID != "" {
		row = b.DB.QueryRow(ctx, cols+`WHERE event_id = $1`, eventID)
	} else {
		row = b.DB.QueryRow(ctx, cols+`WHERE portal_id = $1 AND target_id = $2 AND sender = $3 AND key = $4`, portalID, targetID, sender, key)
	}
	var r reaction
	err := row.Scan(&r.portalID, &r.targetID, &r.sender, &r.key, &r.eventID, &r.remoteID)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	return &r, err
}

func (b *Bridge) deleteReaction(ctx context.Context, r *reaction) error {
	_, err := b.DB.Exec(ctx, `DELETE FROM bridge_reactions WHERE portal_id = $1 AND target_id = $2 AND sender = $3 AND key = $4`,
		r.portalID, r.targetID, r.sender, r.key)
	return err
}
