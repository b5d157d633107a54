package main

import (
	"net"
	"strings"
	"sync"
	"testing"
)

// The chat alone: bad lines get an ERR and change nothing, good ones are
// broadcast to the channel and relayed; the bridge's posts are broadcast
// but not relayed back.
func TestChatProtocol(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var relayed []string
	var saved int64
	chat := newChatServer(ln, 41, func(e chatEvent) {
		mu.Lock()
		relayed = append(relayed, e.String())
		mu.Unlock()
	})
	chat.saveLastID = func(id int64) { mu.Lock(); saved = id; mu.Unlock() }
	go chat.serve()
	defer chat.close()
	addr := ln.Addr().String()

	bob := connect(t, addr, "")
	for _, tc := range []struct{ line, answer string }{
		{"MSG #go hi", "ERR say NICK name first"},
		{"NICK bad nick!", "ERR a nick is 1 to 30 letters, digits, _ or -"},
		{"NICK bob", "NICK bob"},
		{"NICK bobby", "ERR you are bob already"},
		{"HELP", `ERR unknown command "HELP"`},
		{"", ""}, // ignored
		{"JOIN go", `ERR "go" is not a channel (#name: a-z, 0-9, _ . -)`},
		{"JOIN #go extra", "ERR usage: JOIN #channel"},
		{"MSG #go hi", "ERR JOIN #go first"},
		{"JOIN #Go", "JOIN #go bob"},
		{"JOIN #go", "ERR you are in #go already"},
		{"MSG #go", "ERR usage: MSG #channel text"},
		{"MSG #go hello  world ", "MSG #go m42 bob hello  world "},
		{"REACT #go m42 a b", "ERR usage: REACT #channel msgid emoji"},
		{"EDIT #go m7 hi", "ERR there is no message m7 in #go"},
		{"REPLY #go m42 welcome", "REPLY #go m43 bob m42 welcome"},
	} {
		bob.send(tc.line)
		if tc.answer != "" {
			if got := bob.next(); got != tc.answer {
				t.Errorf("%q: answer %q, want %q", tc.line, got, tc.answer)
			}
		}
	}
	mu.Lock()
	if saved != 43 {
		t.Errorf("last message ID saved: %d, want 43", saved)
	}
	mu.Unlock()

	eve := connect(t, addr, "")
	eve.send("NICK BOB")
	eve.expect("ERR BOB is taken")
	eve.send("NICK eve")
	eve.expect("NICK eve")
	eve.send("JOIN #go")
	eve.expect("JOIN #go eve")
	bob.expect("JOIN #go eve")
	eve.send("EDIT #go m42 hacked")
	eve.expect("ERR m42 is bob's message, not yours")
	eve.send("DELETE #go m42")
	eve.expect("ERR m42 is bob's message, not yours")
	eve.send("REACT #go m42 🎉")
	bob.expect("REACT #go m42 eve 🎉")

	// The bridge posts for Matrix users: broadcast, with the text on one line.
	id, err := chat.post(chatEvent{Kind: "MSG", Channel: "#go", Nick: "Alice", Text: "two\nlines"})
	if err != nil || id != "m44" {
		t.Fatalf("post = %q, %v", id, err)
	}
	eve.expect("MSG #go m44 Alice two lines")
	if _, err := chat.post(chatEvent{Kind: "EDIT", Channel: "#go", ID: "m1", Nick: "Alice", Text: "x"}); err == nil {
		t.Error("the bridge edited a message that does not exist")
	}

	// A line that is too long ends the connection: its user parts.
	eve.send(strings.Repeat("x", maxLine+1))
	eve.expect("ERR line too long .*")
	bob.expect("PART #go eve quit")

	chat.close() // waits for the last relay call
	mu.Lock()
	defer mu.Unlock()
	want := []string{"JOIN #go bob", "MSG #go m42 bob hello  world ", "REPLY #go m43 bob m42 welcome",
		"JOIN #go eve", "REACT #go m42 eve 🎉", "PART #go eve quit"}
	if strings.Join(relayed, "\n") != strings.Join(want, "\n") {
		t.Errorf("relayed:\n%s\nwant:\n%s", strings.Join(relayed, "\n"), strings.Join(want, "\n"))
	}
}
