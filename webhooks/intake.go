package webhooks

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"text/template"
	"time"

	"github.com/switchboard-im/switchboard/framework"
	"github.com/switchboard-im/switchboard/webhooks/render"
	"go.mau.fi/util/random"
	"maunium.net/go/mautrix/id"
)

// routes is the hook listener's handler: the hooks and the provisioning
// API.
func (s *Service) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /hooks/{token}", s.postHook)
	mux.HandleFunc("PUT /hooks/{token}", s.postHook) // Grafana can be set to PUT
	s.registerProvisioning(mux)
	return mux
}

// Callers get Slack's answers: text/plain "ok", or an error code.
func reply(w http.ResponseWriter, status int, body string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(status)
	_, _ = io.WriteString(w, body)
}

// rateLimited answers 429 with Retry-After in whole seconds (at least 1).
func rateLimited(w http.ResponseWriter, after time.Duration) {
	w.Header().Set("Retry-After", strconv.Itoa(int(math.Ceil(max(after, time.Second).Seconds()))))
	reply(w, http.StatusTooManyRequests, "rate_limited")
}

// postHook accepts one webhook request: the message is in the queue when
// the caller hears "ok".
func (s *Service) postHook(w http.ResponseWriter, r *http.Request) {
	if ok, after := s.global.Allow(); !ok {
		rateLimited(w, after)
		return
	}
	ctx := r.Context()
	hook, err := s.HookByToken(ctx, r.PathValue("token"))
	if errors.Is(err, ErrNoHook) {
		reply(w, http.StatusNotFound, "no_service")
		return
	} else if err != nil {
		s.Log.Err(err).Msg("Failed to look up a hook")
		reply(w, http.StatusInternalServerError, "internal_error")
		return
	}
	if ok, after := s.hookLimiter(hook.ID).Allow(); !ok {
		rateLimited(w, after)
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.Config.MaxBodySize))
	var tooLarge *http.MaxBytesError
	if errors.As(err, &tooLarge) {
		reply(w, http.StatusRequestEntityTooLarge, "request_too_large")
		return
	} else if err != nil {
		reply(w, http.StatusBadRequest, "invalid_payload")
		return
	}
	if hook.SigningSecret != "" {
		if err := checkSignature(r.Header, body, hook.SigningSecret, time.Now()); err != nil {
			s.Log.Debug().Err(err).Str("hook", hook.ID).Msg("Refused an unsigned or badly signed request")
			reply(w, http.StatusUnauthorized, "invalid_signature")
			return
		}
	}
	msg, err := s.render(hook, r.Header.Get("Content-Type"), body)
	var rerr *render.Error
	if errors.As(err, &rerr) {
		reply(w, http.StatusBadRequest, rerr.Code)
		return
	} else if err != nil {
		s.Log.Err(err).Str("hook", hook.ID).Msg("Failed to render a webhook")
		reply(w, http.StatusInternalServerError, "internal_error")
		return
	}
	if err := s.enqueue(ctx, hook, msg); err != nil {
		s.Log.Err(err).Str("hook", hook.ID).Msg("Failed to queue a webhook message")
		reply(w, http.StatusServiceUnavailable, "internal_error")
		return
	}
	reply(w, http.StatusOK, "ok")
}

// render turns a request body into the message to post, as the hook's
// sender mode wants it.
func (s *Service) render(hook *Hook, contentType string, body []byte) (*render.Message, error) {
	payload, err := render.Parse(contentType, body)
	if err != nil {
		return nil, err
	}
	var tmpl *template.Template
	if hook.Template != "" {
		if tmpl, err = s.templateOf(hook); err != nil {
			return nil, err
		}
	}
	msg, err := render.Render(payload, render.Options{Template: tmpl})
	if err != nil {
		return nil, err
	}
	if s.Config.SenderMode == "per_hook" || msg.SenderName == "" {
		msg.SenderName = hook.Name
	}
	return msg, nil
}

// templates caches parsed hook templates by their source.
var templates sync.Map // string → *template.Template

func (s *Service) templateOf(hook *Hook) (*template.Template, error) {
	if t, ok := templates.Load(hook.Template); ok {
		return t.(*template.Template), nil
	}
	t, err := render.ParseTemplate(hook.Template)
	if err != nil {
		return nil, fmt.Errorf("hook %s: template: %w", hook.ID, err)
	}
	templates.Store(hook.Template, t)
	return t, nil
}

// enqueue stores a message for delivery (in the writer's next group
// commit) and wakes the delivery worker.
func (s *Service) enqueue(ctx context.Context, hook *Hook, msg *render.Message) error {
	raw, err := json.Marshal(msg)
	if err != nil {
		return err
	}
	req := queueWrite{hookID: hook.ID, roomID: hook.RoomID, message: string(raw), done: make(chan error, 1)}
	select {
	case s.writes <- req:
	case <-ctx.Done():
		return ctx.Err()
	case <-s.writerStop:
		return errors.New("webhooks: stopping")
	}
	select {
	case err = <-req.done:
	case <-ctx.Done():
		return ctx.Err() // the write may still land: the caller got no "ok", a resend is theirs to decide
	case <-s.writerStop:
		select {
		case err = <-req.done: // committed in the writer's last batch
		case <-time.After(time.Second):
			return errors.New("webhooks: stopping")
		}
	}
	if err != nil {
		return err
	}
	select {
	case s.wake <- struct{}{}:
	default:
	}
	return nil
}

// queueWrite is one accepted message waiting for the queue writer.
type queueWrite struct {
	hookID  string
	roomID  id.RoomID
	message string
	done    chan error
}

// maxGroupCommit bounds how many requests one queue transaction holds.
const maxGroupCommit = 256

// queueWriter inserts accepted messages into the queue, each transaction
// holding every request that arrived while the previous one committed
// (group commit): with SQLite, one fsync serves many callers, and callers
// wait in a Go channel, in order, not in SQLite's busy handler. It stops
// when writerStop closes, after committing what was handed to it.
func (s *Service) queueWriter() {
	for {
		var batch []queueWrite
		select {
		case first := <-s.writes:
			batch = append(batch, first)
		case <-s.writerStop:
			select {
			case first := <-s.writes:
				batch = append(batch, first)
			default:
				return
			}
		}
	collect:
		for len(batch) < maxGroupCommit {
			select {
			case w := <-s.writes:
				batch = append(batch, w)
			default:
				break collect
			}
		}
		now := time.Now().UnixMilli()
		err := s.DB.DoTxn(context.Background(), nil, func(ctx context.Context) error {
			for _, w := range batch {
				_, err := s.DB.Exec(ctx, `INSERT INTO webhook_queue (txn_id, hook_id, room_id, message, received_at) VALUES ($1, $2, $3, $4, $5)`,
					"webhook-"+random.String(20), w.hookID, w.roomID, w.message, now)
				if err != nil {
					return err
				}
			}
			return nil
		})
		for _, w := range batch {
			w.done <- err
		}
	}
}

// hookLimiter is a hook's token bucket; buckets unused for ten minutes
// are dropped (a full bucket is what a new one would be).
func (s *Service) hookLimiter(hookID string) *hookLimiter {
	s.limitsMu.Lock()
	defer s.limitsMu.Unlock()
	now := time.Now()
	l := s.perHook[hookID]
	if l == nil {
		if len(s.perHook) > 1000 {
			for id, old := range s.perHook {
				if now.Sub(old.lastUsed) > 10*time.Minute {
					delete(s.perHook, id)
				}
			}
		}
		l = &hookLimiter{Limiter: framework.NewLimiter(s.Config.RateLimits.PerHook.PerSecond, s.Config.RateLimits.PerHook.Burst)}
		s.perHook[hookID] = l
	}
	l.lastUsed = now
	return l
}

// Signature headers: Grafana's (hex HMAC-SHA256 of the body, or of
// "timestamp:body" when it sends a timestamp) and the generic GitHub-style
// "sha256=<hex>".
const (
	headerGrafanaSignature = "X-Grafana-Alerting-Signature"
	headerGrafanaTimestamp = "X-Grafana-Alerting-Signature-Timestamp"
	headerSignature        = "X-Signature-256"
	headerHubSignature     = "X-Hub-Signature-256"
	headerTimestamp        = "X-Signature-Timestamp"
	// maxClockSkew bounds how old a signed timestamp may be (replays).
	maxClockSkew = 5 * time.Minute
)

// checkSignature verifies a signed request (constant-time comparison).
func checkSignature(h http.Header, body []byte, secret string, now time.Time) error {
	sig := h.Get(headerGrafanaSignature)
	ts := h.Get(headerGrafanaTimestamp)
	if sig == "" {
		sig = strings.TrimPrefix(h.Get(headerSignature), "sha256=")
		if sig == "" {
			sig = strings.TrimPrefix(h.Get(headerHubSignature), "sha256=")
		}
		ts = h.Get(headerTimestamp)
	}
	if sig == "" {
		return errors.New("no signature header")
	}
	got, err := hex.DecodeString(sig)
	if err != nil {
		return errors.New("signature is not hex")
	}
	mac := hmac.New(sha256.New, []byte(secret))
	if ts != "" {
		sec, err := strconv.ParseInt(ts, 10, 64)
		if err != nil {
			return errors.New("timestamp is not Unix seconds")
		}
		if d := now.Sub(time.Unix(sec, 0)); d > maxClockSkew || d < -maxClockSkew {
			return fmt.Errorf("timestamp %s is too far from now", ts)
		}
		mac.Write([]byte(ts + ":"))
	}
	mac.Write(body)
	if !hmac.Equal(got, mac.Sum(nil)) {
		return errors.New("signature does not match")
	}
	return nil
}
