package push

import (
	"context"
	"errors"
	"time"

	"github.com/rs/zerolog"
	"github.com/tidwall/gjson"
	"maunium.net/go/mautrix/id"
	"maunium.net/go/mautrix/pushrules/pushgateway"

	"github.com/switchboard-im/switchboard/homeserver/storage"
)

const (
	// DefaultMinBackoff and DefaultMaxBackoff bound the wait between
	// attempts at a notification the gateway failed to take (network
	// error, 5xx): it doubles from the first to the second. After
	// DefaultGiveUpAfter of failures the notification is dropped and the
	// next one tried, as Synapse does.
	DefaultMinBackoff  = time.Second
	DefaultMaxBackoff  = time.Hour
	DefaultGiveUpAfter = 24 * time.Hour
	// deliveryPage is how many notifications a pusher reads at a time.
	deliveryPage = 50
)

// pusherKey identifies a pusher.
type pusherKey struct {
	user    id.UserID
	appID   string
	pushKey string
}

// delivery is the state of one pusher's delivery goroutine, which runs
// while the pusher has notifications to send and exits when it has none.
// Guarded by Service.mu.
type delivery struct {
	running bool
	poked   bool
	// badge asks for a badge update once the pending notifications are
	// sent (see sendBadge).
	badge bool
}

// startDelivering makes this process deliver (it holds the lease): every
// pusher gets a look, in case notifications were left undelivered by a
// previous process.
func (s *Service) startDelivering(ctx context.Context) {
	s.mu.Lock()
	s.deliverCtx, s.deliverCancel = context.WithCancel(ctx)
	s.mu.Unlock()
	pushers, err := s.db.AllPushers(ctx)
	if err != nil {
		s.log.Warn().Err(err).Msg("Failed to list pushers; each resumes with its user's next notification")
		return
	}
	for _, p := range pushers {
		s.poke(pusherKey{p.UserID, p.AppID, p.PushKey}, false)
	}
}

// stopDelivering stops every delivery goroutine and waits for them.
func (s *Service) stopDelivering() {
	s.mu.Lock()
	cancel := s.deliverCancel
	s.deliverCtx, s.deliverCancel = nil, nil
	s.mu.Unlock()
	if cancel != nil {
		cancel()
	}
	s.wg.Wait()
}

// notified hands new notifications to their users' pushers.
func (s *Service) notified(ctx context.Context, notes []storage.Notification) {
	seen := map[id.UserID]bool{}
	var users []id.UserID
	for _, n := range notes {
		if !seen[n.UserID] {
			seen[n.UserID] = true
			users = append(users, n.UserID)
		}
	}
	pushers, err := s.db.PushersOf(ctx, users)
	if err != nil {
		s.log.Warn().Err(err).Msg("Failed to read pushers; their notifications go with the next ones")
		return
	}
	for _, p := range pushers {
		s.poke(pusherKey{p.UserID, p.AppID, p.PushKey}, false)
	}
}

// poke makes a pusher look for notifications to send, and with badge
// send its user's counts after them.
func (s *Service) poke(k pusherKey, badge bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.deliverCtx == nil {
		return
	}
	d := s.deliveries[k]
	if d == nil {
		d = &delivery{}
		s.deliveries[k] = d
	}
	d.poked = true
	d.badge = d.badge || badge
	if !d.running {
		d.running = true
		s.wg.Add(1)
		go s.deliver(s.deliverCtx, k, d)
	}
}

func (s *Service) deliver(ctx context.Context, k pusherKey, d *delivery) {
	defer s.wg.Done()
	log := s.log.With().Stringer("user_id", k.user).Str("app_id", k.appID).Logger()
	for {
		s.mu.Lock()
		d.poked = false
		badge := d.badge
		d.badge = false
		s.mu.Unlock()
		more, err := s.deliverPending(ctx, k)
		if badge && (more || err != nil) {
			s.mu.Lock()
			d.badge = true // after the rest of the notifications
			s.mu.Unlock()
		} else if badge {
			err = s.sendBadge(ctx, k)
		}
		if err != nil && ctx.Err() == nil {
			log.Warn().Err(err).Msg("Push delivery failed; retrying")
			sleep(ctx, dbRetry)
			more = true
		}
		s.mu.Lock()
		if ctx.Err() != nil || (!more && !d.poked) {
			d.running = false
			if s.deliveries[k] == d {
				delete(s.deliveries, k)
			}
			s.mu.Unlock()
			return
		}
		s.mu.Unlock()
	}
}

// deliverPending sends the pusher's next page of notifications, in order;
// it reports whether there may be more.
func (s *Service) deliverPending(ctx context.Context, k pusherKey) (bool, error) {
	p, err := s.db.GetPusher(ctx, k.user, k.appID, k.pushKey)
	if errors.Is(err, storage.ErrNotFound) {
		return false, nil // deleted
	} else if err != nil {
		return false, err
	}
	notes, err := s.db.NotificationsAfter(ctx, k.user, p.LastPos, deliveryPage)
	if err != nil {
		return false, err
	}
	read := map[id.RoomID]map[string]int64{}
	for _, n := range notes {
		if _, ok := read[n.RoomID]; !ok {
			if read[n.RoomID], err = s.db.ReadUpTo(ctx, n.RoomID, k.user); err != nil {
				return false, err
			}
		}
		r := read[n.RoomID]
		// A notification the user has read on another device by now is
		// not pushed.
		if n.StreamPos > max(r[""], r[n.ThreadID]) {
			gone, err := s.push(ctx, p, n)
			if err != nil {
				return false, err
			} else if gone {
				return false, nil
			}
		}
		if err := s.db.SetPusherLastPos(ctx, k.user, k.appID, k.pushKey, n.StreamPos); err != nil {
			return false, err
		}
	}
	return len(notes) == deliveryPage, nil
}

// push sends one notification, retrying with backoff while the gateway
// fails. It reports gone when the pusher no longer exists (the gateway
// rejected its pushkey, or the user deleted it meanwhile).
func (s *Service) push(ctx context.Context, p *storage.Pusher, n storage.Notification) (gone bool, err error) {
	e, err := s.db.GetEvent(ctx, n.EventID)
	if errors.Is(err, storage.ErrNotFound) {
		return false, nil
	} else if err != nil {
		return false, err
	}
	if e.RedactedBy != "" {
		return false, nil
	}
	log := s.log.With().Stringer("user_id", p.UserID).Str("app_id", p.AppID).Stringer("event_id", n.EventID).Logger()
	minBackoff, maxBackoff, giveUpAfter := s.retryPolicy()
	backoff, start := minBackoff, time.Now()
	for attempt := 1; ; attempt++ {
		req, err := s.notification(ctx, p, n, e)
		if err != nil {
			return false, err
		}
		outcome, err := s.post(ctx, gjson.GetBytes(p.Data, "url").Str, req, p.PushKey)
		switch outcome {
		case outcomeSent:
			s.sentUnread(pusherKey{p.UserID, p.AppID, p.PushKey}, req.Notification.Counts.Unread)
			if attempt > 1 {
				log.Info().Int("attempts", attempt).Msg("Push gateway took the notification")
			}
			return false, nil
		case outcomeRejected:
			return true, s.dropRejected(ctx, p, log)
		case outcomeFailed:
			log.Warn().Err(err).Msg("Push gateway refused the notification; dropping it")
			return false, nil
		}
		if ctx.Err() != nil {
			return false, ctx.Err()
		}
		if time.Since(start) >= giveUpAfter {
			log.Warn().Err(err).Int("attempts", attempt).Msg("Push gateway kept failing; dropping the notification")
			return false, nil
		}
		log.Debug().Err(err).Dur("retry_in", backoff).Msg("Push gateway unreachable; retrying")
		if !sleep(ctx, backoff) {
			return false, ctx.Err()
		}
		backoff = min(2*backoff, maxBackoff)
		// The user may have changed or deleted the pusher meanwhile.
		if p, err = s.db.GetPusher(ctx, p.UserID, p.AppID, p.PushKey); errors.Is(err, storage.ErrNotFound) {
			return true, nil
		} else if err != nil {
			return false, err
		}
	}
}

// Badge updates. Reading (a read receipt moving) lowers a user's unread
// count without any notification being sent, so a phone would keep
// showing the old badge on the app's icon. So, as Synapse does, the
// worker watches read receipts and sends each of the reader's pushers
// the counts alone — the notification "that only contain[s] updated badge
// counts" of the Push Gateway API, with no event — after any
// notifications still pending for it, and only when the count differs
// from the last one the pusher was sent. Badge updates are best effort:
// one attempt, no retries (the next notification carries the counts).

// watchReceipts starts watching read receipts from the stream's head: a
// process taking the lease does not replay older ones.
func (s *Service) watchReceipts(ctx context.Context) error {
	head, err := s.db.CurrentStreamPos(ctx)
	if err == nil {
		s.receiptPos = head
	}
	return err
}

// readReceipts pokes, for a badge update, the pushers of the users whose
// read receipts moved since the last call, up to head.
func (s *Service) readReceipts(ctx context.Context, head int64) error {
	if head <= s.receiptPos {
		return nil
	}
	readers, err := s.db.ReadersInRange(ctx, s.receiptPos, head)
	if err != nil {
		return err
	}
	s.receiptPos = head
	if len(readers) == 0 {
		return nil
	}
	pushers, err := s.db.PushersOf(ctx, readers)
	if err != nil {
		return err
	}
	for _, p := range pushers {
		s.poke(pusherKey{p.UserID, p.AppID, p.PushKey}, true)
	}
	return nil
}

// sendBadge sends the pusher its user's current counts, unless it was
// sent that unread count last.
func (s *Service) sendBadge(ctx context.Context, k pusherKey) error {
	p, err := s.db.GetPusher(ctx, k.user, k.appID, k.pushKey)
	if errors.Is(err, storage.ErrNotFound) {
		return nil
	} else if err != nil {
		return err
	}
	unread, calls, err := s.db.UnreadNotificationCounts(ctx, k.user)
	if err != nil {
		return err
	}
	s.mu.Lock()
	last, known := s.lastUnread[k]
	s.mu.Unlock()
	if known && last == unread {
		return nil
	}
	req := &pushgateway.ReqPush{Notification: &pushgateway.PushNotification{
		Devices: []pushgateway.Device{gatewayDevice(p)},
		Counts:  &pushgateway.NotificationCounts{Unread: unread, MissedCalls: calls},
	}}
	log := s.log.With().Stringer("user_id", p.UserID).Str("app_id", p.AppID).Logger()
	switch outcome, err := s.post(ctx, gjson.GetBytes(p.Data, "url").Str, req, p.PushKey); outcome {
	case outcomeSent:
		s.sentUnread(k, unread)
	case outcomeRejected:
		return s.dropRejected(ctx, p, log)
	default:
		log.Debug().Err(err).Msg("Badge update not taken by the push gateway; the next notification carries the counts")
	}
	return nil
}

// dropRejected deletes a pusher whose pushkey its gateway rejected.
func (s *Service) dropRejected(ctx context.Context, p *storage.Pusher, log zerolog.Logger) error {
	log.Info().Msg("Push gateway rejected the pushkey; deleting the pusher")
	k := pusherKey{p.UserID, p.AppID, p.PushKey}
	s.mu.Lock()
	delete(s.lastUnread, k)
	s.mu.Unlock()
	_, err := s.db.DeletePusher(ctx, p.UserID, p.AppID, p.PushKey)
	return err
}

// sentUnread records the unread count a pusher was last sent.
func (s *Service) sentUnread(k pusherKey, unread int) {
	s.mu.Lock()
	s.lastUnread[k] = unread
	s.mu.Unlock()
}

// sleep waits d or until ctx ends; it reports whether the wait completed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
