package ircx

import (
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Channel is a snapshot of a joined channel's state.
type Channel struct {
	Name string
	// Topic, who set it (a nick, or the nick!user@host the server gave)
	// and when; zero when unknown.
	Topic      string
	TopicSetBy string
	TopicSetAt time.Time
	// Modes are the channel modes set, of CHANMODES classes B, C and D,
	// with their parameter ("" for D; lists such as bans are not kept).
	// Known only from MODE changes seen and from RPL_CHANNELMODEIS
	// (324): send "MODE #channel" after joining to learn them all.
	Modes map[byte]string
	// Members, sorted by nick (folded), empty with Config.NoMembers.
	Members []Member
}

// Member is a user in a channel.
type Member struct {
	Nick string
	// Modes are the prefix modes held, highest first ("ov"; "" for
	// none).
	Modes string
}

type channel struct {
	name       string
	topic      string
	topicBy    string
	topicAt    time.Time
	modes      map[byte]string
	members    map[string]*Member // by folded nick
	namesReply map[string]*Member // a NAMES reply being received
}

// track follows channel state and our own identity. Called with s.mu
// held.
func (s *session) track(ev *Event) {
	m := ev.Message
	is := s.is
	var from string
	if m.Prefix != nil {
		from = m.Prefix.Name
	}
	self := from != "" && is.Equal(from, s.nick)
	noMembers := s.c.cfg.NoMembers
	switch m.Command {
	case "JOIN":
		for name := range strings.SplitSeq(m.Param(0), ",") {
			key := is.Fold(name)
			if self {
				s.learnSource(m.Prefix.String())
				if s.channels == nil {
					s.channels = make(map[string]*channel)
				}
				if s.channels[key] == nil {
					s.channels[key] = &channel{name: name}
					if !noMembers {
						s.channels[key].members = make(map[string]*Member)
					}
				}
			}
			if ch := s.channels[key]; ch != nil && !noMembers {
				if ch.members[is.Fold(from)] == nil {
					ch.members[is.Fold(from)] = &Member{Nick: from}
				}
			}
		}
	case "PART":
		for name := range strings.SplitSeq(m.Param(0), ",") {
			s.leave(name, from, self)
		}
	case "KICK":
		s.leave(m.Param(0), m.Param(1), is.Equal(m.Param(1), s.nick))
	case "QUIT":
		key := is.Fold(from)
		for _, ch := range s.channels {
			if ch.members[key] != nil {
				delete(ch.members, key)
				ev.Channels = append(ev.Channels, ch.name)
			}
		}
	case "NICK":
		to := m.Param(0)
		if self {
			s.nick = to
		}
		oldKey, newKey := is.Fold(from), is.Fold(to)
		for _, ch := range s.channels {
			if mb := ch.members[oldKey]; mb != nil {
				delete(ch.members, oldKey)
				mb.Nick = to
				ch.members[newKey] = mb
				ev.Channels = append(ev.Channels, ch.name)
			}
		}
	case "MODE":
		if ch := s.channels[is.Fold(m.Param(0))]; ch != nil && len(m.Params) > 1 {
			s.applyModes(ch, m.Params[1], m.Params[2:])
		}
	case "324": // RPL_CHANNELMODEIS: me #chan +modes params…
		if ch := s.channels[is.Fold(m.Param(1))]; ch != nil && len(m.Params) > 2 {
			ch.modes = nil
			s.applyModes(ch, m.Params[2], m.Params[3:])
		}
	case "TOPIC":
		if ch := s.channels[is.Fold(m.Param(0))]; ch != nil {
			ch.topic, ch.topicBy, ch.topicAt = m.Param(1), from, ev.Time
		}
	case "331": // RPL_NOTOPIC
		if ch := s.channels[is.Fold(m.Param(1))]; ch != nil {
			ch.topic, ch.topicBy, ch.topicAt = "", "", time.Time{}
		}
	case "332": // RPL_TOPIC: me #chan :topic
		if ch := s.channels[is.Fold(m.Param(1))]; ch != nil {
			ch.topic = m.Param(2)
		}
	case "333": // RPL_TOPICWHOTIME: me #chan setter unixtime
		if ch := s.channels[is.Fold(m.Param(1))]; ch != nil {
			ch.topicBy = m.Param(2)
			if sec, err := strconv.ParseInt(m.Param(3), 10, 64); err == nil {
				ch.topicAt = time.Unix(sec, 0)
			}
		}
	case "353": // RPL_NAMREPLY: me [=*@] #chan :[prefixes]nick[!user@host] …
		if len(m.Params) < 3 || noMembers {
			break
		}
		ch := s.channels[is.Fold(m.Params[len(m.Params)-2])]
		if ch == nil {
			break
		}
		if ch.namesReply == nil {
			ch.namesReply = make(map[string]*Member)
		}
		for _, word := range strings.Fields(m.Trailing()) {
			i := 0
			for i < len(word) && strings.IndexByte(is.PrefixChars, word[i]) >= 0 {
				i++
			}
			nick, _, _ := strings.Cut(word[i:], "!") // userhost-in-names
			if nick == "" {
				continue
			}
			mb := &Member{Nick: nick}
			for j := 0; j < i; j++ {
				mb.Modes = addMode(is, mb.Modes, is.ModeFor(word[j]))
			}
			ch.namesReply[is.Fold(nick)] = mb
		}
	case "366": // RPL_ENDOFNAMES: the reply replaces the member list
		if ch := s.channels[is.Fold(m.Param(1))]; ch != nil && ch.namesReply != nil {
			ch.members, ch.namesReply = ch.namesReply, nil
		}
	case "PRIVMSG", "NOTICE": // echo-message shows our source
		if self {
			s.learnSource(m.Prefix.String())
		}
	case "CHGHOST":
		if self {
			s.user, s.host = m.Param(0), m.Param(1)
		}
	case "396": // RPL_VISIBLEHOST: me host :is now your displayed host
		if user, host, ok := strings.Cut(m.Param(1), "@"); ok {
			s.user, s.host = user, host
		} else if user != "" {
			s.host = user
		}
	}
}

// leave removes nick from channel name, or the channel when it is us.
func (s *session) leave(name, nick string, self bool) {
	key := s.is.Fold(name)
	if self {
		delete(s.channels, key)
	} else if ch := s.channels[key]; ch != nil {
		delete(ch.members, s.is.Fold(nick))
	}
}

// applyModes applies a channel MODE change, taking parameters by
// CHANMODES class.
func (s *session) applyModes(ch *channel, change string, params []string) {
	is := s.is
	next := func() string {
		if len(params) == 0 {
			return ""
		}
		p := params[0]
		params = params[1:]
		return p
	}
	adding := true
	for i := 0; i < len(change); i++ {
		mode := change[i]
		switch mode {
		case '+', '-':
			adding = mode == '+'
			continue
		}
		switch is.ModeClass(mode) {
		case 'P':
			if mb := ch.members[is.Fold(next())]; mb != nil {
				if adding {
					mb.Modes = addMode(is, mb.Modes, mode)
				} else {
					mb.Modes = strings.ReplaceAll(mb.Modes, string(mode), "")
				}
			}
		case 'A':
			next()
		case 'B', 'C':
			var p string
			if adding || is.ModeClass(mode) == 'B' {
				p = next()
			}
			ch.setMode(mode, p, adding)
		default: // D, or not announced: no parameter
			ch.setMode(mode, "", adding)
		}
	}
}

func (ch *channel) setMode(mode byte, param string, on bool) {
	if !on {
		delete(ch.modes, mode)
		return
	}
	if ch.modes == nil {
		ch.modes = make(map[byte]string)
	}
	ch.modes[mode] = param
}

// addMode inserts a prefix mode into modes, keeping PREFIX's order.
func addMode(is *ISupport, modes string, mode byte) string {
	r := is.rank(mode)
	if r < 0 || strings.IndexByte(modes, mode) >= 0 {
		return modes
	}
	i := 0
	for i < len(modes) && is.rank(modes[i]) < r {
		i++
	}
	return modes[:i] + string(mode) + modes[i:]
}

// Channels returns the names of the joined channels, sorted.
func (c *Conn) Channels() []string {
	s := c.state()
	if s == nil {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	names := make([]string, 0, len(s.channels))
	for _, ch := range s.channels {
		names = append(names, ch.name)
	}
	slices.Sort(names)
	return names
}

// Channel returns a snapshot of a joined channel.
func (c *Conn) Channel(name string) (Channel, bool) {
	s := c.state()
	if s == nil {
		return Channel{}, false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	ch := s.channels[s.is.Fold(name)]
	if ch == nil {
		return Channel{}, false
	}
	out := Channel{
		Name: ch.name, Topic: ch.topic, TopicSetBy: ch.topicBy, TopicSetAt: ch.topicAt,
		Modes: maps.Clone(ch.modes), Members: make([]Member, 0, len(ch.members)),
	}
	keys := slices.Sorted(maps.Keys(ch.members))
	for _, k := range keys {
		out.Members = append(out.Members, *ch.members[k])
	}
	return out, true
}

// MemberCount returns how many members a joined channel has (0 with
// Config.NoMembers), and whether it is joined: cheaper than Channel,
// which copies the member list.
func (c *Conn) MemberCount(channel string) (int, bool) {
	s := c.state()
	if s == nil {
		return 0, false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	ch := s.channels[s.is.Fold(channel)]
	if ch == nil {
		return 0, false
	}
	return len(ch.members), true
}

// Member returns nick's membership of a joined channel.
func (c *Conn) Member(channel, nick string) (Member, bool) {
	s := c.state()
	if s == nil {
		return Member{}, false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if ch := s.channels[s.is.Fold(channel)]; ch != nil {
		if mb := ch.members[s.is.Fold(nick)]; mb != nil {
			return *mb, true
		}
	}
	return Member{}, false
}

// HighestPrefix returns nick's highest prefix mode in a joined channel
// and its prefix character ('o', '@'), or 0, 0 when nick has none; ok is
// false when nick is not in the channel.
func (c *Conn) HighestPrefix(channel, nick string) (mode, prefix byte, ok bool) {
	mb, ok := c.Member(channel, nick)
	if !ok || mb.Modes == "" {
		return 0, 0, ok
	}
	return mb.Modes[0], c.ISupport().PrefixFor(mb.Modes[0]), true
}
