package clientapi_test

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/crypto/backup"
	"maunium.net/go/mautrix/id"

	"github.com/switchboard-im/switchboard/homeserver/hstest"
	"github.com/switchboard-im/switchboard/internal/testdb"
)

// Key backup tests drive the server the way Element's crypto does: a real
// curve25519 backup key, session keys encrypted to it by mautrix's backup
// package, uploaded and restored through mautrix's client methods.

type (
	backupData    = backup.EncryptedSessionData[backup.MegolmSessionData]
	backupVersion = mautrix.RespRoomKeysVersion[backup.MegolmAuthData]
)

// newBackupKey makes a backup decryption key and the auth_data announcing
// its public half.
func newBackupKey(t *testing.T) (*backup.MegolmBackupKey, backup.MegolmAuthData) {
	t.Helper()
	key, err := backup.NewMegolmBackupKey()
	if err != nil {
		t.Fatal(err)
	}
	auth := backup.MegolmAuthData{PublicKey: id.Ed25519(base64.RawStdEncoding.EncodeToString(key.PublicKey().Bytes()))}
	return key, auth
}

func createBackup(t *testing.T, cli *mautrix.Client, auth backup.MegolmAuthData) id.KeyBackupVersion {
	t.Helper()
	resp, err := cli.CreateKeyBackupVersion(ctx, &mautrix.ReqRoomKeysVersionCreate[backup.MegolmAuthData]{
		Algorithm: id.KeyBackupAlgorithmMegolmBackupV1, AuthData: auth,
	})
	if err != nil {
		t.Fatalf("create backup version: %v", err)
	}
	return resp.Version
}

// startWithBackup starts a server on uri with alice and a new backup
// version of hers.
func startWithBackup(t *testing.T, uri string) (*hstest.Server, *mautrix.Client, *backup.MegolmBackupKey, backup.MegolmAuthData, id.KeyBackupVersion) {
	t.Helper()
	srv := hstest.Start(t, uri, nil)
	alice := srv.NewUser("alice")
	key, auth := newBackupKey(t)
	return srv, alice, key, auth, createBackup(t, alice, auth)
}

// sealKey encrypts a megolm session key (here a marker telling uploads
// apart) to the backup key, with the given metadata.
func sealKey(t *testing.T, key *backup.MegolmBackupKey, sessionKey string, firstIndex, forwarded int, verified bool) mautrix.ReqKeyBackupData {
	t.Helper()
	enc, err := backup.EncryptSessionData(key, backup.MegolmSessionData{
		Algorithm: id.AlgorithmMegolmV1, SenderKey: "senderkey", SessionKey: sessionKey,
		ForwardingKeyChain: []string{},
	})
	if err != nil {
		t.Fatal(err)
	}
	raw, err := json.Marshal(enc)
	if err != nil {
		t.Fatal(err)
	}
	return mautrix.ReqKeyBackupData{FirstMessageIndex: firstIndex, ForwardedCount: forwarded, IsVerified: verified, SessionData: raw}
}

// openKey decrypts a restored key and returns its session key.
func openKey(t *testing.T, key *backup.MegolmBackupKey, data backupData) string {
	t.Helper()
	plain, err := data.Decrypt(key)
	if err != nil {
		t.Fatalf("decrypt restored key: %v", err)
	}
	return plain.SessionKey
}

// restoredSession fetches one session from the backup and decrypts it.
func restoredSession(t *testing.T, cli *mautrix.Client, key *backup.MegolmBackupKey, version id.KeyBackupVersion,
	roomID id.RoomID, sessionID id.SessionID) (string, *mautrix.RespKeyBackupData[backupData]) {
	t.Helper()
	resp, err := cli.GetKeyBackupForRoomAndSession(ctx, version, roomID, sessionID)
	if err != nil {
		t.Fatalf("get %s/%s: %v", roomID, sessionID, err)
	}
	return openKey(t, key, resp.SessionData), resp
}

// updateBackup is PUT /room_keys/version/{version}. (mautrix-go's
// UpdateKeyBackupVersion forgets to send the request body.)
func updateBackup(cli *mautrix.Client, version id.KeyBackupVersion, req *mautrix.ReqRoomKeysVersionUpdate[backup.MegolmAuthData]) error {
	_, err := cli.MakeRequest(ctx, http.MethodPut, cli.BuildClientURL("v3", "room_keys", "version", version), req, nil)
	return err
}

func getBackupVersion(t *testing.T, cli *mautrix.Client, version id.KeyBackupVersion) *backupVersion {
	t.Helper()
	var resp *backupVersion
	var err error
	if version == "" {
		resp, err = cli.GetKeyBackupLatestVersion(ctx)
	} else {
		resp, err = cli.GetKeyBackupVersion(ctx, version)
	}
	if err != nil {
		t.Fatalf("get backup version %q: %v", version, err)
	}
	return resp
}

// backupRaw sends a request no client library would send and returns the
// status and decoded body.
func backupRaw(t *testing.T, cli *mautrix.Client, method, path string, query url.Values, body string) (int, map[string]any) {
	t.Helper()
	u := cli.HomeserverURL.String() + "/_matrix/client/v3" + path
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	req := mautrix.FullRequest{Method: method, URL: u, MaxAttempts: 1}
	if body != "" {
		req.RequestBytes = []byte(body)
		req.Headers = http.Header{"Content-Type": {"application/json"}}
	}
	data, resp, _ := cli.MakeFullRequestWithResp(ctx, req)
	if resp == nil {
		t.Fatalf("%s %s: no response", method, path)
	}
	var obj map[string]any
	if err := json.Unmarshal(data, &obj); err != nil {
		t.Fatalf("%s %s: body is not a JSON object: %q", method, path, data)
	}
	return resp.StatusCode, obj
}

func TestKeyBackupVersionLifecycle(t *testing.T) {
	testdb.ForEach(t, func(t *testing.T, uri string) {
		srv := hstest.Start(t, uri, nil)
		alice := srv.NewUser("alice")

		_, err := alice.GetKeyBackupLatestVersion(ctx)
		mustErr(t, err, mautrix.MNotFound, http.StatusNotFound)

		_, auth := newBackupKey(t)
		auth.Signatures = map[id.UserID]map[id.KeyID]string{alice.UserID: {"ed25519:DEV": "sig1"}}
		v1 := createBackup(t, alice, auth)
		if v1 != "1" {
			t.Fatalf("first version = %q, want \"1\"", v1)
		}
		cur := getBackupVersion(t, alice, "")
		if cur.Version != v1 || cur.Algorithm != id.KeyBackupAlgorithmMegolmBackupV1 || cur.AuthData.PublicKey != auth.PublicKey ||
			cur.AuthData.Signatures[alice.UserID]["ed25519:DEV"] != "sig1" || cur.Count != 0 || cur.ETag == "" {
			t.Fatalf("current version = %+v", cur)
		}
		if got := getBackupVersion(t, alice, v1); got.Version != v1 || got.AuthData.PublicKey != auth.PublicKey || got.ETag != cur.ETag {
			t.Fatalf("GET version %s = %+v", v1, got)
		}

		// Only auth_data can change; the version in the body, if given,
		// must be the path's.
		auth.Signatures[alice.UserID]["ed25519:DEV"] = "sig2"
		if err := updateBackup(alice, v1, &mautrix.ReqRoomKeysVersionUpdate[backup.MegolmAuthData]{
			Algorithm: id.KeyBackupAlgorithmMegolmBackupV1, AuthData: auth, Version: v1,
		}); err != nil {
			t.Fatalf("update: %v", err)
		}
		if got := getBackupVersion(t, alice, v1); got.AuthData.Signatures[alice.UserID]["ed25519:DEV"] != "sig2" {
			t.Fatalf("after update = %+v", got)
		}
		err = updateBackup(alice, v1, &mautrix.ReqRoomKeysVersionUpdate[backup.MegolmAuthData]{
			Algorithm: "org.example.other.v1", AuthData: auth,
		})
		mustErr(t, err, mautrix.MInvalidParam, http.StatusBadRequest)
		err = updateBackup(alice, v1, &mautrix.ReqRoomKeysVersionUpdate[backup.MegolmAuthData]{
			Algorithm: id.KeyBackupAlgorithmMegolmBackupV1, AuthData: auth, Version: "2",
		})
		mustErr(t, err, mautrix.MInvalidParam, http.StatusBadRequest)
		err = updateBackup(alice, "99", &mautrix.ReqRoomKeysVersionUpdate[backup.MegolmAuthData]{
			Algorithm: id.KeyBackupAlgorithmMegolmBackupV1, AuthData: auth,
		})
		mustErr(t, err, mautrix.MNotFound, http.StatusNotFound)

		// A new version becomes current; the old one stays readable.
		_, auth2 := newBackupKey(t)
		v2 := createBackup(t, alice, auth2)
		if v2 == v1 {
			t.Fatalf("second version reused %q", v1)
		}
		if cur := getBackupVersion(t, alice, ""); cur.Version != v2 || cur.AuthData.PublicKey != auth2.PublicKey {
			t.Fatalf("current after second create = %+v", cur)
		}
		if got := getBackupVersion(t, alice, v1); got.AuthData.PublicKey != auth.PublicKey {
			t.Fatalf("old version = %+v", got)
		}

		// Deleting: the version is gone, deleting it again still succeeds,
		// a version that never existed is 404.
		if err := alice.DeleteKeyBackupVersion(ctx, v2); err != nil {
			t.Fatalf("delete: %v", err)
		}
		_, err = alice.GetKeyBackupVersion(ctx, v2)
		mustErr(t, err, mautrix.MNotFound, http.StatusNotFound)
		if cur := getBackupVersion(t, alice, ""); cur.Version != v1 {
			t.Fatalf("current after deleting %s = %s, want %s", v2, cur.Version, v1)
		}
		if err := alice.DeleteKeyBackupVersion(ctx, v2); err != nil {
			t.Fatalf("deleting a deleted version again: %v", err)
		}
		mustErr(t, alice.DeleteKeyBackupVersion(ctx, "77"), mautrix.MNotFound, http.StatusNotFound)
		mustErr(t, alice.DeleteKeyBackupVersion(ctx, "not-a-version"), mautrix.MNotFound, http.StatusNotFound)
		_, err = alice.GetKeyBackupVersion(ctx, "01")
		mustErr(t, err, mautrix.MNotFound, http.StatusNotFound)
		err = updateBackup(alice, v2, &mautrix.ReqRoomKeysVersionUpdate[backup.MegolmAuthData]{
			Algorithm: id.KeyBackupAlgorithmMegolmBackupV1, AuthData: auth2,
		})
		mustErr(t, err, mautrix.MNotFound, http.StatusNotFound)

		// Version numbers are never reused.
		if v3 := createBackup(t, alice, auth2); v3 == v1 || v3 == v2 {
			t.Fatalf("new version %q reuses an old number", v3)
		}
		if err := alice.DeleteKeyBackupVersion(ctx, v1); err != nil {
			t.Fatal(err)
		}
		if cur := getBackupVersion(t, alice, ""); cur.Version == v1 || cur.Version == v2 {
			t.Fatalf("current = %s after deleting the others", cur.Version)
		}
	})
}

func TestKeyBackupKeys(t *testing.T) {
	testdb.ForEach(t, func(t *testing.T, uri string) {
		_, alice, key, _, v := startWithBackup(t, uri)
		const roomA, roomB, roomC = id.RoomID("!a:localhost"), id.RoomID("!b:example.org"), id.RoomID("!c:localhost")

		// All rooms at once.
		up, err := alice.PutKeysInBackup(ctx, v, &mautrix.ReqKeyBackup{Rooms: map[id.RoomID]mautrix.ReqRoomKeyBackup{
			roomA: {Sessions: map[id.SessionID]mautrix.ReqKeyBackupData{
				"sessA1": sealKey(t, key, "keyA1", 0, 0, true),
				"sessA2": sealKey(t, key, "keyA2", 3, 1, false),
			}},
			roomB: {Sessions: map[id.SessionID]mautrix.ReqKeyBackupData{
				"sessB1": sealKey(t, key, "keyB1", 0, 0, false),
			}},
		}})
		if err != nil || up.Count != 3 || up.ETag == "" {
			t.Fatalf("put all = %+v, %v", up, err)
		}
		etags := map[string]bool{getBackupVersion(t, alice, v).ETag: true}
		if len(etags) != 1 || !etags[up.ETag] {
			t.Fatalf("version etag %v is not the upload's %q", etags, up.ETag)
		}

		all, err := alice.GetKeyBackup(ctx, v)
		if err != nil || len(all.Rooms) != 2 || len(all.Rooms[roomA].Sessions) != 2 || len(all.Rooms[roomB].Sessions) != 1 {
			t.Fatalf("get all = %+v, %v", all, err)
		}
		a2 := all.Rooms[roomA].Sessions["sessA2"]
		if a2.FirstMessageIndex != 3 || a2.ForwardedCount != 1 || a2.IsVerified || openKey(t, key, a2.SessionData) != "keyA2" {
			t.Fatalf("restored sessA2 = %+v", a2)
		}
		if s := all.Rooms[roomA].Sessions["sessA1"]; !s.IsVerified || openKey(t, key, s.SessionData) != "keyA1" {
			t.Fatalf("restored sessA1 = %+v", s)
		}

		// One room.
		room, err := alice.GetKeyBackupForRoom(ctx, v, roomA)
		if err != nil || len(room.Sessions) != 2 || openKey(t, key, room.Sessions["sessA1"].SessionData) != "keyA1" {
			t.Fatalf("get room = %+v, %v", room, err)
		}
		// A room without keys is an empty sessions object, not an error.
		status, obj := backupRaw(t, alice, "GET", "/room_keys/keys/"+url.PathEscape("!none:localhost"), url.Values{"version": {string(v)}}, "")
		if sessions, ok := obj["sessions"].(map[string]any); status != http.StatusOK || !ok || len(sessions) != 0 || len(obj) != 1 {
			t.Fatalf("room without keys = %d %v", status, obj)
		}
		up2, err := alice.PutKeysInBackupForRoom(ctx, v, roomC, &mautrix.ReqRoomKeyBackup{Sessions: map[id.SessionID]mautrix.ReqKeyBackupData{
			"sessC1": sealKey(t, key, "keyC1", 2, 0, false),
		}})
		if err != nil || up2.Count != 4 || etags[up2.ETag] {
			t.Fatalf("put room = %+v, %v (etags before %v)", up2, err, etags)
		}
		etags[up2.ETag] = true

		// One session.
		up3, err := alice.PutKeysInBackupForRoomAndSession(ctx, v, roomC, "sessC2", ptr(sealKey(t, key, "keyC2", 7, 2, true)))
		if err != nil || up3.Count != 5 || etags[up3.ETag] {
			t.Fatalf("put session = %+v, %v", up3, err)
		}
		etags[up3.ETag] = true
		got, resp := restoredSession(t, alice, key, v, roomC, "sessC2")
		if got != "keyC2" || resp.FirstMessageIndex != 7 || resp.ForwardedCount != 2 || !resp.IsVerified {
			t.Fatalf("get session = %q %+v", got, resp)
		}
		_, err = alice.GetKeyBackupForRoomAndSession(ctx, v, roomC, "nosuchsession")
		mustErr(t, err, mautrix.MNotFound, http.StatusNotFound)
		_, err = alice.GetKeyBackupForRoomAndSession(ctx, v, "!none:localhost", "sessC2")
		mustErr(t, err, mautrix.MNotFound, http.StatusNotFound)
		if cur := getBackupVersion(t, alice, ""); cur.Count != 5 || cur.ETag != up3.ETag {
			t.Fatalf("version after uploads = %+v, want count 5 etag %q", cur, up3.ETag)
		}

		// Deleting at each level; deleting nothing leaves the etag alone.
		del, err := alice.DeleteKeysInBackupForRoomAndSession(ctx, v, roomC, "sessC2")
		if err != nil || del.Count != 4 || etags[del.ETag] {
			t.Fatalf("delete session = %+v, %v", del, err)
		}
		etags[del.ETag] = true
		_, err = alice.GetKeyBackupForRoomAndSession(ctx, v, roomC, "sessC2")
		mustErr(t, err, mautrix.MNotFound, http.StatusNotFound)
		again, err := alice.DeleteKeysInBackupForRoomAndSession(ctx, v, roomC, "sessC2")
		if err != nil || again.Count != 4 || again.ETag != del.ETag {
			t.Fatalf("deleting a deleted session = %+v, %v (etag was %q)", again, err, del.ETag)
		}
		del, err = alice.DeleteKeysFromBackupForRoom(ctx, v, roomA)
		if err != nil || del.Count != 2 || etags[del.ETag] {
			t.Fatalf("delete room = %+v, %v", del, err)
		}
		etags[del.ETag] = true
		if room, err := alice.GetKeyBackupForRoom(ctx, v, roomA); err != nil || len(room.Sessions) != 0 {
			t.Fatalf("deleted room = %+v, %v", room, err)
		}
		if got, _ := restoredSession(t, alice, key, v, roomB, "sessB1"); got != "keyB1" {
			t.Fatalf("other room's key after deleting a room = %q", got)
		}
		del, err = alice.DeleteKeyBackup(ctx, v)
		if err != nil || del.Count != 0 || etags[del.ETag] {
			t.Fatalf("delete all = %+v, %v", del, err)
		}
		status, obj = backupRaw(t, alice, "GET", "/room_keys/keys", url.Values{"version": {string(v)}}, "")
		if rooms, ok := obj["rooms"].(map[string]any); status != http.StatusOK || !ok || len(rooms) != 0 {
			t.Fatalf("empty backup = %d %v", status, obj)
		}
		if cur := getBackupVersion(t, alice, v); cur.Count != 0 || cur.ETag != del.ETag {
			t.Fatalf("version after deleting all = %+v", cur)
		}
	})
}

func ptr[T any](v T) *T { return &v }

// TestKeyBackupReplacement walks one session through uploads of better and
// worse copies: the spec's rule decides which one the backup keeps.
func TestKeyBackupReplacement(t *testing.T) {
	testdb.ForEach(t, func(t *testing.T, uri string) {
		_, alice, key, _, v := startWithBackup(t, uri)
		const roomID, sessionID = id.RoomID("!room:localhost"), id.SessionID("session")

		steps := []struct {
			name               string
			firstIndex, fwd    int
			verified, replaces bool
		}{
			{"first upload", 5, 2, false, true},
			{"higher first_message_index", 6, 0, false, false},
			{"identical metadata", 5, 2, false, false},
			{"same index, more forwards", 5, 3, false, false},
			{"same index, fewer forwards", 5, 1, false, true},
			{"lower index, more forwards", 4, 9, false, true},
			{"verified beats a lower index", 10, 10, true, true},
			{"unverified never beats verified", 0, 0, false, false},
			{"verified, higher index", 11, 0, true, false},
			{"verified, same index, more forwards", 10, 11, true, false},
			{"verified, same index, fewer forwards", 10, 1, true, true},
			{"verified, lower index", 3, 5, true, true},
		}
		want := ""
		etag := getBackupVersion(t, alice, v).ETag
		for i, s := range steps {
			marker := fmt.Sprintf("key%d", i)
			up, err := alice.PutKeysInBackupForRoomAndSession(ctx, v, roomID, sessionID, ptr(sealKey(t, key, marker, s.firstIndex, s.fwd, s.verified)))
			if err != nil || up.Count != 1 {
				t.Fatalf("%s: put = %+v, %v", s.name, up, err)
			}
			if s.replaces {
				want = marker
				if up.ETag == etag {
					t.Errorf("%s: etag unchanged (%q) though the key was replaced", s.name, etag)
				}
			} else if up.ETag != etag {
				t.Errorf("%s: etag changed %q -> %q though the key was kept", s.name, etag, up.ETag)
			}
			etag = up.ETag
			if got, _ := restoredSession(t, alice, key, v, roomID, sessionID); got != want {
				t.Fatalf("%s: backup holds %s, want %s", s.name, got, want)
			}
		}

		// In one request, the better of two keys replaces and the worse
		// does not, each decided on its own.
		up, err := alice.PutKeysInBackupForRoom(ctx, v, roomID, &mautrix.ReqRoomKeyBackup{Sessions: map[id.SessionID]mautrix.ReqKeyBackupData{
			sessionID: sealKey(t, key, "worse", 4, 0, true),
			"other":   sealKey(t, key, "new", 0, 0, false),
		}})
		if err != nil || up.Count != 2 || up.ETag == etag {
			t.Fatalf("mixed upload = %+v, %v", up, err)
		}
		if got, _ := restoredSession(t, alice, key, v, roomID, sessionID); got != want {
			t.Fatalf("after mixed upload the backup holds %s, want %s", got, want)
		}
		if got, _ := restoredSession(t, alice, key, v, roomID, "other"); got != "new" {
			t.Fatalf("new session = %s", got)
		}
	})
}

// TestKeyBackupConcurrentUploads races devices uploading copies of the same
// sessions: whatever the order, the best copy of each stays.
func TestKeyBackupConcurrentUploads(t *testing.T) {
	testdb.ForEach(t, func(t *testing.T, uri string) {
		_, alice, key, _, v := startWithBackup(t, uri)
		const roomID = id.RoomID("!room:localhost")
		const uploads, sessions = 12, 20

		// Upload i carries every session with first_message_index i (the
		// best copy is upload 0's), in a random order of uploads.
		bodies := make([]*mautrix.ReqRoomKeyBackup, uploads)
		for i := range bodies {
			b := &mautrix.ReqRoomKeyBackup{Sessions: map[id.SessionID]mautrix.ReqKeyBackupData{}}
			for s := range sessions {
				b.Sessions[id.SessionID(fmt.Sprintf("s%02d", s))] = sealKey(t, key, fmt.Sprintf("u%d", i), i, 0, false)
			}
			bodies[i] = b
		}
		var wg sync.WaitGroup
		errs := make(chan error, uploads)
		for _, i := range rand.Perm(uploads) {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if _, err := alice.PutKeysInBackupForRoom(ctx, v, roomID, bodies[i]); err != nil {
					errs <- fmt.Errorf("upload %d: %w", i, err)
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		room, err := alice.GetKeyBackupForRoom(ctx, v, roomID)
		if err != nil || len(room.Sessions) != sessions {
			t.Fatalf("room after concurrent uploads = %d sessions, %v", len(room.Sessions), err)
		}
		for sessionID, s := range room.Sessions {
			if got := openKey(t, key, s.SessionData); s.FirstMessageIndex != 0 || got != "u0" {
				t.Errorf("%s holds %s (first_message_index %d), want u0", sessionID, got, s.FirstMessageIndex)
			}
		}
		if cur := getBackupVersion(t, alice, v); cur.Count != sessions {
			t.Errorf("count = %d, want %d", cur.Count, sessions)
		}
	})
}

func TestKeyBackupWrongVersion(t *testing.T) {
	testdb.ForEach(t, func(t *testing.T, uri string) {
		srv := hstest.Start(t, uri, nil)
		alice := srv.NewUser("alice")
		key, auth := newBackupKey(t)
		const roomID = id.RoomID("!room:localhost")
		one := func(marker string) *mautrix.ReqKeyBackupData { return ptr(sealKey(t, key, marker, 0, 0, false)) }

		// No backup at all.
		_, err := alice.PutKeysInBackupForRoomAndSession(ctx, "1", roomID, "s", one("x"))
		mustErr(t, err, mautrix.MNotFound, http.StatusNotFound)
		_, err = alice.GetKeyBackup(ctx, "1")
		mustErr(t, err, mautrix.MNotFound, http.StatusNotFound)
		_, err = alice.DeleteKeyBackup(ctx, "1")
		mustErr(t, err, mautrix.MNotFound, http.StatusNotFound)

		v1 := createBackup(t, alice, auth)
		if _, err := alice.PutKeysInBackupForRoomAndSession(ctx, v1, roomID, "s1", one("in v1")); err != nil {
			t.Fatal(err)
		}
		v2 := createBackup(t, alice, auth)

		// Uploads go to the current version only.
		for _, stale := range []id.KeyBackupVersion{v1, "42", "garbage"} {
			_, err = alice.PutKeysInBackupForRoomAndSession(ctx, stale, roomID, "s2", one("stale"))
			mustErr(t, err, mautrix.MWrongRoomKeysVersion, http.StatusForbidden)
			var httpErr mautrix.HTTPError
			if !errors.As(err, &httpErr) || httpErr.RespError.ExtraData["current_version"] != string(v2) {
				t.Fatalf("upload to %q: want current_version %q in %v", stale, v2, err)
			}
			_, err = alice.PutKeysInBackup(ctx, stale, &mautrix.ReqKeyBackup{Rooms: map[id.RoomID]mautrix.ReqRoomKeyBackup{}})
			mustErr(t, err, mautrix.MWrongRoomKeysVersion, http.StatusForbidden)
		}
		status, obj := backupRaw(t, alice, "PUT", "/room_keys/keys/"+url.PathEscape(string(roomID)), url.Values{"version": {string(v1)}},
			`{"sessions":{}}`)
		if status != http.StatusForbidden || obj["errcode"] != "M_WRONG_ROOM_KEYS_VERSION" || obj["current_version"] != string(v2) ||
			obj["error"] == "" {
			t.Fatalf("raw wrong-version answer = %d %v", status, obj)
		}

		// The old version's keys stay readable and deletable; the new one
		// starts empty.
		if got, _ := restoredSession(t, alice, key, v1, roomID, "s1"); got != "in v1" {
			t.Fatalf("old version's key = %q", got)
		}
		if all, err := alice.GetKeyBackup(ctx, v2); err != nil || len(all.Rooms) != 0 {
			t.Fatalf("new version = %+v, %v", all, err)
		}
		_, err = alice.GetKeyBackupForRoomAndSession(ctx, v2, roomID, "s2")
		mustErr(t, err, mautrix.MNotFound, http.StatusNotFound)
		if del, err := alice.DeleteKeysFromBackupForRoom(ctx, v1, roomID); err != nil || del.Count != 0 {
			t.Fatalf("delete from old version = %+v, %v", del, err)
		}
		_, err = alice.GetKeyBackupForRoom(ctx, "99", roomID)
		mustErr(t, err, mautrix.MNotFound, http.StatusNotFound)
	})
}

func TestKeyBackupDeleteVersionRemovesKeys(t *testing.T) {
	testdb.ForEach(t, func(t *testing.T, uri string) {
		srv, alice, key, auth, v1 := startWithBackup(t, uri)
		if _, err := alice.PutKeysInBackupForRoom(ctx, v1, "!room:localhost", &mautrix.ReqRoomKeyBackup{Sessions: map[id.SessionID]mautrix.ReqKeyBackupData{
			"a": sealKey(t, key, "a", 0, 0, false), "b": sealKey(t, key, "b", 0, 0, false),
		}}); err != nil {
			t.Fatal(err)
		}
		if err := alice.DeleteKeyBackupVersion(ctx, v1); err != nil {
			t.Fatal(err)
		}
		_, err := alice.GetKeyBackup(ctx, v1)
		mustErr(t, err, mautrix.MNotFound, http.StatusNotFound)
		_, err = alice.GetKeyBackupForRoomAndSession(ctx, v1, "!room:localhost", "a")
		mustErr(t, err, mautrix.MNotFound, http.StatusNotFound)
		_, err = alice.GetKeyBackupLatestVersion(ctx)
		mustErr(t, err, mautrix.MNotFound, http.StatusNotFound)
		// Nor can a client that missed the deletion write into it.
		_, err = alice.PutKeysInBackupForRoomAndSession(ctx, v1, "!room:localhost", "c", ptr(sealKey(t, key, "c", 0, 0, false)))
		mustErr(t, err, mautrix.MNotFound, http.StatusNotFound)

		v2 := createBackup(t, alice, auth)
		if cur := getBackupVersion(t, alice, ""); cur.Version != v2 || cur.Count != 0 {
			t.Fatalf("new version = %+v", cur)
		}
		var left int
		if err := srv.HS.DB.QueryRow(ctx, `SELECT COUNT(*) FROM key_backup_sessions`).Scan(&left); err != nil || left != 0 {
			t.Fatalf("%d backed-up keys left in the database after deleting their version (%v)", left, err)
		}
	})
}

func TestKeyBackupOtherUser(t *testing.T) {
	testdb.ForEach(t, func(t *testing.T, uri string) {
		srv, alice, key, auth, v := startWithBackup(t, uri)
		bob := srv.NewUser("bob")
		const roomID = id.RoomID("!shared:localhost")
		if _, err := alice.PutKeysInBackupForRoomAndSession(ctx, v, roomID, "s", ptr(sealKey(t, key, "alice's", 0, 0, true))); err != nil {
			t.Fatal(err)
		}

		// Bob sees no backup at all, and cannot touch Alice's.
		_, err := bob.GetKeyBackupLatestVersion(ctx)
		mustErr(t, err, mautrix.MNotFound, http.StatusNotFound)
		_, err = bob.GetKeyBackupVersion(ctx, v)
		mustErr(t, err, mautrix.MNotFound, http.StatusNotFound)
		_, err = bob.GetKeyBackup(ctx, v)
		mustErr(t, err, mautrix.MNotFound, http.StatusNotFound)
		_, err = bob.GetKeyBackupForRoomAndSession(ctx, v, roomID, "s")
		mustErr(t, err, mautrix.MNotFound, http.StatusNotFound)
		_, err = bob.PutKeysInBackupForRoomAndSession(ctx, v, roomID, "s", ptr(sealKey(t, key, "bob's", 0, 0, true)))
		mustErr(t, err, mautrix.MNotFound, http.StatusNotFound)
		_, err = bob.DeleteKeyBackup(ctx, v)
		mustErr(t, err, mautrix.MNotFound, http.StatusNotFound)
		mustErr(t, bob.DeleteKeyBackupVersion(ctx, v), mautrix.MNotFound, http.StatusNotFound)
		err = updateBackup(bob, v, &mautrix.ReqRoomKeysVersionUpdate[backup.MegolmAuthData]{
			Algorithm: id.KeyBackupAlgorithmMegolmBackupV1, AuthData: auth,
		})
		mustErr(t, err, mautrix.MNotFound, http.StatusNotFound)

		// Bob's own backup is separate, even where the numbers coincide.
		bobKey, bobAuth := newBackupKey(t)
		bv := createBackup(t, bob, bobAuth)
		if _, err := bob.PutKeysInBackupForRoomAndSession(ctx, bv, roomID, "s", ptr(sealKey(t, bobKey, "bob's", 9, 9, false))); err != nil {
			t.Fatal(err)
		}
		if got, _ := restoredSession(t, bob, bobKey, bv, roomID, "s"); got != "bob's" {
			t.Fatalf("bob's key = %q", got)
		}
		if got, _ := restoredSession(t, alice, key, v, roomID, "s"); got != "alice's" {
			t.Fatalf("alice's key = %q", got)
		}
		if cur := getBackupVersion(t, alice, ""); cur.Version != v || cur.AuthData.PublicKey != auth.PublicKey || cur.Count != 1 {
			t.Fatalf("alice's backup = %+v", cur)
		}
	})
}

func TestKeyBackupBadInput(t *testing.T) {
	testdb.ForEach(t, func(t *testing.T, uri string) {
		_, alice, key, auth, v := startWithBackup(t, uri)
		good := sealKey(t, key, "good", 1, 0, false)
		goodJSON, err := json.Marshal(good)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := alice.PutKeysInBackupForRoomAndSession(ctx, v, "!room:localhost", "kept", &good); err != nil {
			t.Fatal(err)
		}
		etag := getBackupVersion(t, alice, v).ETag
		ver := url.Values{"version": {string(v)}}
		session := "/room_keys/keys/" + url.PathEscape("!room:localhost") + "/sess"
		room := "/room_keys/keys/" + url.PathEscape("!room:localhost")
		pk := string(auth.PublicKey)
		bigData := `{"ciphertext":"` + strings.Repeat("A", 70*1024) + `"}`

		cases := []struct {
			name, method, path string
			query              url.Values
			body               string
			code               string
			status             int
		}{
			{"create: no body fields", "POST", "/room_keys/version", nil, `{}`, "M_MISSING_PARAM", 400},
			{"create: not JSON", "POST", "/room_keys/version", nil, `{"algorithm":`, "M_NOT_JSON", 400},
			{"create: array body", "POST", "/room_keys/version", nil, `[]`, "M_BAD_JSON", 400},
			{"create: algorithm not a string", "POST", "/room_keys/version", nil, `{"algorithm":1,"auth_data":{}}`, "M_BAD_JSON", 400},
			{"create: unknown m. algorithm", "POST", "/room_keys/version", nil, `{"algorithm":"m.megolm_backup.v9","auth_data":{"public_key":"x"}}`, "M_INVALID_PARAM", 400},
			{"create: no auth_data", "POST", "/room_keys/version", nil, `{"algorithm":"m.megolm_backup.v1.curve25519-aes-sha2"}`, "M_MISSING_PARAM", 400},
			{"create: auth_data not an object", "POST", "/room_keys/version", nil, `{"algorithm":"m.megolm_backup.v1.curve25519-aes-sha2","auth_data":"x"}`, "M_BAD_JSON", 400},
			{"create: no public_key", "POST", "/room_keys/version", nil, `{"algorithm":"m.megolm_backup.v1.curve25519-aes-sha2","auth_data":{"signatures":{}}}`, "M_INVALID_PARAM", 400},
			{"create: public_key not a string", "POST", "/room_keys/version", nil, `{"algorithm":"m.megolm_backup.v1.curve25519-aes-sha2","auth_data":{"public_key":5}}`, "M_INVALID_PARAM", 400},
			{"update: version not a string", "PUT", "/room_keys/version/" + string(v), nil,
				`{"algorithm":"m.megolm_backup.v1.curve25519-aes-sha2","auth_data":{"public_key":"` + pk + `"},"version":1}`, "M_BAD_JSON", 400},
			{"keys: no version", "GET", "/room_keys/keys", nil, ``, "M_MISSING_PARAM", 400},
			{"keys: no version on upload", "PUT", session, nil, string(goodJSON), "M_MISSING_PARAM", 400},
			{"keys: bad room ID in path", "GET", "/room_keys/keys/notaroom", ver, ``, "M_INVALID_PARAM", 400},
			{"keys: over-long session ID", "PUT", room + "/" + strings.Repeat("s", 300), ver, string(goodJSON), "M_INVALID_PARAM", 400},
			{"session: negative first_message_index", "PUT", session, ver,
				`{"first_message_index":-1,"forwarded_count":0,"is_verified":false,"session_data":{}}`, "M_INVALID_PARAM", 400},
			{"session: first_message_index a string", "PUT", session, ver,
				`{"first_message_index":"1","forwarded_count":0,"is_verified":false,"session_data":{}}`, "M_BAD_JSON", 400},
			{"session: fractional forwarded_count", "PUT", session, ver,
				`{"first_message_index":1,"forwarded_count":0.5,"is_verified":false,"session_data":{}}`, "M_BAD_JSON", 400},
			{"session: huge first_message_index", "PUT", session, ver,
				`{"first_message_index":99999999999999999999,"forwarded_count":0,"is_verified":false,"session_data":{}}`, "M_INVALID_PARAM", 400},
			{"session: is_verified a string", "PUT", session, ver,
				`{"first_message_index":1,"forwarded_count":0,"is_verified":"yes","session_data":{}}`, "M_BAD_JSON", 400},
			{"session: no is_verified", "PUT", session, ver,
				`{"first_message_index":1,"forwarded_count":0,"session_data":{}}`, "M_MISSING_PARAM", 400},
			{"session: session_data a string", "PUT", session, ver,
				`{"first_message_index":1,"forwarded_count":0,"is_verified":false,"session_data":"x"}`, "M_BAD_JSON", 400},
			{"session: no session_data", "PUT", session, ver,
				`{"first_message_index":1,"forwarded_count":0,"is_verified":false}`, "M_MISSING_PARAM", 400},
			{"session: session_data too large", "PUT", session, ver,
				`{"first_message_index":1,"forwarded_count":0,"is_verified":false,"session_data":` + bigData + `}`, "M_TOO_LARGE", 413},
			{"room: no sessions", "PUT", room, ver, `{}`, "M_MISSING_PARAM", 400},
			{"room: sessions an array", "PUT", room, ver, `{"sessions":[]}`, "M_BAD_JSON", 400},
			{"room: session not an object", "PUT", room, ver, `{"sessions":{"s":5}}`, "M_BAD_JSON", 400},
			{"room: empty session ID", "PUT", room, ver, `{"sessions":{"":` + string(goodJSON) + `}}`, "M_INVALID_PARAM", 400},
			{"all: no rooms", "PUT", "/room_keys/keys", ver, `{}`, "M_MISSING_PARAM", 400},
			{"all: rooms a string", "PUT", "/room_keys/keys", ver, `{"rooms":"x"}`, "M_BAD_JSON", 400},
			{"all: key not a room ID", "PUT", "/room_keys/keys", ver, `{"rooms":{"notaroom":{"sessions":{}}}}`, "M_INVALID_PARAM", 400},
			{"all: room not an object", "PUT", "/room_keys/keys", ver, `{"rooms":{"!r:localhost":[]}}`, "M_BAD_JSON", 400},
			// All or nothing: one bad key refuses the whole upload.
			{"all: one bad key among good ones", "PUT", "/room_keys/keys", ver,
				`{"rooms":{"!r:localhost":{"sessions":{"ok1":` + string(goodJSON) + `,"ok2":` + string(goodJSON) +
					`,"bad":{"first_message_index":-5,"forwarded_count":0,"is_verified":false,"session_data":{}}}}}}`, "M_INVALID_PARAM", 400},
		}
		for _, c := range cases {
			status, obj := backupRaw(t, alice, c.method, c.path, c.query, c.body)
			if status != c.status || obj["errcode"] != c.code {
				t.Errorf("%s: got %d %v, want %d %s", c.name, status, obj, c.status, c.code)
			}
			if msg, _ := obj["error"].(string); msg == "" {
				t.Errorf("%s: no error message in %v", c.name, obj)
			}
		}

		// Nothing above changed the backup.
		cur := getBackupVersion(t, alice, v)
		if cur.Count != 1 || cur.ETag != etag {
			t.Fatalf("backup after bad input = %+v, want count 1 etag %q", cur, etag)
		}
		if got, _ := restoredSession(t, alice, key, v, "!room:localhost", "kept"); got != "good" {
			t.Fatalf("kept key = %q", got)
		}
	})
}
