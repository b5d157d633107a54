package main

import (
	"bufio"
	"cmp"
	"errors"
	"fmt"
	"net"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// The remote network: a line-based chat served on TCP. The bridge is just
// another participant, which posts for Matrix users (post) and hears what
// TCP clients do (relay). README.md describes the protocol.

const (
	maxLine     = 2048  // bytes per line, both ways
	maxMessages = 10000 // recent messages kept for replies, edits, reactions and deletes
)

// usages are the commands a client sends (NICK aside); only text may
// contain spaces.
var usages = map[string]string{
	"JOIN": "JOIN #channel", "PART": "PART #channel", "MSG": "MSG #channel text",
	"REPLY": "REPLY #channel msgid text", "EDIT": "EDIT #channel msgid text",
	"REACT": "REACT #channel msgid emoji", "DELETE": "DELETE #channel msgid",
}

var (
	nickRE    = regexp.MustCompile(`^[A-Za-z0-9_-]{1,30}$`)
	channelRE = regexp.MustCompile(`^#[a-z0-9_.-]{1,50}$`)
	oneLine   = strings.NewReplacer("\r\n", " ", "\n", " ", "\r", " ")
)

// chatEvent is one thing that happened in a channel, formatted as the line
// the server broadcasts: KIND #channel [ID] NICK [TARGET] [TEXT].
type chatEvent struct {
	Kind    string // MSG, REPLY, EDIT, REACT, DELETE, JOIN, PART
	Channel string
	ID      string // the new message (MSG, REPLY) or the one acted on (EDIT, REACT, DELETE)
	Nick    string
	Target  string // REPLY: the message replied to
	Text    string // the text; REACT: the emoji
}

func (e chatEvent) String() string {
	line := e.Kind + " " + e.Channel
	for _, part := range []string{e.ID, e.Nick, e.Target, e.Text} {
		if part != "" {
			line += " " + part
		}
	}
	return line
}

type chatServer struct {
	ln net.Listener
	// relay hears the events of TCP clients (not those the bridge posts).
	relay func(chatEvent)
	// saveLastID records the last message ID handed out: IDs must never
	// repeat, as the bridge's message map outlives this process.
	saveLastID func(int64)
	wg         sync.WaitGroup

	mu       sync.Mutex
	closing  bool
	lastID   int64
	clients  map[*chatClient]bool
	channels map[string]map[*chatClient]bool
	messages map[string]chatEvent // recent messages by ID
	order    []string             // their IDs, oldest first
}

type chatClient struct {
	conn net.Conn
	nick string // set once, by NICK (under chatServer.mu)
	mu   sync.Mutex
}

func newChatServer(ln net.Listener, lastID int64, relay func(chatEvent)) *chatServer {
	return &chatServer{ln: ln, lastID: lastID, relay: relay, clients: map[*chatClient]bool{},
		channels: map[string]map[*chatClient]bool{}, messages: map[string]chatEvent{}}
}

// send writes a line; a client too slow to take it is disconnected.
func (c *chatClient) send(line string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.conn.SetWriteDeadline(time.Now().Add(time.Second))
	if _, err := c.conn.Write([]byte(line + "\n")); err != nil {
		c.conn.Close()
	}
}

// serve accepts clients until close.
func (s *chatServer) serve() {
	for {
		conn, err := s.ln.Accept()
		if err != nil {
			return
		}
		c := &chatClient{conn: conn}
		s.mu.Lock()
		if s.closing {
			s.mu.Unlock()
			conn.Close()
			return
		}
		s.clients[c] = true
		s.wg.Add(1)
		s.mu.Unlock()
		go s.serveClient(c)
	}
}

// close disconnects everyone and waits until no relay call runs.
func (s *chatServer) close() {
	s.mu.Lock()
	s.closing = true
	s.ln.Close()
	for c := range s.clients {
		c.conn.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
}

func (s *chatServer) serveClient(c *chatClient) {
	defer s.wg.Done()
	defer c.conn.Close()
	c.send("HELLO relaybridge chat: NICK name, JOIN #channel, MSG #channel text (see README.md)")
	sc := bufio.NewScanner(c.conn)
	sc.Buffer(make([]byte, 0, 512), maxLine)
	for sc.Scan() {
		if err := s.handle(c, strings.TrimSuffix(sc.Text(), "\r")); err != nil {
			c.send("ERR " + err.Error())
		}
	}
	if errors.Is(sc.Err(), bufio.ErrTooLong) {
		c.send(fmt.Sprintf("ERR line too long (the limit is %d bytes)", maxLine))
	}
	s.quit(c)
}

// handle runs one line from a client.
func (s *chatServer) handle(c *chatClient, line string) error {
	cmd, rest, _ := strings.Cut(line, " ")
	cmd = strings.ToUpper(cmd)
	if strings.TrimSpace(line) == "" {
		return nil
	}
	if cmd == "NICK" {
		return s.setNick(c, rest)
	}
	usage, ok := usages[cmd]
	if !ok {
		return fmt.Errorf("unknown command %q", cmd)
	}
	n := strings.Count(usage, " ")
	args := strings.SplitN(rest, " ", n)
	if len(args) < n || slices.Contains(args, "") || (!strings.HasSuffix(usage, "text") && strings.Contains(args[n-1], " ")) {
		return fmt.Errorf("usage: %s", usage)
	}
	e := chatEvent{Kind: cmd, Channel: strings.ToLower(args[0])}
	switch cmd {
	case "MSG":
		e.Text = args[1]
	case "REPLY":
		e.Target, e.Text = args[1], args[2]
	case "EDIT", "REACT":
		e.ID, e.Text = args[1], args[2]
	case "DELETE":
		e.ID = args[1]
	}
	if err := s.apply(&e, c); err != nil {
		return err
	}
	s.relay(e)
	return nil
}

func (s *chatServer) setNick(c *chatClient, nick string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case c.nick != "":
		return fmt.Errorf("you are %s already", c.nick)
	case !nickRE.MatchString(nick):
		return errors.New("a nick is 1 to 30 letters, digits, _ or -")
	}
	for other := range s.clients {
		if strings.EqualFold(other.nick, nick) {
			return fmt.Errorf("%s is taken", nick)
		}
	}
	c.nick = nick
	c.send("NICK " + nick)
	return nil
}

// post is how the bridge speaks: e as if from a client in the channel,
// without the checks of who may do what (the bridge made them). It returns
// the new message's ID.
func (s *chatServer) post(e chatEvent) (string, error) {
	err := s.apply(&e, nil)
	return e.ID, err
}

// apply checks e from client c (nil: the bridge), gives a new message its
// ID and tells the channel.
func (s *chatServer) apply(e *chatEvent, c *chatClient) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !channelRE.MatchString(e.Channel) {
		return fmt.Errorf("%q is not a channel (#name: a-z, 0-9, _ . -)", e.Channel)
	}
	members := s.channels[e.Channel]
	if c != nil {
		e.Nick = c.nick
		switch {
		case c.nick == "":
			return errors.New("say NICK name first")
		case e.Kind == "JOIN" && members[c]:
			return fmt.Errorf("you are in %s already", e.Channel)
		case e.Kind != "JOIN" && !members[c]:
			return fmt.Errorf("JOIN %s first", e.Channel)
		}
	}
	if target := cmp.Or(e.Target, e.ID); target != "" { // the message replied to or acted on
		if m, ok := s.messages[target]; !ok || m.Channel != e.Channel {
			return fmt.Errorf("there is no message %s in %s", target, e.Channel)
		} else if c != nil && (e.Kind == "EDIT" || e.Kind == "DELETE") && m.Nick != c.nick {
			return fmt.Errorf("%s is %s's message, not yours", target, m.Nick)
		}
	}
	e.Text = strings.ToValidUTF8(oneLine.Replace(e.Text[:min(len(e.Text), maxLine-200)]), "")
	switch e.Kind {
	case "MSG", "REPLY":
		s.lastID++
		e.ID = "m" + strconv.FormatInt(s.lastID, 10)
		s.saveLastID(s.lastID)
		s.remember(*e)
	case "DELETE":
		delete(s.messages, e.ID)
	case "JOIN":
		if c != nil {
			if members == nil {
				members = map[*chatClient]bool{}
				s.channels[e.Channel] = members
			}
			members[c] = true
		}
	}
	for m := range members {
		m.send(e.String())
	}
	if e.Kind == "PART" && c != nil {
		delete(members, c)
	}
	return nil
}

func (s *chatServer) remember(e chatEvent) {
	s.messages[e.ID] = e
	s.order = append(s.order, e.ID)
	if len(s.order) > maxMessages {
		delete(s.messages, s.order[0])
		s.order = s.order[1:]
	}
}

// members lists the nicks in a channel.
func (s *chatServer) members(channel string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var nicks []string
	for c := range s.channels[channel] {
		nicks = append(nicks, c.nick)
	}
	return nicks
}

// quit forgets a disconnected client.
func (s *chatServer) quit(c *chatClient) {
	s.mu.Lock()
	var parts []chatEvent
	for name, members := range s.channels {
		if members[c] {
			delete(members, c)
			part := chatEvent{Kind: "PART", Channel: name, Nick: c.nick, Text: "quit"}
			for m := range members {
				m.send(part.String())
			}
			parts = append(parts, part)
		}
	}
	delete(s.clients, c)
	closing := s.closing
	s.mu.Unlock()
	if closing {
		return // when the bridge stops, its ghosts stay in their rooms
	}
	for _, e := range parts {
		s.relay(e)
	}
}
