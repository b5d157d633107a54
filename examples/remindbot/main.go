// Command remindbot reminds people of things: "!remind 10m stand up".
// It shows commands with arguments, persistent state (reminders survive a
// restart) and timers. See README.md.
package main

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	_ "github.com/lib/pq"           // database: postgres://…
	_ "github.com/mattn/go-sqlite3" // database: sqlite:…
	"github.com/rs/zerolog"
	"go.mau.fi/util/random"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/switchboard-im/switchboard/framework"
	"github.com/switchboard-im/switchboard/framework/bot"
)

func main() { framework.Main("remindbot", run) }

func run(ctx context.Context, cfg *framework.Config, log zerolog.Logger) error {
	b, err := bot.New(ctx, cfg, log)
	if err != nil {
		return err
	}
	r := newReminders(b)
	if err := b.Start(ctx); err != nil {
		return err
	}
	if err := r.load(ctx); err != nil {
		b.Stop()
		return err
	}
	<-ctx.Done()
	r.stop()
	b.Stop()
	return nil
}

// reminder is one stored reminder (framework KV, global scope, key
// "reminder/{ID}").
type reminder struct {
	ID     string    `json:"id"`
	RoomID id.RoomID `json:"room_id"`
	UserID id.UserID `json:"user_id"`
	Text   string    `json:"text"`
	Due    time.Time `json:"due"`
}

// maxDelay keeps reminders within a year.
const maxDelay = 366 * 24 * time.Hour

type reminders struct {
	b      *bot.Bot
	kv     framework.KV
	mu     sync.Mutex
	timers map[string]*time.Timer
	wg     sync.WaitGroup
	closed bool
}

func newReminders(b *bot.Bot) *reminders {
	r := &reminders{b: b, kv: b.GlobalKV(), timers: map[string]*time.Timer{}}
	b.Command(&bot.Command{Name: "remind", Usage: "<when> <text>", MinArgs: 2,
		Help: "Remind you of something after a while: `10m`, `1h30m`, `2d`.", Run: r.remind})
	b.Command(&bot.Command{Name: "reminders", Help: "List your reminders in this room.", Run: r.list})
	b.Command(&bot.Command{Name: "forget", Usage: "<id>", MinArgs: 1, MaxArgs: 1,
		Help: "Cancel one of your reminders.", Run: r.forget})
	return r
}

// parseDelay reads Go durations ("90s", "1h30m") plus days ("2d").
func parseDelay(s string) (time.Duration, error) {
	if days, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.Atoi(days)
		if err != nil || n <= 0 {
			return 0, fmt.Errorf("bad number of days %q", days)
		}
		return time.Duration(n) * 24 * time.Hour, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("%q is not a duration like 10m, 1h30m or 2d", s)
	}
	return d, nil
}

func (r *reminders) remind(ctx context.Context, c *bot.CommandContext) error {
	delay, err := parseDelay(c.Args[0])
	if err != nil {
		return bot.Errorf("%s.", err)
	}
	if delay > maxDelay {
		return bot.Errorf("That is more than a year away; pick something sooner.")
	}
	text := strings.TrimSpace(strings.TrimPrefix(c.RawArgs, c.Args[0]))
	rem := reminder{ID: strings.ToLower(random.String(6)), RoomID: c.RoomID(), UserID: c.Sender(), Text: text, Due: time.Now().Add(delay).UTC()}
	if err := r.kv.Set(ctx, "reminder/"+rem.ID, rem); err != nil {
		return err
	}
	r.schedule(rem)
	_, err = c.Reply(ctx, fmt.Sprintf("I'll remind you at %s UTC (reminder `%s`).", rem.Due.Format("2006-01-02 15:04:05"), rem.ID))
	return err
}

func (r *reminders) list(ctx context.Context, c *bot.CommandContext) error {
	all, err := r.all(ctx)
	if err != nil {
		return err
	}
	var sb strings.Builder
	for _, rem := range all {
		if rem.RoomID == c.RoomID() && rem.UserID == c.Sender() {
			fmt.Fprintf(&sb, "- `%s` at %s UTC: %s\n", rem.ID, rem.Due.Format("2006-01-02 15:04:05"), rem.Text)
		}
	}
	if sb.Len() == 0 {
		_, err = c.Reply(ctx, "You have no reminders here.")
		return err
	}
	_, err = c.Reply(ctx, "Your reminders:\n\n"+sb.String())
	return err
}

func (r *reminders) forget(ctx context.Context, c *bot.CommandContext) error {
	var rem reminder
	found, err := r.kv.Get(ctx, "reminder/"+c.Args[0], &rem)
	if err != nil {
		return err
	}
	if !found || rem.UserID != c.Sender() {
		return bot.Errorf("You have no reminder `%s`.", c.Args[0])
	}
	r.mu.Lock()
	if t := r.timers[rem.ID]; t != nil && t.Stop() {
		delete(r.timers, rem.ID)
		r.wg.Done()
	}
	r.mu.Unlock()
	if err := r.kv.Delete(ctx, "reminder/"+rem.ID); err != nil {
		return err
	}
	_, err = c.Reply(ctx, fmt.Sprintf("Forgot reminder `%s`.", rem.ID))
	return err
}

func (r *reminders) all(ctx context.Context) ([]reminder, error) {
	keys, err := r.kv.Keys(ctx)
	if err != nil {
		return nil, err
	}
	var out []reminder
	for _, k := range keys {
		if !strings.HasPrefix(k, "reminder/") {
			continue
		}
		var rem reminder
		if found, err := r.kv.Get(ctx, k, &rem); err != nil {
			return nil, err
		} else if found {
			out = append(out, rem)
		}
	}
	return out, nil
}

// load schedules the stored reminders; those that fell due while the bot
// was down fire at once.
func (r *reminders) load(ctx context.Context) error {
	all, err := r.all(ctx)
	if err != nil {
		return err
	}
	for _, rem := range all {
		r.schedule(rem)
	}
	return nil
}

func (r *reminders) schedule(rem reminder) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed || r.timers[rem.ID] != nil {
		return
	}
	r.wg.Add(1)
	r.timers[rem.ID] = time.AfterFunc(time.Until(rem.Due), func() {
		defer r.wg.Done()
		r.fire(rem)
	})
}

// fire sends the reminder, mentioning its owner, and deletes it.
func (r *reminders) fire(rem reminder) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	log := r.b.Log.With().Str("reminder", rem.ID).Logger()
	content := bot.Notice(fmt.Sprintf("⏰ %s: %s", rem.UserID, rem.Text))
	content.Mentions = &event.Mentions{UserIDs: []id.UserID{rem.UserID}}
	if _, err := r.b.Client.SendMessageEvent(ctx, rem.RoomID, event.EventMessage, &content); err != nil {
		// Kept: the next start tries again.
		log.Warn().Err(err).Msg("Failed to send reminder")
		r.mu.Lock()
		delete(r.timers, rem.ID)
		r.mu.Unlock()
		return
	}
	if err := r.kv.Delete(ctx, "reminder/"+rem.ID); err != nil {
		log.Warn().Err(err).Msg("Failed to delete a sent reminder")
	}
	r.mu.Lock()
	delete(r.timers, rem.ID)
	r.mu.Unlock()
}

// stop cancels pending timers and waits for reminders being sent.
func (r *reminders) stop() {
	r.mu.Lock()
	r.closed = true
	for id, t := range r.timers {
		if t.Stop() {
			r.wg.Done()
		}
		delete(r.timers, id)
	}
	r.mu.Unlock()
	r.wg.Wait()
}
