package webhooks

import (
	"context"
	"fmt"
	"strings"
	"time"

	"go.mau.fi/util/random"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/switchboard-im/switchboard/framework/bot"
	"github.com/switchboard-im/switchboard/webhooks/render"
)

// registerCommands adds `!webhook …` to the bot. Every subcommand needs
// MinPower in the room; URLs and secrets go to the user privately.
func (s *Service) registerCommands() {
	p := s.Config.MinPower
	s.Bot.Command(&bot.Command{
		Name: "webhook", MinPower: p,
		Help: "Manage this room's webhooks.",
		Subcommands: append([]*bot.Command{
			{Name: "new", Usage: "<name> [expires-in, e.g. 30d]", MinArgs: 1, MaxArgs: 2, Help: "Create an incoming webhook; its URL comes to you in a direct message.", Run: s.cmdNew},
			{Name: "list", Help: "List the room's webhooks.", Run: s.cmdList},
			{Name: "revoke", Usage: "<name>", MinArgs: 1, MaxArgs: 1, Help: "Delete a webhook: its URL stops working.", Run: s.cmdRevoke},
			{Name: "rotate", Usage: "<name>", MinArgs: 1, MaxArgs: 1, Help: "Give a webhook a new URL (the old one stops working).", Run: s.cmdRotate},
			{Name: "template", Usage: "<name> [Go template | clear]", MinArgs: 1, Help: "Show or set how a webhook renders generic JSON.", Run: s.cmdTemplate},
			{Name: "sign", Usage: "<name> [off]", MinArgs: 1, MaxArgs: 2, Help: "Require HMAC-signed requests; the secret comes to you in a direct message.", Run: s.cmdSign},
		}, s.outgoingCommands()...),
	})
}

// parseExpiry reads "30d", "12h", "90m".
func parseExpiry(s string) (time.Duration, error) {
	if days, ok := strings.CutSuffix(s, "d"); ok {
		var n int
		if _, err := fmt.Sscanf(days, "%d", &n); err != nil || n <= 0 {
			return 0, bot.Errorf("%q is not a duration like 30d, 12h or 90m.", s)
		}
		return time.Duration(n) * 24 * time.Hour, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		return 0, bot.Errorf("%q is not a duration like 30d, 12h or 90m.", s)
	}
	return d, nil
}

func (s *Service) cmdNew(ctx context.Context, c *bot.CommandContext) error {
	var expires time.Duration
	if len(c.Args) > 1 {
		var err error
		if expires, err = parseExpiry(c.Args[1]); err != nil {
			return err
		}
	}
	hook, token, err := s.CreateHook(ctx, c.RoomID(), c.Args[0], c.Sender(), expires)
	if err != nil {
		return bot.Errorf("Not created: %v.", err)
	}
	if err := s.tellPrivately(ctx, c.Sender(), fmt.Sprintf("The URL of webhook **%s** in %s (keep it secret: whoever has it can post):\n\n`%s`",
		hook.Name, c.RoomID(), s.HookURL(token))); err != nil {
		_ = s.RevokeHook(ctx, hook)
		return fmt.Errorf("send the URL privately: %w", err)
	}
	_, err = c.Reply(ctx, fmt.Sprintf("Created webhook **%s**; I sent you its URL in a direct message.", hook.Name))
	return err
}

func (s *Service) cmdList(ctx context.Context, c *bot.CommandContext) error {
	hooks, err := s.Hooks(ctx, c.RoomID())
	if err != nil {
		return err
	}
	if len(hooks) == 0 {
		_, err = c.Reply(ctx, "This room has no webhooks.")
		return err
	}
	var sb strings.Builder
	sb.WriteString("Webhooks of this room:\n\n")
	for _, h := range hooks {
		fmt.Fprintf(&sb, "- **%s**, created by %s on %s", h.Name, h.CreatedBy, h.CreatedAt.UTC().Format("2006-01-02"))
		if !h.ExpiresAt.IsZero() {
			fmt.Fprintf(&sb, ", expires %s", h.ExpiresAt.UTC().Format("2006-01-02 15:04 MST"))
		}
		if h.SigningSecret != "" {
			sb.WriteString(", signed requests only")
		}
		if h.Template != "" {
			sb.WriteString(", with a template")
		}
		sb.WriteString("\n")
	}
	_, err = c.Reply(ctx, sb.String())
	return err
}

// hookArg is the hook the command's first argument names.
func (s *Service) hookArg(ctx context.Context, c *bot.CommandContext) (*Hook, error) {
	h, err := s.HookByName(ctx, c.RoomID(), c.Args[0])
	if err == ErrNoHook {
		return nil, bot.Errorf("This room has no webhook %q.", c.Args[0])
	}
	return h, err
}

func (s *Service) cmdRevoke(ctx context.Context, c *bot.CommandContext) error {
	h, err := s.hookArg(ctx, c)
	if err != nil {
		return err
	}
	if err := s.RevokeHook(ctx, h); err != nil {
		return err
	}
	_, err = c.Reply(ctx, fmt.Sprintf("Deleted webhook **%s**; its URL no longer works.", h.Name))
	return err
}

func (s *Service) cmdRotate(ctx context.Context, c *bot.CommandContext) error {
	h, err := s.hookArg(ctx, c)
	if err != nil {
		return err
	}
	token, err := s.RotateHook(ctx, h)
	if err != nil {
		return err
	}
	if err := s.tellPrivately(ctx, c.Sender(), fmt.Sprintf("The new URL of webhook **%s** in %s:\n\n`%s`", h.Name, c.RoomID(), s.HookURL(token))); err != nil {
		return fmt.Errorf("send the URL privately: %w", err)
	}
	_, err = c.Reply(ctx, fmt.Sprintf("Webhook **%s** has a new URL (sent to you privately); the old one no longer works.", h.Name))
	return err
}

func (s *Service) cmdTemplate(ctx context.Context, c *bot.CommandContext) error {
	h, err := s.hookArg(ctx, c)
	if err != nil {
		return err
	}
	src := strings.TrimSpace(strings.TrimPrefix(c.RawArgs, c.Args[0]))
	switch {
	case src == "":
		if h.Template == "" {
			_, err = c.Reply(ctx, fmt.Sprintf("Webhook **%s** has no template: JSON it does not recognise is shown as it is.", h.Name))
		} else {
			_, err = c.Reply(ctx, fmt.Sprintf("Template of **%s**:\n\n```\n%s\n```", h.Name, h.Template))
		}
		return err
	case src == "clear":
		src = ""
	default:
		src = strings.TrimSuffix(strings.TrimPrefix(src, "```"), "```")
		if _, err := render.ParseTemplate(src); err != nil {
			return bot.Errorf("That template does not parse: %v", err)
		}
	}
	if err := s.SetTemplate(ctx, h, src); err != nil {
		return err
	}
	_, err = c.Reply(ctx, fmt.Sprintf("Template of **%s** updated.", h.Name))
	return err
}

func (s *Service) cmdSign(ctx context.Context, c *bot.CommandContext) error {
	h, err := s.hookArg(ctx, c)
	if err != nil {
		return err
	}
	if len(c.Args) > 1 {
		if c.Args[1] != "off" {
			return bot.Errorf("Usage: `%s <name> [off]`", c.Path)
		}
		if err := s.SetSigningSecret(ctx, h, ""); err != nil {
			return err
		}
		_, err = c.Reply(ctx, fmt.Sprintf("Webhook **%s** accepts unsigned requests again.", h.Name))
		return err
	}
	secret := random.String(40)
	if err := s.tellPrivately(ctx, c.Sender(), fmt.Sprintf("The signing secret of webhook **%s** in %s: `%s`\n\n"+
		"Sign each request with HMAC-SHA256 of its body under this key, hex-encoded, in `X-Signature-256: sha256=<hex>` "+
		"(or Grafana's HMAC signature setting, header `X-Grafana-Alerting-Signature`).", h.Name, c.RoomID(), secret)); err != nil {
		return fmt.Errorf("send the secret privately: %w", err)
	}
	if err := s.SetSigningSecret(ctx, h, secret); err != nil {
		return err
	}
	_, err = c.Reply(ctx, fmt.Sprintf("Webhook **%s** now accepts signed requests only; the secret was sent to you privately.", h.Name))
	return err
}

// tellPrivately sends markdown to a user in their direct chat with the
// bot, creating it the first time.
func (s *Service) tellPrivately(ctx context.Context, userID id.UserID, markdown string) error {
	kv := s.AS.UserKV(userID)
	var room id.RoomID
	if _, err := kv.Get(ctx, "dm", &room); err != nil {
		return err
	}
	if room != "" {
		if m, err := s.AS.StateStore.GetMembership(ctx, room, userID); err == nil && (m == event.MembershipJoin || m == event.MembershipInvite) {
			if _, err := s.Bot.Send(ctx, room, markdown); err == nil {
				return nil
			}
		}
		// The user left, or the room is gone: make a new one.
	}
	resp, err := s.Bot.Client.CreateRoom(ctx, &mautrix.ReqCreateRoom{
		Invite: []id.UserID{userID}, IsDirect: true, Preset: "trusted_private_chat",
		Name: "Webhooks",
	})
	if err != nil {
		return err
	}
	if err := kv.Set(ctx, "dm", resp.RoomID); err != nil {
		return err
	}
	_, err = s.Bot.Send(ctx, resp.RoomID, markdown)
	return err
}
