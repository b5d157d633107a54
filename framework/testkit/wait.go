package testkit

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// pollInterval is the pause between two looks at the room. The helpers
// poll rather than follow /sync: each look reads what the user can see
// now, so there is no sync position to get wrong and nothing can slip
// between "sent" and "started waiting". 50ms keeps a passing test fast
// and the load on the homeserver light.
const pollInterval = 50 * time.Millisecond

// pageSize is how many events one /messages request asks for (the
// homeserver's maximum).
const pageSize = 1000

// WaitForEvent waits until cli's user can see an event in the room's
// timeline for which match returns true, and returns the newest such event,
// its content parsed (evt.Content.AsMessage() and the like work). It fails
// the test after timeout, listing the newest events the user could see.
//
// The whole visible timeline counts, newest first, so an event that
// arrived before the call is found too: a test sends, then waits, without
// a race. To wait for a second message like an earlier one, match on what
// sets it apart (its sender, a unique body, a relation).
//
// match sees every timeline event, state events included; HasBody is the
// common case.
func WaitForEvent(t testing.TB, cli *mautrix.Client, roomID id.RoomID, match func(*event.Event) bool, timeout time.Duration) *event.Event {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var lastErr error
	var newest []*event.Event
	for {
		found, seen, err := findEvent(ctx, cli, roomID, match)
		if found != nil {
			return found
		}
		if err != nil && ctx.Err() == nil {
			lastErr = err
		} else if err == nil {
			newest = seen
		}
		if !sleep(ctx, pollInterval) {
			break
		}
	}
	msg := fmt.Sprintf("testkit: %s saw no matching event in %s within %v", cli.UserID, roomID, timeout)
	if lastErr != nil {
		msg += fmt.Sprintf("; last error: %v", lastErr)
	}
	t.Fatalf("%s; newest visible events:%s", msg, describe(newest))
	return nil
}

// findEvent pages backwards through the room's visible timeline until an
// event matches. It also returns the newest events, for failure messages.
func findEvent(ctx context.Context, cli *mautrix.Client, roomID id.RoomID, match func(*event.Event) bool) (found *event.Event, newest []*event.Event, err error) {
	from := ""
	for {
		resp, err := cli.Messages(ctx, roomID, from, "", mautrix.DirectionBackward, nil, pageSize)
		if err != nil {
			return nil, newest, err
		}
		for _, evt := range resp.Chunk {
			if evt.StateKey != nil {
				evt.Type.Class = event.StateEventType
			} else if evt.Type.Class == event.UnknownEventType {
				evt.Type.Class = event.MessageEventType
			}
			// Unknown types stay unparsed; match still sees the raw content.
			_ = evt.Content.ParseRaw(evt.Type)
			if evt.RoomID == "" {
				evt.RoomID = roomID
			}
			if len(newest) < 10 {
				newest = append(newest, evt)
			}
			if match(evt) {
				return evt, newest, nil
			}
		}
		if resp.End == "" || len(resp.Chunk) == 0 {
			return nil, newest, nil
		}
		from = resp.End
	}
}

// HasBody matches an m.room.message whose body is body.
func HasBody(body string) func(*event.Event) bool {
	return func(evt *event.Event) bool {
		msg, ok := evt.Content.Parsed.(*event.MessageEventContent)
		return evt.Type == event.EventMessage && ok && msg.Body == body
	}
}

// describe lists events one a line, for failure messages.
func describe(events []*event.Event) string {
	if len(events) == 0 {
		return " (none)"
	}
	var b strings.Builder
	for _, evt := range events {
		fmt.Fprintf(&b, "\n\t%s %s from %s", evt.ID, evt.Type.Type, evt.Sender)
		switch c := evt.Content.Parsed.(type) {
		case *event.MessageEventContent:
			fmt.Fprintf(&b, ": %q", c.Body)
		case *event.MemberEventContent:
			fmt.Fprintf(&b, ": %s %s", c.Membership, evt.GetStateKey())
		}
	}
	return b.String()
}

// WaitForJoin waits until cli's user sees userID joined to the room (in
// the room's current state), and fails the test after timeout. cli's user
// must be able to read the room's state: be in it, or the room be
// world-readable.
func WaitForJoin(t testing.TB, cli *mautrix.Client, roomID id.RoomID, userID id.UserID, timeout time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	last := "no membership"
	for {
		var member event.MemberEventContent
		err := cli.StateEvent(ctx, roomID, event.StateMember, string(userID), &member)
		switch {
		case err == nil && member.Membership == event.MembershipJoin:
			return
		case err == nil:
			last = "membership " + string(member.Membership)
		case errors.Is(err, mautrix.MNotFound):
			last = "no membership"
		case ctx.Err() == nil:
			last = "error: " + err.Error()
		}
		if !sleep(ctx, pollInterval) {
			break
		}
	}
	t.Fatalf("testkit: %s did not see %s join %s within %v (last seen: %s)", cli.UserID, userID, roomID, timeout, last)
}

// sleep waits for d and reports false if ctx ended first.
func sleep(ctx context.Context, d time.Duration) bool {
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-timer.C:
		return true
	case <-ctx.Done():
		return false
	}
}
