package irc

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"gopkg.in/irc.v3"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/switchboard-im/switchboard/bridges/irc/ircx"
	"github.com/switchboard-im/switchboard/framework"
	"github.com/switchboard-im/switchboard/framework/bridge"
)

// matrix-appservice-irc's provisioning API, on the appservice's listener,
// so that integration managers written for that bridge (Dimension, its
// own widget) drive this one. Shapes and errcodes follow
// matrix-appservice-irc's src/provisioning/Provisioner.ts and Schema.ts
// (and matrix-appservice-bridge's provisioning errors):
//
//	GET  /_matrix/provision/querynetworks
//	     → {"servers": [{"network_id", "desc", "bot_user_id", "fields": {"network", "domain"}}]}
//	POST /_matrix/provision/querylink {"remote_room_server", "remote_room_channel"}
//	     → {"operators": ["nick", …]}
//	POST /_matrix/provision/link {"matrix_room_id", "remote_room_server", "remote_room_channel", "op_nick", "key"}
//	     → {}: the op is asked on IRC; the room is told the outcome; key
//	     is the channel's key (+k), if it has one
//	POST /_matrix/provision/unlink {"matrix_room_id", "remote_room_server", "remote_room_channel"} → {}
//	GET  /_matrix/provision/listlinks/{roomId}
//	     → [{"matrix_room_id", "remote_room_server", "remote_room_channel"}]
//	GET  /_matrix/provision/limits → {"count": bridged rooms, "limit": false}
//
// remote_room_server is a network's ID (what querynetworks calls its
// domain) or, when only one network has it, its host.
//
// Callers authenticate as the framework's provisioning API does
// (framework.ProvisioningAuth): the shared secret (provisioning.
// shared_secret) as a Bearer token, naming the user they act for with
// user_id (in the body, as matrix-appservice-irc has it, or the query), or
// the user's own OpenID token. With the secret, the read-only endpoints
// need no user. The user needs the bridge permission "user".
//
// Linking asks for what the link command does (power level 50 in the
// room, the bot invited) and, as matrix-appservice-irc does, the consent
// of an operator of the channel: op_nick gets a private message and has
// a few minutes to answer "yes". Bridge admins link at once. The bot asks,
// in a private message, and the op answers it (events.go hands private
// messages to the bot here); the members of a channel the bot is not in
// come from a NAMES the bot sends.

const (
	provisionPrefix = "/_matrix/provision"
	// linkPower is the power level linking and unlinking need, as for the
	// link command.
	linkPower = 50
	// defaultApprovalTimeout is how long an op has to answer, as
	// matrix-appservice-irc's default requestTimeoutSeconds.
	defaultApprovalTimeout = 5 * time.Minute
	// namesTimeout bounds the wait for a channel's member list.
	namesTimeout = 15 * time.Second
)

// matrix-appservice-irc's errcodes (and matrix-appservice-bridge's
// M_AS_*), with the HTTP status each goes with.
const (
	errcodeBadValue        = "M_AS_BAD_VALUE"          // 400
	errcodeBadOpTarget     = "IRC_BAD_OPERATOR_TARGET" // 400
	errcodeNotEnoughPower  = "IRC_NOT_ENOUGH_POWER"    // 403
	errcodeUnknownNetwork  = "IRC_UNKNOWN_NETWORK"     // 404
	errcodeUnknownChannel  = "IRC_UNKNOWN_CHANNEL"     // 404
	errcodeUnknownRoom     = "IRC_UNKNOWN_ROOM"        // 404
	errcodeDoubleBridge    = "IRC_DOUBLE_BRIDGE"       // 409
	errcodeExistingMapping = "IRC_EXISTING_MAPPING"    // 409
	errcodeExistingRequest = "IRC_EXISTING_REQUEST"    // 409
)

func provError(w http.ResponseWriter, status int, errcode, format string, args ...any) {
	mautrix.RespError{ErrCode: errcode, Err: fmt.Sprintf(format, args...), StatusCode: status}.Write(w)
}

// provisioner serves the API and keeps the link requests waiting for an
// operator.
type provisioner struct {
	c    *core
	auth *framework.ProvisioningAuth
	// approvalTimeout is how long an op has to answer (ns; tests shorten
	// it).
	approvalTimeout atomic.Int64

	mu      sync.Mutex
	pending map[string]*linkRequest // by network ID and folded op nick
}

// linkRequest is a link waiting for an operator's answer.
type linkRequest struct {
	n        *network
	channel  string
	portalID string
	room     id.RoomID
	user     id.UserID
	op       string // as the channel lists it
	key      string // the channel's key, "" for none
	answer   chan bool
}

func pendingKey(n *network, nick string) string { return n.cfg.ID + "\x00" + n.fold(nick) }

// addProvisioning serves the API on the appservice's listener.
func (c *core) addProvisioning() {
	p := &provisioner{
		c:       c,
		auth:    framework.NewProvisioningAuth(c.br.Config.Provisioning.SharedSecret, &c.br.Config.Config),
		pending: map[string]*linkRequest{},
	}
	p.approvalTimeout.Store(int64(defaultApprovalTimeout))
	c.prov = p
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+provisionPrefix+"/querynetworks", p.authed(false, p.queryNetworks))
	mux.HandleFunc("POST "+provisionPrefix+"/querylink", p.authed(false, p.queryLink))
	mux.HandleFunc("POST "+provisionPrefix+"/link", p.authed(true, p.link))
	mux.HandleFunc("POST "+provisionPrefix+"/unlink", p.authed(true, p.unlink))
	mux.HandleFunc("GET "+provisionPrefix+"/listlinks/{roomId}", p.authed(false, p.listLinks))
	mux.HandleFunc("GET "+provisionPrefix+"/limits", p.authed(false, p.limits))
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		mautrix.MUnrecognized.WithMessage("Unknown provisioning endpoint").WithStatus(http.StatusNotFound).Write(w)
	})
	c.br.AS.AS.Router.Handle(provisionPrefix+"/", mux)
}

// provRequest is an authenticated request: its body, and the user it acts
// for (nil: the integration manager itself, by the shared secret).
type provRequest struct {
	*http.Request
	body []byte
	user *bridge.User
}

func (pr *provRequest) admin() bool {
	return pr.user == nil || pr.user.Permission >= bridge.PermissionAdmin
}

// authed authenticates the caller. A user_id (or matrix-appservice-
// bridge's userId) in the body names the user as ?user_id= would. With
// needUser false, the shared secret alone is enough.
func (p *provisioner) authed(needUser bool, next func(http.ResponseWriter, *provRequest)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var body []byte
		if r.Method == http.MethodPost {
			var err error
			if body, err = io.ReadAll(http.MaxBytesReader(w, r.Body, 64<<10)); err != nil {
				mautrix.MTooLarge.WithMessage("Request body too large").Write(w)
				return
			}
		}
		var named struct {
			UserID      string `json:"user_id"`
			UserIDCamel string `json:"userId"`
		}
		_ = json.Unmarshal(body, &named) // a bad body is the handler's to report
		bodyUser := named.UserID
		if bodyUser == "" {
			bodyUser = named.UserIDCamel
		}
		queryUser := r.URL.Query().Get("user_id")
		switch {
		case bodyUser != "" && queryUser != "" && bodyUser != queryUser:
			provError(w, http.StatusBadRequest, errcodeBadValue, "user_id in the query and in the body differ")
			return
		case bodyUser != "" && queryUser == "":
			r = r.Clone(r.Context())
			q := r.URL.Query()
			q.Set("user_id", bodyUser)
			r.URL.RawQuery = q.Encode()
			queryUser = bodyUser
		}
		if !needUser && queryUser == "" && p.isSharedSecret(r) {
			next(w, &provRequest{Request: r, body: body})
			return
		}
		userID, ok := p.auth.Authenticate(w, r)
		if !ok {
			return
		}
		u, err := p.c.br.User(r.Context(), userID)
		if err != nil {
			p.internalError(w, err)
			return
		}
		if u.Permission < bridge.PermissionUser {
			mautrix.MForbidden.WithMessage("You are not allowed to use this bridge").Write(w)
			return
		}
		next(w, &provRequest{Request: r, body: body, user: u})
	}
}

// isSharedSecret reports whether r carries the shared secret (compared by
// ProvisioningAuth's rules: never when there is none or it is "disable").
func (p *provisioner) isSharedSecret(r *http.Request) bool {
	secret := p.auth.SharedSecret
	token, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	return ok && secret != "" && secret != "disable" && subtle.ConstantTimeCompare([]byte(token), []byte(secret)) == 1
}

func (p *provisioner) internalError(w http.ResponseWriter, err error) {
	p.c.log.Error().Err(err).Msg("Provisioning request failed")
	mautrix.MUnknown.WithMessage("Internal error").Write(w)
}

// decode reads the JSON body into v, or answers 400.
func decode(w http.ResponseWriter, body []byte, v any) bool {
	err := json.Unmarshal(body, v)
	var typeErr *json.UnmarshalTypeError
	switch {
	case err == nil:
		return true
	case errors.As(err, &typeErr):
		provError(w, http.StatusBadRequest, errcodeBadValue, "%s must be a %s", typeErr.Field, typeErr.Type)
	default:
		mautrix.MNotJSON.WithMessage("Request body must be a JSON object: " + err.Error()).Write(w)
	}
	return false
}

// target finds the network and checks the channel a request names.
func (p *provisioner) target(w http.ResponseWriter, server, channel string) (*network, bool) {
	if server == "" || channel == "" {
		provError(w, http.StatusBadRequest, errcodeBadValue, "remote_room_server and remote_room_channel are required")
		return nil, false
	}
	nets := p.c.networksNamed(server)
	if len(nets) != 1 {
		provError(w, http.StatusNotFound, errcodeUnknownNetwork, "Server not found: the networks are %s", p.c.networkIDs())
		return nil, false
	}
	n := nets[0]
	if !plausibleChannel(channel) {
		provError(w, http.StatusBadRequest, errcodeBadValue, "remote_room_channel is malformed")
		return nil, false
	}
	if !n.validChannel(channel) {
		provError(w, http.StatusNotFound, errcodeUnknownChannel, "%s is not a channel %s takes", channel, n.cfg.Name)
		return nil, false
	}
	return n, true
}

func validRoomID(room id.RoomID) bool {
	return len(room) > 1 && room[0] == '!' && !strings.ContainsAny(string(room), " /")
}

func (p *provisioner) queryNetworks(w http.ResponseWriter, _ *provRequest) {
	servers := p.c.ThirdPartyProtocols()[thirdPartyProtocol].Instances
	for i := range servers {
		// matrix-appservice-irc's instances name the server by domain,
		// which integration managers send back as remote_room_server.
		servers[i].Fields["domain"] = servers[i].NetworkID
	}
	framework.WriteJSON(w, map[string]any{"servers": servers})
}

func (p *provisioner) queryLink(w http.ResponseWriter, r *provRequest) {
	var req struct {
		Server  string `json:"remote_room_server"`
		Channel string `json:"remote_room_channel"`
		Key     string `json:"key"`
	}
	if !decode(w, r.body, &req) {
		return
	}
	n, ok := p.target(w, req.Server, req.Channel)
	if !ok {
		return
	}
	members, is, err := n.members(r.Context(), req.Channel)
	if err != nil {
		provError(w, http.StatusBadGateway, "M_UNKNOWN", "Could not list the members of %s: %v", req.Channel, err)
		return
	}
	ops := []string{}
	for _, m := range members {
		if isOp(is, m) && !n.isBridge(m.Nick) {
			ops = append(ops, m.Nick)
		}
	}
	framework.WriteJSON(w, map[string]any{"operators": ops})
}

// linkTarget is the room and the channel link and unlink name.
type linkTarget struct {
	RoomID  id.RoomID `json:"matrix_room_id"`
	Server  string    `json:"remote_room_server"`
	Channel string    `json:"remote_room_channel"`
}

func (t *linkTarget) target() *linkTarget { return t }

// decodeLink reads the body of link or unlink into req, a struct that
// embeds linkTarget, checks the room and the channel, and finds the
// network; or answers 400 or 404.
func (p *provisioner) decodeLink(w http.ResponseWriter, body []byte, req interface{ target() *linkTarget }) (*network, bool) {
	if !decode(w, body, req) {
		return nil, false
	}
	t := req.target()
	if !validRoomID(t.RoomID) {
		provError(w, http.StatusBadRequest, errcodeBadValue, "matrix_room_id must be a room ID")
		return nil, false
	}
	return p.target(w, t.Server, t.Channel)
}

func (p *provisioner) link(w http.ResponseWriter, r *provRequest) {
	var req struct {
		linkTarget
		OpNick string `json:"op_nick"`
		Key    string `json:"key"`
	}
	n, ok := p.decodeLink(w, r.body, &req)
	if !ok {
		return
	}
	if req.Key != "" && !validKey(req.Key) {
		provError(w, http.StatusBadRequest, errcodeBadValue, "key must have no spaces, commas or line breaks, nor start with ':'")
		return
	}
	admin := r.admin()
	if !admin && req.OpNick == "" {
		provError(w, http.StatusBadRequest, errcodeBadValue, "op_nick is required")
		return
	}
	ctx, c, u := r.Context(), p.c, r.user
	// The bot joins first (it must be invited), so it can read the power
	// levels, as for the link command.
	if err := c.br.AS.Bot().EnsureJoined(ctx, req.RoomID); err != nil {
		mautrix.MForbidden.WithMessage(fmt.Sprintf("The bridge bot %s cannot join the room: invite it first", c.cfg.BotID())).Write(w)
		return
	}
	if !admin && !p.checkPower(w, r, req.RoomID) {
		return
	}
	portalID := n.portalID(req.Channel)
	if !p.checkFree(w, r, req.RoomID, n, portalID, req.Channel) {
		return
	}
	if admin {
		by := c.cfg.BotID()
		if u != nil {
			by = u.ID
		}
		if err := p.doLink(ctx, n, req.Channel, portalID, req.RoomID, by, "", req.Key); err != nil {
			p.linkError(w, err)
			return
		}
		framework.WriteJSON(w, map[string]any{})
		return
	}

	if perr := p.requestApproval(ctx, n, req.Channel, portalID, req.RoomID, u.ID, req.OpNick, req.Key); perr != nil {
		provError(w, perr.status, perr.errcode, "%s", perr.msg)
		return
	}
	framework.WriteJSON(w, map[string]any{})
}

// approvalError is why a link request could not be sent to an operator:
// an HTTP status and errcode for the API, a message for both the API and
// the link command.
type approvalError struct {
	status  int
	errcode string
	msg     string
}

func (e *approvalError) Error() string { return e.msg }

// requestApproval asks opNick, an operator of channel, to approve linking
// room to it for user (a private message from the bot), tells the room,
// and links once they answer yes (in the background), with the channel's
// key when it has one.
func (p *provisioner) requestApproval(ctx context.Context, n *network, channel, portalID string, room id.RoomID, user id.UserID, opNick, key string) *approvalError {
	members, is, err := n.members(ctx, channel)
	if err != nil {
		return &approvalError{http.StatusBadGateway, "M_UNKNOWN", fmt.Sprintf("Could not list the members of %s: %v", channel, err)}
	}
	var op *ircx.Member
	for i := range members {
		if n.equal(members[i].Nick, opNick) {
			op = &members[i]
		}
	}
	switch {
	case op == nil:
		return &approvalError{http.StatusBadRequest, errcodeBadOpTarget, fmt.Sprintf("Provided user is not in channel %s.", channel)}
	case !isOp(is, *op) || n.isBridge(op.Nick):
		return &approvalError{http.StatusBadRequest, errcodeBadOpTarget, fmt.Sprintf("Provided user is not an op of %s.", channel)}
	}
	lr := &linkRequest{n: n, channel: channel, portalID: portalID, room: room, user: user, op: op.Nick, key: key, answer: make(chan bool, 1)}
	if errcode, msg := p.register(lr); errcode != "" {
		return &approvalError{http.StatusConflict, errcode, msg}
	}
	seconds := int(time.Duration(p.approvalTimeout.Load()).Seconds())
	err = n.bot.SendText(ctx, "PRIVMSG", op.Nick, fmt.Sprintf(
		"%s has requested to bridge %s with %s on this IRC network. Respond with 'yes' or 'y' to allow, "+
			"or simply ignore this message to disallow. You have %d seconds from when this message was sent.",
		user, p.roomDescription(ctx, room), channel, seconds))
	if err != nil {
		p.take(lr)
		return &approvalError{http.StatusBadGateway, "M_UNKNOWN", fmt.Sprintf("Could not ask %s on %s: %v", op.Nick, n.cfg.Name, err)}
	}
	p.tellRoom(ctx, lr.room, fmt.Sprintf("%s asked %s, an operator of %s on %s, to approve bridging this room to the channel. They have %d seconds to answer on IRC.",
		user, op.Nick, channel, n.cfg.Name, seconds))
	p.c.bg(func(ctx context.Context) { p.await(ctx, lr) })
	return nil
}

// checkPower answers 403 unless the user has linkPower in the room.
func (p *provisioner) checkPower(w http.ResponseWriter, r *provRequest, room id.RoomID) bool {
	level, err := p.c.br.Bot.PowerLevel(r.Context(), room, r.user.ID)
	if err != nil {
		p.internalError(w, err)
		return false
	}
	if level < linkPower {
		mautrix.RespError{ErrCode: errcodeNotEnoughPower, StatusCode: http.StatusForbidden,
			Err:       fmt.Sprintf("%s does not have enough power in the room: %d, %d needed", r.user.ID, level, linkPower),
			ExtraData: map[string]any{"requiredPower": linkPower}}.Write(w)
		return false
	}
	return true
}

// checkFree answers 409 when the room or the channel is bridged already
// (a portal has one room, a room one portal).
func (p *provisioner) checkFree(w http.ResponseWriter, r *provRequest, room id.RoomID, n *network, portalID, channel string) bool {
	existing, err := p.c.br.PortalByRoom(r.Context(), room)
	if err != nil {
		p.internalError(w, err)
		return false
	}
	switch {
	case existing != nil && existing.ID == portalID:
		provError(w, http.StatusConflict, errcodeExistingMapping, "Room mapping already exists")
		return false
	case existing != nil:
		provError(w, http.StatusConflict, errcodeDoubleBridge, "The room is bridged to another channel already")
		return false
	}
	portals, err := n.portals(r.Context())
	if err != nil {
		p.internalError(w, err)
		return false
	}
	for _, pt := range portals {
		if pt.ID == portalID {
			provError(w, http.StatusConflict, errcodeExistingMapping, "%s is bridged to another room already", channel)
			return false
		}
	}
	return true
}

// linkError answers for a link that failed.
func (p *provisioner) linkError(w http.ResponseWriter, err error) {
	switch {
	case errors.Is(err, bridge.ErrUnknownChannel):
		provError(w, http.StatusNotFound, errcodeUnknownChannel, "No such channel")
	case errors.Is(err, bridge.ErrAlreadyLinked):
		provError(w, http.StatusConflict, errcodeExistingMapping, "%v", err)
	default:
		p.internalError(w, err)
	}
}

// doLink links the room as the link command does, and tells the room.
func (p *provisioner) doLink(ctx context.Context, n *network, channel, portalID string, room id.RoomID, by id.UserID, approvedBy, key string) error {
	_, warning, err := n.link(ctx, room, channel, portalID, by, key)
	if err != nil {
		return err
	}
	msg := fmt.Sprintf("This room is now bridged to %s on %s.", channel, n.cfg.Name)
	if approvedBy != "" {
		msg = fmt.Sprintf("This room is now bridged to %s on %s, as %s approved.", channel, n.cfg.Name, approvedBy)
	}
	if warning != "" {
		msg += " " + warning
	}
	p.tellRoom(ctx, room, msg)
	return nil
}

func (p *provisioner) tellRoom(ctx context.Context, room id.RoomID, markdown string) {
	if _, err := p.c.br.Bot.Send(ctx, room, markdown); err != nil {
		p.c.log.Warn().Err(err).Stringer("room_id", room).Msg("Failed to tell a room about a link request")
	}
}

// roomDescription names a room for an op: its name and a matrix.to link.
func (p *provisioner) roomDescription(ctx context.Context, room id.RoomID) string {
	bot := p.c.br.AS.Bot()
	link := "https://matrix.to/#/" + string(room)
	var alias event.CanonicalAliasEventContent
	if bot.StateEvent(ctx, room, event.StateCanonicalAlias, "", &alias) == nil && alias.Alias != "" {
		link = "https://matrix.to/#/" + string(alias.Alias)
	}
	var name event.RoomNameEventContent
	if bot.StateEvent(ctx, room, event.StateRoomName, "", &name) == nil && name.Name != "" {
		return fmt.Sprintf("'%s' (%s)", name.Name, link)
	}
	return link
}

// register records a link request, or says why there is one already.
func (p *provisioner) register(lr *linkRequest) (errcode, msg string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if other := p.pending[pendingKey(lr.n, lr.op)]; other != nil {
		return errcodeExistingRequest, fmt.Sprintf("Bridging request already sent to %s on %s from %s", lr.op, lr.n.cfg.ID, other.user)
	}
	for _, other := range p.pending {
		if other.room == lr.room {
			return errcodeExistingRequest, fmt.Sprintf("A request to bridge this room to %s is waiting for %s", other.channel, other.op)
		}
	}
	p.pending[pendingKey(lr.n, lr.op)] = lr
	return "", ""
}

// take removes a request still waiting; false when it was answered (or
// timed out) already.
func (p *provisioner) take(lr *linkRequest) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	key := pendingKey(lr.n, lr.op)
	if p.pending[key] != lr {
		return false
	}
	delete(p.pending, key)
	return true
}

// await waits for the op's answer, then links (or tells the room why
// not).
func (p *provisioner) await(ctx context.Context, lr *linkRequest) {
	timer := time.NewTimer(time.Duration(p.approvalTimeout.Load()))
	defer timer.Stop()
	var yes bool
	select {
	case yes = <-lr.answer:
	case <-ctx.Done():
		p.take(lr)
		return
	case <-timer.C:
		if p.take(lr) {
			p.tellRoom(ctx, lr.room, fmt.Sprintf("%s did not approve bridging this room to %s on %s in time: it is not bridged.", lr.op, lr.channel, lr.n.cfg.Name))
			return
		}
		yes = <-lr.answer // answered as the time ran out
	}
	if !yes {
		p.tellRoom(ctx, lr.room, fmt.Sprintf("%s refused to bridge this room to %s on %s.", lr.op, lr.channel, lr.n.cfg.Name))
		return
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	// Still an op? The answer may come minutes after the question.
	members, is, err := lr.n.members(ctx, lr.channel)
	stillOp := false
	for _, m := range members {
		stillOp = stillOp || (lr.n.equal(m.Nick, lr.op) && isOp(is, m))
	}
	if err != nil || !stillOp {
		p.tellRoom(ctx, lr.room, fmt.Sprintf("%s answered, but is no longer an operator of %s on %s: the room is not bridged.", lr.op, lr.channel, lr.n.cfg.Name))
		lr.n.say(ctx, lr.op, fmt.Sprintf("You are no longer an operator of %s: the room is not bridged.", lr.channel))
		return
	}
	if err := p.doLink(ctx, lr.n, lr.channel, lr.portalID, lr.room, lr.user, lr.op, lr.key); err != nil {
		p.c.log.Warn().Err(err).Str("portal", lr.portalID).Stringer("room_id", lr.room).Msg("Approved link failed")
		p.tellRoom(ctx, lr.room, fmt.Sprintf("Bridging this room to %s on %s failed: %v", lr.channel, lr.n.cfg.Name, err))
		lr.n.say(ctx, lr.op, fmt.Sprintf("Bridging %s failed: %v", lr.channel, err))
	}
}

// onPrivateMessage handles a private message to the bot: the answer of an
// op to a link request.
func (p *provisioner) onPrivateMessage(ctx context.Context, n *network, from, text string) {
	text = strings.ToLower(strings.TrimSpace(text))
	if strings.HasPrefix(text, "\x01") {
		return // CTCP
	}
	p.mu.Lock()
	lr := p.pending[pendingKey(n, from)]
	p.mu.Unlock()
	var yes bool
	switch {
	case lr == nil:
		n.say(ctx, from, "The bot was not expecting a message from you. You might have already replied to a request.")
		return
	case text == "yes" || text == "y":
		yes = true
	case text == "no" || text == "n":
	default:
		n.say(ctx, from, `Please respond with "yes" or "y".`)
		return
	}
	if !p.take(lr) {
		return // timed out meanwhile
	}
	lr.answer <- yes
	if yes {
		n.say(ctx, from, "Thanks for your response, bridge request authorised.")
	} else {
		n.say(ctx, from, "Thanks for your response: the room is not bridged.")
	}
}

func (p *provisioner) unlink(w http.ResponseWriter, r *provRequest) {
	var req linkTarget
	n, ok := p.decodeLink(w, r.body, &req)
	if !ok {
		return
	}
	ctx, c := r.Context(), p.c
	pt, err := c.br.PortalByRoom(ctx, req.RoomID)
	if err != nil {
		p.internalError(w, err)
		return
	}
	if pt == nil || pt.ID != n.portalID(req.Channel) {
		provError(w, http.StatusNotFound, errcodeUnknownRoom, "Provisioned room mapping does not exist")
		return
	}
	if !r.admin() {
		// A moderator in the room, as for the unlink command.
		if !c.br.AS.StateStore.IsInRoom(ctx, req.RoomID, r.user.ID) {
			provError(w, http.StatusForbidden, errcodeNotEnoughPower, "%s is not in the room", r.user.ID)
			return
		}
		if !p.checkPower(w, r, req.RoomID) {
			return
		}
	}
	by := "the bridge"
	if r.user != nil {
		by = string(r.user.ID)
	}
	// Told first: a linked room's bot leaves it.
	p.tellRoom(ctx, req.RoomID, fmt.Sprintf("%s unlinked this room from %s on %s.", by, req.Channel, n.cfg.Name))
	if err := c.br.Unlink(ctx, pt); err != nil {
		if errors.Is(err, bridge.ErrNotLinked) {
			provError(w, http.StatusNotFound, errcodeUnknownRoom, "Provisioned room mapping does not exist")
			return
		}
		p.internalError(w, err)
		return
	}
	framework.WriteJSON(w, map[string]any{})
}

// provLink is a listlinks entry.
type provLink struct {
	RoomID  id.RoomID `json:"matrix_room_id"`
	Channel string    `json:"remote_room_channel"`
	Server  string    `json:"remote_room_server"`
}

func (p *provisioner) listLinks(w http.ResponseWriter, r *provRequest) {
	room := id.RoomID(r.PathValue("roomId"))
	if !validRoomID(room) {
		provError(w, http.StatusBadRequest, errcodeBadValue, "roomId must be a room ID")
		return
	}
	ctx := r.Context()
	links := []provLink{}
	pt, err := p.c.br.PortalByRoom(ctx, room)
	if err != nil {
		p.internalError(w, err)
		return
	}
	// A user sees the links of rooms they are in.
	if pt != nil && (r.admin() || p.c.br.AS.StateStore.IsInRoom(ctx, room, r.user.ID)) {
		if n, channel, _, err := p.c.route(pt.ID); err == nil && channel != "" {
			if st, ok := n.bot.Channel(channel); ok {
				channel = st.Name
			}
			links = append(links, provLink{RoomID: room, Channel: channel, Server: n.cfg.ID})
		}
	}
	framework.WriteJSON(w, links)
}

func (p *provisioner) limits(w http.ResponseWriter, r *provRequest) {
	portals, err := p.c.br.Portals(r.Context())
	if err != nil {
		p.internalError(w, err)
		return
	}
	framework.WriteJSON(w, map[string]any{"count": len(portals), "limit": false})
}

// ---- channel members ----

// members lists a channel's members: from the bot's state when it is in
// the channel, else asked with NAMES. is is the server's ISUPPORT, to
// read the members' modes.
func (n *network) members(ctx context.Context, channel string) ([]ircx.Member, *ircx.ISupport, error) {
	is := n.bot.ISupport()
	if st, ok := n.bot.Channel(channel); ok {
		return st.Members, is, nil
	}
	ctx, cancel := context.WithTimeout(ctx, namesTimeout)
	defer cancel()
	reply, err := n.ask(ctx, &irc.Message{Command: "NAMES", Params: []string{channel}})
	if err != nil {
		return nil, nil, err
	}
	var members []ircx.Member
	for _, m := range reply {
		if m.Command != "353" { // RPL_NAMREPLY: me [=*@] #chan :[prefixes]nick[!user@host] …
			continue
		}
		for _, word := range strings.Fields(m.Trailing()) {
			nick := strings.TrimLeft(word, is.PrefixChars)
			var modes []byte
			for i := range len(word) - len(nick) {
				if mode := is.ModeFor(word[i]); mode != 0 {
					modes = append(modes, mode)
				}
			}
			if nick, _, _ = strings.Cut(nick, "!"); nick != "" {
				members = append(members, ircx.Member{Nick: nick, Modes: string(modes)})
			}
		}
	}
	return members, is, nil
}

// isOp reports whether m is a channel operator: op or a higher prefix
// mode (the first of PREFIX when the server has no "o").
func isOp(is *ircx.ISupport, m ircx.Member) bool {
	opRank := strings.IndexByte(is.PrefixModes, 'o')
	for i := 0; i < len(m.Modes); i++ {
		r := strings.IndexByte(is.PrefixModes, m.Modes[i])
		if r >= 0 && (r <= opRank || (opRank < 0 && r == 0)) {
			return true
		}
	}
	return false
}

// say answers an op in a private message from the bot.
//
// As a NOTICE: these are automatic replies, and another bot that answers
// every PRIVMSG must not get into an endless exchange with ours (RFC 1459:
// automatic replies never answer a NOTICE).
func (n *network) say(ctx context.Context, nick, text string) {
	if err := n.bot.SendText(ctx, "NOTICE", nick, text); err != nil {
		n.log.Info().Err(err).Str("nick", nick).Msg("Could not answer an operator about a link request")
	}
}
