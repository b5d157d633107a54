package ircx

import (
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"

	"gopkg.in/irc.v3"
)

// register runs the registration on the caller's goroutine (the reader
// is not started yet), within ctx and Config.RegisterTimeout.
func (s *session) register(ctx context.Context) error {
	deadline := time.Now().Add(s.c.cfg.RegisterTimeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	_ = s.nc.SetDeadline(deadline)
	stop := context.AfterFunc(ctx, func() { _ = s.nc.SetDeadline(time.Unix(1, 0)) })
	err := s.handshake()
	if !stop() || (err != nil && ctx.Err() != nil) {
		return context.Cause(ctx)
	}
	if err != nil {
		return err
	}
	return s.nc.SetDeadline(time.Time{})
}

// Registration phases of capability negotiation.
const (
	capLS   = iota // CAP LS sent, waiting for the list
	capReq         // CAP REQ sent, waiting for ACK/NAK
	capSASL        // AUTHENTICATE in progress
	capDone        // CAP END sent, or the server has no CAP
)

// handshake writes the registration and reads until the end of the MOTD.
func (s *session) handshake() error {
	cfg := &s.c.cfg
	write := func(line string) error {
		_, err := io.WriteString(s.nc, line+"\r\n")
		return err
	}
	msg := func(cmd string, params ...string) string {
		return (&irc.Message{Command: cmd, Params: params}).String()
	}
	var lines []string
	if cfg.Password != "" {
		lines = append(lines, msg("PASS", cfg.Password))
	}
	lines = append(lines, "CAP LS 302", msg("NICK", cfg.Nick), msg("USER", cfg.Ident, "0", "*", cfg.Realname))
	if err := write(strings.Join(lines, "\r\n")); err != nil {
		return err
	}

	phase := capLS
	offered := map[string]string{}
	pending := 0 // CAP REQ lines not answered yet
	nick, attempt, maxLen := cfg.Nick, 0, 0
	registered := false

	// endCaps ends negotiation, logging in first when asked to.
	endCaps := func() error {
		if cfg.SASL == nil {
			phase = capDone
			return write("CAP END")
		}
		if !slices.Contains(s.caps, "sasl") {
			return ErrSASLUnavailable
		}
		phase = capSASL
		return write("AUTHENTICATE PLAIN")
	}

	for {
		m, err := s.readMessage()
		if err != nil {
			return err
		}
		if registered {
			ev := s.handle(m)
			if f := cfg.OnEvent; f != nil {
				f(s.c, ev)
			}
			switch m.Command {
			case "376", "422": // end of MOTD, no MOTD: ISUPPORT is complete
				return nil
			}
			continue
		}
		switch m.Command {
		case "PING":
			err = write(msg("PONG", m.Params...))
		case "CAP":
			list := strings.Fields(m.Trailing())
			switch strings.ToUpper(m.Param(1)) {
			case "LS":
				for _, tok := range list {
					name, value, _ := strings.Cut(tok, "=")
					offered[name] = value
				}
				if (len(m.Params) >= 4 && m.Params[2] == "*") || phase != capLS {
					continue // more to come
				}
				s.mu.Lock()
				s.capValues = offered
				s.mu.Unlock()
				if cfg.SASL != nil {
					mechs, ok := offered["sasl"]
					if !ok || (mechs != "" && !slices.Contains(strings.Split(strings.ToUpper(mechs), ","), "PLAIN")) {
						return ErrSASLUnavailable
					}
				}
				var want []string
				for _, name := range cfg.Caps {
					if _, ok := offered[name]; ok && (name != "sasl" || cfg.SASL != nil) {
						want = append(want, name)
					}
				}
				if len(want) == 0 {
					err = endCaps()
					break
				}
				req := capReqLines(want)
				pending, phase = len(req), capReq
				err = write(strings.Join(req, "\r\n"))
			case "ACK", "NAK":
				if strings.EqualFold(m.Param(1), "ACK") {
					s.mu.Lock()
					s.caps = ackCaps(s.caps, list)
					s.mu.Unlock()
				}
				if pending--; pending == 0 && phase == capReq {
					err = endCaps()
				}
			}
		case "AUTHENTICATE":
			if phase == capSASL && m.Param(0) == "+" {
				payload := cfg.SASL.Account + "\x00" + cfg.SASL.Account + "\x00" + cfg.SASL.Password
				err = write(strings.Join(authenticateLines(payload), "\r\n"))
			}
		case "900": // RPL_LOGGEDIN
			s.mu.Lock()
			s.account = m.Param(2)
			s.mu.Unlock()
		case "903": // RPL_SASLSUCCESS
			if phase == capSASL {
				phase = capDone
				err = write("CAP END")
			}
		case "902", "904", "905", "906", "908":
			return &SASLError{Code: m.Command, Message: m.Trailing()}
		case "421": // ERR_UNKNOWNCOMMAND: a server without CAP
			if strings.EqualFold(m.Param(1), "CAP") {
				if cfg.SASL != nil {
					return ErrSASLUnavailable
				}
				phase = capDone
			}
		case "432", "433", "436", "437":
			if m.Command == "432" && len(nick) > 1 {
				// Maybe too long: shorten the alternatives.
				maxLen = len(nick) - 1
			}
			if attempt++; attempt > cfg.MaxNickAttempts {
				return fmt.Errorf("%w: %s (%s %s)", ErrNickUnavailable, nick, m.Command, m.Trailing())
			}
			nick = altNick(cfg.Nick, attempt, maxLen)
			err = write(msg("NICK", nick))
		case "464": // ERR_PASSWDMISMATCH
			return fmt.Errorf("server password refused: %s", m.Trailing())
		case "ERROR":
			return fmt.Errorf("server refused the registration: %s", m.Trailing())
		case "001":
			if cfg.SASL != nil && phase != capDone {
				return ErrSASLUnavailable // the server ignored CAP
			}
			registered = true
			s.mu.Lock()
			s.nick = m.Param(0)
			s.registeredAt = time.Now()
			// "Welcome to the … Network nick!user@host"
			if f := strings.Fields(m.Trailing()); len(f) > 0 {
				s.learnSource(f[len(f)-1])
			}
			s.mu.Unlock()
			ev := s.handle(m)
			if f := cfg.OnEvent; f != nil {
				f(s.c, ev)
			}
		}
		if err != nil {
			return err
		}
	}
}

// learnSource records our user and host from a "nick!user@host" that
// names us. Called with s.mu held.
func (s *session) learnSource(source string) {
	p := irc.ParsePrefix(source)
	if p.User != "" && p.Host != "" && s.is.Equal(p.Name, s.nick) {
		s.user, s.host = p.User, p.Host
	}
}

// altNick is the n-th alternative (from 1) to nick: nick_, nick__,
// nick1, nick2…, shortened to maxLen when maxLen > 0.
func altNick(nick string, n, maxLen int) string {
	var suffix string
	switch n {
	case 1:
		suffix = "_"
	case 2:
		suffix = "__"
	default:
		suffix = strconv.Itoa(n - 2)
	}
	if maxLen > 0 && len(nick)+len(suffix) > maxLen {
		nick = nick[:max(maxLen-len(suffix), 1)]
	}
	return nick + suffix
}

// authenticateLines encodes a SASL payload as AUTHENTICATE lines:
// base64 in chunks of 400 bytes, and "+" after a last chunk of exactly
// 400 bytes (or for an empty payload).
func authenticateLines(payload string) []string {
	enc := base64.StdEncoding.EncodeToString([]byte(payload))
	var lines []string
	for len(enc) >= 400 {
		lines = append(lines, "AUTHENTICATE "+enc[:400])
		enc = enc[400:]
	}
	if enc == "" {
		enc = "+"
	}
	return append(lines, "AUTHENTICATE "+enc)
}
