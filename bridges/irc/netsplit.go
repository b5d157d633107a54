package irc

// Netsplit debouncing: an IRC user who quits in a netsplit ("irc.a.net
// irc.b.net") usually comes back within seconds, when the servers link
// again. Their ghost stays in the rooms for the network's netsplit_grace;
// if they join again meanwhile nothing is shown on Matrix, else their
// ghost leaves with the reason "netsplit", paced so that a split of many
// users does not flood the rooms.

import (
	"strings"
	"sync"
	"time"
)

// splitLeaveInterval paces the ghosts leaving after a netsplit's grace:
// one every this long per network (a split of 500 users takes ~25 s to
// show, instead of 500 leaves at once).
const splitLeaveInterval = 50 * time.Millisecond

// isNetsplitQuit reports whether a QUIT message is a netsplit's: two
// server names, "irc.a.net irc.b.net" (or hidden, "*.net *.split").
func isNetsplitQuit(message string) bool {
	parts := strings.Split(message, " ")
	if len(parts) != 2 || parts[0] == parts[1] {
		return false
	}
	for _, p := range parts {
		if !looksLikeServerName(p) {
			return false
		}
	}
	return true
}

func looksLikeServerName(s string) bool {
	if len(s) < 3 || len(s) > 255 || !strings.Contains(s, ".") || s[0] == '.' || s[len(s)-1] == '.' ||
		strings.Contains(s, "..") {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '-' || c == '*' || c == '_') {
			return false
		}
	}
	return true
}

// splitQuit is a user who quit in a netsplit and whose ghost has not left
// yet.
type splitQuit struct {
	nick     string
	channels map[string]string // folded → name: the rooms the ghost is still in
	deadline time.Time
}

// splitDebouncer holds the ghosts of users who quit in a netsplit for a
// grace period. It has no timers of its own: the network calls expire on
// a tick (tests call it with their own clock).
type splitDebouncer struct {
	grace time.Duration
	now   func() time.Time
	fold  func(string) string

	mu      sync.Mutex
	pending map[string]*splitQuit // by folded nick
}

func newSplitDebouncer(grace time.Duration, now func() time.Time, fold func(string) string) *splitDebouncer {
	return &splitDebouncer{grace: grace, now: now, fold: fold, pending: map[string]*splitQuit{}}
}

// quit records a netsplit quit of nick from channels.
func (d *splitDebouncer) quit(nick string, channels []string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	key := d.fold(nick)
	q := d.pending[key]
	if q == nil {
		q = &splitQuit{nick: nick, channels: map[string]string{}}
		d.pending[key] = q
	}
	q.deadline = d.now().Add(d.grace)
	for _, ch := range channels {
		q.channels[d.fold(ch)] = ch
	}
}

// rejoin: nick joined channel. It reports whether the join ends a
// netsplit quit there (the ghost never left: nothing to show).
func (d *splitDebouncer) rejoin(nick, channel string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	key := d.fold(nick)
	q := d.pending[key]
	if q == nil {
		return false
	}
	ch := d.fold(channel)
	if _, ok := q.channels[ch]; !ok {
		return false
	}
	delete(q.channels, ch)
	if len(q.channels) == 0 {
		delete(d.pending, key)
	}
	return true
}

// expire returns, and forgets, the quits whose grace has passed, oldest
// first.
func (d *splitDebouncer) expire() []*splitQuit {
	now := d.now()
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []*splitQuit
	for key, q := range d.pending {
		if !now.Before(q.deadline) {
			out = append(out, q)
			delete(d.pending, key)
		}
	}
	sortSplitQuits(out)
	return out
}

func (d *splitDebouncer) len() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.pending)
}

func sortSplitQuits(qs []*splitQuit) {
	for i := 1; i < len(qs); i++ {
		for j := i; j > 0 && (qs[j].deadline.Before(qs[j-1].deadline) ||
			qs[j].deadline.Equal(qs[j-1].deadline) && qs[j].nick < qs[j-1].nick); j-- {
			qs[j], qs[j-1] = qs[j-1], qs[j]
		}
	}
}

// ---- the network's side ----

// onSplitQuit holds the ghost of a user who quit in a netsplit.
func (n *network) onSplitQuit(nick string, channels []string) {
	n.splits.quit(nick, channels)
	n.log.Debug().Str("nick", nick).Strs("channels", channels).Msg("Netsplit quit: the ghost stays for the grace period")
}

// splitLoop makes the ghosts of netsplit quits whose grace has passed
// leave, one every splitLeaveInterval, unless the user is back in the
// channel (seen by the bot, a reconnection's NAMES included).
func (n *network) splitLoop() {
	defer n.c.wg.Done()
	tick := min(max(n.cfg.NetsplitGrace/4, 20*time.Millisecond), time.Second)
	t := time.NewTicker(tick)
	defer t.Stop()
	for {
		select {
		case <-n.c.ctx.Done():
			return
		case <-t.C:
		}
		for _, q := range n.splits.expire() {
			for _, ch := range q.channels {
				if _, back := n.bot.Member(ch, q.nick); back {
					continue
				}
				n.leave(ch, q.nick, "netsplit")
				select {
				case <-n.c.ctx.Done():
					return
				case <-time.After(splitLeaveInterval):
				}
			}
		}
	}
}
