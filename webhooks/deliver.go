package webhooks

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
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

// deliverLoop sends the queue to the homeserver: each room's messages in
// the order they were accepted, rooms side by side (deliveryWorkers at a
// time). A message that fails because the homeserver is unreachable (or
// answers 5xx/429 past the client's own retries) is retried with backoff,
// and the room's later messages wait for it: order matters more than
// latency for alerts. One the homeserver refuses for good (4xx: the room
// is gone, the bot was banned) is logged and dropped. Sent rows are
// deleted a batch at a time: a row sent but not yet deleted when the
// process dies is sent again with the same transaction ID, which the
// homeserver answers with the first event.
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
		batch, err := s.nextQueued(ctx, 200)
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
		done, failure := s.deliverBatch(ctx, batch)
		if len(done) > 0 {
			if _, err := s.DB.Exec(ctx, `DELETE FROM webhook_queue WHERE seq IN (`+placeholders(len(done))+`)`, done...); err != nil && ctx.Err() == nil {
				s.Log.Err(err).Msg("Failed to remove delivered webhook messages from the queue")
			}
		}
		if ctx.Err() != nil {
			return
		}
		if failure != nil {
			if backoff == 0 {
				s.Log.Warn().Err(failure).Msg("Homeserver unreachable; webhook messages stay queued and are retried")
			}
			backoff = retryBackoff(backoff)
			continue
		}
		if backoff > 0 {
			s.Log.Info().Msg("Homeserver reachable again; delivering queued webhook messages")
		}
		backoff = 0
	}
}

// deliveryWorkers is how many rooms' messages are sent at once.
const deliveryWorkers = 8

// attemptTimeout bounds one message's delivery (ghost, join, send, with
// the client's retries), so one hung request holds up its room for a
// while, not for the client's whole timeout.
const attemptTimeout = 30 * time.Second

// deliverBatch sends a batch room by room and returns the queue positions
// to delete (sent, or refused for good) and a transient failure, if any
// room met one (that room's later messages were left for the retry).
func (s *Service) deliverBatch(ctx context.Context, batch []queued) (done []any, failure error) {
	var rooms []id.RoomID
	byRoom := map[id.RoomID][]queued{}
	for _, q := range batch {
		if byRoom[q.roomID] == nil {
			rooms = append(rooms, q.roomID)
		}
		byRoom[q.roomID] = append(byRoom[q.roomID], q)
	}
	var mu sync.Mutex
	sem := make(chan struct{}, deliveryWorkers)
	var wg sync.WaitGroup
	for _, room := range rooms {
		sem <- struct{}{}
		wg.Add(1)
		go func(queue []queued) {
			defer func() { <-sem; wg.Done() }()
			for _, q := range queue {
				attempt, cancel := context.WithTimeout(ctx, attemptTimeout)
				err := s.deliver(attempt, q)
				cancel()
				if err != nil && !permanent(err) {
					_, _ = s.DB.Exec(ctx, `UPDATE webhook_queue SET attempts = attempts + 1 WHERE seq = $1`, q.seq)
					mu.Lock()
					failure = err
					mu.Unlock()
					return
				}
				if err != nil {
					s.Log.Error().Err(err).Int64("seq", q.seq).Str("hook", q.hookID).Stringer("room_id", q.roomID).
						Msg("The homeserver refused a webhook message; dropping it")
				}
				mu.Lock()
				done = append(done, q.seq)
				mu.Unlock()
			}
		}(byRoom[room])
	}
	wg.Wait()
	return done, failure
}

// placeholders is "$1, $2, …, $n".
func placeholders(n int) string {
	var b strings.Builder
	for i := 1; i <= n; i++ {
		if i > 1 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "$%d", i)
	}
	return b.String()
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
