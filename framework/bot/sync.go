package bot

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/rs/zerolog"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"github.com/switchboard-im/switchboard/framework"
)

// SyncConfig runs a bot as a plain user over /sync: for homeservers where
// no appservice can be registered (a hosted account, a server one does not
// run). The same handlers work; ghosts and the appservice's transaction
// guarantees do not exist in this mode.
type SyncConfig struct {
	HomeserverURL string    `yaml:"homeserver_url"`
	UserID        id.UserID `yaml:"user_id"`
	AccessToken   string    `yaml:"access_token"`
	// Database holds the bot's state and its sync position, so a restart
	// continues where it stopped instead of answering old messages again.
	Database string `yaml:"database"`
	DataDir  string `yaml:"-"`
}

// NewSync creates a bot that syncs as cfg.UserID. On its very first start
// it skips the history it finds (it does not answer messages sent before
// it existed); afterwards it resumes from the stored sync position.
func NewSync(ctx context.Context, cfg *SyncConfig, log zerolog.Logger) (*Bot, error) {
	if cfg.HomeserverURL == "" || cfg.UserID == "" || cfg.AccessToken == "" {
		return nil, errors.New("sync bot: homeserver_url, user_id and access_token must be set")
	}
	client, err := mautrix.NewClient(cfg.HomeserverURL, cfg.UserID, cfg.AccessToken)
	if err != nil {
		return nil, fmt.Errorf("sync bot: %w", err)
	}
	db, err := framework.OpenDB(ctx, cfg.Database, cfg.DataDir, "bot:"+string(cfg.UserID), log)
	if err != nil {
		return nil, err
	}
	client.Log = log.With().Str("component", "client").Logger()
	client.StateStore = mautrix.NewMemoryStateStore()
	client.Store = &kvSyncStore{kv: framework.NewKV(db, "sync")}
	b := newBot(client, db, cfg.UserID.Homeserver(), log)
	syncer := mautrix.NewDefaultSyncer()
	syncer.OnSync(client.DontProcessOldEvents)
	syncer.OnEvent(client.StateStoreSyncHandler)
	syncer.OnEvent(b.handle)
	client.Syncer = syncer

	var (
		mu     sync.Mutex
		cancel context.CancelFunc
		done   chan struct{}
	)
	b.start = func(ctx context.Context) error {
		mu.Lock()
		defer mu.Unlock()
		if done != nil {
			return errors.New("sync bot: already started")
		}
		if _, err := client.Whoami(ctx); err != nil {
			return fmt.Errorf("sync bot: check access token: %w", err)
		}
		var syncCtx context.Context
		syncCtx, cancel = context.WithCancel(context.WithoutCancel(ctx))
		done = make(chan struct{})
		go func() {
			defer close(done)
			for syncCtx.Err() == nil {
				err := client.SyncWithContext(syncCtx)
				if err == nil || syncCtx.Err() != nil {
					return
				}
				log.Warn().Err(err).Msg("Sync failed; retrying in 5 s")
				select {
				case <-syncCtx.Done():
				case <-time.After(5 * time.Second):
				}
			}
		}()
		return nil
	}
	b.stop = func() {
		mu.Lock()
		c, d := cancel, done
		mu.Unlock()
		if c != nil {
			c()
			<-d
		}
		if err := db.Close(); err != nil {
			log.Warn().Err(err).Msg("Failed to close the database")
		}
	}
	return b, nil
}

// kvSyncStore keeps the sync position and filter in the bot's database.
type kvSyncStore struct{ kv framework.KV }

func (s *kvSyncStore) SaveFilterID(ctx context.Context, _ id.UserID, filterID string) error {
	return s.kv.Set(ctx, "filter_id", filterID)
}

func (s *kvSyncStore) LoadFilterID(ctx context.Context, _ id.UserID) (string, error) {
	var v string
	_, err := s.kv.Get(ctx, "filter_id", &v)
	return v, err
}

func (s *kvSyncStore) SaveNextBatch(ctx context.Context, _ id.UserID, token string) error {
	return s.kv.Set(ctx, "next_batch", token)
}

func (s *kvSyncStore) LoadNextBatch(ctx context.Context, _ id.UserID) (string, error) {
	var v string
	_, err := s.kv.Get(ctx, "next_batch", &v)
	return v, err
}
