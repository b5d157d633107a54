package bridge

import (
	"context"
	"errors"

	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// Network is what a bridge implements: the remote side. The framework
// calls it from the Matrix side (messages to deliver, channels to look up);
// the network calls the Bridge's Remote* methods for what happens remotely.
//
// Optional capabilities are separate interfaces the same value may
// implement: EditSender, ReactionSender, RedactionSender,
// MembershipHandler, PortalHandler, LoginHandler, AliasResolver,
// LinkAuthorizer, GhostResolver, DirectChatStarter and ThirdPartyProvider.
//
// While the network delivers a Matrix message, edit, reaction or redaction
// of a portal, the portal's Remote* calls wait (so that a remote reply to
// it finds it in the message map): a send must not wait for a remote event
// of the same portal to be bridged.
type Network interface {
	// Info describes the network: the protocol section of m.bridge, the
	// status API, the command prefix.
	Info() NetworkInfo
	// Start connects to the remote network. The bridge is ready for calls
	// from the network (b is the bridge) when it is called.
	Start(ctx context.Context, b *Bridge) error
	// Stop disconnects; no Remote* call may follow.
	Stop()
	// ResolveChannel looks up a remote channel by the ID a user typed (a
	// link command, the provisioning API, an alias). It returns
	// ErrUnknownChannel when there is none.
	ResolveChannel(ctx context.Context, channelID string) (*ChannelInfo, error)
	// SendMessage delivers a Matrix message to the remote channel and
	// returns the remote message's ID ("" where the protocol has none).
	SendMessage(ctx context.Context, msg *MatrixMessage) (remoteID string, err error)
}

// NetworkInfo describes a remote network.
type NetworkInfo struct {
	// ID is short and stable: "irc", "slack". It names the network in
	// m.bridge and is the default command prefix ("!irc").
	ID          string
	DisplayName string
	AvatarURL   id.ContentURIString
	ExternalURL string
	// RequiresLogin says a Matrix user needs a remote login to speak as
	// themselves. Without one their messages are relayed (where the
	// portal's relay mode is on) or refused with an explanation. Networks
	// that create a connection for every user (IRC) leave it false.
	RequiresLogin bool
}

// ChannelInfo describes a remote channel: what a portal room shows.
type ChannelInfo struct {
	// ID is the channel's canonical ID (the portal's ID).
	ID          string
	Name        string
	Topic       string
	ExternalURL string
	Avatar      id.ContentURI
	// Public channels become rooms anyone can join (and find by alias);
	// others are invite-only.
	Public bool
}

// ErrUnknownChannel is what ResolveChannel returns for a channel that does
// not exist (or the network refuses to bridge).
var ErrUnknownChannel = errors.New("no such channel")

// MatrixMessage is a Matrix message to deliver to the remote side.
type MatrixMessage struct {
	Portal *Portal
	Event  *event.Event
	// Content is what to send: the event's content, or for a relayed
	// message the relay format applied to it (body and formatted_body),
	// or for an edit the new content.
	Content *event.MessageEventContent
	// Sender is the Matrix user who sent it.
	Sender *User
	// Login is the sender's remote login, nil when they have none.
	Login *Login
	// Relayed says the network's relay (bot) account should send it: the
	// sender has no login and the portal relays.
	Relayed bool
	// Unrelayed and SenderName, for a relayed message, are its content
	// before the relay format and the sender's name as the format used
	// it: for networks that can show a relayed sender natively (IRC's
	// RELAYMSG).
	Unrelayed  *event.MessageEventContent
	SenderName string
	// ReplyTo and ThreadRoot are the bridged messages this one replies to
	// or threads under; nil when there is none or it was not bridged.
	ReplyTo    *Message
	ThreadRoot *Message
	// EditOf is the bridged message an edit replaces (EditSender only).
	EditOf *Message
}

// EditSender delivers Matrix edits. Without it, an edit is sent as a new
// message reading "* new text", the convention of chat networks without
// edits.
type EditSender interface {
	SendEdit(ctx context.Context, msg *MatrixMessage) (remoteID string, err error)
}

// ReactionSender delivers Matrix reactions and their removal. Without it,
// reactions are not bridged.
type ReactionSender interface {
	SendReaction(ctx context.Context, r *MatrixReaction) (remoteID string, err error)
	RemoveReaction(ctx context.Context, r *MatrixReaction) error
}

// MatrixReaction is a reaction (or its removal) to deliver.
type MatrixReaction struct {
	Portal *Portal
	Sender *User
	Login  *Login
	Target *Message
	Key    string
	// RemoteID is the reaction's remote ID, when removing one that had it.
	RemoteID string
}

// RedactionSender deletes remote messages whose Matrix event was redacted.
// Without it, redactions are not bridged.
type RedactionSender interface {
	SendRedaction(ctx context.Context, portal *Portal, sender *User, login *Login, target *Message) error
}

// MembershipHandler is told when Matrix users join or leave a portal room
// (not ghosts or the bot), so the network can join its puppets.
type MembershipHandler interface {
	MatrixMembership(ctx context.Context, portal *Portal, user *User, membership event.Membership) error
}

// PortalHandler is told when a portal gets a room (created or linked) and
// when it loses it, so the network can join or leave the remote channel.
// An error from PortalLinked undoes the link. Both are called once the
// portal's remote events may flow: PortalLinked may call RemoteJoin or
// SyncMembers for the portal.
type PortalHandler interface {
	PortalLinked(ctx context.Context, portal *Portal) error
	PortalUnlinked(ctx context.Context, portal *Portal)
}

// LoginHandler lets Matrix users log in to the remote network (puppeting)
// with the management commands `login` and `logout`.
type LoginHandler interface {
	// Login logs user in with the arguments of the login command and
	// returns the login to store; the error is shown to the user.
	Login(ctx context.Context, user *User, args []string) (*Login, error)
	// Logout ends a login (it is deleted whatever this returns).
	Logout(ctx context.Context, user *User, login *Login) error
	// LoginUsage describes the login command's arguments ("<token>").
	LoginUsage() string
}

// LinkAuthorizer adds the network's rule to who may link a room to a
// remote channel (the link command, the provisioning API), beyond power
// level 50 in the room: e.g. being an operator of the channel. Its error
// is shown to the user. Without it, the power level is enough.
type LinkAuthorizer interface {
	MayLink(ctx context.Context, user *User, channelID string) error
}

// AliasResolver maps the part of a portal alias after the alias prefix
// (#irc_libera_#go → "libera_#go") to a channel ID. Without it the part
// is the channel ID.
type AliasResolver interface {
	ChannelForAlias(localpart string) (channelID string, ok bool)
	// AliasForChannel is the inverse: the alias localpart after the
	// prefix for a channel.
	AliasForChannel(channelID string) string
}
