package clientapi_test

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/crypto/canonicaljson"
	"maunium.net/go/mautrix/crypto/signatures"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/switchboard-im/switchboard/homeserver/config"
	"github.com/switchboard-im/switchboard/homeserver/hstest"
	"github.com/switchboard-im/switchboard/homeserver/storage"
	"github.com/switchboard-im/switchboard/internal/testdb"
)

// The E2EE key tests drive the server as a client's crypto layer would:
// real ed25519 keys, objects signed as the spec's "Signing JSON" says
// (canonical JSON without signatures and unsigned), and mautrix's key
// API calls where mautrix has them.

func b64(b []byte) string { return base64.RawStdEncoding.EncodeToString(b) }

// signJSON returns the ed25519 signature of the JSON object v.
func signJSON(t testing.TB, v any, priv ed25519.PrivateKey) string {
	t.Helper()
	raw, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(raw, &fields); err != nil {
		t.Fatal(err)
	}
	delete(fields, "signatures")
	delete(fields, "unsigned")
	canon, err := canonicaljson.Marshal(fields)
	if err != nil {
		t.Fatal(err)
	}
	return b64(ed25519.Sign(priv, canon))
}

// keyPair is an ed25519 key with its unpadded base64 public key.
type keyPair struct {
	priv ed25519.PrivateKey
	pub  string
}

func newKeyPair(t testing.TB) keyPair {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return keyPair{priv: priv, pub: b64(pub)}
}

// testDevice is a logged-in device with its identity keys.
type testDevice struct {
	cli   *mautrix.Client
	ed    keyPair
	curve string
	// otkSerial numbers the one-time keys this device made.
	otkSerial int
}

func newTestDevice(t testing.TB, cli *mautrix.Client) *testDevice {
	t.Helper()
	curve := make([]byte, 32)
	_, _ = rand.Read(curve)
	return &testDevice{cli: cli, ed: newKeyPair(t), curve: b64(curve)}
}

func (d *testDevice) keyID() string { return "ed25519:" + string(d.cli.DeviceID) }

// deviceKeys is the device's signed device_keys object.
func (d *testDevice) deviceKeys(t testing.TB) *mautrix.DeviceKeys {
	t.Helper()
	dk := &mautrix.DeviceKeys{
		UserID:     d.cli.UserID,
		DeviceID:   d.cli.DeviceID,
		Algorithms: []id.Algorithm{id.AlgorithmOlmV1, id.AlgorithmMegolmV1},
		Keys: mautrix.KeyMap{
			id.NewDeviceKeyID(id.KeyAlgorithmEd25519, d.cli.DeviceID):    d.ed.pub,
			id.NewDeviceKeyID(id.KeyAlgorithmCurve25519, d.cli.DeviceID): d.curve,
		},
	}
	dk.Signatures = signatures.NewSingleSignature(d.cli.UserID, id.KeyAlgorithmEd25519, string(d.cli.DeviceID), signJSON(t, dk, d.ed.priv))
	return dk
}

// signedKey makes a new signed_curve25519 key object; its name is
// "signed_curve25519:<id>".
func (d *testDevice) signedKey(t testing.TB, fallback bool) (string, map[string]any) {
	t.Helper()
	d.otkSerial++
	pub := make([]byte, 32)
	_, _ = rand.Read(pub)
	obj := map[string]any{"key": b64(pub)}
	if fallback {
		obj["fallback"] = true
	}
	obj["signatures"] = map[string]any{string(d.cli.UserID): map[string]string{d.keyID(): signJSON(t, obj, d.ed.priv)}}
	return fmt.Sprintf("signed_curve25519:AAAA%04d", d.otkSerial), obj
}

// otks makes n signed one-time keys.
func (d *testDevice) otks(t testing.TB, n int) map[string]any {
	t.Helper()
	out := map[string]any{}
	for range n {
		name, obj := d.signedKey(t, false)
		out[name] = obj
	}
	return out
}

type uploadResp struct {
	OneTimeKeyCounts map[string]int `json:"one_time_key_counts"`
}

// upload posts a raw /keys/upload body.
func (d *testDevice) upload(t testing.TB, body map[string]any) (*uploadResp, error) {
	t.Helper()
	var resp uploadResp
	_, err := d.cli.MakeRequest(ctx, http.MethodPost, d.cli.BuildClientURL("v3", "keys", "upload"), body, &resp)
	return &resp, err
}

// publish uploads the device keys and n one-time keys through mautrix.
func (d *testDevice) publish(t testing.TB, n int) {
	t.Helper()
	req := &mautrix.ReqUploadKeys{DeviceKeys: d.deviceKeys(t), OneTimeKeys: map[id.KeyID]mautrix.OneTimeKey{}}
	for range n {
		name, obj := d.signedKey(t, false)
		req.OneTimeKeys[id.KeyID(name)] = mautrix.OneTimeKey{Key: id.Curve25519(obj["key"].(string)), IsSigned: true,
			Signatures: signatures.Signatures{d.cli.UserID: {id.KeyID(d.keyID()): obj["signatures"].(map[string]any)[string(d.cli.UserID)].(map[string]string)[d.keyID()]}}}
	}
	resp, err := d.cli.UploadKeys(ctx, req)
	if err != nil {
		t.Fatalf("upload keys of %s: %v", d.cli.DeviceID, err)
	}
	if resp.OneTimeKeyCounts.SignedCurve25519 < n {
		t.Fatalf("one_time_key_counts = %+v after uploading %d", resp.OneTimeKeyCounts, n)
	}
}

func claimOne(t testing.TB, cli *mautrix.Client, user id.UserID, device id.DeviceID) (string, map[string]any) {
	t.Helper()
	resp, err := cli.ClaimKeys(ctx, &mautrix.ReqClaimKeys{OneTimeKeys: mautrix.OneTimeKeysRequest{user: {device: id.KeyAlgorithmSignedCurve25519}}})
	if err != nil {
		t.Fatalf("claim: %v", err)
	}
	for keyID, key := range resp.OneTimeKeys[user][device] {
		var obj map[string]any
		if len(key.RawData) > 0 {
			_ = json.Unmarshal(key.RawData, &obj)
		}
		return string(keyID), obj
	}
	return "", nil
}

// syncRaw is a /sync answer as JSON, to see exactly what the server sent.
func syncRaw(t testing.TB, cli *mautrix.Client, since string, timeout time.Duration) map[string]json.RawMessage {
	t.Helper()
	q := map[string]string{"set_presence": "offline", "timeout": fmt.Sprint(timeout.Milliseconds())}
	if since != "" {
		q["since"] = since
	}
	var out map[string]json.RawMessage
	if _, err := cli.MakeRequest(ctx, http.MethodGet, cli.BuildURLWithQuery(mautrix.ClientURLPath{"v3", "sync"}, q), nil, &out); err != nil {
		t.Fatalf("sync: %v", err)
	}
	return out
}

// syncE2EE is the E2EE part of a /sync answer.
type syncE2EE struct {
	NextBatch   string `json:"next_batch"`
	DeviceLists struct {
		Changed []id.UserID `json:"changed"`
		Left    []id.UserID `json:"left"`
	} `json:"device_lists"`
	OTKCounts        map[string]int `json:"device_one_time_keys_count"`
	FallbackKeyTypes []string       `json:"device_unused_fallback_key_types"`
}

func syncKeys(t testing.TB, cli *mautrix.Client, since string, timeout time.Duration) *syncE2EE {
	t.Helper()
	raw := syncRaw(t, cli, since, timeout)
	b, _ := json.Marshal(raw)
	var out syncE2EE
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatalf("sync: %v", err)
	}
	if _, ok := raw["device_unused_fallback_key_types"]; !ok {
		t.Fatalf("sync lacks the required device_unused_fallback_key_types: %s", b)
	}
	return &out
}

// keyChanges is GET /keys/changes (mautrix's GetKeyChanges sends POST,
// which the spec does not define).
func keyChanges(cli *mautrix.Client, from, to string) (*mautrix.RespKeyChanges, error) {
	var resp mautrix.RespKeyChanges
	_, err := cli.MakeRequest(ctx, http.MethodGet, cli.BuildURLWithQuery(mautrix.ClientURLPath{"v3", "keys", "changes"},
		map[string]string{"from": from, "to": to}), nil, &resp)
	return &resp, err
}

func queryKeys(t testing.TB, cli *mautrix.Client, users ...id.UserID) *mautrix.RespQueryKeys {
	t.Helper()
	req := &mautrix.ReqQueryKeys{DeviceKeys: mautrix.DeviceKeysRequest{}, Timeout: 10000}
	for _, u := range users {
		req.DeviceKeys[u] = mautrix.DeviceIDList{}
	}
	resp, err := cli.QueryKeys(ctx, req)
	if err != nil {
		t.Fatalf("query keys: %v", err)
	}
	return resp
}

func TestKeysUploadQueryClaim(t *testing.T) {
	testdb.ForEach(t, func(t *testing.T, uri string) {
		srv := hstest.Start(t, uri, nil)
		alice := newTestDevice(t, srv.NewUser("alice"))
		bob := srv.NewUser("bob")
		if err := alice.cli.SetDeviceInfo(ctx, alice.cli.DeviceID, &mautrix.ReqDeviceInfo{DisplayName: "Alice's laptop"}); err != nil {
			t.Fatal(err)
		}

		first := alice.otks(t, 3)
		resp, err := alice.upload(t, map[string]any{"device_keys": alice.deviceKeys(t), "one_time_keys": first})
		if err != nil {
			t.Fatalf("upload: %v", err)
		}
		if resp.OneTimeKeyCounts["signed_curve25519"] != 3 {
			t.Fatalf("one_time_key_counts = %v, want 3", resp.OneTimeKeyCounts)
		}
		second := alice.otks(t, 2)
		if resp, err = alice.upload(t, map[string]any{"one_time_keys": second}); err != nil || resp.OneTimeKeyCounts["signed_curve25519"] != 5 {
			t.Fatalf("second upload = %+v, %v", resp, err)
		}
		// A retried upload (same keys) changes nothing.
		if resp, err = alice.upload(t, map[string]any{"device_keys": alice.deviceKeys(t), "one_time_keys": second}); err != nil || resp.OneTimeKeyCounts["signed_curve25519"] != 5 {
			t.Fatalf("repeated upload = %+v, %v", resp, err)
		}

		// Bob sees alice's device as uploaded, with its display name.
		q := queryKeys(t, bob, alice.cli.UserID, bob.UserID, "@nobody:localhost", "@carol:remote.example")
		dk, ok := q.DeviceKeys[alice.cli.UserID][alice.cli.DeviceID]
		if !ok {
			t.Fatalf("alice's device missing from %+v", q.DeviceKeys)
		}
		if dk.Keys.GetEd25519(alice.cli.DeviceID) != id.Ed25519(alice.ed.pub) || dk.Keys.GetCurve25519(alice.cli.DeviceID) != id.Curve25519(alice.curve) ||
			dk.Unsigned["device_display_name"] != "Alice's laptop" || len(dk.Algorithms) != 2 {
			t.Fatalf("alice's device keys = %+v", dk)
		}
		if ok, err := signatures.VerifySignatureJSON(&dk, alice.cli.UserID, string(alice.cli.DeviceID), id.Ed25519(alice.ed.pub)); !ok || err != nil {
			t.Fatalf("served device keys do not verify: %v", err)
		}
		if devs, ok := q.DeviceKeys[bob.UserID]; !ok || len(devs) != 0 {
			t.Fatalf("bob (no keys) should be listed without devices: %+v", q.DeviceKeys)
		}
		if _, ok := q.Failures["remote.example"]; !ok {
			t.Fatalf("failures = %+v, want remote.example", q.Failures)
		}
		// Asking for one device by ID.
		one, err := bob.QueryKeys(ctx, &mautrix.ReqQueryKeys{DeviceKeys: mautrix.DeviceKeysRequest{alice.cli.UserID: {"OTHERDEVICE"}}})
		if err != nil || len(one.DeviceKeys[alice.cli.UserID]) != 0 {
			t.Fatalf("query of another device = %+v, %v", one, err)
		}

		// Claims hand out the oldest upload first, each key once.
		var claimed []string
		for range 5 {
			keyID, obj := claimOne(t, bob, alice.cli.UserID, alice.cli.DeviceID)
			if keyID == "" || obj["key"] == nil || obj["signatures"] == nil {
				t.Fatalf("claim gave %q %v", keyID, obj)
			}
			claimed = append(claimed, keyID)
		}
		for i, keyID := range claimed[:3] {
			if _, ok := first[keyID]; !ok {
				t.Fatalf("claim %d gave %s, not one of the first upload's keys %v", i, keyID, claimed)
			}
		}
		if sorted := slices.Sorted(slices.Values(claimed)); len(slices.Compact(sorted)) != 5 {
			t.Fatalf("a key was handed out twice: %v", claimed)
		}
		if keyID, _ := claimOne(t, bob, alice.cli.UserID, alice.cli.DeviceID); keyID != "" {
			t.Fatalf("sixth claim gave %s with no keys left", keyID)
		}
		if s := syncKeys(t, alice.cli, "", 0); s.OTKCounts["signed_curve25519"] != 0 {
			t.Fatalf("otk counts after the claims = %v", s.OTKCounts)
		}
		// Remote users go to failures.
		cl, err := bob.ClaimKeys(ctx, &mautrix.ReqClaimKeys{OneTimeKeys: mautrix.OneTimeKeysRequest{"@carol:remote.example": {"X": "signed_curve25519"}}})
		if err != nil || cl.Failures["remote.example"] == nil {
			t.Fatalf("remote claim = %+v, %v", cl, err)
		}

		// Other identity keys for the same device are refused; so is a
		// used one-time key ID with another key.
		other := newTestDevice(t, alice.cli)
		_, err = other.upload(t, map[string]any{"device_keys": other.deviceKeys(t)})
		mustErr(t, err, mautrix.MInvalidParam, http.StatusBadRequest)
		name, obj := alice.signedKey(t, false)
		if _, err := alice.upload(t, map[string]any{"one_time_keys": map[string]any{name: obj}}); err != nil {
			t.Fatal(err)
		}
		_, obj2 := alice.signedKey(t, false)
		_, err = alice.upload(t, map[string]any{"one_time_keys": map[string]any{name: obj2}})
		mustErr(t, err, mautrix.MInvalidParam, http.StatusBadRequest)
		// Nothing of the refused uploads was stored.
		q = queryKeys(t, bob, alice.cli.UserID)
		if got := q.DeviceKeys[alice.cli.UserID][alice.cli.DeviceID].Keys.GetEd25519(alice.cli.DeviceID); got != id.Ed25519(alice.ed.pub) {
			t.Fatalf("ed25519 key changed to %s", got)
		}
		if s := syncKeys(t, alice.cli, "", 0); s.OTKCounts["signed_curve25519"] != 1 {
			t.Fatalf("otk counts = %v, want 1", s.OTKCounts)
		}
	})
}

func TestKeysFallback(t *testing.T) {
	testdb.ForEach(t, func(t *testing.T, uri string) {
		srv := hstest.Start(t, uri, nil)
		alice := newTestDevice(t, srv.NewUser("alice"))
		bob := srv.NewUser("bob")

		// Before any key: the count is 0, no fallback key.
		s := syncKeys(t, alice.cli, "", 0)
		if n, ok := s.OTKCounts["signed_curve25519"]; !ok || n != 0 || len(s.FallbackKeyTypes) != 0 {
			t.Fatalf("fresh device: counts %v, fallback %v", s.OTKCounts, s.FallbackKeyTypes)
		}
		fbName, fb := alice.signedKey(t, true)
		otkName, otk := alice.signedKey(t, false)
		if _, err := alice.upload(t, map[string]any{"device_keys": alice.deviceKeys(t),
			"one_time_keys": map[string]any{otkName: otk}, "fallback_keys": map[string]any{fbName: fb}}); err != nil {
			t.Fatal(err)
		}
		s = syncKeys(t, alice.cli, "", 0)
		if s.OTKCounts["signed_curve25519"] != 1 || !slices.Equal(s.FallbackKeyTypes, []string{"signed_curve25519"}) {
			t.Fatalf("after upload: counts %v, fallback %v", s.OTKCounts, s.FallbackKeyTypes)
		}
		// mautrix reads the same.
		ms, err := alice.cli.SyncRequest(ctx, 0, "", "", false, event.PresenceOffline)
		if err != nil || ms.DeviceOTKCount.SignedCurve25519 != 1 || !slices.Equal(ms.FallbackKeys, []id.KeyAlgorithm{id.KeyAlgorithmSignedCurve25519}) {
			t.Fatalf("mautrix sync: %+v %v, %v", ms.DeviceOTKCount, ms.FallbackKeys, err)
		}

		if keyID, _ := claimOne(t, bob, alice.cli.UserID, alice.cli.DeviceID); keyID != otkName {
			t.Fatalf("first claim = %s, want the one-time key %s", keyID, otkName)
		}
		// One-time keys are gone: the fallback key, as often as asked.
		for range 2 {
			keyID, obj := claimOne(t, bob, alice.cli.UserID, alice.cli.DeviceID)
			if keyID != fbName || obj["fallback"] != true {
				t.Fatalf("claim without one-time keys = %s %v, want the fallback key %s", keyID, obj, fbName)
			}
		}
		s = syncKeys(t, alice.cli, "", 0)
		if s.OTKCounts["signed_curve25519"] != 0 || len(s.FallbackKeyTypes) != 0 {
			t.Fatalf("after the fallback key was used: counts %v, fallback %v", s.OTKCounts, s.FallbackKeyTypes)
		}
		// Uploading the same fallback key again does not make it unused.
		if _, err := alice.upload(t, map[string]any{"fallback_keys": map[string]any{fbName: fb}}); err != nil {
			t.Fatal(err)
		}
		if s = syncKeys(t, alice.cli, "", 0); len(s.FallbackKeyTypes) != 0 {
			t.Fatalf("re-uploaded used fallback key reported unused: %v", s.FallbackKeyTypes)
		}
		// A new one replaces it.
		fb2Name, fb2 := alice.signedKey(t, true)
		if _, err := alice.upload(t, map[string]any{"fallback_keys": map[string]any{fb2Name: fb2}}); err != nil {
			t.Fatal(err)
		}
		if s = syncKeys(t, alice.cli, "", 0); !slices.Equal(s.FallbackKeyTypes, []string{"signed_curve25519"}) {
			t.Fatalf("new fallback key: %v", s.FallbackKeyTypes)
		}
		if keyID, _ := claimOne(t, bob, alice.cli.UserID, alice.cli.DeviceID); keyID != fb2Name {
			t.Fatalf("claim = %s, want the new fallback key %s", keyID, fb2Name)
		}
	})
}

// TestKeysClaimConcurrency: claimers racing for a device's keys never get
// the same one-time key, and get the fallback key once they are gone.
func TestKeysClaimConcurrency(t *testing.T) {
	testdb.ForEach(t, func(t *testing.T, uri string) {
		srv := hstest.Start(t, uri, nil)
		alice := newTestDevice(t, srv.NewUser("alice"))
		const otks, claimers, perClaimer = 40, 8, 10
		fbName, fb := alice.signedKey(t, true)
		if _, err := alice.upload(t, map[string]any{"device_keys": alice.deviceKeys(t), "one_time_keys": alice.otks(t, otks),
			"fallback_keys": map[string]any{fbName: fb}}); err != nil {
			t.Fatal(err)
		}
		clients := make([]*mautrix.Client, claimers)
		for i := range clients {
			clients[i] = srv.NewUser(fmt.Sprintf("claimer%d", i))
		}
		var mu sync.Mutex
		got := map[string]int{}
		var wg sync.WaitGroup
		errs := make(chan error, claimers)
		for _, cli := range clients {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range perClaimer {
					resp, err := cli.ClaimKeys(ctx, &mautrix.ReqClaimKeys{OneTimeKeys: mautrix.OneTimeKeysRequest{
						alice.cli.UserID: {alice.cli.DeviceID: id.KeyAlgorithmSignedCurve25519}}})
					if err != nil {
						errs <- err
						return
					}
					mu.Lock()
					for keyID := range resp.OneTimeKeys[alice.cli.UserID][alice.cli.DeviceID] {
						got[string(keyID)]++
					}
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatalf("claim: %v", err)
		}
		fallbacks, total := 0, 0
		for keyID, n := range got {
			total += n
			if keyID == fbName {
				fallbacks = n
			} else if n != 1 {
				t.Errorf("one-time key %s handed out %d times", keyID, n)
			}
		}
		if total != claimers*perClaimer || len(got)-1 != otks || fallbacks != claimers*perClaimer-otks {
			t.Fatalf("claims: %d answered, %d distinct one-time keys (want %d), fallback %d times", total, len(got)-1, otks, fallbacks)
		}
	})
}

// crossSigningKeys makes a user's master, self-signing and user-signing
// keys, the latter two signed by the master key.
type crossSigningKeys struct {
	master, selfSigning, userSigning keyPair
}

func newCrossSigningKeys(t testing.TB) *crossSigningKeys {
	return &crossSigningKeys{master: newKeyPair(t), selfSigning: newKeyPair(t), userSigning: newKeyPair(t)}
}

func (k *crossSigningKeys) key(t testing.TB, user id.UserID, usage id.CrossSigningUsage, kp keyPair, signer *keyPair) mautrix.CrossSigningKeys {
	t.Helper()
	ck := mautrix.CrossSigningKeys{UserID: user, Usage: []id.CrossSigningUsage{usage},
		Keys: map[id.KeyID]id.Ed25519{id.NewKeyID(id.KeyAlgorithmEd25519, kp.pub): id.Ed25519(kp.pub)}}
	if signer != nil {
		ck.Signatures = signatures.NewSingleSignature(user, id.KeyAlgorithmEd25519, signer.pub, signJSON(t, ck, signer.priv))
	}
	return ck
}

func (k *crossSigningKeys) upload(t testing.TB, user id.UserID) *mautrix.UploadCrossSigningKeysReq[any] {
	t.Helper()
	return &mautrix.UploadCrossSigningKeysReq[any]{
		Master:      k.key(t, user, id.XSUsageMaster, k.master, nil),
		SelfSigning: k.key(t, user, id.XSUsageSelfSigning, k.selfSigning, &k.master),
		UserSigning: k.key(t, user, id.XSUsageUserSigning, k.userSigning, &k.master),
	}
}

// sigOf is the signature by signer's key keyID in a served key object.
func sigOf(sigs signatures.Signatures, signer id.UserID, keyID string) string {
	return sigs[signer][id.KeyID(keyID)]
}

func TestCrossSigning(t *testing.T) {
	testdb.ForEach(t, func(t *testing.T, uri string) {
		srv := hstest.Start(t, uri, nil)
		alice := newTestDevice(t, srv.NewUser("alice"))
		bob := newTestDevice(t, srv.NewUser("bob"))
		alice.publish(t, 1)
		bob.publish(t, 1)
		publicRoom(t, alice.cli, bob.cli)
		bobSince := syncKeys(t, bob.cli, "", 0).NextBatch

		// The first upload needs no user-interactive auth (MSC3967), nor
		// does repeating it; replacing the keys does.
		ak := newCrossSigningKeys(t)
		noUIA := func(*mautrix.RespUserInteractive) any { t.Fatal("user-interactive auth asked for"); return nil }
		if err := alice.cli.UploadCrossSigningKeys(ctx, ak.upload(t, alice.cli.UserID), noUIA); err != nil {
			t.Fatalf("first cross-signing upload: %v", err)
		}
		if err := alice.cli.UploadCrossSigningKeys(ctx, ak.upload(t, alice.cli.UserID), noUIA); err != nil {
			t.Fatalf("repeated cross-signing upload: %v", err)
		}
		// Bob's sync hears of alice's new cross-signing keys.
		if s := syncKeys(t, bob.cli, bobSince, 5*time.Second); !slices.Contains(s.DeviceLists.Changed, alice.cli.UserID) {
			t.Fatalf("bob's device_lists.changed = %v, want alice", s.DeviceLists.Changed)
		}
		ak2 := newCrossSigningKeys(t)
		asked := 0
		err := alice.cli.UploadCrossSigningKeys(ctx, ak2.upload(t, alice.cli.UserID), func(uia *mautrix.RespUserInteractive) any {
			asked++
			if !uia.HasSingleStageFlow(mautrix.AuthTypePassword) {
				t.Fatalf("flows %+v lack m.login.password", uia.Flows)
			}
			return passwordAuth(uia.Session, "alice", pw)
		})
		if err != nil || asked != 1 {
			t.Fatalf("replacing cross-signing keys: %v (auth asked %d times)", err, asked)
		}
		ak = ak2
		// The wrong password does not do.
		err = alice.cli.UploadCrossSigningKeys(ctx, newCrossSigningKeys(t).upload(t, alice.cli.UserID), func(uia *mautrix.RespUserInteractive) any {
			return passwordAuth(uia.Session, "alice", "wrong")
		})
		if err == nil {
			t.Fatal("replaced cross-signing keys with a wrong password")
		}
		// A self-signing key the master key did not sign is refused.
		bad := ak.upload(t, alice.cli.UserID)
		bad.SelfSigning = ak.key(t, alice.cli.UserID, id.XSUsageSelfSigning, ak.selfSigning, &ak.userSigning)
		err = alice.cli.UploadCrossSigningKeys(ctx, bad, nil)
		mustErrCode(t, err, "M_INVALID_SIGNATURE", http.StatusBadRequest)

		bk := newCrossSigningKeys(t)
		if err := bob.cli.UploadCrossSigningKeys(ctx, bk.upload(t, bob.cli.UserID), noUIA); err != nil {
			t.Fatal(err)
		}
		aliceSince := syncKeys(t, alice.cli, "", 0).NextBatch
		bobSince = syncKeys(t, bob.cli, "", 0).NextBatch

		// Alice's self-signing key signs her device, her device signs her
		// master key, her user-signing key signs bob's master key.
		dk := alice.deviceKeys(t)
		devSig := mautrix.ReqKeysSignatures{UserID: dk.UserID, DeviceID: dk.DeviceID, Algorithms: dk.Algorithms,
			Keys: map[id.KeyID]string{}}
		for k, v := range dk.Keys {
			devSig.Keys[id.KeyID(k)] = v
		}
		devSig.Signatures = signatures.NewSingleSignature(alice.cli.UserID, id.KeyAlgorithmEd25519, ak.selfSigning.pub, signJSON(t, devSig, ak.selfSigning.priv))
		masterSig := mautrix.ReqKeysSignatures{UserID: alice.cli.UserID, Usage: []id.CrossSigningUsage{id.XSUsageMaster},
			Keys: map[id.KeyID]string{id.NewKeyID(id.KeyAlgorithmEd25519, ak.master.pub): ak.master.pub}}
		masterSig.Signatures = signatures.NewSingleSignature(alice.cli.UserID, id.KeyAlgorithmEd25519, string(alice.cli.DeviceID), signJSON(t, masterSig, alice.ed.priv))
		bobMaster := mautrix.ReqKeysSignatures{UserID: bob.cli.UserID, Usage: []id.CrossSigningUsage{id.XSUsageMaster},
			Keys: map[id.KeyID]string{id.NewKeyID(id.KeyAlgorithmEd25519, bk.master.pub): bk.master.pub}}
		bobMaster.Signatures = signatures.NewSingleSignature(alice.cli.UserID, id.KeyAlgorithmEd25519, ak.userSigning.pub, signJSON(t, bobMaster, ak.userSigning.priv))
		resp, err := alice.cli.UploadSignatures(ctx, &mautrix.ReqUploadSignatures{
			alice.cli.UserID: {string(alice.cli.DeviceID): devSig, ak.master.pub: masterSig},
			bob.cli.UserID:   {bk.master.pub: bobMaster},
		})
		if err != nil || len(resp.Failures) != 0 {
			t.Fatalf("signatures upload: %+v, %v", resp, err)
		}

		// Bad signatures and unknown keys are failures; the rest is stored.
		forged := bobMaster
		forged.Signatures = signatures.NewSingleSignature(alice.cli.UserID, id.KeyAlgorithmEd25519, ak.userSigning.pub, signJSON(t, bobMaster, ak.master.priv))
		changedKey := devSig
		changedKey.Algorithms = []id.Algorithm{id.AlgorithmOlmV1}
		changedKey.Signatures = signatures.NewSingleSignature(alice.cli.UserID, id.KeyAlgorithmEd25519, ak.selfSigning.pub, signJSON(t, changedKey, ak.selfSigning.priv))
		resp, err = alice.cli.UploadSignatures(ctx, &mautrix.ReqUploadSignatures{
			bob.cli.UserID:   {bk.master.pub: forged, "NOTAKEY": forged},
			alice.cli.UserID: {string(alice.cli.DeviceID): changedKey},
		})
		if err != nil {
			t.Fatal(err)
		}
		failure := func(user id.UserID, key string) string {
			m, _ := resp.Failures[string(user)].(map[string]any)
			f, _ := m[key].(map[string]any)
			code, _ := f["errcode"].(string)
			return code
		}
		if failure(bob.cli.UserID, bk.master.pub) != "M_INVALID_SIGNATURE" || failure(bob.cli.UserID, "NOTAKEY") == "" ||
			failure(alice.cli.UserID, string(alice.cli.DeviceID)) != "M_INVALID_SIGNATURE" {
			t.Fatalf("failures = %+v", resp.Failures)
		}

		// What alice sees: everything, her user-signing key included.
		q := queryKeys(t, alice.cli, alice.cli.UserID, bob.cli.UserID)
		if sigOf(q.DeviceKeys[alice.cli.UserID][alice.cli.DeviceID].Signatures, alice.cli.UserID, "ed25519:"+ak.selfSigning.pub) == "" {
			t.Errorf("alice's device lacks her self-signing signature: %+v", q.DeviceKeys[alice.cli.UserID][alice.cli.DeviceID].Signatures)
		}
		if sigOf(q.MasterKeys[alice.cli.UserID].Signatures, alice.cli.UserID, alice.keyID()) == "" {
			t.Errorf("alice's master key lacks her device's signature: %+v", q.MasterKeys[alice.cli.UserID])
		}
		if bobMasterKey := q.MasterKeys[bob.cli.UserID]; bobMasterKey.FirstKey() != id.Ed25519(bk.master.pub) ||
			sigOf(q.MasterKeys[bob.cli.UserID].Signatures, alice.cli.UserID, "ed25519:"+ak.userSigning.pub) == "" {
			t.Errorf("bob's master key as alice sees it: %+v", q.MasterKeys[bob.cli.UserID])
		}
		if bs, as := q.SelfSigningKeys[bob.cli.UserID], q.SelfSigningKeys[alice.cli.UserID]; bs.FirstKey() != id.Ed25519(bk.selfSigning.pub) || as.FirstKey() != id.Ed25519(ak.selfSigning.pub) {
			t.Errorf("self-signing keys = %+v", q.SelfSigningKeys)
		}
		if _, ok := q.UserSigningKeys[alice.cli.UserID]; !ok || len(q.UserSigningKeys) != 1 {
			t.Errorf("alice's user_signing_keys = %+v, want only hers", q.UserSigningKeys)
		}
		if ok, err := signatures.VerifySignatureJSON(q.SelfSigningKeys[alice.cli.UserID], alice.cli.UserID, ak.master.pub, id.Ed25519(ak.master.pub)); !ok {
			t.Errorf("served self-signing key does not verify with the master key: %v", err)
		}
		// What bob sees: not alice's user-signing key, nor its signature.
		q = queryKeys(t, bob.cli, alice.cli.UserID, bob.cli.UserID)
		if _, ok := q.UserSigningKeys[alice.cli.UserID]; ok {
			t.Errorf("bob sees alice's user-signing key")
		}
		if _, ok := q.UserSigningKeys[bob.cli.UserID]; !ok {
			t.Errorf("bob does not see his own user-signing key: %+v", q.UserSigningKeys)
		}
		if sigOf(q.MasterKeys[bob.cli.UserID].Signatures, alice.cli.UserID, "ed25519:"+ak.userSigning.pub) != "" {
			t.Errorf("bob sees alice's user-signing signature on his master key")
		}
		if sigOf(q.DeviceKeys[alice.cli.UserID][alice.cli.DeviceID].Signatures, alice.cli.UserID, "ed25519:"+ak.selfSigning.pub) == "" {
			t.Errorf("bob does not see alice's self-signing signature on her device")
		}

		// Alice's own devices hear that bob's identity changed for her;
		// bob hears that alice's devices changed (her signatures), not of
		// alice's signature on his key.
		if s := syncKeys(t, alice.cli, aliceSince, 0); !slices.Contains(s.DeviceLists.Changed, bob.cli.UserID) || !slices.Contains(s.DeviceLists.Changed, alice.cli.UserID) {
			t.Errorf("alice's device_lists.changed = %v, want alice and bob", s.DeviceLists.Changed)
		}
		if s := syncKeys(t, bob.cli, bobSince, 0); !slices.Equal(s.DeviceLists.Changed, []id.UserID{alice.cli.UserID}) {
			t.Errorf("bob's device_lists.changed = %v, want alice only", s.DeviceLists.Changed)
		}

		// A cross-signing key may not be named like one of the user's devices.
		carolKeys := newCrossSigningKeys(t)
		srv.CreateUser("carol", pw, false)
		carol := srv.Client()
		if _, err := carol.Login(ctx, &mautrix.ReqLogin{Type: mautrix.AuthTypePassword, DeviceID: id.DeviceID(carolKeys.master.pub),
			Identifier: mautrix.UserIdentifier{Type: mautrix.IdentifierTypeUser, User: "carol"}, Password: pw, StoreCredentials: true}); err != nil {
			t.Fatal(err)
		}
		err = carol.UploadCrossSigningKeys(ctx, carolKeys.upload(t, carol.UserID), nil)
		mustErr(t, err, mautrix.MForbidden, http.StatusForbidden)
	})
}

// TestCrossSigningFirstUploadRace: the first upload needs no auth, so
// when several first uploads of different keys race, one wins without
// auth and every other is asked for auth (and has stored nothing): a
// stolen access token cannot slip its keys in beside the owner's.
func TestCrossSigningFirstUploadRace(t *testing.T) {
	testdb.ForEach(t, func(t *testing.T, uri string) {
		srv := hstest.Start(t, uri, nil)
		cli := srv.NewUser("alice")
		const racers = 8
		sets := make([]*crossSigningKeys, racers)
		reqs := make([]*mautrix.UploadCrossSigningKeysReq[any], racers)
		for i := range sets {
			sets[i] = newCrossSigningKeys(t)
			reqs[i] = sets[i].upload(t, cli.UserID)
		}
		var asked atomic.Int32
		errs := make([]error, racers)
		var wg sync.WaitGroup
		start := make(chan struct{})
		for i := range reqs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				errs[i] = cli.UploadCrossSigningKeys(ctx, reqs[i], func(*mautrix.RespUserInteractive) any {
					asked.Add(1)
					return nil // no password: the upload fails with the 401
				})
			}()
		}
		close(start)
		wg.Wait()
		winner := -1
		for i, err := range errs {
			switch {
			case err == nil && winner >= 0:
				t.Fatalf("uploads %d and %d both stored keys without auth", winner, i)
			case err == nil:
				winner = i
			default:
				var httpErr mautrix.HTTPError
				if !errors.As(err, &httpErr) || httpErr.Response.StatusCode != http.StatusUnauthorized {
					t.Fatalf("upload %d: %v, want the 401 asking for auth", i, err)
				}
			}
		}
		if winner < 0 || int(asked.Load()) != racers-1 {
			t.Fatalf("winner %d, auth asked %d times; want one winner and %d asked", winner, asked.Load(), racers-1)
		}
		q := queryKeys(t, cli, cli.UserID)
		master, selfSigning := q.MasterKeys[cli.UserID], q.SelfSigningKeys[cli.UserID]
		if master.FirstKey() != id.Ed25519(sets[winner].master.pub) || selfSigning.FirstKey() != id.Ed25519(sets[winner].selfSigning.pub) {
			t.Fatalf("stored keys are not the winner's: %+v %+v", q.MasterKeys, q.SelfSigningKeys)
		}
	})
}

// TestDeviceListTracking: a user hears through /sync (woken at once) and
// /keys/changes when someone they share a room with changes their
// devices, when someone starts sharing a room with them, and when someone
// stops.
func TestDeviceListTracking(t *testing.T) {
	testdb.ForEach(t, func(t *testing.T, uri string) {
		srv := hstest.Start(t, uri, nil)
		alice := newTestDevice(t, srv.NewUser("alice"))
		bob := newTestDevice(t, srv.NewUser("bob"))
		carol := newTestDevice(t, srv.NewUser("carol"))
		alice.publish(t, 1)
		bob.publish(t, 1)
		room := publicRoom(t, alice.cli, bob.cli)
		since := syncKeys(t, bob.cli, "", 0).NextBatch
		aliceSince := syncKeys(t, alice.cli, "", 0).NextBatch

		// A new device of alice's uploads keys while bob long-polls.
		done := make(chan *syncE2EE, 1)
		go func() {
			// Not syncKeys: t.Fatal must not run on this goroutine.
			var s syncE2EE
			q := map[string]string{"set_presence": "offline", "timeout": "20000", "since": since}
			if _, err := bob.cli.MakeRequest(ctx, http.MethodGet, bob.cli.BuildURLWithQuery(mautrix.ClientURLPath{"v3", "sync"}, q), nil, &s); err != nil {
				t.Errorf("long-polling sync: %v", err)
			}
			done <- &s
		}()
		time.Sleep(200 * time.Millisecond)
		alice2 := newTestDevice(t, srv.Login("alice", pw))
		start := time.Now()
		alice2.publish(t, 1)
		carol.publish(t, 1) // shares no room with bob: not his concern
		var s *syncE2EE
		select {
		case s = <-done:
		case <-time.After(10 * time.Second):
			t.Fatal("bob's long-polling sync was not woken by alice's new device")
		}
		if !slices.Equal(s.DeviceLists.Changed, []id.UserID{alice.cli.UserID}) || len(s.DeviceLists.Left) != 0 {
			t.Fatalf("device_lists after alice's new device = %+v (woken after %v)", s.DeviceLists, time.Since(start))
		}
		if q := queryKeys(t, bob.cli, alice.cli.UserID); len(q.DeviceKeys[alice.cli.UserID]) != 2 {
			t.Fatalf("bob sees %d devices of alice, want 2", len(q.DeviceKeys[alice.cli.UserID]))
		}
		ch, err := keyChanges(bob.cli, since, s.NextBatch)
		if err != nil || !slices.Equal(ch.Changed, []id.UserID{alice.cli.UserID}) {
			t.Fatalf("keys/changes = %+v, %v", ch, err)
		}
		// Alice's first device hears of her own new device.
		if s := syncKeys(t, alice.cli, aliceSince, 0); !slices.Contains(s.DeviceLists.Changed, alice.cli.UserID) {
			t.Fatalf("alice's own device_lists.changed = %v", s.DeviceLists.Changed)
		}
		// Nothing new: an empty incremental sync has empty lists.
		since = s.NextBatch
		if s := syncKeys(t, bob.cli, since, 0); len(s.DeviceLists.Changed)+len(s.DeviceLists.Left) != 0 {
			t.Fatalf("quiet sync device_lists = %+v", s.DeviceLists)
		}

		// Carol joins: bob must fetch her devices, and she his and alice's.
		carolSince := syncKeys(t, carol.cli, "", 0).NextBatch
		if _, err := carol.cli.JoinRoomByID(ctx, room); err != nil {
			t.Fatal(err)
		}
		s = syncKeys(t, bob.cli, since, 0)
		if !slices.Equal(s.DeviceLists.Changed, []id.UserID{carol.cli.UserID}) {
			t.Fatalf("bob's device_lists after carol joined = %+v", s.DeviceLists)
		}
		since = s.NextBatch
		if s := syncKeys(t, carol.cli, carolSince, 0); !slices.Equal(s.DeviceLists.Changed, []id.UserID{alice.cli.UserID, bob.cli.UserID}) {
			t.Fatalf("carol's device_lists after joining = %+v", s.DeviceLists)
		}

		// Alice leaves: bob and carol may stop tracking her, and she them.
		aliceSince = syncKeys(t, alice.cli, "", 0).NextBatch
		if _, err := alice.cli.LeaveRoom(ctx, room); err != nil {
			t.Fatal(err)
		}
		s = syncKeys(t, bob.cli, since, 0)
		if !slices.Equal(s.DeviceLists.Left, []id.UserID{alice.cli.UserID}) || slices.Contains(s.DeviceLists.Changed, alice.cli.UserID) {
			t.Fatalf("bob's device_lists after alice left = %+v", s.DeviceLists)
		}
		if ch, err := keyChanges(bob.cli, since, s.NextBatch); err != nil || !slices.Equal(ch.Left, []id.UserID{alice.cli.UserID}) {
			t.Fatalf("keys/changes after alice left = %+v, %v", ch, err)
		}
		if s := syncKeys(t, alice.cli, aliceSince, 0); !slices.Equal(s.DeviceLists.Left, []id.UserID{bob.cli.UserID, carol.cli.UserID}) {
			t.Fatalf("alice's device_lists after leaving = %+v", s.DeviceLists)
		}
		// Her later changes are none of bob's business.
		since = s.NextBatch
		alice3 := newTestDevice(t, srv.Login("alice", pw))
		alice3.publish(t, 1)
		if s := syncKeys(t, bob.cli, since, 0); len(s.DeviceLists.Changed)+len(s.DeviceLists.Left) != 0 {
			t.Fatalf("bob hears of a user he shares no room with: %+v", s.DeviceLists)
		}
	})
}

// TestDeviceDeletionKeys: deleting a device (with auth, or by logging
// out) deletes its keys and tells those who track the user's devices.
func TestDeviceDeletionKeys(t *testing.T) {
	testdb.ForEach(t, func(t *testing.T, uri string) {
		srv := hstest.Start(t, uri, nil)
		alice := newTestDevice(t, srv.NewUser("alice"))
		alice2 := newTestDevice(t, srv.Login("alice", pw))
		alice3 := newTestDevice(t, srv.Login("alice", pw))
		bob := srv.NewUser("bob")
		for _, d := range []*testDevice{alice, alice2, alice3} {
			d.publish(t, 2)
		}
		publicRoom(t, alice.cli, bob)
		since := syncKeys(t, bob, "", 0).NextBatch

		expectWake(t, srv, bob.UserID, func() {
			body, err := alice.cli.MakeRequest(ctx, http.MethodDelete, alice.cli.BuildClientURL("v3", "devices", alice2.cli.DeviceID), map[string]any{}, nil)
			uia := uiaChallenge(t, body, err)
			if err := alice.cli.DeleteDevice(ctx, alice2.cli.DeviceID, &mautrix.ReqDeleteDevice[any]{Auth: passwordAuth(uia.Session, "alice", pw)}); err != nil {
				t.Fatalf("delete device: %v", err)
			}
		})
		q := queryKeys(t, bob, alice.cli.UserID)
		if _, ok := q.DeviceKeys[alice.cli.UserID][alice2.cli.DeviceID]; ok || len(q.DeviceKeys[alice.cli.UserID]) != 2 {
			t.Fatalf("after deleting %s: %v", alice2.cli.DeviceID, q.DeviceKeys[alice.cli.UserID])
		}
		if keyID, _ := claimOne(t, bob, alice.cli.UserID, alice2.cli.DeviceID); keyID != "" {
			t.Fatalf("claimed %s of a deleted device", keyID)
		}
		s := syncKeys(t, bob, since, 0)
		if !slices.Equal(s.DeviceLists.Changed, []id.UserID{alice.cli.UserID}) {
			t.Fatalf("device_lists after the deletion = %+v", s.DeviceLists)
		}
		ch, err := keyChanges(bob, since, s.NextBatch)
		if err != nil || !slices.Equal(ch.Changed, []id.UserID{alice.cli.UserID}) {
			t.Fatalf("keys/changes after the deletion = %+v, %v", ch, err)
		}

		// Logging out deletes the device too.
		since = s.NextBatch
		if _, err := alice3.cli.Logout(ctx); err != nil {
			t.Fatal(err)
		}
		if q := queryKeys(t, bob, alice.cli.UserID); len(q.DeviceKeys[alice.cli.UserID]) != 1 {
			t.Fatalf("after logout: %v", q.DeviceKeys[alice.cli.UserID])
		}
		if s := syncKeys(t, bob, since, 0); !slices.Equal(s.DeviceLists.Changed, []id.UserID{alice.cli.UserID}) {
			t.Fatalf("device_lists after the logout = %+v", s.DeviceLists)
		}
		// A device of the same ID logging in again starts without keys.
		again := srv.Client()
		if _, err := again.Login(ctx, &mautrix.ReqLogin{Type: mautrix.AuthTypePassword, DeviceID: alice2.cli.DeviceID,
			Identifier: mautrix.UserIdentifier{Type: mautrix.IdentifierTypeUser, User: "alice"}, Password: pw, StoreCredentials: true}); err != nil {
			t.Fatal(err)
		}
		fresh := newTestDevice(t, again)
		fresh.publish(t, 1)
		if got := queryKeys(t, bob, alice.cli.UserID).DeviceKeys[alice.cli.UserID][alice2.cli.DeviceID]; got.Keys.GetEd25519(alice2.cli.DeviceID) != id.Ed25519(fresh.ed.pub) {
			t.Fatalf("re-created device serves %+v", got)
		}

		// A password change signs the other devices out, keys and all.
		since = syncKeys(t, bob, "", 0).NextBatch
		url := alice.cli.BuildClientURL("v3", "account", "password")
		body, err := alice.cli.MakeRequest(ctx, http.MethodPost, url, map[string]any{"new_password": "another good password"}, nil)
		uia := uiaChallenge(t, body, err)
		if _, err := alice.cli.MakeRequest(ctx, http.MethodPost, url, map[string]any{"new_password": "another good password",
			"auth": passwordAuth(uia.Session, "alice", pw)}, nil); err != nil {
			t.Fatalf("change password: %v", err)
		}
		if devs := queryKeys(t, bob, alice.cli.UserID).DeviceKeys[alice.cli.UserID]; len(devs) != 1 {
			t.Fatalf("after the password change alice has %d devices with keys, want 1", len(devs))
		}
		if s := syncKeys(t, bob, since, 0); !slices.Equal(s.DeviceLists.Changed, []id.UserID{alice.cli.UserID}) {
			t.Fatalf("device_lists after the password change = %+v", s.DeviceLists)
		}
	})
}

// TestKeysBadInput: malformed key requests get the spec's errors, never a
// 5xx, and store nothing.
func TestKeysBadInput(t *testing.T) {
	testdb.ForEach(t, func(t *testing.T, uri string) {
		srv := hstest.Start(t, uri, nil)
		alice := newTestDevice(t, srv.NewUser("alice"))
		bob := srv.NewUser("bob")
		dk := func(mutate func(m map[string]any)) map[string]any {
			raw, _ := json.Marshal(alice.deviceKeys(t))
			var m map[string]any
			_ = json.Unmarshal(raw, &m)
			mutate(m)
			return m
		}
		resign := func(m map[string]any) {
			delete(m, "signatures")
			m["signatures"] = map[string]any{string(alice.cli.UserID): map[string]string{alice.keyID(): signJSON(t, m, alice.ed.priv)}}
		}
		otk := func() map[string]any { _, obj := alice.signedKey(t, false); return obj }
		ak := newCrossSigningKeys(t)
		csk := func(mutate func(m map[string]any)) map[string]any {
			raw, _ := json.Marshal(ak.key(t, alice.cli.UserID, id.XSUsageMaster, ak.master, nil))
			var m map[string]any
			_ = json.Unmarshal(raw, &m)
			mutate(m)
			return m
		}
		keysURL := func(path ...string) string {
			return alice.cli.BuildClientURL(append([]any{"v3", "keys"}, toAny(path)...)...)
		}
		long := strings.Repeat("k", 300)
		cases := []struct {
			name   string
			method string
			url    string
			body   any
			code   string
			status int
		}{
			{"device_keys not an object", "POST", keysURL("upload"), map[string]any{"device_keys": "x"}, "M_BAD_JSON", 400},
			{"device_keys of another user", "POST", keysURL("upload"), map[string]any{"device_keys": dk(func(m map[string]any) { m["user_id"] = string(bob.UserID); resign(m) })}, "M_INVALID_PARAM", 400},
			{"device_keys of another device", "POST", keysURL("upload"), map[string]any{"device_keys": dk(func(m map[string]any) { m["device_id"] = "OTHER"; resign(m) })}, "M_INVALID_PARAM", 400},
			{"device_keys without ed25519", "POST", keysURL("upload"), map[string]any{"device_keys": dk(func(m map[string]any) {
				m["keys"] = map[string]string{"curve25519:" + string(alice.cli.DeviceID): alice.curve}
				resign(m)
			})}, "M_INVALID_PARAM", 400},
			{"device_keys with a bad ed25519 key", "POST", keysURL("upload"), map[string]any{"device_keys": dk(func(m map[string]any) {
				m["keys"] = map[string]string{alice.keyID(): "not base64!"}
				resign(m)
			})}, "M_INVALID_PARAM", 400},
			{"device_keys keys of wrong type", "POST", keysURL("upload"), map[string]any{"device_keys": dk(func(m map[string]any) { m["keys"] = []int{1} })}, "M_BAD_JSON", 400},
			{"device_keys unsigned", "POST", keysURL("upload"), map[string]any{"device_keys": dk(func(m map[string]any) { delete(m, "signatures") })}, "M_MISSING_PARAM", 400},
			{"device_keys signed by another key", "POST", keysURL("upload"), map[string]any{"device_keys": dk(func(m map[string]any) {
				m["signatures"] = map[string]any{string(alice.cli.UserID): map[string]string{alice.keyID(): signJSON(t, m, newKeyPair(t).priv)}}
			})}, "M_INVALID_SIGNATURE", 400},
			{"device_keys altered after signing", "POST", keysURL("upload"), map[string]any{"device_keys": dk(func(m map[string]any) { m["algorithms"] = []string{"x"} })}, "M_INVALID_SIGNATURE", 400},
			{"device_keys signature not base64", "POST", keysURL("upload"), map[string]any{"device_keys": dk(func(m map[string]any) {
				m["signatures"] = map[string]any{string(alice.cli.UserID): map[string]string{alice.keyID(): "%%%"}}
			})}, "M_INVALID_SIGNATURE", 400},
			{"device_keys signatures of wrong type", "POST", keysURL("upload"), map[string]any{"device_keys": dk(func(m map[string]any) { m["signatures"] = "x" })}, "M_BAD_JSON", 400},
			{"one_time_keys not an object", "POST", keysURL("upload"), map[string]any{"one_time_keys": []int{}}, "M_BAD_JSON", 400},
			{"one-time key name without algorithm", "POST", keysURL("upload"), map[string]any{"one_time_keys": map[string]any{"AAAA": otk()}}, "M_INVALID_PARAM", 400},
			{"one-time key name too long", "POST", keysURL("upload"), map[string]any{"one_time_keys": map[string]any{"signed_curve25519:" + long: otk()}}, "M_INVALID_PARAM", 400},
			{"one-time key a number", "POST", keysURL("upload"), map[string]any{"one_time_keys": map[string]any{"signed_curve25519:A": 5}}, "M_BAD_JSON", 400},
			{"one-time key object without key", "POST", keysURL("upload"), map[string]any{"one_time_keys": map[string]any{"signed_curve25519:A": map[string]any{"signatures": map[string]any{}}}}, "M_BAD_JSON", 400},
			{"two fallback keys of one algorithm", "POST", keysURL("upload"), map[string]any{"fallback_keys": map[string]any{"signed_curve25519:A": otk(), "signed_curve25519:B": otk()}}, "M_INVALID_PARAM", 400},
			{"query without device_keys", "POST", keysURL("query"), map[string]any{}, "M_MISSING_PARAM", 400},
			{"query of a non-user", "POST", keysURL("query"), map[string]any{"device_keys": map[string]any{"alice": []string{}}}, "M_INVALID_PARAM", 400},
			{"query with devices not a list", "POST", keysURL("query"), map[string]any{"device_keys": map[string]any{string(bob.UserID): "x"}}, "M_BAD_JSON", 400},
			{"query with a string timeout", "POST", keysURL("query"), map[string]any{"device_keys": map[string]any{}, "timeout": "10s"}, "M_BAD_JSON", 400},
			{"claim without one_time_keys", "POST", keysURL("claim"), map[string]any{"timeout": 10}, "M_MISSING_PARAM", 400},
			{"claim with a number algorithm", "POST", keysURL("claim"), map[string]any{"one_time_keys": map[string]any{string(bob.UserID): map[string]any{"D": 1}}}, "M_BAD_JSON", 400},
			{"claim with an empty algorithm", "POST", keysURL("claim"), map[string]any{"one_time_keys": map[string]any{string(bob.UserID): map[string]any{"D": ""}}}, "M_INVALID_PARAM", 400},
			{"claim for a non-user", "POST", keysURL("claim"), map[string]any{"one_time_keys": map[string]any{"bob": map[string]any{"D": "signed_curve25519"}}}, "M_INVALID_PARAM", 400},
			{"changes without from", "GET", keysURL("changes"), nil, "M_MISSING_PARAM", 400},
			{"changes from a bad token", "GET", keysURL("changes") + "?from=bogus", nil, "M_INVALID_PARAM", 400},
			{"changes to a bad token", "GET", keysURL("changes") + "?from=s1_0&to=t5", nil, "M_INVALID_PARAM", 400},
			{"master key not an object", "POST", keysURL("device_signing", "upload"), map[string]any{"master_key": 5}, "M_BAD_JSON", 400},
			{"master key of another user", "POST", keysURL("device_signing", "upload"), map[string]any{"master_key": csk(func(m map[string]any) { m["user_id"] = string(bob.UserID) })}, "M_INVALID_PARAM", 400},
			{"master key without master usage", "POST", keysURL("device_signing", "upload"), map[string]any{"master_key": csk(func(m map[string]any) { m["usage"] = []string{"self_signing"} })}, "M_INVALID_PARAM", 400},
			{"master key with two keys", "POST", keysURL("device_signing", "upload"), map[string]any{"master_key": csk(func(m map[string]any) {
				m["keys"] = map[string]string{"ed25519:" + ak.master.pub: ak.master.pub, "ed25519:" + ak.userSigning.pub: ak.userSigning.pub}
			})}, "M_INVALID_PARAM", 400},
			{"master key named after another key", "POST", keysURL("device_signing", "upload"), map[string]any{"master_key": csk(func(m map[string]any) {
				m["keys"] = map[string]string{"ed25519:" + ak.userSigning.pub: ak.master.pub}
			})}, "M_INVALID_PARAM", 400},
			{"master key without usage", "POST", keysURL("device_signing", "upload"), map[string]any{"master_key": csk(func(m map[string]any) { delete(m, "usage") })}, "M_MISSING_PARAM", 400},
			{"self-signing key without a master key", "POST", keysURL("device_signing", "upload"), map[string]any{"self_signing_key": ak.key(t, alice.cli.UserID, id.XSUsageSelfSigning, ak.selfSigning, &ak.master)}, "M_MISSING_PARAM", 400},
			{"auth not an object", "POST", keysURL("device_signing", "upload"), map[string]any{"auth": 5}, "M_BAD_JSON", 400},
			{"signatures not objects", "POST", keysURL("signatures", "upload"), map[string]any{string(bob.UserID): "x"}, "M_BAD_JSON", 400},
			{"signatures for a non-user", "POST", keysURL("signatures", "upload"), map[string]any{"bob": map[string]any{}}, "M_INVALID_PARAM", 400},
		}
		for _, c := range cases {
			_, err := alice.cli.MakeRequest(ctx, c.method, c.url, c.body, nil)
			var httpErr mautrix.HTTPError
			if !errors.As(err, &httpErr) || httpErr.RespError == nil || httpErr.RespError.ErrCode != c.code || httpErr.Response.StatusCode != c.status {
				t.Errorf("%s: want %s (HTTP %d), got %v", c.name, c.code, c.status, err)
			}
		}
		// Nothing was stored.
		q := queryKeys(t, bob, alice.cli.UserID)
		if len(q.DeviceKeys[alice.cli.UserID]) != 0 || len(q.MasterKeys) != 0 {
			t.Fatalf("refused uploads left keys: %+v", q)
		}
		if s := syncKeys(t, alice.cli, "", 0); s.OTKCounts["signed_curve25519"] != 0 || len(s.FallbackKeyTypes) != 0 {
			t.Fatalf("refused uploads left keys: %+v", s)
		}
		// Signatures on keys that do not exist are failures, not errors.
		var resp struct {
			Failures map[string]map[string]map[string]string `json:"failures"`
		}
		if _, err := alice.cli.MakeRequest(ctx, "POST", keysURL("signatures", "upload"), map[string]any{
			string(bob.UserID): map[string]any{"NOKEY": map[string]any{}}, "@x:remote.example": map[string]any{"K": map[string]any{}},
			string(alice.cli.UserID): map[string]any{"NODEVICE": 5},
		}, &resp); err != nil {
			t.Fatal(err)
		}
		if resp.Failures[string(bob.UserID)]["NOKEY"]["errcode"] == "" || resp.Failures["@x:remote.example"]["K"]["errcode"] == "" ||
			resp.Failures[string(alice.cli.UserID)]["NODEVICE"]["errcode"] == "" {
			t.Fatalf("failures = %+v", resp.Failures)
		}
	})
}

func toAny(s []string) []any {
	out := make([]any, len(s))
	for i, v := range s {
		out[i] = v
	}
	return out
}

// TestSendToDeviceAtVolume: one request with 1,000 Olm-sized messages to
// many devices (and "*" to every device of a user), as a client sharing a
// room key in a big room sends; every device gets its message by /sync.
func TestSendToDeviceAtVolume(t *testing.T) {
	testdb.ForEach(t, func(t *testing.T, uri string) {
		// 1,000 such messages are about 2 MB: more than the default
		// http.max_body_bytes (1 MiB, which fits the 250 messages per
		// request matrix-rust-sdk sends), so this server allows 4 MiB.
		srv := hstest.Start(t, uri, func(c *config.Config) { c.HTTP.MaxBodyBytes = 4 << 20 })
		sender := srv.NewUser("sender")
		const users, devicesEach = 40, 25 // 1,000 devices
		db := srv.HS.DB
		messages := map[id.UserID]map[id.DeviceID]*event.Content{}
		// An Olm pre-key message carrying an m.room_key is about 2 KB.
		ciphertext := b64(make([]byte, 1500))
		var targets []id.UserID
		for u := range users {
			userID := srv.CreateUser(fmt.Sprintf("member%02d", u), pw, false)
			targets = append(targets, userID)
			messages[userID] = map[id.DeviceID]*event.Content{}
			for d := range devicesEach {
				deviceID := id.DeviceID(fmt.Sprintf("DEV%02d%02d", u, d))
				if err := db.EnsureDevice(ctx, userID, deviceID, nil, ""); err != nil {
					t.Fatal(err)
				}
				messages[userID][deviceID] = &event.Content{Raw: map[string]any{
					"algorithm": "m.olm.v1.curve25519-aes-sha2", "sender_key": b64(make([]byte, 32)),
					"ciphertext": map[string]any{b64([]byte(string(deviceID) + strings.Repeat("x", 30))): map[string]any{"type": 0, "body": ciphertext}},
				}}
			}
		}
		// A logged-in member, addressed with "*", reads by /sync.
		reader := srv.Login("member00", pw)
		messages[targets[0]] = map[id.DeviceID]*event.Content{"*": {Raw: map[string]any{"n": "all"}}}
		body, _ := json.Marshal(mautrix.ReqSendToDevice{Messages: messages})
		t.Logf("request body: %d bytes", len(body))
		start := time.Now()
		if _, err := sender.SendToDevice(ctx, event.ToDeviceEncrypted, &mautrix.ReqSendToDevice{Messages: messages}); err != nil {
			t.Fatalf("send to 1,000 devices: %v", err)
		}
		t.Logf("stored in %v", time.Since(start))
		upto := streamPos(t, srv)
		for i, userID := range targets {
			for d := range devicesEach {
				deviceID := id.DeviceID(fmt.Sprintf("DEV%02d%02d", i, d))
				msgs, err := db.ToDeviceSince(ctx, userID, deviceID, 0, upto, 0)
				if err != nil {
					t.Fatal(err)
				}
				want := 1
				if len(msgs) != want || (i > 0 && !strings.Contains(string(msgs[0].Content), ciphertext)) {
					t.Fatalf("%s %s has %d messages", userID, deviceID, len(msgs))
				}
			}
		}
		s, err := reader.SyncRequest(ctx, 0, "", "", false, event.PresenceOffline)
		if err != nil {
			t.Fatal(err)
		}
		if len(s.ToDevice.Events) != 1 || s.ToDevice.Events[0].Sender != sender.UserID || s.ToDevice.Events[0].Content.Raw["n"] != "all" {
			t.Fatalf("reader's to-device events = %+v", s.ToDevice.Events)
		}
	})
}

// BenchmarkKeysQuery1000Users: /keys/query for 1,000 users with two
// devices and cross-signing keys each, as a client does on its first sync
// in a big encrypted room.
func BenchmarkKeysQuery1000Users(b *testing.B) {
	for _, dialect := range []string{testdb.SQLite, testdb.Postgres} {
		b.Run(dialect, func(b *testing.B) {
			srv := hstest.Start(b, testdb.URI(b, dialect), nil)
			db := srv.HS.DB
			const users = 1000
			req := &mautrix.ReqQueryKeys{DeviceKeys: mautrix.DeviceKeysRequest{}}
			for u := range users {
				userID := id.UserID(fmt.Sprintf("@bench%04d:localhost", u))
				if err := db.CreateUser(ctx, &storage.User{UserID: userID, CreatedTS: time.Now().UnixMilli()}); err != nil {
					b.Fatal(err)
				}
				req.DeviceKeys[userID] = mautrix.DeviceIDList{}
				for d := range 2 {
					deviceID := id.DeviceID(fmt.Sprintf("BENCH%d", d))
					if err := db.EnsureDevice(ctx, userID, deviceID, nil, ""); err != nil {
						b.Fatal(err)
					}
					dev := newTestDevice(b, &mautrix.Client{UserID: userID, DeviceID: deviceID})
					raw, _ := canonicaljson.Marshal(dev.deviceKeys(b))
					if _, err := db.UploadKeys(ctx, &storage.KeyUpload{UserID: userID, DeviceID: deviceID, DeviceKeys: raw,
						Ed25519: dev.ed.pub, Curve25519: dev.curve}); err != nil {
						b.Fatal(err)
					}
				}
				xs := newCrossSigningKeys(b)
				var keys []storage.CrossSigningKey
				for _, k := range []struct {
					usage id.CrossSigningUsage
					kp    keyPair
				}{{id.XSUsageMaster, xs.master}, {id.XSUsageSelfSigning, xs.selfSigning}} {
					raw, _ := canonicaljson.Marshal(xs.key(b, userID, k.usage, k.kp, &xs.master))
					keys = append(keys, storage.CrossSigningKey{UserID: userID, Type: string(k.usage), PublicKey: k.kp.pub, JSON: raw})
				}
				if _, err := db.SetCrossSigningKeys(ctx, userID, keys, ""); err != nil {
					b.Fatal(err)
				}
			}
			cli := srv.NewUser("querier")
			b.ResetTimer()
			for b.Loop() {
				resp, err := cli.QueryKeys(ctx, req)
				if err != nil {
					b.Fatal(err)
				}
				if len(resp.DeviceKeys) != users || len(resp.MasterKeys) != users {
					b.Fatalf("answered %d users, %d master keys", len(resp.DeviceKeys), len(resp.MasterKeys))
				}
			}
			b.ReportMetric(float64(users*2), "devices/op")
		})
	}
}
