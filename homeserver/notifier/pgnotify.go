package notifier

// Several homeserver processes may share one PostgreSQL database behind a
// load balancer. A write commits in one process while the user's /sync may
// be long-polling in another, so every process publishes its wake-ups on a
// PostgreSQL NOTIFY channel and LISTENs to the others'.
//
// The publisher sends user IDs, not room IDs: the writing process resolves
// a room to its local audience from the room state it has just written,
// while a receiving process's cached room state may predate membership
// changes made elsewhere. Payloads are JSON, split to stay under
// PostgreSQL's 8000-byte limit; when a process cannot say exactly whom to
// wake (overflowing queue, lost connection) it wakes everyone, since a
// spurious wake costs one /sync recomputation and a lost one a timeout.

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/lib/pq"
	"github.com/rs/zerolog"
	"maunium.net/go/mautrix/id"
)

// PeerChannel is the PostgreSQL NOTIFY channel processes exchange wake-ups
// on. NOTIFY is scoped to a database, so homeservers on separate databases
// of one cluster do not hear each other.
const PeerChannel = "switchboard_wake"

const (
	// maxPayload stays below PostgreSQL's limit (payloads must be shorter
	// than 8000 bytes) with room for the JSON envelope's growth.
	maxPayload = 7900
	// maxPendingUsers bounds what waits to be published; past it the next
	// notification wakes everyone instead.
	maxPendingUsers = 20000
	publishTimeout  = 5 * time.Second
	retryDelay      = time.Second
	// pingInterval is how often the listening connection is checked: a
	// dead TCP connection otherwise goes unnoticed while nothing arrives.
	pingInterval  = 30 * time.Second
	listenTimeout = 15 * time.Second
	closeTimeout  = 2 * time.Second
)

// peerMessage is one notification's payload.
type peerMessage struct {
	// Origin identifies the sending process, which ignores its own.
	Origin string      `json:"o"`
	Pos    int64       `json:"p"`
	Users  []id.UserID `json:"u,omitempty"`
	// All asks to wake every waiting sync.
	All bool `json:"a,omitempty"`
}

// wakeBatch is what waits to be published: wake-ups merged so that a burst
// of writes costs one round trip.
type wakeBatch struct {
	pos   int64
	users map[id.UserID]struct{}
	all   bool
}

func (b *wakeBatch) add(pos int64, users []id.UserID, all bool) {
	if pos > b.pos {
		b.pos = pos
	}
	if all || b.all {
		b.all, b.users = true, nil
		return
	}
	if b.users == nil {
		b.users = make(map[id.UserID]struct{}, len(users))
	}
	for _, u := range users {
		b.users[u] = struct{}{}
	}
	if len(b.users) > maxPendingUsers {
		b.all, b.users = true, nil
	}
}

func (b *wakeBatch) empty() bool { return !b.all && len(b.users) == 0 }

// payloads encodes the batch as notifications, each under maxPayload bytes.
func (b *wakeBatch) payloads(origin string) []string {
	base := peerMessage{Origin: origin, Pos: b.pos, All: b.all}
	if b.all || len(b.users) == 0 {
		return []string{mustJSON(base)}
	}
	// The envelope with an empty list, then each user ID costs its encoded
	// length plus a comma.
	envelope := len(mustJSON(peerMessage{Origin: origin, Pos: b.pos, Users: []id.UserID{""}})) - 2
	var out []string
	var chunk []id.UserID
	size := envelope
	flush := func() {
		if len(chunk) > 0 {
			out = append(out, mustJSON(peerMessage{Origin: origin, Pos: b.pos, Users: chunk}))
			chunk, size = nil, envelope
		}
	}
	for u := range b.users {
		n := len(mustJSON(u)) + 1
		if size+n > maxPayload {
			flush()
		}
		if size+n > maxPayload {
			// A user ID no payload can hold (IDs are at most 255 bytes,
			// so this is not expected): wake everyone rather than no one.
			return []string{mustJSON(peerMessage{Origin: origin, Pos: b.pos, All: true})}
		}
		chunk = append(chunk, u)
		size += n
	}
	flush()
	return out
}

func mustJSON(v any) string {
	data, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("notifier: encode %T: %v", v, err)) // strings and ints only
	}
	return string(data)
}

// peerBridge publishes this process's wake-ups and delivers the others'.
type peerBridge struct {
	n      *Notifier
	origin string
	log    zerolog.Logger
	db     *sql.DB // one dedicated connection for NOTIFY
	ln     *pq.Listener

	mu      sync.Mutex
	pending wakeBatch
	signal  chan struct{}

	stop     chan struct{}
	done     sync.WaitGroup
	stopOnce sync.Once
}

// ConnectPostgres joins the notifier to the other homeserver processes on
// the PostgreSQL database at dsn: from now on Wake also reaches their
// waiting syncs, and theirs reach this process's. It returns once LISTEN is
// in effect, so a sync that starts afterwards misses no wake-up. Publishing
// uses a connection of its own, asynchronously, so a writer never waits for
// it. Close disconnects.
func (n *Notifier) ConnectPostgres(ctx context.Context, dsn string, log zerolog.Logger) error {
	connector, err := pq.NewConnector(dsn)
	if err != nil {
		return fmt.Errorf("notify connection: %w", err)
	}
	origin := make([]byte, 8)
	if _, err := rand.Read(origin); err != nil {
		return fmt.Errorf("process ID: %w", err)
	}
	b := &peerBridge{
		n:      n,
		origin: hex.EncodeToString(origin),
		log:    log,
		db:     sql.OpenDB(connector),
		signal: make(chan struct{}, 1),
		stop:   make(chan struct{}),
	}
	b.db.SetMaxOpenConns(1)
	b.db.SetMaxIdleConns(1)
	b.ln = pq.NewListener(dsn, 100*time.Millisecond, 10*time.Second, b.listenerEvent)
	if err := b.listen(ctx); err != nil {
		b.db.Close()
		return err
	}
	n.mu.Lock()
	if n.peers != nil {
		n.mu.Unlock()
		b.ln.Close()
		b.db.Close()
		return errors.New("notifier: already connected to peers")
	}
	n.peers = b
	n.mu.Unlock()
	b.done.Add(2)
	go b.publishLoop()
	go b.receiveLoop()
	b.log.Debug().Str("process_id", b.origin).Msg("Exchanging sync wake-ups with other processes through PostgreSQL")
	return nil
}

// listen waits for LISTEN to take effect. pq's Listen blocks until it has
// a connection; closing the listener is the only way to give up on it.
func (b *peerBridge) listen(ctx context.Context) error {
	errc := make(chan error, 1)
	go func() { errc <- b.ln.Listen(PeerChannel) }()
	timer := time.NewTimer(listenTimeout)
	defer timer.Stop()
	var err error
	select {
	case err = <-errc:
	case <-timer.C:
		err = fmt.Errorf("no connection within %v", listenTimeout)
	case <-ctx.Done():
		err = ctx.Err()
	}
	if err != nil {
		b.ln.Close()
		return fmt.Errorf("listen on %s: %w", PeerChannel, err)
	}
	return nil
}

// Close stops exchanging wake-ups with other processes, after publishing
// what is pending (for up to two seconds). It is a no-op without peers.
func (n *Notifier) Close() error {
	n.mu.Lock()
	b := n.peers
	n.peers = nil
	n.mu.Unlock()
	if b == nil {
		return nil
	}
	b.stopOnce.Do(func() { close(b.stop) })
	b.ln.Close() // ends receiveLoop
	b.done.Wait()
	return b.db.Close()
}

// publish queues a wake-up for the other processes; it never blocks on
// the database.
func (b *peerBridge) publish(pos int64, users []id.UserID) {
	b.mu.Lock()
	b.pending.add(pos, users, false)
	b.mu.Unlock()
	select {
	case b.signal <- struct{}{}:
	default: // already signalled; the loop takes everything pending
	}
}

func (b *peerBridge) take() wakeBatch {
	b.mu.Lock()
	defer b.mu.Unlock()
	batch := b.pending
	b.pending = wakeBatch{}
	return batch
}

func (b *peerBridge) requeue(batch wakeBatch) {
	b.mu.Lock()
	defer b.mu.Unlock()
	users := make([]id.UserID, 0, len(batch.users))
	for u := range batch.users {
		users = append(users, u)
	}
	b.pending.add(batch.pos, users, batch.all)
}

func (b *peerBridge) publishLoop() {
	defer b.done.Done()
	for {
		select {
		case <-b.signal:
		case <-b.stop:
			b.flush()
			return
		}
		batch := b.take()
		if batch.empty() {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), publishTimeout)
		err := b.send(ctx, batch)
		cancel()
		if err == nil {
			continue
		}
		// Keep the wake-ups (merged with newer ones) and retry; syncs in
		// other processes wait meanwhile, up to their timeout at worst.
		b.log.Warn().Err(err).Msg("Failed to publish sync wake-ups to other processes; retrying")
		b.requeue(batch)
		select {
		case <-time.After(retryDelay):
			b.publish(0, nil)
		case <-b.stop:
			b.flush()
			return
		}
	}
}

// flush publishes what writers queued before the shutdown.
func (b *peerBridge) flush() {
	batch := b.take()
	if batch.empty() {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), closeTimeout)
	defer cancel()
	if err := b.send(ctx, batch); err != nil {
		b.log.Warn().Err(err).Msg("Failed to publish the last sync wake-ups to other processes")
	}
}

// send publishes a batch in one statement, so its notifications are
// delivered together and in order.
func (b *peerBridge) send(ctx context.Context, batch wakeBatch) error {
	_, err := b.db.ExecContext(ctx, `SELECT pg_notify($1, payload) FROM unnest($2::text[]) AS payload`,
		PeerChannel, pq.Array(batch.payloads(b.origin)))
	if err != nil {
		return fmt.Errorf("notify %s: %w", PeerChannel, err)
	}
	return nil
}

func (b *peerBridge) receiveLoop() {
	defer b.done.Done()
	ping := time.NewTicker(pingInterval)
	defer ping.Stop()
	for {
		select {
		case <-b.stop:
			return
		case <-ping.C:
			// An error means the connection is being re-established;
			// pq reports that through listenerEvent.
			_ = b.ln.Ping()
		case note, ok := <-b.ln.Notify:
			if !ok {
				return
			}
			if note == nil {
				// Reconnected: whatever was published while the
				// connection was down is lost.
				b.log.Info().Msg("Sync wake-up listener reconnected; waking all syncs")
				b.n.wakeAll(0)
				continue
			}
			b.deliver(note.Extra)
		}
	}
}

// deliver wakes this process's syncs for another process's notification,
// without publishing it again.
func (b *peerBridge) deliver(payload string) {
	var msg peerMessage
	if err := json.Unmarshal([]byte(payload), &msg); err != nil {
		b.log.Warn().Err(err).Msg("Ignoring malformed sync wake-up from another process")
		return
	}
	switch {
	case msg.Origin == b.origin:
		// Ours: the local waiters were woken when it was published.
	case msg.All:
		b.n.wakeAll(msg.Pos)
	default:
		b.n.wake(msg.Pos, msg.Users)
	}
}

func (b *peerBridge) listenerEvent(ev pq.ListenerEventType, err error) {
	switch ev {
	case pq.ListenerEventDisconnected:
		b.log.Warn().Err(err).Msg("Lost the PostgreSQL connection that receives other processes' sync wake-ups")
	case pq.ListenerEventConnectionAttemptFailed:
		b.log.Warn().Err(err).Msg("Failed to reconnect to PostgreSQL for other processes' sync wake-ups")
	}
}

// wakeAll wakes every waiting sync in this process.
func (n *Notifier) wakeAll(pos int64) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if pos > n.pos {
		n.pos = pos
	}
	for u, w := range n.waiters {
		for ch := range w {
			close(ch)
		}
		delete(n.waiters, u)
	}
}
