package push

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"time"

	"github.com/tidwall/gjson"
	"github.com/tidwall/sjson"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
	"maunium.net/go/mautrix/pushrules"
	"maunium.net/go/mautrix/pushrules/pushgateway"

	"github.com/switchboard-im/switchboard/homeserver/storage"
	"github.com/switchboard-im/switchboard/internal/netguard"
)

// RequestTimeout bounds one POST to a push gateway.
const RequestTimeout = 30 * time.Second

// AllowedNetworksKey is the setting that lets pushers reach non-public
// addresses (config push.allowed_networks).
const AllowedNetworksKey = "push.allowed_networks"

// maxGatewayRedirects bounds the redirects a POST to a gateway follows.
const maxGatewayRedirects = 5

// Pusher URLs are chosen by users, so gateways are reached only through a
// netguard client: loopback, private and other non-public addresses are
// refused unless push.allowed_networks lists them. POST /pushers/set
// refuses a URL whose host is such an address literal (Guard); a host
// name is checked on the addresses it resolves to when a notification is
// sent, and a refused address fails that notification for good (logged at
// warn, not retried): the pusher stays, and each later notification is
// tried once.

// Guard returns the guard of pusher URLs: public addresses, and those in
// allowed (push.allowed_networks).
func Guard(allowed []string) (*netguard.Guard, error) {
	return netguard.New(AllowedNetworksKey, allowed)
}

// NewGatewayClient returns the HTTP client that delivers to push gateways:
// it connects only where Guard(allowed) allows.
func NewGatewayClient(allowed []string) (*http.Client, error) {
	g, err := Guard(allowed)
	if err != nil {
		return nil, err
	}
	return g.Client(netguard.ClientOptions{Timeout: RequestTimeout, MaxRedirects: maxGatewayRedirects}), nil
}

// NotifyPath is the path every HTTP pusher URL must have (spec: PusherData).
const NotifyPath = "/_matrix/push/v1/notify"

// maxGatewayResponse bounds how much of a gateway's answer is read.
const maxGatewayResponse = 1 << 20

type outcome int

const (
	outcomeSent     outcome = iota
	outcomeRejected         // the gateway rejected the pushkey: delete the pusher
	outcomeRetry            // network error, 5xx, 408, 429: try again later
	outcomeFailed           // another 4xx: this notification will not go
)

// notification builds the /notify request body for one pusher (spec: Push
// Gateway API). With data.format "event_id_only" only the event and room
// IDs, counts, priority and devices are sent; otherwise the event's type,
// sender, content, the sender's display name and the room's name and
// alias too.
func (s *Service) notification(ctx context.Context, p *storage.Pusher, n storage.Notification, e *storage.Event) (*pushgateway.ReqPush, error) {
	res := newResult("", "", n.Actions)
	unread, calls, err := s.db.UnreadNotificationCounts(ctx, p.UserID)
	if err != nil {
		return nil, err
	}
	device := gatewayDevice(p)
	for name, v := range res.Tweaks {
		device.Tweaks[pushrules.PushActionTweak(name)] = v
	}
	// As Synapse: encrypted events (their content unknown here), and
	// those that highlight or ring, are urgent.
	prio := pushgateway.PushPriorityLow
	if e.Type == event.EventEncrypted.Type || res.Tweaks["highlight"] == true || res.Tweaks["sound"] != nil {
		prio = pushgateway.PushPriorityHigh
	}
	note := &pushgateway.PushNotification{
		Devices:  []pushgateway.Device{device},
		Counts:   &pushgateway.NotificationCounts{Unread: unread, MissedCalls: calls},
		EventID:  e.EventID,
		RoomID:   e.RoomID,
		Priority: prio,
	}
	if device.Data.Format() != pushgateway.PushFormatEventIDOnly {
		note.Type, note.Sender = e.Type, e.Sender
		if c := gjson.GetBytes(e.PDU, "content"); c.IsObject() {
			note.Content = json.RawMessage(c.Raw)
		}
		if e.Type == event.StateMember.Type && e.StateKey != nil {
			note.UserIsTarget = id.UserID(*e.StateKey) == p.UserID
		}
		state, _, err := s.rooms.State(ctx, e.RoomID)
		if err != nil {
			return nil, err
		}
		if m := state[storage.StateKey{Type: event.StateMember.Type, StateKey: string(e.Sender)}]; m != nil {
			note.SenderDisplayName = gjson.GetBytes(m.Content, "displayname").Str
		}
		if r := state[storage.StateKey{Type: event.StateRoomName.Type}]; r != nil {
			note.RoomName = gjson.GetBytes(r.Content, "name").Str
		}
		if a := state[storage.StateKey{Type: event.StateCanonicalAlias.Type}]; a != nil {
			note.RoomAlias = id.RoomAlias(gjson.GetBytes(a.Content, "alias").Str)
		}
	}
	return &pushgateway.ReqPush{Notification: note}, nil
}

// gatewayDevice is the pusher as a notification's device: its pushkey and
// its data but the URL (format included), without tweaks.
func gatewayDevice(p *storage.Pusher) pushgateway.Device {
	data := mautrix.PusherData{}
	dec := json.NewDecoder(bytes.NewReader(p.Data))
	dec.UseNumber()
	_ = dec.Decode(&data)
	delete(data, "url")
	return pushgateway.Device{
		BaseDevice: pushgateway.BaseDevice{AppID: pushgateway.PusherAppID(p.AppID), PushKey: p.PushKey, PushKeyTS: p.PushKeyTS, Data: data},
		Tweaks:     map[pushrules.PushActionTweak]any{},
	}
}

// post sends a /notify request and classifies the answer.
func (s *Service) post(ctx context.Context, url string, req *pushgateway.ReqPush, pushKey string) (outcome, error) {
	body, err := json.Marshal(req)
	if err == nil && req.Notification.Counts != nil {
		// mautrix leaves a zero count out, but an unread count of 0 is
		// what clears a phone's badge (Sygnal leaves the badge as it is
		// when there is none).
		body, err = sjson.SetBytes(body, "notification.counts.unread", req.Notification.Counts.Unread)
	}
	if err != nil {
		return outcomeFailed, fmt.Errorf("encode notification: %w", err)
	}
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return outcomeFailed, fmt.Errorf("bad pusher URL: %w", err)
	}
	hreq.Header.Set("Content-Type", "application/json")
	hreq.Header.Set("User-Agent", "Switchboard push")
	resp, err := s.client.Do(hreq)
	if err != nil {
		var blocked *netguard.BlockedError
		if errors.As(err, &blocked) {
			return outcomeFailed, err // the address stays refused: no retry
		}
		return outcomeRetry, err
	}
	defer resp.Body.Close()
	answer, err := io.ReadAll(io.LimitReader(resp.Body, maxGatewayResponse))
	switch {
	case resp.StatusCode >= 500, resp.StatusCode == http.StatusTooManyRequests, resp.StatusCode == http.StatusRequestTimeout:
		return outcomeRetry, fmt.Errorf("push gateway answered %d", resp.StatusCode)
	case resp.StatusCode < 200 || resp.StatusCode >= 300:
		return outcomeFailed, fmt.Errorf("push gateway answered %d", resp.StatusCode)
	case err != nil:
		return outcomeRetry, fmt.Errorf("read push gateway answer: %w", err)
	}
	var parsed pushgateway.RespPush
	if json.Unmarshal(answer, &parsed) == nil && slices.Contains(parsed.Rejected, pushKey) {
		return outcomeRejected, nil
	}
	return outcomeSent, nil
}
