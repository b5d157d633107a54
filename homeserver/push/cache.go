package push

import (
	"context"
	"sync"

	"maunium.net/go/mautrix/id"

	"github.com/switchboard-im/switchboard/homeserver/storage"
)

// Cache keeps users' compiled rules in memory. Refresh asks the database
// which users changed their rules since the last refresh (one indexed
// query that normally finds nothing), so a change made through any
// homeserver process is seen after the next refresh in every process.
type Cache struct {
	db *storage.DB

	mu     sync.Mutex
	primed bool
	seen   int64 // push_rules_stream position applied
	users  map[id.UserID]cacheEntry
}

type cacheEntry struct {
	rules   *Compiled
	version int64
}

// maxCachedUsers bounds the cache; past it, it starts over.
const maxCachedUsers = 200_000

// NewCache returns an empty cache.
func NewCache(db *storage.DB) *Cache {
	return &Cache{db: db, users: map[id.UserID]cacheEntry{}}
}

// Refresh drops the entries of users whose rules changed since the last
// refresh.
func (c *Cache) Refresh(ctx context.Context) error {
	_, err := c.refresh(ctx)
	return err
}

// refresh is Refresh, returning the position it brought the cache to.
func (c *Cache) refresh(ctx context.Context) (int64, error) {
	c.mu.Lock()
	primed, seen := c.primed, c.seen
	c.mu.Unlock()
	if !primed {
		latest, err := c.db.LatestPushRulesChange(ctx)
		if err != nil {
			return 0, err
		}
		c.mu.Lock()
		if !c.primed {
			c.primed, c.seen = true, latest
		}
		seen = c.seen
		c.mu.Unlock()
		return seen, nil
	}
	changed, err := c.db.PushRulesChangedSince(ctx, seen)
	if err != nil {
		return 0, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for user, pos := range changed {
		delete(c.users, user)
		c.seen = max(c.seen, pos)
	}
	return c.seen, nil
}

// ForUser refreshes the cache and returns a user's compiled rules and the
// version of their rules (the stream position of their latest change, 0
// if they never changed them).
func (c *Cache) ForUser(ctx context.Context, user id.UserID) (*Compiled, int64, error) {
	if err := c.Refresh(ctx); err != nil {
		return nil, 0, err
	}
	m, v, err := c.lookup(ctx, []id.UserID{user})
	if err != nil {
		return nil, 0, err
	}
	return m[user], v[user], nil
}

// Lookup returns the compiled rules of several users as of the last
// Refresh (rules not in memory are read now).
func (c *Cache) Lookup(ctx context.Context, users []id.UserID) (map[id.UserID]*Compiled, error) {
	m, _, err := c.lookup(ctx, users)
	return m, err
}

func (c *Cache) lookup(ctx context.Context, users []id.UserID) (map[id.UserID]*Compiled, map[id.UserID]int64, error) {
	c.mu.Lock()
	gen := c.seen
	c.mu.Unlock()
	out := make(map[id.UserID]*Compiled, len(users))
	versions := make(map[id.UserID]int64, len(users))
	var missing []id.UserID
	c.mu.Lock()
	for _, u := range users {
		if e, ok := c.users[u]; ok {
			out[u], versions[u] = e.rules, e.version
		} else {
			missing = append(missing, u)
		}
	}
	c.mu.Unlock()
	if len(missing) == 0 {
		return out, versions, nil
	}
	rows, err := c.db.PushRulesOf(ctx, missing)
	if err != nil {
		return nil, nil, err
	}
	vs, err := c.db.PushRuleVersions(ctx, missing)
	if err != nil {
		return nil, nil, err
	}
	loaded := make(map[id.UserID]cacheEntry, len(missing))
	for _, u := range missing {
		e := cacheEntry{rules: Defaults(), version: vs[u]}
		if r := rows[u]; len(r) > 0 {
			e.rules = Compile(Assemble(u, r))
		}
		loaded[u] = e
		out[u], versions[u] = e.rules, e.version
	}
	c.mu.Lock()
	// Rules loaded while another lookup saw a change may predate it:
	// keep them only when nothing changed in between.
	if c.primed && c.seen == gen {
		if len(c.users)+len(loaded) > maxCachedUsers {
			c.users = map[id.UserID]cacheEntry{}
		}
		for u, e := range loaded {
			c.users[u] = e
		}
	}
	c.mu.Unlock()
	return out, versions, nil
}
