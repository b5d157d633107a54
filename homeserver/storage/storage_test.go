package storage_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/switchboard-im/switchboard/homeserver/storage"
	"github.com/switchboard-im/switchboard/internal/testdb"
)

func TestMain(m *testing.M) { testdb.Main(m) }

var ctx = context.Background()

func open(t *testing.T, uri string) *storage.DB {
	t.Helper()
	db, err := storage.Open(ctx, uri, t.TempDir(), 0, zerolog.Nop())
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func TestReopenKeepsDataAndSchema(t *testing.T) {
	testdb.ForEach(t, func(t *testing.T, uri string) {
		dir := t.TempDir()
		db, err := storage.Open(ctx, uri, dir, 0, zerolog.Nop())
		if err != nil {
			t.Fatal(err)
		}
		if err := db.CreateUser(ctx, &storage.User{UserID: "@a:x", PasswordHash: "h"}); err != nil {
			t.Fatal(err)
		}
		db.Close()
		db, err = storage.Open(ctx, uri, dir, 0, zerolog.Nop())
		if err != nil {
			t.Fatalf("second open (upgrade must be a no-op): %v", err)
		}
		defer db.Close()
		u, err := db.GetUser(ctx, "@a:x")
		if err != nil || u.PasswordHash != "h" || u.Deactivated {
			t.Fatalf("user after reopen = %+v, %v", u, err)
		}
		if err := db.CreateUser(ctx, &storage.User{UserID: "@a:x"}); !errors.Is(err, storage.ErrUserExists) {
			t.Fatalf("duplicate user: %v", err)
		}
	})
}

// Two registrations racing for a token's last uses must not both win.
func TestRegistrationTokenRace(t *testing.T) {
	testdb.ForEach(t, func(t *testing.T, uri string) {
		db := open(t, uri)
		five := int64(5)
		if err := db.CreateRegistrationToken(ctx, &storage.RegistrationToken{Token: "tok", UsesAllowed: &five}); err != nil {
			t.Fatal(err)
		}
		var won atomic.Int64
		var wg sync.WaitGroup
		for i := 0; i < 20; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				ok, err := db.ReserveRegistrationToken(ctx, "tok", time.Now().UnixMilli())
				if err != nil {
					t.Error(err)
				}
				if ok {
					won.Add(1)
				}
			}()
		}
		wg.Wait()
		if won.Load() != 5 {
			t.Fatalf("%d reservations succeeded, want exactly 5", won.Load())
		}
		tok, _ := db.GetRegistrationToken(ctx, "tok")
		if tok.Pending != 5 || tok.Valid(time.Now().UnixMilli()) {
			t.Fatalf("token = %+v", tok)
		}
	})
}

func TestExpiredUIASessionsReleaseTokens(t *testing.T) {
	testdb.ForEach(t, func(t *testing.T, uri string) {
		db := open(t, uri)
		one := int64(1)
		_ = db.CreateRegistrationToken(ctx, &storage.RegistrationToken{Token: "t1", UsesAllowed: &one})
		if ok, _ := db.ReserveRegistrationToken(ctx, "t1", time.Now().UnixMilli()); !ok {
			t.Fatal("reserve failed")
		}
		s := &storage.UIASession{SessionID: "s1", Endpoint: "POST /register", RegistrationToken: "t1"}
		if err := db.CreateUIASession(ctx, s); err != nil {
			t.Fatal(err)
		}
		_ = db.CreateUIASession(ctx, &storage.UIASession{SessionID: "s2", Endpoint: "POST /register"})
		n, err := db.ExpireUIASessions(ctx, time.Now().Add(time.Second).UnixMilli())
		if err != nil || n != 2 {
			t.Fatalf("expired %d, %v", n, err)
		}
		tok, _ := db.GetRegistrationToken(ctx, "t1")
		if tok.Pending != 0 || !tok.Valid(time.Now().UnixMilli()) {
			t.Fatalf("abandoned registration still holds the token: %+v", tok)
		}
		if _, err := db.GetUIASession(ctx, "s1"); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("session survived: %v", err)
		}
	})
}

func TestDeviceDeletionRevokesTokens(t *testing.T) {
	testdb.ForEach(t, func(t *testing.T, uri string) {
		db := open(t, uri)
		_ = db.CreateUser(ctx, &storage.User{UserID: "@a:x"})
		if err := db.EnsureDevice(ctx, "@a:x", "D1", nil, "127.0.0.1"); err != nil {
			t.Fatal(err)
		}
		rid, err := db.InsertRefreshToken(ctx, "rhash", "@a:x", "D1", nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := db.InsertAccessToken(ctx, "ahash", "@a:x", "D1", &rid, nil); err != nil {
			t.Fatal(err)
		}
		if s, err := db.LookupAccessToken(ctx, "ahash"); err != nil || s.DeviceID != "D1" || *s.RefreshTokenID != rid {
			t.Fatalf("lookup = %+v, %v", s, err)
		}
		if err := db.DeleteDevices(ctx, "@a:x", "D1", "UNKNOWN"); err != nil {
			t.Fatal(err)
		}
		if _, err := db.LookupAccessToken(ctx, "ahash"); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("access token survived its device: %v", err)
		}
		if _, err := db.GetRefreshToken(ctx, "rhash"); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("refresh token survived its device: %v", err)
		}
	})
}

func TestProfileSizeLimit(t *testing.T) {
	testdb.ForEach(t, func(t *testing.T, uri string) {
		db := open(t, uri)
		_ = db.CreateUser(ctx, &storage.User{UserID: "@a:x"})
		big, _ := json.Marshal(strings.Repeat("x", 40*1024))
		if err := db.SetProfileField(ctx, "@a:x", "org.example.one", big); err != nil {
			t.Fatal(err)
		}
		if err := db.SetProfileField(ctx, "@a:x", "org.example.two", big); !errors.Is(err, storage.ErrProfileTooLarge) {
			t.Fatalf("want ErrProfileTooLarge, got %v", err)
		}
		// Replacing a field counts its new size, not old + new.
		if err := db.SetProfileField(ctx, "@a:x", "org.example.one", big); err != nil {
			t.Fatalf("replacing a field: %v", err)
		}
		p, _ := db.GetProfile(ctx, "@a:x")
		if len(p) != 1 {
			t.Fatalf("profile has %d fields, want 1 (the refused write must leave nothing)", len(p))
		}
	})
}
