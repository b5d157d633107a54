package irc

// The commands about a user's own IRC connection: stored services
// passwords (storepass, removepass) and raw commands (cmd).

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"gopkg.in/irc.v3"

	"github.com/switchboard-im/switchboard/framework/bot"
)

func (c *core) addUserCommands() {
	b := c.br.Bot
	b.Command(&bot.Command{
		Name: "storepass", Usage: "[network] [account] <password>", MinArgs: 1, MaxArgs: 3,
		Help: "Store your services (NickServ) password, in your management room: your IRC connection logs in with SASL, or NickServ IDENTIFY. " +
			"The account defaults to your nick. The message is removed once read.",
		Run: c.cmdStorePass,
	})
	b.Command(&bot.Command{
		Name: "removepass", Usage: "[network]", MaxArgs: 1,
		Help: "Forget your stored services password.",
		Run:  c.cmdRemovePass,
	})
	b.Command(&bot.Command{
		Name: "cmd", Usage: "[network] <COMMAND> [arguments] [:last argument]", MinArgs: 1,
		Help: "Send an IRC command from your connection (e.g. `MODE yournick +R`, `PRIVMSG NickServ :INFO`) and see the server's answer.",
		Run:  c.cmdRaw,
	})
}

// splitNetworkArg takes a leading network ID off args when there is one
// and more arguments follow.
func (c *core) splitNetworkArg(args []string) (netName string, rest []string) {
	if len(args) > 1 && c.networks[args[0]] != nil {
		return args[0], args[1:]
	}
	return "", args
}

func (c *core) cmdStorePass(ctx context.Context, cc *bot.CommandContext) error {
	u, err := c.commandUser(ctx, cc)
	if err != nil {
		return err
	}
	// The password is out: remove it from the room, wherever it was sent.
	c.redactSecret(ctx, cc, "contained a password")
	if room := u.ManagementRoom(); room == "" || room != cc.RoomID() {
		return bot.Errorf("Not stored: send `storepass` in your management room (a direct chat with %s). "+
			"Your message was removed, but others in this room may have read it: change that password.", c.br.AS.Config.BotID())
	}
	netName, args := c.splitNetworkArg(cc.Args)
	n, err := c.networkFor(ctx, cc, netName)
	if err != nil {
		return err
	}
	p := n.puppet(cc.Sender())
	cr := credentials{Password: args[len(args)-1]}
	switch len(args) {
	case 1:
		cr.Account = p.desiredNick(ctx)
	case 2:
		cr.Account = args[0]
	default:
		return bot.Errorf("Write `storepass [network] [account] <password>`; quote a password with spaces.")
	}
	if cr.Password == "" || strings.ContainsAny(cr.Password+cr.Account, "\r\n\x00") {
		return bot.Errorf("That password cannot be sent to IRC.")
	}
	if err := n.storeCredentials(ctx, cc.Sender(), cr); err != nil {
		return err
	}
	p.sasl.Store(saslTry)
	p.credsWarned.Store(false)
	reply := fmt.Sprintf("Stored your password for the account `%s` on %s: your connection logs in with it from now on.", cr.Account, n.cfg.Name)
	if conn := p.conn.Load(); conn != nil && conn.Connected() && conn.Account() == "" {
		ictx, cancel := context.WithTimeout(ctx, time.Duration(c.identifyWait.Load()))
		defer cancel()
		err := p.command(ictx, &irc.Message{Command: "PRIVMSG", Params: []string{n.cfg.NickServ, "IDENTIFY " + cr.Account + " " + cr.Password}},
			func(m *irc.Message) (bool, error) { return m.Command == "900", nil }) // RPL_LOGGEDIN
		if err == nil {
			reply += fmt.Sprintf(" You are identified as `%s` now.", cr.Account)
		} else {
			reply += fmt.Sprintf(" %s did not confirm a login on your current connection: check the account and password.", n.cfg.NickServ)
		}
	}
	_, err = cc.Reply(ctx, reply)
	return err
}

func (c *core) cmdRemovePass(ctx context.Context, cc *bot.CommandContext) error {
	if _, err := c.commandUser(ctx, cc); err != nil {
		return err
	}
	var netName string
	if len(cc.Args) == 1 {
		netName = cc.Args[0]
	}
	n, err := c.networkFor(ctx, cc, netName)
	if err != nil {
		return err
	}
	if err := n.deleteCredentials(ctx, cc.Sender()); err != nil {
		return err
	}
	_, err = cc.Reply(ctx, fmt.Sprintf("Your stored password for %s is forgotten; your next connection logs in to no account.", n.cfg.Name))
	return err
}

// rawRefused are the commands `cmd` does not send: the bridge owns
// registration, nick, membership and the connection itself.
var rawRefused = []string{"PASS", "USER", "NICK", "CAP", "AUTHENTICATE", "QUIT", "JOIN", "PART", "PING", "PONG", "SERVER", "BATCH"}

// rawAnswerWait is how long `cmd` gathers the answer of a server without
// labeled-response.
const rawAnswerWait = 2 * time.Second

var rawLabels atomic.Uint64

func (c *core) cmdRaw(ctx context.Context, cc *bot.CommandContext) error {
	if _, err := c.commandUser(ctx, cc); err != nil {
		return err
	}
	raw := strings.TrimSpace(cc.RawArgs)
	var netName string
	if first, rest, ok := strings.Cut(raw, " "); ok && c.networks[first] != nil {
		netName, raw = first, strings.TrimSpace(rest)
	}
	n, err := c.networkFor(ctx, cc, netName)
	if err != nil {
		return err
	}
	if raw == "" || raw[0] == '@' || raw[0] == ':' || strings.ContainsAny(raw, "\r\n\x00") {
		return bot.Errorf("Write the command as on IRC: `COMMAND arguments :last argument`.")
	}
	msg, err := irc.ParseMessage(raw)
	if err != nil {
		return bot.Errorf("That is not an IRC command: %v.", err)
	}
	msg.Command = strings.ToUpper(msg.Command)
	if slices.Contains(rawRefused, msg.Command) {
		return bot.Errorf("`%s` is the bridge's to send: use the room (join, leave) or `%snick` instead.", msg.Command, c.br.Bot.CommandPrefix)
	}
	p := n.puppet(cc.Sender())
	conn, err := p.ready(ctx, "")
	if err != nil {
		return bot.Errorf("%v", err)
	}
	lines := p.rawCommand(ctx, conn.HasCap("labeled-response"), msg)
	p.touch()
	if len(lines) == 0 {
		_, err = cc.Reply(ctx, fmt.Sprintf("Sent `%s`; %s did not answer.", msg.Command, n.cfg.Name))
		return err
	}
	_, err = cc.Reply(ctx, "```\n"+strings.ReplaceAll(strings.Join(lines, "\n"), "```", "'''")+"\n```")
	return err
}

// rawCommand sends msg and gathers the answer: with labeled-response
// exactly the lines labelled for it, else what the server and services
// send within rawAnswerWait.
func (p *puppet) rawCommand(ctx context.Context, labeled bool, msg *irc.Message) []string {
	var lines []string
	label := ""
	if labeled {
		label = "sb" + strconv.FormatUint(rawLabels.Add(1), 36)
		msg.Tags = irc.Tags{"label": irc.TagValue(label)}
	}
	batch := ""
	nick := p.nick()
	match := func(m *irc.Message) (bool, error) {
		if labeled {
			l, _ := m.Tags.GetTag("label")
			b, _ := m.Tags.GetTag("batch")
			switch {
			case m.Command == "BATCH" && l == label && strings.HasPrefix(m.Param(0), "+"):
				batch = m.Param(0)[1:]
				return false, nil
			case m.Command == "BATCH" && batch != "" && m.Param(0) == "-"+batch:
				return true, nil
			case l == label && m.Command == "ACK":
				return true, nil
			case l == label:
				lines = append(lines, rawLine(m, nick))
				return true, nil
			case batch != "" && b == batch:
				lines = append(lines, rawLine(m, nick))
			}
			return false, nil
		}
		// Without labels: numerics and notices to us that are not from
		// users' channels.
		if _, err := strconv.Atoi(m.Command); err == nil || (m.Command == "NOTICE" || m.Command == "PRIVMSG") && p.n.equal(m.Param(0), nick) {
			lines = append(lines, rawLine(m, nick))
		}
		return false, nil
	}
	wctx, cancel := context.WithTimeout(ctx, rawAnswerWait)
	if labeled {
		wctx, cancel = context.WithTimeout(ctx, answerTimeout)
	}
	defer cancel()
	err := p.command(wctx, msg, match)
	p.wmu.Lock() // lines were appended on the reader, under wmu
	defer p.wmu.Unlock()
	if err != nil && !errors.Is(err, context.DeadlineExceeded) {
		lines = append(lines, "(error: "+err.Error()+")")
	}
	return slices.Clone(lines)
}

// rawLine shows a server line as users read it: the sender, the command
// and the parameters after our own nick.
func rawLine(m *irc.Message, nick string) string {
	params := m.Params
	if len(params) > 0 && strings.EqualFold(params[0], nick) {
		params = params[1:]
	}
	from := ""
	if m.Prefix != nil {
		from = m.Prefix.Name + " "
	}
	return strings.TrimSpace(from + m.Command + " " + strings.Join(params, " "))
}
