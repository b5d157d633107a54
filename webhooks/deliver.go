package webhooks

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/appservice"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/switchboard-im/switchboard/webhooks/render"
)

// queued is a row of webhook_queue.
type queued struct {
	seq    int64
	txnID  string
	hookID string
	roomID id.RoomID
	msg    render.Message
}

// deliverLoop sends the queue to the homeserver in the order it was
// accepted. A message that fails because the homeserver is unreachable (or
// answers 5xx/429 past the client's own retries) is retried with backoff,
// and the ones after it wait: order matters more than latency for alerts.
// One the homeserver refuses for good (4xx: the room is gone, the bot was
// banned) is logged and dropped.
func (s *Service) deliverLoop(ctx context.Context) {
	backoff := time.Duration(0)
	for {
		if backoff > 0 {
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff):
			}
		}
		batch, err := s.nextQueued(ctx, 100)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			s.Log.Err(err).Msg("Failed to read the webhook queue")
			backoff = retryBackoff(backoff)
			continue
		}
		if len(batch) == 0 {
			backoff = 0
			select {
			case <-ctx.Done():
				return
			case <-s.wake:
			case <-time.After(time.Minute): // a safety net; wakes do the work
			}
			continue
		}
		failed := false
		for _, q := range batch {
			err := s.deliver(ctx, q)
			if err == nil || permanent(err) {
				if err != nil {
					s.Log.Error().Err(err).Int64("seq", q.seq).Str("hook", q.hookID).Stringer("room_id", q.roomID).
						Msg("The homeserver refused a webhook message; dropping it")
				}
				if _, err := s.DB.Exec(ctx, `DELETE FROM webhook_queue WHERE seq = $1`, q.seq); err != nil && ctx.Err() == nil {
					s.Log.Err(err).Msg("Failed to remove a delivered webhook message from the queue")
				}
				continue
			}
			if ctx.Err() != nil {
				return
			}
			if backoff == 0 {
				s.Log.Warn().Err(err).Msg("Homeserver unreachable; webhook messages stay queued and are retried")
			}
			_, _ = s.DB.Exec(ctx, `UPDATE webhook_queue SET attempts = attempts + 1 WHERE seq = $1`, q.seq)
			backoff = retryBackoff(backoff)
			failed = true
			break
		}
		if !failed {
			if backoff > 0 {
				s.Log.Info().Msg("Homeserver reachable again; delivering queued webhook messages")
			}
			backoff = 0
		}
	}
}

func retryBackoff(prev time.Duration) time.Duration {
	if prev == 0 {
		return time.Second
	}
	return min(2*prev, time.Minute)
}

// permanent reports a homeserver's refusal that retrying cannot change.
func permanent(err error) bool {
	var httpErr mautrix.HTTPError
	if !errors.As(err, &httpErr) || httpErr.Response == nil {
		return false
	}
	code := httpErr.Response.StatusCode
	return code >= 400 && code < 500 && code != http.StatusTooManyRequests && code != http.StatusRequestTimeout
}

func (s *Service) nextQueued(ctx context.Context, limit int) ([]queued, error) {
	rows, err := s.DB.Query(ctx, `SELECT seq, txn_id, hook_id, room_id, message FROM webhook_queue ORDER BY seq LIMIT $1`, limit)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []queued
	for rows.Next() {
		var q queued
		var raw string
		if err := rows.Scan(&q.seq, &q.txnID, &q.hookID, &q.roomID, &raw); err != nil {
			return nil, err
		}
		if err := json.Unmarshal([]byte(raw), &q.msg); err != nil {
			return nil, fmt.Errorf("queued message %d: %w", q.seq, err)
		}
		out = append(out, q)
	}
	return out, rows.Err()
}

// deliver posts one queued message from its sender's ghost. The Matrix
// transaction ID is the row's, so a message sent just before a crash (and
// so still queued) is not posted twice.
func (s *Service) deliver(ctx context.Context, q queued) error {
	ghost, err := s.sender(ctx, q)
	if err != nil {
		return err
	}
	if err := ghost.EnsureJoined(ctx, q.roomID, appservice.EnsureJoinedParams{BotOverride: s.AS.Bot().Client}); err != nil {
		return err
	}
	content := &event.MessageEventContent{
		MsgType:  q.msg.MsgType,
		Body:     q.msg.Body,
		Mentions: &event.Mentions{Room: q.msg.RoomMention},
	}
	if content.MsgType == "" {
		content.MsgType = event.MsgText
	}
	if q.msg.HTML != "" {
		content.Format, content.FormattedBody = event.FormatHTML, q.msg.HTML
	}
	var firing *alertThread
	if q.msg.AlertKey != "" {
		if firing, err = s.alertThread(ctx, q.hookID, q.msg.AlertKey); err != nil {
			return err
		}
	}
	if firing != nil && q.msg.Resolved {
		if s.Config.ResolvedAlerts == "edit" && firing.sender == ghost.UserID {
			content.SetEdit(firing.eventID)
		} else {
			content.RelatesTo = (&event.RelatesTo{}).SetReplyTo(firing.eventID)
		}
	}
	resp, err := ghost.SendMessageEvent(ctx, q.roomID, event.EventMessage, content,
		mautrix.ReqSendEvent{TransactionID: q.txnID})
	if err != nil {
		return err
	}
	return s.recordAlert(ctx, q, ghost.UserID, resp.EventID, firing)
}

// sender is the ghost a queued message comes from, with its name and
// avatar.
func (s *Service) sender(ctx context.Context, q queued) (*appservice.IntentAPI, error) {
	userID := s.ghostFor(q.hookID, q.msg.SenderName)
	intent, err := s.AS.EnsureGhost(ctx, userID, q.msg.SenderName, id.ContentURI{})
	if err != nil {
		return nil, err
	}
	if q.msg.AvatarURL != "" {
		if err := s.AS.EnsureGhostAvatarURL(ctx, userID, q.msg.AvatarURL); err != nil {
			// The message matters more than its sender's picture.
			s.Log.Debug().Err(err).Stringer("ghost", userID).Msg("Could not set a webhook sender's avatar")
		}
	}
	return intent, nil
}

// alertThread is the message that showed an alert group firing.
type alertThread struct {
	eventID id.EventID
	sender  id.UserID
}

func (s *Service) alertThread(ctx context.Context, hookID, key string) (*alertThread, error) {
	var a alertThread
	err := s.DB.QueryRow(ctx, `SELECT event_id, sender FROM webhook_alerts WHERE hook_id = $1 AND alert_key = $2`, hookID, key).
		Scan(&a.eventID, &a.sender)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	return &a, err
}

// recordAlert remembers the first firing message of an alert group (later
// firing notifications of the same group reply to nothing new), and
// forgets it once the group resolved.
func (s *Service) recordAlert(ctx context.Context, q queued, sender id.UserID, eventID id.EventID, firing *alertThread) error {
	switch {
	case q.msg.AlertKey == "":
		return nil
	case q.msg.Resolved:
		_, err := s.DB.Exec(ctx, `DELETE FROM webhook_alerts WHERE hook_id = $1 AND alert_key = $2`, q.hookID, q.msg.AlertKey)
		return err
	case firing == nil:
		_, err := s.DB.Exec(ctx, `INSERT INTO webhook_alerts (hook_id, alert_key, room_id, event_id, sender, sent_at) VALUES ($1, $2, $3, $4, $5, $6)
			ON CONFLICT (hook_id, alert_key) DO NOTHING`, q.hookID, q.msg.AlertKey, q.roomID, eventID, sender, time.Now().UnixMilli())
		return err
	}
	return nil
}
