package irc

// Direct chats follow nick changes. A direct chat's portal ID names the IRC
// user's nick ({network}/dm/{nick}/{user}); when the bridge sees them
// change nick, their chats move to the new nick (bridge.ChangePortalID):
// the same room, its message map kept, the new nick's ghost in it instead
// of the old one's, and messages from Matrix go to the new nick.
//
// The bridge sees a NICK where the IRC user shares a channel with the bot
// (or with the Matrix user's puppet, whose connection then orders the
// move before the private message from the new nick that follows it).
// When the Matrix user already has a chat with the new nick (someone held
// it before), that chat stays the new nick's, and the old one is left as
// it is.

import (
	"context"
	"errors"

	"maunium.net/go/mautrix/id"

	"github.com/switchboard-im/switchboard/framework/bridge"
)

// dmLane orders a Matrix user's direct chats on a network: their
// messages, and their moves to new nicks.
func (n *network) dmLane(user id.UserID) string { return "dm/" + n.cfg.ID + "/" + string(user) }

// loadDMs indexes the direct chats that have a room. Called at start.
func (n *network) loadDMs(ctx context.Context) error {
	portals, err := n.c.br.Portals(ctx)
	if err != nil {
		return err
	}
	for _, p := range portals {
		if netID, _, nick, user, ok := parsePortalID(p.ID); ok && netID == n.cfg.ID && nick != "" {
			n.addDM(nick, user)
		}
	}
	return nil
}

// addDM indexes a direct chat between a (folded) nick and a Matrix user.
func (n *network) addDM(foldedNick string, user id.UserID) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.addDMLocked(foldedNick, user)
}

func (n *network) addDMLocked(foldedNick string, user id.UserID) {
	if n.dms[foldedNick] == nil {
		n.dms[foldedNick] = map[id.UserID]bool{}
	}
	n.dms[foldedNick][user] = true
}

func (n *network) dropDMLocked(foldedNick string, user id.UserID) {
	delete(n.dms[foldedNick], user)
	if len(n.dms[foldedNick]) == 0 {
		delete(n.dms, foldedNick)
	}
}

// dmNickChanged moves the direct chats of an IRC user who changed nick
// (only the one with the Matrix user only, when only is set). It runs on
// the reader of a connection that saw the NICK: the moves are queued on
// the users' direct chat lanes; the connection that sees it second finds
// nothing left to move.
func (n *network) dmNickChanged(from, to string, only id.UserID) {
	oldNick, newNick := n.fold(from), n.fold(to)
	if oldNick == newNick {
		return
	}
	var users []id.UserID
	n.mu.Lock()
	for user := range n.dms[oldNick] {
		if (only != "" && user != only) || n.dms[newNick][user] {
			continue // not this connection's user; or they have a chat with the new nick: both stay
		}
		n.dropDMLocked(oldNick, user)
		n.addDMLocked(newNick, user)
		users = append(users, user)
	}
	n.mu.Unlock()
	for _, user := range users {
		n.lane(n.dmLane(user), func(ctx context.Context) { n.moveDM(ctx, user, from, to) })
	}
}

// moveDM moves a Matrix user's direct chat with from to the nick to: the
// portal takes the new nick's ID, the new nick's ghost joins the room and
// the old one leaves it.
func (n *network) moveDM(ctx context.Context, user id.UserID, from, to string) {
	oldID := dmPortalID(n.cfg.ID, n.fold(from), user)
	newID := dmPortalID(n.cfg.ID, n.fold(to), user)
	_, err := n.c.br.ChangePortalID(ctx, oldID, newID)
	switch {
	case errors.Is(err, bridge.ErrNotLinked):
		return // the chat went meanwhile
	case errors.Is(err, bridge.ErrAlreadyLinked):
		// A chat with the new nick appeared meanwhile (a private message
		// from it, read first): both stay, each with its nick.
		n.addDM(n.fold(from), user)
		return
	case err != nil:
		n.mu.Lock()
		n.dropDMLocked(n.fold(to), user)
		n.addDMLocked(n.fold(from), user)
		n.mu.Unlock()
		n.log.Warn().Err(err).Stringer("user", user).Msg("Failed to move a direct chat to an IRC user's new nick")
		return
	}
	newUser := n.remoteUser(to)
	n.c.ghostReady(ctx, newUser)
	n.report(n.c.br.RemoteJoin(ctx, newID, newUser), "direct chat nick change", to)
	if err := n.c.br.RemoteLeave(ctx, newID, ghostSuffix(n.cfg.ID, n.fold(from)), "changed nick to "+to); !ignorable(err) {
		n.report(err, "direct chat nick change", to)
	}
}
