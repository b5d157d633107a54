// Command echobot answers every message with its own text: the smallest
// bot the framework makes. See README.md.
package main

import (
	"context"

	_ "github.com/lib/pq"           // database: postgres://…
	_ "github.com/mattn/go-sqlite3" // database: sqlite:…
	"github.com/rs/zerolog"

	"github.com/switchboard-im/switchboard/framework"
	"github.com/switchboard-im/switchboard/framework/bot"
)

func main() { framework.Main("echobot", run) }

func run(ctx context.Context, cfg *framework.Config, log zerolog.Logger) error {
	b, err := bot.New(ctx, cfg, log)
	if err != nil {
		return err
	}
	setup(b)
	return b.Run(ctx)
}

// setup gives the bot its behaviour: echo every message as a reply.
func setup(b *bot.Bot) {
	b.OnMessage(func(ctx context.Context, m *bot.Message) error {
		_, err := m.Reply(ctx, m.Body())
		return err
	})
}
