// Command relaybridge bridges Matrix rooms to a small line-based chat that
// it serves itself on TCP (`nc 127.0.0.1 PORT`): a complete bridge with
// portals, ghosts and the message map, in a few hundred lines. See
// README.md.
package main

import (
	"context"
	"errors"
	"fmt"
	"net"

	_ "github.com/lib/pq"           // database: postgres://…
	_ "github.com/mattn/go-sqlite3" // database: sqlite:…
	"github.com/rs/zerolog"

	"github.com/switchboard-im/switchboard/framework"
	"github.com/switchboard-im/switchboard/framework/bridge"
)

// Config is relaybridge.yaml: the bridge's keys and the chat's address.
type Config struct {
	bridge.Config `yaml:",inline"`
	// ChatListen is the host:port the TCP chat listens on.
	ChatListen string `yaml:"chat_listen"`
}

func (c *Config) Validate() error {
	err := c.Config.Validate()
	if _, _, e := net.SplitHostPort(c.ChatListen); e != nil {
		err = errors.Join(err, fmt.Errorf("chat_listen: must be host:port, got %q", c.ChatListen))
	}
	return err
}

// main: relaybridge [-config relaybridge.yaml] [generate-registration]
func main() {
	cfg := &Config{}
	framework.MainWith("relaybridge", cfg, &cfg.Config.Config, run)
}

func run(ctx context.Context, cfg *Config, log zerolog.Logger) error {
	br, err := bridge.New(ctx, &cfg.Config, &relayNetwork{listen: cfg.ChatListen, log: log}, log)
	if err != nil {
		return err
	}
	return br.Run(ctx)
}
