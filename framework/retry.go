package framework

// Retries and rate limits: for requests to the homeserver (RetryTransport,
// installed under every intent's client by installRetry) and for calls a
// bridge makes to its remote network (Retry, Limiter).
//
// What mautrix v0.32 does by itself, and why the framework retries below
// it instead (maunium.net/go/mautrix@v0.32.0):
//
//   - A Client retries only when Client.DefaultHTTPRetries > 0
//     (client.go:117-119; a bare Client has 0). appservice.Create sets 4
//     (appservice/appservice.go:62) and NewMautrixClient copies it into the
//     client of the bot and of every ghost (appservice/appservice.go:374),
//     together with the one shared AppService.HTTPClient (:373).
//   - It retries network errors, whatever the method, unless the context
//     was cancelled (client.go:904-909), and responses for which
//     go.mau.fi/util/retryafter.Should is true (client.go:923): 502, 503,
//     504, and 429 unless Client.IgnoreRateLimit (retryafter.go:44-53).
//     500 is not retried.
//   - On 429 it honours the Retry-After header, in seconds or as an HTTP
//     date (client.go:924, retryafter.Parse); it never reads the body, so
//     retry_after_ms (Synapse's long-standing hint, and the only one before spec
//     v1.10) is ignored and it waits its own backoff instead.
//   - The backoff starts at DefaultHTTPBackoff (4 s when unset,
//     client.go:565-571), doubles after every retry (client.go:671), also
//     after a Retry-After, is capped by MaxHTTPBackoff (10 min when unset,
//     client.go:651-655) and has no jitter. The wait ends early when the
//     request's context does (client.go:664-669), but it starts even when
//     it cannot end before the context's deadline.
//   - Bodies are replayed with Request.GetBody or by seeking a body that
//     is an io.ReadSeeker (client.go:632-648); JSON bodies always have
//     GetBody (bytes.Reader).
//   - Once the retries are spent, a 429 becomes an HTTPError wrapping
//     RespError M_LIMIT_EXCEEDED (ParseErrorResponse, client.go:758).
//
// RetryTransport does all of that plus what is missing: retry_after_ms,
// jitter, 500 for idempotent methods, and giving up at once (returning the
// 429 to the caller) when the wait asked for cannot end before the
// context's deadline. installRetry puts it under AppService.HTTPClient and
// sets DefaultHTTPRetries to 0 so that mautrix does not retry on top of it
// (that would multiply the attempts and wait its own backoff after ours).

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"sync"
	"syscall"
	"time"

	"github.com/rs/zerolog"
	"github.com/tidwall/gjson"
	"go.mau.fi/util/retryafter"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/appservice"
)

// RetryOptions bound retrying. The zero value means the defaults.
type RetryOptions struct {
	// MaxRetries is how many times a failed attempt is retried (0: 5;
	// negative: never).
	MaxRetries int
	// InitialBackoff is the wait before the first retry of a failure that
	// names no wait (0: 1 s). It doubles with every retry up to MaxBackoff
	// (0: 1 min); each wait is drawn at random from the upper half of that
	// (jitter, so that ghosts failing together do not retry together).
	InitialBackoff time.Duration
	MaxBackoff     time.Duration
	// MaxWait is the longest wait a server may ask for (429 retry_after_ms
	// or Retry-After, a remote's RetryAfter) that is honoured (0: 5 min).
	// A longer one ends the retries and returns the failure, as does any
	// wait that would end after the context's deadline: waiting for a
	// retry that cannot happen only delays the error.
	MaxWait time.Duration
	// Classify decides, for Retry, whether an error is worth retrying and
	// how long the remote asked to wait (0: the backoff). Nil:
	// ClassifyError. Errors wrapped with Permanent are never retried.
	Classify func(err error) (wait time.Duration, retry bool)
}

func (o *RetryOptions) maxRetries() int {
	switch {
	case o.MaxRetries < 0:
		return 0
	case o.MaxRetries == 0:
		return 5
	}
	return o.MaxRetries
}

// backoff is the wait before retry number n (from 0) of a failure that
// named no wait: exponential, capped, with jitter.
func (o *RetryOptions) backoff(n int) time.Duration {
	initial, ceiling := o.InitialBackoff, o.MaxBackoff
	if initial <= 0 {
		initial = time.Second
	}
	if ceiling <= 0 {
		ceiling = time.Minute
	}
	d := ceiling
	if n < 62 && initial <= ceiling>>n {
		d = initial << n
	}
	return d/2 + rand.N(d/2+1)
}

// serverWait is the wait for a retry the server asked for: what it asked,
// plus up to a tenth more (jitter, never less than asked).
func (o *RetryOptions) serverWait(d time.Duration) time.Duration {
	return d + rand.N(d/10+1)
}

// fits reports whether waiting d before retrying is worth it.
func (o *RetryOptions) fits(ctx context.Context, d time.Duration) bool {
	maxWait := o.MaxWait
	if maxWait <= 0 {
		maxWait = 5 * time.Minute
	}
	if d > maxWait {
		return false
	}
	deadline, ok := ctx.Deadline()
	return !ok || time.Until(deadline) > d
}

// sleep waits d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}

// RetryTransport returns a RoundTripper that sends requests through base
// (nil: http.DefaultTransport) and retries, within opts:
//
//   - 429, after the longer of its Retry-After header and the
//     retry_after_ms of its JSON body (else the backoff);
//   - 502, 503 and 504 (honouring a Retry-After), and 500 for idempotent
//     methods (GET, HEAD, OPTIONS, TRACE, PUT, DELETE, or a request with an
//     Idempotency-Key): a POST such as createRoom may have been carried
//     out before it failed;
//   - network errors, except certificate errors.
//
// Nothing else is retried (no other 4xx). A request whose body cannot be
// replayed (no GetBody, not seekable) is sent once. Waiting ends when the
// request's context does; a wait that cannot end before its deadline (an
// http.Client's Timeout is one, and bounds the retries too) or exceeds
// MaxWait is not started and the last response is returned as it came.
// Retries are logged at warn level to the request context's zerolog
// logger (mautrix puts its client's logger there).
func RetryTransport(base http.RoundTripper, opts RetryOptions) http.RoundTripper {
	if base == nil {
		base = http.DefaultTransport
	}
	return &retryTransport{base: base, opts: opts}
}

type retryTransport struct {
	base http.RoundTripper
	opts RetryOptions
}

// installRetry makes every client the appservice hands out (bot and
// ghosts share as.HTTPClient) retry through RetryTransport, and turns off
// mautrix's own retries. Call it after SetHomeserverURL (which replaces
// as.HTTPClient) and before the first Intent, Client or BotIntent (clients
// copy both fields when they are created). Installing twice replaces the
// options and does not stack transports.
func installRetry(as *appservice.AppService, opts RetryOptions) {
	if as.HTTPClient == nil {
		as.HTTPClient = &http.Client{Timeout: 180 * time.Second}
	}
	base := as.HTTPClient.Transport
	if rt, ok := base.(*retryTransport); ok {
		base = rt.base
	}
	as.HTTPClient.Transport = RetryTransport(base, opts)
	as.DefaultHTTPRetries = 0
}

// maxPeek bounds how much of a 429's body is read for retry_after_ms.
const maxPeek = 64 << 10

func (t *retryTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	ctx := req.Context()
	attempt := req
	for n := 0; ; n++ {
		resp, err := t.base.RoundTrip(attempt)
		wait, retry := t.classify(req, resp, err)
		if !retry || n >= t.opts.maxRetries() {
			return resp, err
		}
		if wait < 0 {
			wait = t.opts.backoff(n)
		} else {
			wait = t.opts.serverWait(wait)
		}
		if !t.opts.fits(ctx, wait) {
			return resp, err
		}
		next, rerr := rewind(req)
		if rerr != nil {
			zerolog.Ctx(ctx).Debug().Err(rerr).Str("method", req.Method).Str("path", req.URL.Path).
				Msg("Not retrying a request whose body cannot be sent again")
			return resp, err
		}
		ev := zerolog.Ctx(ctx).Warn().Str("method", req.Method).Str("host", req.URL.Host).Str("path", req.URL.Path).
			Int("attempt", n+1).Dur("retry_in", wait)
		if err != nil {
			ev = ev.Err(err)
		} else {
			ev = ev.Int("status", resp.StatusCode)
			discard(resp)
		}
		ev.Msg("HTTP request failed, retrying")
		if serr := sleep(ctx, wait); serr != nil {
			if next.Body != nil {
				next.Body.Close()
			}
			if err == nil {
				err = fmt.Errorf("HTTP %d", resp.StatusCode)
			}
			return nil, fmt.Errorf("%w (waiting to retry after: %w)", serr, err)
		}
		attempt = next
	}
}

// classify says whether an attempt is retried and after how long the
// server asked (negative: it did not ask; use the backoff).
func (t *retryTransport) classify(req *http.Request, resp *http.Response, err error) (time.Duration, bool) {
	if err != nil {
		return -1, req.Context().Err() == nil && isTransient(err)
	}
	switch resp.StatusCode {
	case http.StatusTooManyRequests:
		body := peekBody(resp, maxPeek)
		return max(headerWait(resp.Header), bodyWait(body)), true
	case http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		return headerWait(resp.Header), true
	case http.StatusInternalServerError:
		return -1, idempotent(req)
	}
	return -1, false
}

func idempotent(req *http.Request) bool {
	switch req.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace, http.MethodPut, http.MethodDelete:
		return true
	}
	return req.Header.Get("Idempotency-Key") != "" || req.Header.Get("X-Idempotency-Key") != ""
}

// headerWait is the Retry-After header (seconds or HTTP date), or -1.
func headerWait(h http.Header) time.Duration {
	v := h.Get("Retry-After")
	if v == "" {
		return -1
	}
	const invalid = time.Duration(math.MinInt64)
	d := retryafter.Parse(v, invalid)
	if d == invalid {
		return -1
	}
	return max(d, 0) // a date in the past: now
}

// bodyWait is a Matrix error body's retry_after_ms, or -1.
func bodyWait(body []byte) time.Duration {
	v := gjson.GetBytes(body, "retry_after_ms")
	if v.Type != gjson.Number || v.Num < 0 {
		return -1
	}
	return time.Duration(min(v.Num, float64(math.MaxInt64/time.Millisecond))) * time.Millisecond
}

// peekBody reads up to limit bytes of resp's body and puts them back in
// front of the rest, so the caller still reads the whole body.
func peekBody(resp *http.Response, limit int64) []byte {
	if resp.Body == nil || resp.Body == http.NoBody {
		return nil
	}
	head, _ := io.ReadAll(io.LimitReader(resp.Body, limit))
	resp.Body = struct {
		io.Reader
		io.Closer
	}{io.MultiReader(bytes.NewReader(head), resp.Body), resp.Body}
	return head
}

// discard reads a little of a response that will not be used (so the
// connection can be reused) and closes it.
func discard(resp *http.Response) {
	if resp.Body != nil {
		_, _ = io.CopyN(io.Discard, resp.Body, maxPeek)
		resp.Body.Close()
	}
}

// rewind returns a copy of req to send again, with its body from the
// start.
func rewind(req *http.Request) (*http.Request, error) {
	next := req.Clone(req.Context())
	switch {
	case req.Body == nil || req.Body == http.NoBody:
	case req.GetBody != nil:
		body, err := req.GetBody()
		if err != nil {
			return nil, fmt.Errorf("get body: %w", err)
		}
		next.Body = body
	default:
		// mautrix keeps a seekable stream open for its own retries
		// (nopCloseSeeker); a body the transport closed fails to seek.
		s, ok := req.Body.(io.Seeker)
		if !ok {
			return nil, errors.New("request body is neither replayable (GetBody) nor seekable")
		}
		if _, err := s.Seek(0, io.SeekStart); err != nil {
			return nil, fmt.Errorf("rewind body: %w", err)
		}
	}
	return next, nil
}

// isTransient reports whether a failure to get any response may go away
// by itself.
func isTransient(err error) bool {
	var certErr *tls.CertificateVerificationError
	if errors.As(err, &certErr) {
		return false
	}
	// *url.Error is a net.Error whatever it wraps (a bad scheme too):
	// judge what it wraps.
	var urlErr *url.Error
	for errors.As(err, &urlErr) {
		err = urlErr.Err
	}
	var netErr net.Error
	return errors.As(err, &netErr) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.EPIPE)
}

// Retry calls fn until it succeeds, its error is not worth retrying
// (opts.Classify, Permanent), opts.MaxRetries retries are spent, or ctx
// ends; it returns fn's last error. Between attempts it waits what the
// error asked for (a rate limit's retry-after) or the exponential backoff,
// within opts.MaxWait and ctx's deadline (see RetryOptions). Meant for a
// bridge's calls to its remote network (IRC, Slack sends); requests to the
// homeserver are already retried by the intents' transport. fn must be
// safe to repeat.
func Retry(ctx context.Context, opts RetryOptions, fn func(ctx context.Context) error) error {
	classify := opts.Classify
	if classify == nil {
		classify = ClassifyError
	}
	for n := 0; ; n++ {
		err := fn(ctx)
		if err == nil {
			return nil
		}
		var perm *permanentError
		if errors.As(err, &perm) || ctx.Err() != nil {
			return err
		}
		wait, retry := classify(err)
		if !retry || n >= opts.maxRetries() {
			return err
		}
		if wait <= 0 {
			wait = opts.backoff(n)
		} else {
			wait = opts.serverWait(wait)
		}
		if !opts.fits(ctx, wait) {
			return err
		}
		zerolog.Ctx(ctx).Warn().Err(err).Int("attempt", n+1).Dur("retry_in", wait).Msg("Remote call failed, retrying")
		if serr := sleep(ctx, wait); serr != nil {
			return fmt.Errorf("%w (waiting to retry after: %w)", serr, err)
		}
	}
}

// ClassifyError is Retry's default classifier. In order:
//
//   - context cancellation and deadlines are final;
//   - a mautrix HTTPError with a response: 429 after its Retry-After or
//     retry_after_ms, 500, 502, 503 and 504 after the backoff, anything
//     else final;
//   - an error with a RetryAfter() time.Duration method: retried after
//     that;
//   - an error with a Retryable() bool method (slack-go's errors have
//     one) says so itself;
//   - network errors (net.Error, EOF, connection reset/refused, broken
//     pipe) are retried, certificate errors are not;
//   - anything else is final: wrap an error of your own in a type with
//     Retryable() to retry it.
func ClassifyError(err error) (wait time.Duration, retry bool) {
	if err == nil || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return 0, false
	}
	var httpErr mautrix.HTTPError
	if errors.As(err, &httpErr) && httpErr.Response != nil {
		switch httpErr.Response.StatusCode {
		case http.StatusTooManyRequests:
			wait = max(headerWait(httpErr.Response.Header), 0)
			if httpErr.RespError != nil {
				if ms, ok := httpErr.RespError.ExtraData["retry_after_ms"].(float64); ok && ms > 0 {
					wait = max(wait, time.Duration(ms)*time.Millisecond)
				}
			}
			return wait, true
		case http.StatusInternalServerError, http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
			return max(headerWait(httpErr.Response.Header), 0), true
		}
		return 0, false
	}
	var after interface{ RetryAfter() time.Duration }
	if errors.As(err, &after) {
		return after.RetryAfter(), true
	}
	var retryable interface{ Retryable() bool }
	if errors.As(err, &retryable) {
		return 0, retryable.Retryable()
	}
	return 0, isTransient(err)
}

// Permanent marks err as not worth retrying: Retry returns it at once
// (errors.Is and errors.As see through the mark).
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return &permanentError{err}
}

type permanentError struct{ err error }

func (e *permanentError) Error() string { return e.err.Error() }
func (e *permanentError) Unwrap() error { return e.err }

// Limiter is a token bucket for a bridge's sends to its remote network
// (IRC flood limits, Slack's per-method tiers): ratePerSecond tokens a
// second, up to burst saved up. golang.org/x/time/rate is not among the
// module's dependencies, hence this small one. Safe for concurrent use.
type Limiter struct {
	mu     sync.Mutex
	every  time.Duration // one token per every
	burst  float64
	tokens float64 // may go negative: tokens promised to waiters
	last   time.Time
}

// NewLimiter returns a full bucket. ratePerSecond <= 0 means no limit (so
// a config's 0 turns limiting off); burst < 1 is 1.
func NewLimiter(ratePerSecond float64, burst int) *Limiter {
	b := float64(max(burst, 1))
	l := &Limiter{burst: b, tokens: b, last: time.Now()}
	if ratePerSecond > 0 {
		l.every = time.Duration(float64(time.Second) / ratePerSecond)
	}
	return l
}

// Allow takes a token if there is one now; otherwise it takes nothing and
// says how long until there is one (for an answer of 429 with
// Retry-After, where waiting is not the caller's to do).
func (l *Limiter) Allow() (ok bool, retryAfter time.Duration) {
	if l.every == 0 {
		return true, 0
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	now := time.Now()
	l.tokens = min(l.burst, l.tokens+float64(now.Sub(l.last))/float64(l.every))
	l.last = now
	if l.tokens < 1 {
		return false, time.Duration((1 - l.tokens) * float64(l.every))
	}
	l.tokens--
	return true, 0
}

// Wait takes a token, waiting until there is one. It fails at once,
// taking nothing, when the token would come after ctx's deadline, and
// gives the token back when ctx ends while waiting.
func (l *Limiter) Wait(ctx context.Context) error {
	if err := ctx.Err(); err != nil || l.every == 0 {
		return err
	}
	l.mu.Lock()
	now := time.Now()
	l.tokens = min(l.burst, l.tokens+float64(now.Sub(l.last))/float64(l.every))
	l.last = now
	var wait time.Duration
	if l.tokens < 1 {
		wait = time.Duration((1 - l.tokens) * float64(l.every))
	}
	if deadline, ok := ctx.Deadline(); ok && wait > 0 && deadline.Before(now.Add(wait)) {
		l.mu.Unlock()
		return fmt.Errorf("rate limit: the next send is in %s, after the deadline: %w", wait, context.DeadlineExceeded)
	}
	l.tokens--
	l.mu.Unlock()
	if wait == 0 {
		return nil
	}
	if err := sleep(ctx, wait); err != nil {
		l.mu.Lock()
		l.tokens++
		l.mu.Unlock()
		return err
	}
	return nil
}
