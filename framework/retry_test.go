package framework

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/appservice"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// fast keeps backoffs short; server-asked waits stay what the server asks.
var fast = RetryOptions{InitialBackoff: 5 * time.Millisecond, MaxBackoff: 20 * time.Millisecond}

// attempt is one request as the server saw it.
type attempt struct {
	at     time.Time
	method string
	uri    string
	body   string
}

// script is an httptest server on loopback answering each request with
// the next of its replies (the last one repeats).
type script struct {
	t       *testing.T
	srv     *httptest.Server
	mu      sync.Mutex
	replies []func(w http.ResponseWriter, r *http.Request)
	seen    []attempt
}

func newScript(t *testing.T, replies ...func(w http.ResponseWriter, r *http.Request)) *script {
	s := &script{t: t, replies: replies}
	s.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		s.mu.Lock()
		n := len(s.seen)
		s.seen = append(s.seen, attempt{at: time.Now(), method: r.Method, uri: r.URL.RequestURI(), body: string(body)})
		reply := s.replies[min(n, len(s.replies)-1)]
		s.mu.Unlock()
		reply(w, r)
	}))
	t.Cleanup(s.srv.Close)
	return s
}

func (s *script) attempts() []attempt {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]attempt(nil), s.seen...)
}

func reply(status int, header map[string]string, body string) func(http.ResponseWriter, *http.Request) {
	return func(w http.ResponseWriter, _ *http.Request) {
		for k, v := range header {
			w.Header().Set(k, v)
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_, _ = io.WriteString(w, body)
	}
}

// hangUp closes the connection without answering.
func hangUp(w http.ResponseWriter, _ *http.Request) {
	conn, _, err := w.(http.Hijacker).Hijack()
	if err == nil {
		conn.Close()
	}
}

func do(t *testing.T, ctx context.Context, opts RetryOptions, method, url, body string) (*http.Response, string, error) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body) // sets GetBody
	}
	req, err := http.NewRequestWithContext(ctx, method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := (&http.Client{Transport: RetryTransport(nil, opts)}).Do(req)
	if err != nil {
		return nil, "", err
	}
	defer resp.Body.Close()
	got, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read body: %v", err)
	}
	return resp, string(got), nil
}

const limited = `{"errcode":"M_LIMIT_EXCEEDED","error":"Too many requests"`

func TestRetryTransportHonoursRateLimit(t *testing.T) {
	for _, tc := range []struct {
		name   string
		header map[string]string
		body   string
		want   time.Duration
	}{
		{"retry_after_ms", nil, limited + `,"retry_after_ms":300}`, 300 * time.Millisecond},
		{"Retry-After", map[string]string{"Retry-After": "1"}, limited + `}`, time.Second},
		{"the longer of both", map[string]string{"Retry-After": "1"}, limited + `,"retry_after_ms":50}`, time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newScript(t, reply(http.StatusTooManyRequests, tc.header, tc.body), reply(http.StatusOK, nil, `{"event_id":"$1"}`))
			const sent = `{"msgtype":"m.text","body":"hello ✓"}`
			resp, got, err := do(t, context.Background(), fast, http.MethodPost, s.srv.URL+"/send", sent)
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != http.StatusOK || got != `{"event_id":"$1"}` {
				t.Fatalf("got %d %s, want the 200 after the retry", resp.StatusCode, got)
			}
			a := s.attempts()
			if len(a) != 2 {
				t.Fatalf("%d attempts, want 2", len(a))
			}
			if waited := a[1].at.Sub(a[0].at); waited < tc.want {
				t.Errorf("retried after %s, server asked for %s", waited, tc.want)
			} else if waited > tc.want+tc.want/10+500*time.Millisecond {
				t.Errorf("retried after %s, server asked for only %s", waited, tc.want)
			}
			for i, at := range a {
				if at.body != sent {
					t.Errorf("attempt %d sent body %q, want %q", i+1, at.body, sent)
				}
			}
		})
	}
}

func TestRetryTransportServerErrors(t *testing.T) {
	for _, tc := range []struct {
		name     string
		method   string
		replies  []func(http.ResponseWriter, *http.Request)
		attempts int
		status   int
	}{
		{"GET 500 503 then 200", http.MethodGet,
			[]func(http.ResponseWriter, *http.Request){reply(500, nil, `{}`), reply(503, nil, `{}`), reply(200, nil, `{}`)}, 3, 200},
		{"PUT 502 504 then 200", http.MethodPut,
			[]func(http.ResponseWriter, *http.Request){reply(502, nil, ``), reply(504, nil, ``), reply(200, nil, `{}`)}, 3, 200},
		{"POST 503 then 200", http.MethodPost,
			[]func(http.ResponseWriter, *http.Request){reply(503, nil, `{}`), reply(200, nil, `{}`)}, 2, 200},
		{"POST 500 is not retried", http.MethodPost,
			[]func(http.ResponseWriter, *http.Request){reply(500, nil, `{"errcode":"M_UNKNOWN"}`), reply(200, nil, `{}`)}, 1, 500},
		{"400 is not retried", http.MethodPut,
			[]func(http.ResponseWriter, *http.Request){reply(400, nil, `{"errcode":"M_BAD_JSON"}`), reply(200, nil, `{}`)}, 1, 400},
		{"403 is not retried", http.MethodGet,
			[]func(http.ResponseWriter, *http.Request){reply(403, nil, `{"errcode":"M_FORBIDDEN"}`), reply(200, nil, `{}`)}, 1, 403},
		{"501 is not retried", http.MethodGet,
			[]func(http.ResponseWriter, *http.Request){reply(501, nil, `{}`), reply(200, nil, `{}`)}, 1, 501},
		{"connection closed then 200", http.MethodPost,
			[]func(http.ResponseWriter, *http.Request){hangUp, reply(200, nil, `{}`)}, 2, 200},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newScript(t, tc.replies...)
			body := ""
			if tc.method != http.MethodGet {
				body = `{"a":1}`
			}
			resp, _, err := do(t, context.Background(), fast, tc.method, s.srv.URL, body)
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != tc.status {
				t.Errorf("status %d, want %d", resp.StatusCode, tc.status)
			}
			if n := len(s.attempts()); n != tc.attempts {
				t.Errorf("%d attempts, want %d", n, tc.attempts)
			}
		})
	}
}

func TestRetryTransportNotRetriedReturnsBodyIntact(t *testing.T) {
	const errBody = limited + `,"retry_after_ms":60000}`
	s := newScript(t, reply(http.StatusTooManyRequests, nil, errBody))
	start := time.Now()
	opts := fast
	opts.MaxWait = time.Second
	resp, got, err := do(t, context.Background(), opts, http.MethodPut, s.srv.URL, `{}`)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 429 || got != errBody {
		t.Errorf("got %d %q, want the 429 as sent", resp.StatusCode, got)
	}
	if n := len(s.attempts()); n != 1 || time.Since(start) > 500*time.Millisecond {
		t.Errorf("%d attempts in %s: a wait over MaxWait must end the retries at once", n, time.Since(start))
	}

	// The same when the wait would end after the context's deadline.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	resp, got, err = do(t, ctx, fast, http.MethodPut, s.srv.URL, `{}`)
	if err != nil || resp.StatusCode != 429 || got != errBody {
		t.Errorf("with a deadline before the retry: got %v %v %q, want the 429 at once", resp, err, got)
	}
}

func TestRetryTransportMaxRetriesReturnsLast(t *testing.T) {
	var s *script
	s = newScript(t, func(w http.ResponseWriter, r *http.Request) {
		reply(http.StatusServiceUnavailable, nil, fmt.Sprintf(`{"attempt":%d}`, len(s.attempts())))(w, r)
	})
	opts := fast
	opts.MaxRetries = 2
	resp, got, err := do(t, context.Background(), opts, http.MethodGet, s.srv.URL, "")
	if err != nil {
		t.Fatal(err)
	}
	if len(s.attempts()) != 3 {
		t.Fatalf("%d attempts, want 1 + 2 retries", len(s.attempts()))
	}
	if resp.StatusCode != 503 || got != `{"attempt":3}` {
		t.Errorf("got %d %s, want the last answer (503, attempt 3)", resp.StatusCode, got)
	}

	// Network errors: the last error comes back.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens: connection refused
	_, _, err = do(t, context.Background(), opts, http.MethodGet, "http://"+addr, "")
	var opErr *net.OpError
	if !errors.As(err, &opErr) {
		t.Errorf("got %v, want the dial error", err)
	}
}

func TestRetryTransportContextCancelStopsWaiting(t *testing.T) {
	s := newScript(t, reply(http.StatusTooManyRequests, nil, limited+`,"retry_after_ms":10000}`), reply(200, nil, `{}`))
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(100*time.Millisecond, cancel)
	start := time.Now()
	_, _, err := do(t, ctx, fast, http.MethodPut, s.srv.URL, `{}`)
	if !errors.Is(err, context.Canceled) {
		t.Errorf("got %v, want context.Canceled", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("returned after %s: the wait did not end with the context", d)
	}
	if n := len(s.attempts()); n != 1 {
		t.Errorf("%d attempts, want 1", n)
	}
}

// onceReader is a body that cannot be read twice (no GetBody, no Seek).
type onceReader struct{ io.Reader }

func TestRetryTransportUnreplayableBodySentOnce(t *testing.T) {
	s := newScript(t, reply(http.StatusServiceUnavailable, nil, `{}`), reply(200, nil, `{}`))
	req, _ := http.NewRequest(http.MethodPost, s.srv.URL, onceReader{strings.NewReader("stream")})
	resp, err := (&http.Client{Transport: RetryTransport(nil, fast)}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 503 || len(s.attempts()) != 1 {
		t.Errorf("got %d after %d attempts, want the 503 of the only attempt", resp.StatusCode, len(s.attempts()))
	}
}

// seekBody is how mautrix sends a seekable stream (media uploads): no
// GetBody, a Close that leaves it open, rewound by seeking.
type seekBody struct{ *strings.Reader }

func (seekBody) Close() error { return nil }

func TestRetryTransportRewindsSeekableBody(t *testing.T) {
	s := newScript(t, reply(http.StatusBadGateway, nil, ``), reply(200, nil, `{}`))
	const sent = "media bytes"
	req, _ := http.NewRequest(http.MethodPost, s.srv.URL, seekBody{strings.NewReader(sent)})
	req.ContentLength = int64(len(sent))
	resp, err := (&http.Client{Transport: RetryTransport(nil, fast)}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	a := s.attempts()
	if resp.StatusCode != 200 || len(a) != 2 || a[0].body != sent || a[1].body != sent {
		t.Errorf("got %d after %+v, want the whole body sent twice", resp.StatusCode, a)
	}
}

// TestInstallRetryCoversIntents builds the appservice the way New does and
// checks that the clients of ghosts and of the bot go through the
// transport, and that mautrix no longer retries on top of it.
func TestInstallRetryCoversIntents(t *testing.T) {
	var mu sync.Mutex
	var down bool
	var s *script
	s = newScript(t, func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		switch {
		case down:
			reply(503, nil, `{"errcode":"M_UNKNOWN"}`)(w, r)
		case len(s.attempts())%2 == 1: // every first attempt is rate limited
			reply(429, nil, limited+`,"retry_after_ms":200}`)(w, r)
		default:
			reply(200, nil, `{"event_id":"$sent"}`)(w, r)
		}
	})

	as := appservice.Create()
	as.HomeserverDomain = "example.org"
	as.Registration = &appservice.Registration{AppToken: "as_token", SenderLocalpart: "bot"}
	if err := as.SetHomeserverURL(s.srv.URL); err != nil {
		t.Fatal(err)
	}
	opts := fast
	opts.MaxRetries = 2
	installRetry(as, opts)
	installRetry(as, opts) // idempotent: one transport, not two stacked

	ctx := context.Background()
	room := id.RoomID("!room:example.org")
	ghost := id.UserID("@irc_alice:example.org")
	if err := as.StateStore.SetMembership(ctx, room, ghost, event.MembershipJoin); err != nil {
		t.Fatal(err)
	}
	resp, err := as.Intent(ghost).SendMessageEvent(ctx, room, event.EventMessage, &event.MessageEventContent{MsgType: event.MsgText, Body: "hi"})
	if err != nil {
		t.Fatalf("send through the ghost's intent: %v", err)
	}
	if resp.EventID != "$sent" {
		t.Errorf("event ID %s", resp.EventID)
	}
	a := s.attempts()
	if len(a) != 2 {
		t.Fatalf("%d attempts, want a 429 and its retry", len(a))
	}
	if a[0].uri != a[1].uri || a[0].body != a[1].body || !strings.Contains(a[0].uri, "user_id=%40irc_alice") {
		t.Errorf("retry differs from the first attempt:\n%+v\n%+v", a[0], a[1])
	}
	if waited := a[1].at.Sub(a[0].at); waited < 200*time.Millisecond {
		t.Errorf("retried after %s, the server asked for 200ms", waited)
	}

	// The bot's client shares the transport; mautrix itself makes one
	// attempt per call (with its default of 4 retries this would be 15).
	mu.Lock()
	down = true
	mu.Unlock()
	before := len(s.attempts())
	_, err = as.BotIntent().Whoami(ctx)
	var httpErr mautrix.HTTPError
	if !errors.As(err, &httpErr) || httpErr.Response.StatusCode != 503 {
		t.Fatalf("bot whoami: %v, want the final 503", err)
	}
	if n := len(s.attempts()) - before; n != 1+opts.MaxRetries {
		t.Errorf("bot request made %d attempts, want %d", n, 1+opts.MaxRetries)
	}
	if as.BotClient().Client != as.HTTPClient || as.Client(ghost).Client != as.HTTPClient {
		t.Error("intents do not share the appservice's HTTP client")
	}
}

func TestRetry(t *testing.T) {
	rateLimited := mautrix.HTTPError{
		Response:  &http.Response{StatusCode: 429, Header: http.Header{}},
		RespError: &mautrix.RespError{ErrCode: "M_LIMIT_EXCEEDED", ExtraData: map[string]any{"retry_after_ms": float64(150)}},
	}
	forbidden := mautrix.HTTPError{Response: &http.Response{StatusCode: 403}, RespError: &mautrix.RespError{ErrCode: "M_FORBIDDEN"}}
	netErr := &net.OpError{Op: "write", Net: "tcp", Err: errors.New("broken pipe")}
	for _, tc := range []struct {
		name     string
		errs     []error // returned by successive calls; then nil
		opts     RetryOptions
		calls    int
		wantErr  error
		minDelay time.Duration
	}{
		{"network error then success", []error{netErr, netErr}, fast, 3, nil, 0},
		{"429 waits retry_after_ms", []error{rateLimited}, fast, 2, nil, 150 * time.Millisecond},
		{"RetryAfter method", []error{retryAfterErr(120 * time.Millisecond)}, fast, 2, nil, 120 * time.Millisecond},
		{"4xx is final", []error{forbidden}, fast, 1, forbidden, 0},
		{"unknown error is final", []error{errors.New("channel_not_found")}, fast, 1, nil, 0},
		{"Retryable false is final", []error{retryable(false)}, fast, 1, retryable(false), 0},
		{"Permanent is final", []error{Permanent(netErr)}, fast, 1, netErr, 0},
		{"retries exhausted: last error", []error{netErr, netErr, retryable(true)}, RetryOptions{MaxRetries: 2, InitialBackoff: time.Millisecond}, 3, retryable(true), 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			calls := 0
			start := time.Now()
			err := Retry(context.Background(), tc.opts, func(context.Context) error {
				calls++
				if calls <= len(tc.errs) {
					return tc.errs[calls-1]
				}
				return nil
			})
			if calls != tc.calls {
				t.Errorf("%d calls, want %d", calls, tc.calls)
			}
			if tc.calls > len(tc.errs) && err != nil {
				t.Errorf("got %v, want success", err)
			}
			if tc.wantErr != nil && !errors.Is(err, tc.wantErr) {
				t.Errorf("got %v, want %v", err, tc.wantErr)
			}
			if tc.calls <= len(tc.errs) && err == nil {
				t.Error("got success, want the error")
			}
			if d := time.Since(start); d < tc.minDelay {
				t.Errorf("took %s, want at least %s", d, tc.minDelay)
			}
		})
	}
}

func TestRetryContextCancelStopsWaiting(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(50*time.Millisecond, cancel)
	calls := 0
	start := time.Now()
	err := Retry(ctx, RetryOptions{}, func(context.Context) error {
		calls++
		return retryAfterErr(time.Minute)
	})
	if !errors.Is(err, context.Canceled) || calls != 1 || time.Since(start) > time.Second {
		t.Errorf("got %v after %d calls in %s, want context.Canceled after 1 call at once", err, calls, time.Since(start))
	}
}

type retryAfterErr time.Duration

func (e retryAfterErr) Error() string             { return "rate limited" }
func (e retryAfterErr) RetryAfter() time.Duration { return time.Duration(e) }

type retryable bool

func (e retryable) Error() string   { return fmt.Sprintf("retryable=%t", bool(e)) }
func (e retryable) Retryable() bool { return bool(e) }

func TestLimiter(t *testing.T) {
	ctx := context.Background()
	l := NewLimiter(20, 3) // a token every 50ms, 3 saved up
	start := time.Now()
	for range 3 {
		if err := l.Wait(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if d := time.Since(start); d > 30*time.Millisecond {
		t.Errorf("the burst of 3 took %s, want no wait", d)
	}
	for range 4 {
		if err := l.Wait(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if d := time.Since(start); d < 190*time.Millisecond || d > 400*time.Millisecond {
		t.Errorf("3 + 4 sends took %s, want about 4 × 50ms", d)
	}

	// A wait past the deadline fails at once and takes nothing.
	l = NewLimiter(10, 1)
	_ = l.Wait(ctx)
	short, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancel()
	start = time.Now()
	if err := l.Wait(short); !errors.Is(err, context.DeadlineExceeded) || time.Since(start) > 10*time.Millisecond {
		t.Errorf("got %v after %s, want DeadlineExceeded at once", err, time.Since(start))
	}
	// A wait cancelled midway gives its token back.
	cancelled, cancel2 := context.WithCancel(ctx)
	time.AfterFunc(20*time.Millisecond, cancel2)
	if err := l.Wait(cancelled); !errors.Is(err, context.Canceled) {
		t.Errorf("got %v, want Canceled", err)
	}
	start = time.Now()
	if err := l.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	// Due about 100ms after the first token; a token kept by the
	// cancelled wait would make it 100ms more.
	if d := time.Since(start); d > 130*time.Millisecond {
		t.Errorf("next send waited %s: the failed or the cancelled wait kept a token", d)
	}

	// 0 turns limiting off.
	l = NewLimiter(0, 0)
	start = time.Now()
	for range 1000 {
		if err := l.Wait(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if d := time.Since(start); d > 50*time.Millisecond {
		t.Errorf("unlimited limiter took %s", d)
	}
}

// TestLimiterAllow: Allow takes the burst at once, then refuses with the
// time until the next token, and takes nothing when it refuses.
func TestLimiterAllow(t *testing.T) {
	l := NewLimiter(10, 3) // a token every 100 ms
	for i := range 3 {
		if ok, _ := l.Allow(); !ok {
			t.Fatalf("token %d of the burst refused", i+1)
		}
	}
	ok, after := l.Allow()
	if ok || after <= 0 || after > 100*time.Millisecond {
		t.Fatalf("4th Allow = %v, %v; want refused, retry within 100ms", ok, after)
	}
	if ok, _ := l.Allow(); ok {
		t.Fatal("a refused Allow gave a token away")
	}
	time.Sleep(after + 10*time.Millisecond)
	if ok, _ := l.Allow(); !ok {
		t.Fatal("no token after the announced wait")
	}
	if ok, _ := NewLimiter(0, 0).Allow(); !ok {
		t.Fatal("rate 0 must not limit")
	}
}
