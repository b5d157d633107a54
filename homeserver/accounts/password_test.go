package accounts

import (
	"strings"
	"testing"

	"golang.org/x/crypto/bcrypt"

	"github.com/switchboard-im/switchboard/homeserver/config"
)

func TestArgon2idHashAndVerify(t *testing.T) {
	h := NewHasher(config.Argon2{MemoryKiB: 1024, Iterations: 1, Parallelism: 1})
	hash, err := h.Hash("hunter2 hunter2")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(hash, "$argon2id$v=19$m=1024,t=1,p=1$") {
		t.Fatalf("unexpected hash format %q", hash)
	}
	if !h.Verify(hash, "hunter2 hunter2") {
		t.Fatal("right password rejected")
	}
	if h.Verify(hash, "hunter2 hunter3") || h.Verify(hash, "") {
		t.Fatal("wrong password accepted")
	}
	other, _ := h.Hash("hunter2 hunter2")
	if other == hash {
		t.Fatal("two hashes of one password are equal: salt not random")
	}
	// Hashes made with other parameters still verify (config changes).
	h2 := NewHasher(config.Argon2{MemoryKiB: 2048, Iterations: 2, Parallelism: 2})
	if !h2.Verify(hash, "hunter2 hunter2") {
		t.Fatal("hash with older parameters rejected")
	}
}

func TestBcryptImportedFromSynapse(t *testing.T) {
	h := NewHasher(config.Argon2{MemoryKiB: 1024, Iterations: 1, Parallelism: 1})
	hash, _ := bcrypt.GenerateFromPassword([]byte("synapse pass"), bcrypt.MinCost)
	if !h.Verify(string(hash), "synapse pass") || h.Verify(string(hash), "other") {
		t.Fatal("bcrypt verification wrong")
	}
}

func TestGarbageHashesNeverVerify(t *testing.T) {
	h := NewHasher(config.Argon2{MemoryKiB: 1024, Iterations: 1, Parallelism: 1})
	for _, hash := range []string{"", "plaintext", "$argon2id$", "$argon2id$v=19$m=1024,t=1,p=1$!!$!!", "$argon2i$v=19$m=1,t=1,p=1$AAAA$AAAA", "$2b$garbage"} {
		if h.Verify(hash, "plaintext") || h.Verify(hash, "") {
			t.Errorf("hash %q verified", hash)
		}
	}
}

func TestUserIDFor(t *testing.T) {
	s := &Service{ServerName: "example.org"}
	for in, want := range map[string]string{
		"alice":         "@alice:example.org",
		"Alice":         "@alice:example.org",
		" bob ":         "@bob:example.org",
		"a.b_c=d-e/f+g": "@a.b_c=d-e/f+g:example.org",
	} {
		got, err := s.UserIDFor(in)
		if err != nil || string(got) != want {
			t.Errorf("UserIDFor(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "al ice", "ålice", "a:b", "@a", strings.Repeat("a", 250)} {
		if _, err := s.UserIDFor(bad); err == nil {
			t.Errorf("UserIDFor(%q) accepted", bad)
		}
	}
	if got, err := s.ResolveLogin("@carol:example.org"); err != nil || got != "@carol:example.org" {
		t.Errorf("ResolveLogin full ID = %q, %v", got, err)
	}
	if _, err := s.ResolveLogin("@carol:elsewhere.org"); err == nil {
		t.Error("ResolveLogin accepted a remote user")
	}
}
