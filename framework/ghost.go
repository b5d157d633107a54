package framework

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"hash/fnv"

	"maunium.net/go/mautrix/appservice"
	"maunium.net/go/mautrix/id"
)

// EnsureGhost returns the intent of one of the appservice's ghosts,
// registered (once: mautrix's state store remembers it) and with the given
// display name and avatar (empty: left unset). The profile is written to
// the homeserver only when it differs from what was last set, so calling
// this for every remote message costs two indexed reads (registration and
// profile).
func (a *Appservice) EnsureGhost(ctx context.Context, userID id.UserID, displayName string, avatar id.ContentURI) (*appservice.IntentAPI, error) {
	if !a.Config.IsGhost(userID) {
		return nil, fmt.Errorf("%s is not in this appservice's ghost namespace", userID)
	}
	// One ghost at a time: mautrix's EnsureRegistered is not safe to run
	// twice at once for a user (two portals showing a new user together).
	h := fnv.New32a()
	h.Write([]byte(userID))
	lock := &a.ghostLocks[h.Sum32()%uint32(len(a.ghostLocks))]
	lock.Lock()
	defer lock.Unlock()
	intent := a.Intent(userID)
	if err := intent.EnsureRegistered(ctx); err != nil {
		return nil, fmt.Errorf("register ghost %s: %w", userID, err)
	}
	if err := a.setProfile(ctx, intent, displayName, avatar); err != nil {
		return nil, err
	}
	return intent, nil
}

// setProfile sets the display name and avatar of one of the appservice's
// users where they differ from the last ones set (framework_ghosts).
func (a *Appservice) setProfile(ctx context.Context, intent *appservice.IntentAPI, displayName string, avatar id.ContentURI) error {
	var oldName, oldAvatar string
	err := a.DB.QueryRow(ctx, `SELECT displayname, avatar_url FROM framework_ghosts WHERE user_id = $1`, intent.UserID).
		Scan(&oldName, &oldAvatar)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("read profile of %s: %w", intent.UserID, err)
	}
	newAvatar := ""
	if !avatar.IsEmpty() {
		newAvatar = avatar.String()
	}
	nameChanged := displayName != "" && displayName != oldName
	avatarChanged := newAvatar != "" && newAvatar != oldAvatar
	if !nameChanged && !avatarChanged {
		return nil // the usual case: nothing to write anywhere
	}
	if nameChanged {
		if err := intent.SetDisplayName(ctx, displayName); err != nil {
			return fmt.Errorf("set display name of %s: %w", intent.UserID, err)
		}
		oldName = displayName
	}
	if avatarChanged {
		if err := intent.SetAvatarURL(ctx, avatar); err != nil {
			return fmt.Errorf("set avatar of %s: %w", intent.UserID, err)
		}
		oldAvatar = newAvatar
	}
	_, err = a.DB.Exec(ctx, `INSERT INTO framework_ghosts (user_id, displayname, avatar_url) VALUES ($1, $2, $3)
		ON CONFLICT (user_id) DO UPDATE SET displayname = excluded.displayname, avatar_url = excluded.avatar_url`,
		intent.UserID, oldName, oldAvatar)
	if err != nil {
		return fmt.Errorf("record profile of %s: %w", intent.UserID, err)
	}
	return nil
}
