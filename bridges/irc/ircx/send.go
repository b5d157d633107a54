package ircx

import (
	"context"
	"fmt"
	"strings"
	"time"

	"gopkg.in/irc.v3"
)

// Send queues m behind the lines already queued and writes it when its
// turn comes and flood control (Config.SendRate, SendBurst) lets it. It
// returns once the line is written to the connection — which is not
// proof that the server took it. It fails with ctx's error when ctx ends
// first (the line is then not sent), with an error wrapping
// ErrNotConnected and the cause when the connection is lost first (so
// that the bridge can tell the sender the message was not delivered), or
// with ErrInvalidMessage or ErrLineTooLong.
func (c *Conn) Send(ctx context.Context, m *irc.Message) error {
	s := c.state()
	if s == nil || !s.ready.Load() {
		return ErrNotConnected
	}
	line, err := s.encode(m)
	if err != nil {
		return err
	}
	return s.send(ctx, line)
}

// SendText sends text to target as command (PRIVMSG or NOTICE), split
// with SplitMessage to fit the server's line length as it relays the
// message. The lines go out in a row, no other Send between them; on
// failure, the lines before were sent and the rest were not.
func (c *Conn) SendText(ctx context.Context, command, target, text string) error {
	s := c.state()
	if s == nil || !s.ready.Load() {
		return ErrNotConnected
	}
	s.mu.Lock()
	srcLen, lineLen := s.sourceLen(), s.is.LineLen
	s.mu.Unlock()
	parts := SplitMessage(srcLen, target, text, lineLen)
	lines := make([]string, 0, len(parts))
	for _, p := range parts {
		line, err := s.encode(&irc.Message{Command: command, Params: []string{target, p}})
		if err != nil {
			return err
		}
		lines = append(lines, line)
	}
	return s.send(ctx, lines...)
}

// QueueLen returns how many lines wait in the send queue, the one being
// sent included (for metrics).
func (c *Conn) QueueLen() int {
	s := c.state()
	if s == nil {
		return 0
	}
	s.qmu.Lock()
	defer s.qmu.Unlock()
	n := len(s.queue)
	if s.busy {
		n++
	}
	return n
}

// encode checks that m is one valid line and returns it.
func (s *session) encode(m *irc.Message) (string, error) {
	if m.Command == "" || strings.ContainsAny(m.Command, " \r\n\x00:") {
		return "", fmt.Errorf("%w: command %q", ErrInvalidMessage, m.Command)
	}
	for i, p := range m.Params {
		if strings.ContainsAny(p, "\r\n\x00") {
			return "", fmt.Errorf("%w: parameter %d contains CR, LF or NUL", ErrInvalidMessage, i)
		}
		if i < len(m.Params)-1 && (p == "" || p[0] == ':' || strings.IndexByte(p, ' ') >= 0) {
			return "", fmt.Errorf("%w: middle parameter %d is empty, starts with ':' or has a space", ErrInvalidMessage, i)
		}
	}
	line := m.String()
	body := line
	if line[0] == '@' {
		_, body, _ = strings.Cut(line, " ")
	}
	s.mu.Lock()
	lineLen := s.is.LineLen
	s.mu.Unlock()
	if len(body)+2 > lineLen {
		return "", fmt.Errorf("%w: %d bytes, the server takes %d", ErrLineTooLong, len(body)+2, lineLen)
	}
	return line, nil
}

// send writes lines in a row when their turn comes, within flood control.
func (s *session) send(ctx context.Context, lines ...string) error {
	if err := s.acquire(ctx); err != nil {
		return err
	}
	defer s.release()
	for _, line := range lines {
		if err := s.pace(ctx); err != nil {
			return err
		}
		if err := s.writeLine(line); err != nil {
			return err
		}
	}
	return nil
}

// acquire waits for the sender's turn: senders go in the order they
// called (a FIFO of channels, so that waiting costs nothing while idle).
func (s *session) acquire(ctx context.Context) error {
	s.qmu.Lock()
	if s.isDone() {
		s.qmu.Unlock()
		return s.notSent()
	}
	if !s.busy {
		s.busy = true
		s.qmu.Unlock()
		return nil
	}
	turn := make(chan struct{})
	s.queue = append(s.queue, turn)
	s.qmu.Unlock()

	var err error
	select {
	case <-turn:
		return nil
	case <-ctx.Done():
		err = ctx.Err()
	case <-s.done:
		err = s.notSent()
	}
	s.qmu.Lock()
	for i, w := range s.queue {
		if w == turn { // still waiting: leave the queue
			s.queue = append(s.queue[:i], s.queue[i+1:]...)
			s.qmu.Unlock()
			return err
		}
	}
	s.qmu.Unlock()
	s.release() // the turn came meanwhile: pass it on
	return err
}

// release hands the turn to the next sender.
func (s *session) release() {
	s.qmu.Lock()
	defer s.qmu.Unlock()
	if len(s.queue) == 0 {
		s.busy = false
		s.queue = nil // let a long queue's array go
		return
	}
	next := s.queue[0]
	s.queue = s.queue[1:]
	close(next)
}

// pace waits for flood control's token. Only the sender holding the turn
// calls it, so the tokens go in queue order.
func (s *session) pace(ctx context.Context) error {
	for {
		ok, wait := s.c.limiter.Allow()
		if ok {
			return nil
		}
		if d, has := ctx.Deadline(); has && time.Until(d) < wait {
			return fmt.Errorf("ircx: flood control: the next line goes out in %s, after the deadline: %w", wait, context.DeadlineExceeded)
		}
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-s.done:
			t.Stop()
			return s.notSent()
		}
	}
}
