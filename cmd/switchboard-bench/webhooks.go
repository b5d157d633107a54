package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"gopkg.in/yaml.v3"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// The webhooks suite measures the webhook bridge that `switchboard run`
// starts beside the homeserver, on a fresh server. The bench edits the
// webhooks section of the generated switchboard.yaml before the start: a
// provisioning shared secret (the bench creates its hook through the
// provisioning API, as an integration manager would) and no rate limits
// (per_second 0, as for the homeserver: the bench is one caller hammering
// one hook). It reads the hook listener's URL and the bot from the `run`
// banner, creates a user, a room, invites the bot and creates a hook in
// the room. The user follows the room with a /sync long-poll loop (a
// mautrix client, as Element in the room would). Lines:
//
//	bench webhooks db=sqlite accepted_per_sec=… latency_p50_ms=… latency_p99_ms=… requests=… errors=0 clients=32 …
//	bench webhooks db=sqlite drain_s=… delivered_per_sec=… delivered=… missing=0 duplicates=0 …
//	bench webhooks db=sqlite rate=200 e2e_latency_p50_ms=… e2e_latency_p99_ms=… delivered=… missing=0 …
//
// Accept: --clients callers POST Slack-format JSON to the hook back to back
// for --duration; a request counts when answered 200 "ok" (the message is
// then in the bridge's persistent queue). Drain: after the accept phase
// the messages it queued are still being posted to the homeserver; a
// marker message is posted and the time until it shows in the user's sync
// is the drain (the queue is delivered in order); then the room's history
// is read back to count what arrived. E2E: requests at a fixed rate
// (--wh-rate) for --duration; latency runs from the start of the POST to
// the user's /sync answer that carries the message (each message is
// matched by the unique ID in its text).

type webhooksOptions struct {
	rate int
}

func addWebhooksFlags(fs *flag.FlagSet, o *webhooksOptions) {
	fs.IntVar(&o.rate, "wh-rate", 200, "webhooks: requests per second of the end-to-end latency phase")
}

func (o webhooksOptions) validate() error {
	if o.rate < 1 || o.rate > 100000 {
		return errors.New("--wh-rate must be between 1 and 100000")
	}
	return nil
}

// reportWebhooks prints one webhooks figure line.
func (b *bench) reportWebhooks(format string, args ...any) {
	fmt.Fprintf(b.out, "bench webhooks db=%s "+format+"\n", append([]any{b.label}, args...)...)
}

// whDrainTimeout bounds the wait for the accept phase's queue to drain.
const whDrainTimeout = 5 * time.Minute

// whSyncPoll is the user's /sync long-poll timeout; whSyncTimeout is when
// the bench gives up on an answer.
const (
	whSyncPoll    = 30 * time.Second
	whSyncTimeout = whSyncPoll + 10*time.Second
)

// whIDRE finds a bench message's ID in its body.
var whIDRE = regexp.MustCompile(`whb-(\d+)`)

// whTracker matches the messages the user's sync sees to the requests
// that were accepted.
type whTracker struct {
	nextID  atomic.Int64
	changed chan struct{}

	mu       sync.Mutex
	sentAt   map[int64]time.Time // POST start, of accepted requests
	seenAt   map[int64]time.Time // first /sync answer carrying it
	dupes    int                 // seen again
	limited  int                 // sync answers whose timeline had a gap
	syncErrs int                 // sync requests that failed (timed out: no answer within whSyncTimeout)
	syncErr  error               // the sync loop's last error
}

func newWHTracker() *whTracker {
	return &whTracker{changed: make(chan struct{}, 1), sentAt: map[int64]time.Time{}, seenAt: map[int64]time.Time{}}
}

func (t *whTracker) accepted(msgID int64, start time.Time) {
	t.mu.Lock()
	t.sentAt[msgID] = start
	t.mu.Unlock()
}

func (t *whTracker) seen(msgID int64, at time.Time) {
	t.mu.Lock()
	if _, ok := t.seenAt[msgID]; ok {
		t.dupes++
	} else {
		t.seenAt[msgID] = at
	}
	t.mu.Unlock()
	select {
	case t.changed <- struct{}{}:
	default:
	}
}

// waitSeen waits until every accepted message with an ID in [lo, hi) has
// been seen, or until deadline; it reports whether all were.
func (t *whTracker) waitSeen(ctx context.Context, lo, hi int64, deadline time.Time) bool {
	timer := time.NewTimer(time.Until(deadline))
	defer timer.Stop()
	for {
		t.mu.Lock()
		all := true
		for msgID := lo; msgID < hi && all; msgID++ {
			if _, ok := t.sentAt[msgID]; ok {
				_, all = t.seenAt[msgID]
			}
		}
		t.mu.Unlock()
		if all {
			return true
		}
		select {
		case <-t.changed:
		case <-timer.C:
			return false
		case <-ctx.Done():
			return false
		}
	}
}

// whPhase is what the user saw of the accepted messages with IDs in
// [lo, hi).
type whPhase struct {
	accepted, delivered, missing int
	latencies                    []time.Duration // seen − POST start, sorted
	lastSeen                     time.Time
}

func (t *whTracker) phase(lo, hi int64) *whPhase {
	t.mu.Lock()
	defer t.mu.Unlock()
	p := &whPhase{}
	for msgID := lo; msgID < hi; msgID++ {
		start, ok := t.sentAt[msgID]
		if !ok {
			continue
		}
		p.accepted++
		at, seen := t.seenAt[msgID]
		if !seen {
			p.missing++
			continue
		}
		p.delivered++
		p.latencies = append(p.latencies, at.Sub(start))
		if at.After(p.lastSeen) {
			p.lastSeen = at
		}
	}
	slices.Sort(p.latencies)
	return p
}

func (p *whPhase) percentileMS(q float64) float64 {
	return (&phaseResult{latencies: p.latencies}).percentileMS(q)
}

// runWebhooks is the webhooks suite, on its own server and data dir.
func (b *bench) runWebhooks(ctx context.Context) (err error) {
	secret := randomHex(20)
	idle, done, err := b.startSuite(ctx, "webhooks", func() error {
		return tuneWebhooksConfig(b.srv.dataDir, secret)
	})
	if err != nil {
		return err
	}
	defer done()
	rate := b.opts.webhooks.rate
	b.reportWebhooks("clients=%d duration=%s rate=%d cpus=%d load_1m=%s", b.opts.clients, b.opts.duration, rate, runtime.NumCPU(), loadAvg())

	setupStart := time.Now()
	hooksBase, botID, err := readWebhooksBanner(b.srv.logPath)
	if err != nil {
		b.srv.printLogTail(b.errOut)
		return err
	}
	users, err := b.srv.createUsers(ctx, 1)
	if err != nil {
		return err
	}
	clients, err := b.loginAll(ctx, users)
	if err != nil {
		return err
	}
	owner := clients[0]
	room, err := owner.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat", Name: "webhooks bench", Invite: []id.UserID{botID}})
	if err != nil {
		return fmt.Errorf("create the room: %w", err)
	}
	roomID := room.RoomID
	hookURL, err := provisionHook(ctx, hooksBase, secret, owner.UserID, roomID)
	if err != nil {
		b.srv.printLogTail(b.errOut)
		return err
	}

	tracker := newWHTracker()
	syncCtx, stopSync := context.WithCancel(ctx)
	syncDone, err := b.whSyncLoop(syncCtx, owner, roomID, tracker)
	if err != nil {
		stopSync()
		return err
	}
	defer func() {
		stopSync()
		<-syncDone
	}()

	httpc := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		Proxy:               nil, // loopback only
		DialContext:         (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:        4 * b.opts.clients,
		MaxIdleConnsPerHost: 4 * b.opts.clients,
		IdleConnTimeout:     90 * time.Second,
	}}
	poster := &whPoster{http: httpc, url: hookURL, tracker: tracker}
	// A first message through the whole path (the ghost is created and
	// joins the room) before anything is timed.
	warm := tracker.nextID.Add(1) - 1
	if err := poster.post(ctx, warm, time.Now()); err != nil {
		return fmt.Errorf("first webhook request: %w", err)
	}
	if !tracker.waitSeen(ctx, warm, warm+1, time.Now().Add(30*time.Second)) {
		b.srv.printLogTail(b.errOut)
		return fmt.Errorf("the first webhook message did not reach the room within 30s (sync: %v)", tracker.lastSyncErr())
	}
	fmt.Fprintf(b.errOut, "switchboard-bench: webhooks: hook in %s (bot %s, hooks at %s), set up in %.1fs\n",
		roomID, botID, hooksBase, time.Since(setupStart).Seconds())

	var problems []string

	// Accept: --clients callers back to back.
	stopPerf := b.perfPhase("webhooks_accept")
	m := b.startMeter()
	lo := tracker.nextID.Load()
	acc := b.whAcceptPhase(ctx, poster)
	hi := tracker.nextID.Load()
	cpu := m.stop()
	stopPerf()
	b.reportWebhooks("accepted_per_sec=%.1f latency_p50_ms=%.2f latency_p99_ms=%.2f latency_max_ms=%.2f requests=%d errors=%d clients=%d %s server_cpu_ms_per_request=%.3f load_1m=%s",
		acc.perSecond(), acc.percentileMS(50), acc.percentileMS(99), acc.percentileMS(100), acc.ok(), acc.errors, b.opts.clients,
		cpu, cpu.serverMSPer(acc.ok()), loadAvg())
	acc.printErrors(b.errOut, "webhooks accept")
	if acc.ok() == 0 {
		problems = append(problems, "every request of the accept phase failed")
	}

	// Drain: what the accept phase queued reaches the room.
	if ctx.Err() == nil && acc.ok() > 0 {
		problems = append(problems, b.whDrain(ctx, poster, owner, roomID, lo, hi, acc)...)
	}

	// E2E: a fixed rate, POST → the user's sync.
	if ctx.Err() == nil && len(problems) == 0 {
		stopPerf := b.perfPhase("webhooks_e2e")
		m := b.startMeter()
		syncErrsBefore := tracker.counters().syncErrs
		lo := tracker.nextID.Load()
		send, behind := b.whRatePhase(ctx, poster, rate)
		hi := tracker.nextID.Load()
		all := tracker.waitSeen(ctx, lo, hi, time.Now().Add(deliveryTimeout))
		cpu := m.stop()
		stopPerf()
		p := tracker.phase(lo, hi)
		b.reportWebhooks("rate=%d e2e_latency_p50_ms=%.2f e2e_latency_p99_ms=%.2f e2e_latency_max_ms=%.2f delivered=%d missing=%d errors=%d sync_errors=%d post_p50_ms=%.2f post_p99_ms=%.2f achieved_rate=%.1f %s server_cpu_ms_per_message=%.3f load_1m=%s",
			rate, p.percentileMS(50), p.percentileMS(99), p.percentileMS(100), p.delivered, p.missing, send.errors, tracker.counters().syncErrs-syncErrsBefore,
			send.percentileMS(50), send.percentileMS(99), float64(send.ok()+send.errors)/send.elapsed.Seconds(),
			cpu, cpu.serverMSPer(p.delivered), loadAvg())
		send.printErrors(b.errOut, "webhooks e2e")
		if behind > time.Millisecond {
			fmt.Fprintf(b.errOut, "switchboard-bench: webhooks e2e: the bench started requests up to %.1f ms late (its own scheduling)\n", ms(behind))
		}
		if !all && p.missing > 0 {
			fmt.Fprintf(b.errOut, "switchboard-bench: webhooks e2e: %d of %d accepted messages did not reach the user's sync within %s\n", p.missing, p.accepted, deliveryTimeout)
		}
		if p.delivered == 0 {
			problems = append(problems, "no message of the end-to-end phase reached the room")
		}
	}
	if n := tracker.counters(); n.limited > 0 || n.dupes > 0 || n.syncErrs > 0 {
		fmt.Fprintf(b.errOut, "switchboard-bench: webhooks: the user's sync had %d gapped timelines, saw %d messages twice, and %d requests failed (last: %v)\n",
			n.limited, n.dupes, n.syncErrs, tracker.lastSyncErr())
	}

	stopSync()
	after, err := readProcStatus(b.srv.pid())
	if err != nil {
		return err
	}
	b.reportWebhooks("rss_idle_mb=%.1f rss_after_mb=%.1f rss_peak_mb=%.1f", mib(idle.rssKiB), mib(after.rssKiB), mib(after.hwmKiB))
	return b.endSuite(ctx, b.reportWebhooks, problems)
}

// whPoster posts bench messages to the hook.
type whPoster struct {
	http    *http.Client
	url     string
	tracker *whTracker
}

// post sends message msgID, Slack-formatted (mrkdwn, a link, a sender
// name), and records it as accepted when answered 200 "ok".
func (p *whPoster) post(ctx context.Context, msgID int64, start time.Time) error {
	body := fmt.Sprintf(`{"text": "Deploy *whb-%d* of <https://ci.example/builds/%d|build %d> finished in `+"`12.5s`"+`", "username": "Bench CI"}`, msgID, msgID, msgID)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, p.url, strings.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := p.http.Do(req)
	if err != nil {
		return err
	}
	answer, err := io.ReadAll(io.LimitReader(resp.Body, 1024))
	resp.Body.Close()
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK || string(answer) != "ok" {
		return fmt.Errorf("HTTP %d %q", resp.StatusCode, answer)
	}
	p.tracker.accepted(msgID, start)
	return nil
}

// whAcceptPhase: --clients callers POST back to back for --duration.
func (b *bench) whAcceptPhase(ctx context.Context, p *whPoster) *phaseResult {
	workers := make([]worker, b.opts.clients)
	start := time.Now()
	deadline := start.Add(b.opts.duration)
	var wg sync.WaitGroup
	for i := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w := &workers[i]
			for ctx.Err() == nil && time.Now().Before(deadline) {
				msgID := p.tracker.nextID.Add(1) - 1
				t := time.Now()
				w.record(t, p.post(ctx, msgID, t))
			}
		}()
	}
	wg.Wait()
	return mergeWorkers(workers, time.Since(start))
}

// whDrain waits for the accept phase's messages to reach the room (a
// marker posted after them shows in the user's sync: the bridge delivers
// its queue in order), then counts them in the room's history.
func (b *bench) whDrain(ctx context.Context, p *whPoster, owner *messagingClient, roomID id.RoomID, lo, hi int64, acc *phaseResult) (problems []string) {
	phaseEnd := time.Now()
	phaseStart := phaseEnd.Add(-acc.elapsed)
	syncErrsBefore := p.tracker.counters().syncErrs
	marker := p.tracker.nextID.Add(1) - 1
	if err := p.post(ctx, marker, time.Now()); err != nil {
		return []string{"drain marker: " + err.Error()}
	}
	stopPerf := b.perfPhase("webhooks_drain")
	m := b.startMeter()
	all := p.tracker.waitSeen(ctx, marker, marker+1, time.Now().Add(whDrainTimeout))
	cpu := m.stop()
	stopPerf()
	if !all {
		return []string{fmt.Sprintf("the accept phase's messages did not all reach the room within %s (sync: %v)", whDrainTimeout, p.tracker.lastSyncErr())}
	}
	p.tracker.mu.Lock()
	drained := p.tracker.seenAt[marker]
	p.tracker.mu.Unlock()
	count, dupes, err := countInHistory(ctx, owner, roomID, lo, hi)
	if err != nil {
		return []string{"read the room's history: " + err.Error()}
	}
	accepted := acc.ok()
	var perSec float64
	if d := drained.Sub(phaseStart); d > 0 {
		perSec = float64(count) / d.Seconds()
	}
	b.reportWebhooks("drain_s=%.2f delivered_per_sec=%.1f delivered=%d missing=%d duplicates=%d sync_errors=%d %s load_1m=%s",
		drained.Sub(phaseEnd).Seconds(), perSec, count, max(0, accepted-count), dupes, p.tracker.counters().syncErrs-syncErrsBefore, cpu, loadAvg())
	fmt.Fprintf(b.errOut, "switchboard-bench: webhooks drain: %d accepted in %.1fs, all in the room %.1fs after the phase ended (delivered_per_sec counts from the phase's start)\n",
		accepted, acc.elapsed.Seconds(), drained.Sub(phaseEnd).Seconds())
	if count < accepted {
		problems = append(problems, fmt.Sprintf("%d accepted webhook messages are not in the room", accepted-count))
	}
	return problems
}

// countInHistory pages back through the room and counts the bench
// messages with IDs in [lo, hi), and those seen more than once.
func countInHistory(ctx context.Context, cli *messagingClient, roomID id.RoomID, lo, hi int64) (count, dupes int, err error) {
	seen := map[int64]bool{}
	from := ""
	for {
		resp, err := cli.Messages(ctx, roomID, from, "", mautrix.DirectionBackward, nil, 1000)
		if err != nil {
			return 0, 0, err
		}
		for _, evt := range resp.Chunk {
			msgID, ok := benchMessageID(evt)
			if !ok || msgID < lo || msgID >= hi {
				continue
			}
			if seen[msgID] {
				dupes++
			} else {
				seen[msgID] = true
			}
		}
		if resp.End == "" || len(resp.Chunk) == 0 {
			return len(seen), dupes, nil
		}
		from = resp.End
	}
}

// benchMessageID reads the bench ID from a message event's body.
func benchMessageID(evt *event.Event) (int64, bool) {
	if evt.Type != event.EventMessage {
		return 0, false
	}
	body, _ := evt.Content.Raw["body"].(string)
	m := whIDRE.FindStringSubmatch(body)
	if m == nil {
		return 0, false
	}
	n, err := strconv.ParseInt(m[1], 10, 64)
	return n, err == nil
}

// whRatePhase posts at a fixed rate for --duration, each request in its own
// goroutine (a slow answer does not delay the next request). It returns
// the requests' results and how late the bench started the latest one.
func (b *bench) whRatePhase(ctx context.Context, p *whPoster, rate int) (*phaseResult, time.Duration) {
	interval := time.Second / time.Duration(rate)
	n := int(b.opts.duration / interval)
	var mu sync.Mutex
	var w worker
	var wg sync.WaitGroup
	var behind time.Duration
	start := time.Now()
	for i := 0; i < n && ctx.Err() == nil; i++ {
		at := start.Add(time.Duration(i) * interval)
		if d := time.Until(at); d > 0 {
			time.Sleep(d)
		} else {
			behind = max(behind, -d)
		}
		msgID := p.tracker.nextID.Add(1) - 1
		wg.Add(1)
		go func() {
			defer wg.Done()
			t := time.Now()
			err := p.post(ctx, msgID, t)
			mu.Lock()
			w.record(t, err)
			mu.Unlock()
		}()
	}
	wg.Wait()
	return mergeWorkers([]worker{w}, time.Since(start)), behind
}

type whCounters struct{ limited, dupes, syncErrs int }

func (t *whTracker) counters() whCounters {
	t.mu.Lock()
	defer t.mu.Unlock()
	return whCounters{t.limited, t.dupes, t.syncErrs}
}

func (t *whTracker) lastSyncErr() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.syncErr
}

// whSyncLoop follows the room as its owner: /sync long polls (30 s) with
// a filter for that room, recording when each bench message first shows.
// It returns once the first sync answered; the loop ends with ctx.
func (b *bench) whSyncLoop(ctx context.Context, owner *messagingClient, roomID id.RoomID, t *whTracker) (<-chan struct{}, error) {
	cli, err := mautrix.NewClient(owner.HomeserverURL.String(), owner.UserID, owner.AccessToken)
	if err != nil {
		return nil, err
	}
	// Its own connection: the long poll must not wait for a pooled one. A
	// /sync that does not answer within its timeout and a margin is given
	// up and counted (sync_errors): the messages it held show up late.
	cli.Client = &http.Client{Timeout: whSyncTimeout, Transport: newMessagingTransport()}
	cli.UserAgent = "switchboard-bench"
	cli.StateStore = nil
	filter, _ := json.Marshal(map[string]any{
		"room": map[string]any{
			"rooms":    []id.RoomID{roomID},
			"timeline": map[string]any{"limit": 1000, "types": []string{event.EventMessage.Type}},
			"state":    map[string]any{"lazy_load_members": true},
		},
		"presence":     map[string]any{"types": []string{}},
		"account_data": map[string]any{"types": []string{}},
	})
	first, err := cli.SyncRequest(ctx, 0, "", string(filter), false, "")
	if err != nil {
		return nil, fmt.Errorf("initial /sync: %w", err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		since := first.NextBatch
		for ctx.Err() == nil {
			resp, err := cli.SyncRequest(ctx, int(whSyncPoll.Milliseconds()), since, string(filter), false, "")
			at := time.Now()
			if err != nil {
				if ctx.Err() != nil {
					return
				}
				t.mu.Lock()
				t.syncErr = err
				t.syncErrs++
				t.mu.Unlock()
				time.Sleep(100 * time.Millisecond)
				continue
			}
			since = resp.NextBatch
			joined := resp.Rooms.Join[roomID]
			if joined == nil {
				continue
			}
			if joined.Timeline.Limited {
				t.mu.Lock()
				t.limited++
				t.mu.Unlock()
			}
			for _, evt := range joined.Timeline.Events {
				if msgID, ok := benchMessageID(evt); ok {
					t.seen(msgID, at)
				}
			}
		}
	}()
	return done, nil
}

// bannerRE reads the webhooks line of the `switchboard run` banner.
var bannerRE = regexp.MustCompile(`Webhooks:\s+(https?://\S+)/hooks/\S*\s+\(invite (@\S+) to a room`)

// readWebhooksBanner returns the hook listener's base URL and the webhook
// bot from the `run` banner in the server's log.
func readWebhooksBanner(logPath string) (base string, bot id.UserID, err error) {
	data, err := os.ReadFile(logPath)
	if err != nil {
		return "", "", fmt.Errorf("server log: %w", err)
	}
	m := bannerRE.FindSubmatch(data)
	if m == nil {
		return "", "", errors.New(`the server's banner has no "Webhooks: http://…/hooks/… (invite @… to a room" line: is the webhook bridge enabled?`)
	}
	return string(m[1]), id.UserID(m[2]), nil
}

// provisionHook creates a hook in the room for user through the
// provisioning API, as an integration manager does, and returns its URL.
func provisionHook(ctx context.Context, base, secret string, user id.UserID, roomID id.RoomID) (string, error) {
	u := base + "/_switchboard/webhooks/v1/rooms/" + url.PathEscape(string(roomID)) + "/hooks?user_id=" + url.QueryEscape(string(user))
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, strings.NewReader(`{"name": "bench"}`))
	if err != nil {
		return "", err
	}
	req.Header.Set("Authorization", "Bearer "+secret)
	req.Header.Set("Content-Type", "application/json")
	resp, err := (&http.Client{Timeout: 30 * time.Second}).Do(req)
	if err != nil {
		return "", fmt.Errorf("provisioning API: %w", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var out struct {
		URL string `json:"url"`
	}
	if resp.StatusCode != http.StatusOK || json.Unmarshal(body, &out) != nil || out.URL == "" {
		return "", fmt.Errorf("provisioning API: create hook: HTTP %d: %.300s", resp.StatusCode, body)
	}
	return out.URL, nil
}

// tuneWebhooksConfig edits the webhooks section of the generated config:
// the provisioning shared secret, and no rate limits.
func tuneWebhooksConfig(dataDir, secret string) error {
	return editConfig(dataDir, func(root *yaml.Node) error {
		section := mapValue(root, "webhooks")
		if section == nil || section.Kind != yaml.MappingNode {
			return errors.New("generated config has no webhooks section")
		}
		setScalar(section, "!!str", secret, "provisioning", "shared_secret")
		setScalar(section, "!!int", "0", "rate_limits", "per_hook", "per_second")
		setScalar(section, "!!int", "0", "rate_limits", "global", "per_second")
		return nil
	})
}

// setScalar sets m[keys[0]][keys[1]]… = value, creating the mappings on
// the way.
func setScalar(m *yaml.Node, tag, value string, keys ...string) {
	for i, key := range keys {
		next := mapValue(m, key)
		if next == nil {
			next = &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}
			m.Content = append(m.Content, &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: key}, next)
		}
		if i == len(keys)-1 {
			*next = yaml.Node{Kind: yaml.ScalarNode, Tag: tag, Value: value}
		}
		m = next
	}
}
