package bridge

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"maunium.net/go/mautrix/id"
)

// User is a Matrix user of the bridge.
type User struct {
	ID         id.UserID
	Permission Permission

	bridge *Bridge
	mu     sync.Mutex
	// managementRoom is the user's direct chat with the bridge bot.
	managementRoom id.RoomID
	logins         []*Login
}

// Login is a user's login to the remote network (puppeting). Data is the
// network's: credentials, session; it stays in the bridge's database.
type Login struct {
	UserID     id.UserID
	ID         string // the remote account's ID
	RemoteName string // how the remote network names the account
	Data       json.RawMessage
}

// User returns a Matrix user of the bridge (loaded once, then cached).
func (b *Bridge) User(ctx context.Context, userID id.UserID) (*User, error) {
	b.mu.Lock()
	u := b.users[userID]
	b.mu.Unlock()
	if u != nil {
		return u, nil
	}
	u = &User{ID: userID, Permission: b.Config.PermissionOf(userID), bridge: b}
	err := b.DB.QueryRow(ctx, `SELECT management_room FROM bridge_users WHERE user_id = $1`, userID).Scan(&u.managementRoom)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("user %s: %w", userID, err)
	}
	rows, err := b.DB.Query(ctx, `SELECT login_id, remote_name, data FROM bridge_logins WHERE user_id = $1 ORDER BY created_at`, userID)
	if err != nil {
		return nil, fmt.Errorf("logins of %s: %w", userID, err)
	}
	defer rows.Close()
	for rows.Next() {
		l := &Login{UserID: userID}
		var data string
		if err := rows.Scan(&l.ID, &l.RemoteName, &data); err != nil {
			return nil, fmt.Errorf("logins of %s: %w", userID, err)
		}
		l.Data = json.RawMessage(data)
		u.logins = append(u.logins, l)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("logins of %s: %w", userID, err)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if cached := b.users[userID]; cached != nil {
		return cached, nil
	}
	b.users[userID] = u
	return u, nil
}

// Login is the user's first remote login, or nil.
func (u *User) Login() *Login {
	u.mu.Lock()
	defer u.mu.Unlock()
	if len(u.logins) == 0 {
		return nil
	}
	return u.logins[0]
}

// Logins lists the user's remote logins.
func (u *User) Logins() []*Login {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]*Login(nil), u.logins...)
}

// ManagementRoom is the user's direct chat with the bridge bot ("" if
// none yet).
func (u *User) ManagementRoom() id.RoomID {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.managementRoom
}

// SaveLogin stores (or replaces) a remote login of the user.
func (u *User) SaveLogin(ctx context.Context, l *Login) error {
	if l.ID == "" {
		return errors.New("login without an ID")
	}
	l.UserID = u.ID
	if len(l.Data) == 0 {
		l.Data = json.RawMessage("{}")
	}
	_, err := u.bridge.DB.Exec(ctx, `INSERT INTO bridge_logins (user_id, login_id, remote_name, data, created_at) VALUES ($1, $2, $3, $4, $5)
		ON CONFLICT (user_id, login_id) DO UPDATE SET remote_name = excluded.remote_name, data = excluded.data`,
		u.ID, l.ID, l.RemoteName, string(l.Data), time.Now().UnixMilli())
	if err != nil {
		return fmt.Errorf("save login of %s: %w", u.ID, err)
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	for i, old := range u.logins {
		if old.ID == l.ID {
			u.logins[i] = l
			return nil
		}
	}
	u.logins = append(u.logins, l)
	return nil
}

// DeleteLogin forgets a remote login of the user.
func (u *User) DeleteLogin(ctx context.Context, loginID string) error {
	if _, err := u.bridge.DB.Exec(ctx, `DELETE FROM bridge_logins WHERE user_id = $1 AND login_id = $2`, u.ID, loginID); err != nil {
		return fmt.Errorf("delete login of %s: %w", u.ID, err)
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	for i, l := range u.logins {
		if l.ID == loginID {
			u.logins = append(u.logins[:i], u.logins[i+1:]...)
			break
		}
	}
	return nil
}

// setManagementRoom records the user's direct chat with the bot.
func (u *User) setManagementRoom(ctx context.Context, roomID id.RoomID) error {
	_, err := u.bridge.DB.Exec(ctx, `INSERT INTO bridge_users (user_id, management_room) VALUES ($1, $2)
		ON CONFLICT (user_id) DO UPDATE SET management_room = excluded.management_room`, u.ID, roomID)
	if err != nil {
		return fmt.Errorf("record management room of %s: %w", u.ID, err)
	}
	u.mu.Lock()
	u.managementRoom = roomID
	u.mu.Unlock()
	return nil
}

// Notify sends the user a notice in their management room (if they have
// one): what the bridge has to tell them outside any portal, such as a
// login that stopped working.
func (b *Bridge) Notify(ctx context.Context, u *User, markdown string) error {
	room := u.ManagementRoom()
	if room == "" {
		return nil
	}
	_, err := b.Bot.Send(ctx, room, markdown)
	return err
}
