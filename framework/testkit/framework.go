package testkit

import (
	"path/filepath"

	"github.com/switchboard-im/switchboard/framework"
	"github.com/switchboard-im/switchboard/internal/loopback"
)

// FrameworkConfig returns the config of a framework appservice (bot or
// bridge) under test against this homeserver: its own temporary data
// directory with an SQLite database (set Database to test on PostgreSQL),
// a free loopback port, the bot @{id}bot and ghosts @{id}_*. Register it with
// RegisterAppservice(app.Registration) once framework.New wrote it.
func (k *Kit) FrameworkConfig(id string) *framework.Config {
	k.t.Helper()
	addr, err := loopback.FreeAddr()
	if err != nil {
		k.t.Fatalf("testkit: %v", err)
	}
	dir := k.t.TempDir()
	return &framework.Config{
		HomeserverURL: k.URL,
		ServerName:    k.ServerName,
		ID:            id,
		Listen:        addr,
		Registration:  filepath.Join(dir, "registration.yaml"),
		BotLocalpart:  id + "bot",
		GhostPrefix:   id + "_",
		AliasPrefix:   id + "_",
		Database:      "sqlite:" + filepath.Join(dir, id+".db"),
		DataDir:       dir,
	}
}
