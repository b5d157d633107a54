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
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// The messaging suite measures the messaging core on a fresh server, one
// line per phase (each also carries the CPU the server and the bench used,
// and the load average):
//
//	bench messaging db=sqlite send_events_per_sec=… send_p50_ms=… send_p99_ms=… senders=32 events=… errors=0 …
//	bench messaging db=sqlite fanout_members=100 fanout_p50_ms=… fanout_p99_ms=… fanout_max_ms=… messages=200 deliveries=… errors=0 …
//	bench messaging db=sqlite sequential_sends=1000 send_p50_ms=… send_p99_ms=… sends_per_sec=… errors=0 …
//	bench messaging db=sqlite initial_sync_rooms=500 initial_sync_events_per_room=50 initial_sync_ms=… setup_s=… errors=0 …
//	bench messaging db=sqlite rss_idle_mb=… rss_after_logins_mb=… … rss_after_mb=… rss_peak_mb=…
//
// Every client is a separate user (and device) logged in with a password;
// users come from `switchboard user add` as in the accounts suite. Nobody
// sends read receipts: every message stays unread for the members.

// messagingOptions sizes the messaging suite; the defaults are the issue's.
type messagingOptions struct {
	fanoutMembers  int
	fanoutMessages int
	syncRooms      int
	syncEvents     int
	sequential     int
}

func addMessagingFlags(fs *flag.FlagSet, o *messagingOptions) {
	fs.IntVar(&o.fanoutMembers, "fanout-members", 100, "messaging: members long-polling /sync in the fan-out room")
	fs.IntVar(&o.fanoutMessages, "fanout-messages", 200, "messaging: messages sent one at a time into the fan-out room")
	fs.IntVar(&o.syncRooms, "sync-rooms", 500, "messaging: rooms of the user whose initial /sync is timed")
	fs.IntVar(&o.syncEvents, "sync-events", 50, "messaging: messages in each of those rooms")
	fs.IntVar(&o.sequential, "sequential", 1000, "messaging: messages one client sends one after another")
}

func (o messagingOptions) validate() error {
	if o.fanoutMembers < 1 || o.fanoutMessages < 1 || o.syncRooms < 1 || o.syncEvents < 1 || o.sequential < 1 {
		return errors.New("--fanout-members, --fanout-messages, --sync-rooms, --sync-events and --sequential must be ≥ 1")
	}
	return nil
}

// lazyFilter is the /sync filter of the fan-out and initial-sync phases:
// what Element and most clients send (lazy-loaded members, 10 events).
const lazyFilter = `{"room":{"state":{"lazy_load_members":true},"timeline":{"limit":10}}}`

// seqKey carries a message's sequence number in its content, so that a
// receiving client can tell which send it answers.
const seqKey = "fi.switchboard.bench.seq"

// fanoutPause follows each fan-out message once every member has it, so
// that the members are back in their long-poll before the next one.
const fanoutPause = 20 * time.Millisecond

// deliveryTimeout is how long a fan-out message may take to reach every
// member before the bench gives up on the missing ones (counted as errors).
const deliveryTimeout = 10 * time.Second

// reportMessaging prints one messaging figure line.
func (b *bench) reportMessaging(format string, args ...any) {
	fmt.Fprintf(b.out, "bench messaging db=%s "+format+"\n", append([]any{b.label}, args...)...)
}

// messagingClient is one logged-in user.
type messagingClient struct {
	*mautrix.Client
	http *http.Client
}

// runMessaging is the messaging suite, on its own server and data dir.
func (b *bench) runMessaging(ctx context.Context) (err error) {
	mo := b.opts.messaging
	idle, done, err := b.startSuite(ctx, "messaging", nil)
	if err != nil {
		return err
	}
	defer done()
	b.reportMessaging("senders=%d duration=%s fanout_members=%d fanout_messages=%d sync_rooms=%d sync_events_per_room=%d sequential_sends=%d cpus=%d load_1m=%s",
		b.opts.clients, b.opts.duration, mo.fanoutMembers, mo.fanoutMessages, mo.syncRooms, mo.syncEvents, mo.sequential, runtime.NumCPU(), loadAvg())

	// Users: the fan-out members (the first `clients` of them are also the
	// throughput senders and build the initial-sync rooms), one user who
	// sends into the fan-out room and sequentially, one initial-sync user.
	nMembers := max(mo.fanoutMembers, b.opts.clients)
	setupStart := time.Now()
	users, err := b.srv.createUsers(ctx, nMembers+2)
	if err != nil {
		return err
	}
	clients, err := b.loginAll(ctx, users)
	if err != nil {
		return err
	}
	members, speaker, syncUser := clients[:nMembers], clients[nMembers], clients[nMembers+1]
	afterLogins, err := readProcStatus(b.srv.pid())
	if err != nil {
		return err
	}
	fmt.Fprintf(b.errOut, "switchboard-bench: messaging: %d users created and logged in in %.1fs\n", len(users), time.Since(setupStart).Seconds())

	var problems []string
	fail := func(phase string, r *phaseResult) {
		r.printErrors(b.errOut, phase)
		if r.ok() == 0 {
			problems = append(problems, "every request of the "+phase+" phase failed")
		}
	}

	send := b.sendThroughputPhase(ctx, members[:b.opts.clients])
	b.reportMessaging("send_events_per_sec=%.1f send_p50_ms=%.2f send_p99_ms=%.2f senders=%d events=%d errors=%d %s server_cpu_ms_per_event=%.3f load_1m=%s",
		send.perSecond(), send.percentileMS(50), send.percentileMS(99), b.opts.clients, send.ok(), send.errors, send.cpu, send.cpu.serverMSPer(send.ok()), loadAvg())
	fail("send", send.phaseResult)

	fan, fanRoom := b.fanoutPhase(ctx, speaker, members[:mo.fanoutMembers], mo.fanoutMessages)
	b.reportMessaging("fanout_members=%d fanout_p50_ms=%.2f fanout_p99_ms=%.2f fanout_max_ms=%.2f messages=%d deliveries=%d errors=%d %s server_cpu_ms_per_delivery=%.3f load_1m=%s",
		mo.fanoutMembers, fan.percentileMS(50), fan.percentileMS(99), fan.percentileMS(100), mo.fanoutMessages, fan.ok(), fan.errors, fan.cpu, fan.cpu.serverMSPer(fan.ok()), loadAvg())
	fail("fanout", fan.phaseResult)

	seq := b.sequentialPhase(ctx, speaker, fanRoom, mo.sequential)
	b.reportMessaging("sequential_sends=%d send_p50_ms=%.2f send_p99_ms=%.2f sends_per_sec=%.1f room_members=%d errors=%d %s server_cpu_ms_per_event=%.3f load_1m=%s",
		mo.sequential, seq.percentileMS(50), seq.percentileMS(99), seq.perSecond(), mo.fanoutMembers+1, seq.errors, seq.cpu, seq.cpu.serverMSPer(seq.ok()), loadAvg())
	fail("sequential", seq.phaseResult)
	rssBeforeSync, err := readProcStatus(b.srv.pid())
	if err != nil {
		return err
	}

	is := b.initialSyncPhase(ctx, syncUser, members[:b.opts.clients], mo.syncRooms, mo.syncEvents)
	b.reportMessaging("initial_sync_rooms=%d initial_sync_events_per_room=%d initial_sync_ms=%.0f initial_sync_again_ms=%.0f initial_sync_bytes=%d server_cpu_ms_per_sync=%.0f setup_s=%.1f setup_events_per_sec=%.1f %s errors=%d load_1m=%s",
		mo.syncRooms, mo.syncEvents, ms(is.first), ms(is.again), is.bytes, is.syncCPU.serverMSPer(2), is.setup.Seconds(), is.setupEventsPerSec(), is.setupCPU.fields("setup_"), is.errors.errors, loadAvg())
	fail("initial sync", &is.errors)

	after, err := readProcStatus(b.srv.pid())
	if err != nil {
		return err
	}
	// The logins (argon2id, 19 MiB each) set an early peak; the peak
	// before the initial-sync phase tells it apart from that phase's.
	b.reportMessaging("rss_idle_mb=%.1f rss_after_logins_mb=%.1f rss_peak_after_logins_mb=%.1f rss_peak_before_initial_sync_mb=%.1f rss_after_mb=%.1f rss_peak_mb=%.1f",
		mib(idle.rssKiB), mib(afterLogins.rssKiB), mib(afterLogins.hwmKiB), mib(rssBeforeSync.hwmKiB), mib(after.rssKiB), mib(after.hwmKiB))

	return b.endSuite(ctx, b.reportMessaging, problems)
}

// newMessagingTransport is shared by all clients: enough idle connections
// that 100+ long-polls and the senders each keep theirs (the default of 2
// per host would make most requests dial anew).
func newMessagingTransport() *http.Transport {
	return &http.Transport{
		Proxy:               nil, // loopback only
		DialContext:         (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:        512,
		MaxIdleConnsPerHost: 256,
		IdleConnTimeout:     90 * time.Second,
	}
}

// loginAll logs every user in (two at a time: each login is an argon2id
// hash on the server) and returns a client per user.
func (b *bench) loginAll(ctx context.Context, users []benchUser) ([]*messagingClient, error) {
	httpClient := &http.Client{Transport: newMessagingTransport(), Timeout: 2 * time.Minute}
	clients := make([]*messagingClient, len(users))
	errs := parallel(len(users), 2, func(i int) error {
		cli, err := mautrix.NewClient(b.srv.baseURL, "", "")
		if err != nil {
			return err
		}
		cli.Client = httpClient
		cli.UserAgent = "switchboard-bench"
		cli.DefaultHTTPRetries = 0
		cli.IgnoreRateLimit = true
		cli.StateStore = nil // the bench reads /sync itself
		if _, err := cli.Login(ctx, loginRequest(users[i], true)); err != nil {
			return fmt.Errorf("login %s: %w", users[i].name, err)
		}
		clients[i] = &messagingClient{Client: cli, http: httpClient}
		return nil
	})
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return clients, nil
}

// parallel runs fn(0…n-1) with at most limit running at once.
func parallel(n, limit int, fn func(i int) error) []error {
	errs := make([]error, n)
	sem := make(chan struct{}, limit)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			errs[i] = fn(i)
		}()
	}
	wg.Wait()
	return errs
}

// setupRoom creates a public room as owner and joins the others to it.
func setupRoom(ctx context.Context, owner *messagingClient, others []*messagingClient, name string) (id.RoomID, error) {
	resp, err := owner.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", Name: name})
	if err != nil {
		return "", fmt.Errorf("create %s room: %w", name, err)
	}
	errs := parallel(len(others), 8, func(i int) error {
		if _, err := others[i].JoinRoomByID(ctx, resp.RoomID); err != nil {
			return fmt.Errorf("join %s room as %s: %w", name, others[i].UserID, err)
		}
		return nil
	})
	return resp.RoomID, errors.Join(errs...)
}

func textMessage(body string, seq int) map[string]any {
	return map[string]any{"msgtype": "m.text", "body": body, seqKey: seq}
}

// msgResult is a phase's outcome with the CPU it cost.
type msgResult struct {
	*phaseResult
	cpu cpuUsage
}

// cpuUsage is the CPU the server and the bench (its clients) used over a
// wall-clock interval: on a shared 2-core machine, whether the server had
// the CPU to itself is part of the figure.
type cpuUsage struct {
	wall, server, bench time.Duration
}

func (u cpuUsage) String() string { return u.fields("") }

// fields is "server_cpu_cores=… bench_cpu_cores=…", keys prefixed.
func (u cpuUsage) fields(prefix string) string {
	var server, bench float64
	if u.wall > 0 {
		server, bench = u.server.Seconds()/u.wall.Seconds(), u.bench.Seconds()/u.wall.Seconds()
	}
	return fmt.Sprintf("%sserver_cpu_cores=%.2f %sbench_cpu_cores=%.2f", prefix, server, prefix, bench)
}

// serverMSPer is the server CPU per unit of work, in milliseconds.
func (u cpuUsage) serverMSPer(n int) float64 {
	if n <= 0 {
		return 0
	}
	return ms(u.server) / float64(n)
}

type meter struct {
	b                *bench
	start            time.Time
	server, benchCPU time.Duration
}

func (b *bench) startMeter() *meter {
	return &meter{b: b, start: time.Now(), server: processCPU(b.srv.pid()), benchCPU: selfCPU()}
}

func (m *meter) stop() cpuUsage {
	return cpuUsage{wall: time.Since(m.start), server: processCPU(m.b.srv.pid()) - m.server, bench: selfCPU() - m.benchCPU}
}

// processCPU is a process's user+system CPU time from /proc/PID/stat
// (clock ticks of 10 ms; 0 when unreadable).
func processCPU(pid int) time.Duration {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// The fields after the command name (which may hold spaces): state is
	// the first, utime the 12th, stime the 13th.
	i := strings.LastIndexByte(string(data), ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(data[i+1:]))
	if len(f) < 13 {
		return 0
	}
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(utime+stime) * 10 * time.Millisecond
}

// selfCPU is the bench process's own user+system CPU time.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// setupFailure is a phase that could not start.
func setupFailure(what string, err error) *phaseResult {
	return &phaseResult{errors: 1, errorMsgs: map[string]int{what + ": " + err.Error(): 1}}
}

// sendThroughputPhase: every sender, a distinct user joined to one room,
// sends m.room.message events back to back for --duration.
func (b *bench) sendThroughputPhase(ctx context.Context, senders []*messagingClient) *msgResult {
	roomID, err := setupRoom(ctx, senders[0], senders[1:], "throughput")
	if err != nil {
		return &msgResult{phaseResult: setupFailure("setup", err)}
	}
	clients := make([]*mautrix.Client, len(senders))
	for i, s := range senders {
		clients[i] = s.Client
	}
	stopPerf := b.perfPhase("send")
	defer stopPerf()
	m := b.startMeter()
	sent := make([]int, len(clients)) // per sender: each goroutine its own
	r := b.runPhase(ctx, clients, func(ctx context.Context, i int, cli *mautrix.Client) error {
		sent[i]++
		_, err := cli.SendMessageEvent(ctx, roomID, event.EventMessage, textMessage("throughput "+strconv.Itoa(sent[i]), sent[i]))
		return err
	})
	return &msgResult{phaseResult: r, cpu: m.stop()}
}

// sequentialPhase: one client sends count messages, each after the
// previous one was answered.
func (b *bench) sequentialPhase(ctx context.Context, cli *messagingClient, roomID id.RoomID, count int) *msgResult {
	res := &phaseResult{errorMsgs: map[string]int{}}
	if roomID == "" {
		return &msgResult{phaseResult: setupFailure("setup", errors.New("no fan-out room to send into"))}
	}
	stopPerf := b.perfPhase("sequential")
	defer stopPerf()
	m := b.startMeter()
	var w worker
	start := time.Now()
	for i := 0; i < count && ctx.Err() == nil; i++ {
		t := time.Now()
		_, err := cli.SendMessageEvent(ctx, roomID, event.EventMessage, textMessage("sequential "+strconv.Itoa(i), i))
		w.record(t, err)
	}
	res.elapsed = time.Since(start)
	res.latencies, res.errors = w.latencies, w.errors
	for m, n := range w.errorMsgs {
		res.errorMsgs[m] += n
	}
	slices.Sort(res.latencies)
	return &msgResult{phaseResult: res, cpu: m.stop()}
}

// syncResponse is the part of a /sync answer the bench reads.
type syncResponse struct {
	NextBatch string `json:"next_batch"`
	Rooms     struct {
		Join map[id.RoomID]struct {
			State struct {
				Events []json.RawMessage `json:"events"`
			} `json:"state"`
			Timeline struct {
				Events []struct {
					Type    string          `json:"type"`
					Sender  id.UserID       `json:"sender"`
					Content json.RawMessage `json:"content"`
				} `json:"events"`
				Limited bool `json:"limited"`
			} `json:"timeline"`
		} `json:"join"`
	} `json:"rooms"`
}

// sync makes one /sync request and returns the answer, its size and when
// the whole body had arrived (before it is decoded: decoding is the
// client's cost, not the server's).
func (c *messagingClient) sync(ctx context.Context, since string, timeout time.Duration) (*syncResponse, int, time.Time, error) {
	q := map[string]string{"filter": lazyFilter, "timeout": strconv.FormatInt(timeout.Milliseconds(), 10)}
	if since != "" {
		q["since"] = since
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.BuildURLWithQuery(mautrix.ClientURLPath{"v3", "sync"}, q), nil)
	if err != nil {
		return nil, 0, time.Time{}, err
	}
	req.Header.Set("Authorization", "Bearer "+c.AccessToken)
	req.Header.Set("User-Agent", "switchboard-bench")
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, 0, time.Time{}, err
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	arrived := time.Now()
	if err != nil {
		return nil, 0, arrived, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, len(body), arrived, fmt.Errorf("/sync: HTTP %d: %.200s", resp.StatusCode, body)
	}
	var sr syncResponse
	if err := json.Unmarshal(body, &sr); err != nil {
		return nil, len(body), arrived, fmt.Errorf("/sync: decode: %w", err)
	}
	return &sr, len(body), arrived, nil
}

// fanoutTracker matches members' receipts to the speaker's sends.
type fanoutTracker struct {
	members int
	mu      sync.Mutex
	sent    []time.Time // when the speaker started sending each message
	seen    [][]bool    // [message][member]
	count   []int
	done    []chan struct{} // closed when every member has the message
	lat     []time.Duration
	bySeq   [][]time.Duration // the same latencies per message
	dupes   int
}

func newFanoutTracker(members, messages int) *fanoutTracker {
	t := &fanoutTracker{members: members, sent: make([]time.Time, messages), seen: make([][]bool, messages),
		count: make([]int, messages), done: make([]chan struct{}, messages), bySeq: make([][]time.Duration, messages)}
	for i := range messages {
		t.seen[i] = make([]bool, members)
		t.done[i] = make(chan struct{})
	}
	return t
}

func (t *fanoutTracker) sending(seq int) {
	t.mu.Lock()
	t.sent[seq] = time.Now()
	t.mu.Unlock()
}

func (t *fanoutTracker) received(seq, member int, at time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if seq < 0 || seq >= len(t.sent) || t.sent[seq].IsZero() {
		return
	}
	if t.seen[seq][member] {
		t.dupes++
		return
	}
	t.seen[seq][member] = true
	t.lat = append(t.lat, at.Sub(t.sent[seq]))
	t.bySeq[seq] = append(t.bySeq[seq], at.Sub(t.sent[seq]))
	t.count[seq]++
	if t.count[seq] == t.members {
		close(t.done[seq])
	}
}

// fanoutPhase: members long-poll /sync (each with its own since token,
// timeout 30 s, the lazy-loading filter) while the speaker sends messages
// one at a time, each once the previous one has reached every member.
// Latency runs from the start of the speaker's PUT to the moment a
// member's /sync answer carrying the message has arrived. It returns the
// room for the sequential phase.
func (b *bench) fanoutPhase(ctx context.Context, speaker *messagingClient, members []*messagingClient, messages int) (*msgResult, id.RoomID) {
	roomID, err := setupRoom(ctx, speaker, members, "fanout")
	if err != nil {
		return &msgResult{phaseResult: setupFailure("setup", err)}, roomID
	}
	// Initial syncs, for the since tokens.
	since := make([]string, len(members))
	errs := parallel(len(members), 8, func(i int) error {
		sr, _, _, err := members[i].sync(ctx, "", 0)
		if err != nil {
			return fmt.Errorf("initial sync of %s: %w", members[i].UserID, err)
		}
		if _, ok := sr.Rooms.Join[roomID]; !ok {
			return fmt.Errorf("initial sync of %s lacks the fan-out room", members[i].UserID)
		}
		since[i] = sr.NextBatch
		return nil
	})
	if err := errors.Join(errs...); err != nil {
		return &msgResult{phaseResult: setupFailure("setup", err)}, roomID
	}

	tr := newFanoutTracker(len(members), messages)
	pollCtx, stopPolls := context.WithCancel(ctx)
	defer stopPolls()
	pollers := make([]worker, len(members))
	var wg sync.WaitGroup
	for i, m := range members {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w := &pollers[i]
			for pollCtx.Err() == nil {
				sr, _, arrived, err := m.sync(pollCtx, since[i], 30*time.Second)
				if err != nil {
					if pollCtx.Err() != nil {
						return
					}
					w.record(time.Time{}, fmt.Errorf("long-poll: %w", err))
					time.Sleep(100 * time.Millisecond)
					continue
				}
				since[i] = sr.NextBatch
				for _, e := range sr.Rooms.Join[roomID].Timeline.Events {
					if e.Type != event.EventMessage.Type || e.Sender != speaker.UserID {
						continue
					}
					var c map[string]json.RawMessage
					if json.Unmarshal(e.Content, &c) != nil {
						continue
					}
					if seq, err := strconv.Atoi(string(c[seqKey])); err == nil {
						tr.received(seq, i, arrived)
					}
				}
			}
		}()
	}
	// Let every member reach its long-poll before the first message.
	time.Sleep(500 * time.Millisecond)

	stopPerf := b.perfPhase("fanout")
	m := b.startMeter()
	var sendW worker
	start := time.Now()
	for seq := 0; seq < messages && ctx.Err() == nil; seq++ {
		tr.sending(seq)
		t := time.Now()
		_, err := speaker.SendMessageEvent(ctx, roomID, event.EventMessage, textMessage("fanout "+strconv.Itoa(seq), seq))
		sendW.record(t, err)
		if err != nil {
			continue
		}
		select {
		case <-tr.done[seq]:
		case <-time.After(deliveryTimeout):
		case <-ctx.Done():
		}
		time.Sleep(fanoutPause)
	}
	elapsed := time.Since(start)
	cpu := m.stop()
	stopPerf()
	stopPolls()
	wg.Wait()

	res := &phaseResult{elapsed: elapsed, errorMsgs: map[string]int{}}
	tr.mu.Lock()
	res.latencies = append(res.latencies, tr.lat...)
	// Whether delivery slows down as the room's history grows: the first
	// and the last tenth of the messages.
	tenth := max(1, messages/10)
	early, late := &phaseResult{}, &phaseResult{}
	for seq, l := range tr.bySeq {
		if seq < tenth {
			early.latencies = append(early.latencies, l...)
		} else if seq >= messages-tenth {
			late.latencies = append(late.latencies, l...)
		}
	}
	// Deliveries of messages whose send failed are not expected.
	missing := len(members)*len(sendW.latencies) - len(tr.lat)
	tr.mu.Unlock()
	slices.Sort(res.latencies)
	for _, w := range append(pollers, sendW) {
		res.errors += w.errors
		for m, n := range w.errorMsgs {
			res.errorMsgs["fanout "+m] += n
		}
	}
	if sendW.errors > 0 {
		res.errorMsgs[fmt.Sprintf("speaker: %d of %d sends failed", sendW.errors, messages)]++
	}
	if missing > 0 {
		res.errors += missing
		res.errorMsgs[fmt.Sprintf("%d of %d deliveries did not arrive within %s", missing, len(members)*len(sendW.latencies), deliveryTimeout)] = missing
	}
	if sendW.latencies != nil {
		slices.Sort(sendW.latencies)
		sp := &phaseResult{latencies: sendW.latencies}
		fmt.Fprintf(b.errOut, "switchboard-bench: fanout: speaker's send p50 %.2f ms, p99 %.2f ms; %d messages in %.1fs\n",
			sp.percentileMS(50), sp.percentileMS(99), messages, elapsed.Seconds())
	}
	slices.Sort(early.latencies)
	slices.Sort(late.latencies)
	if early.ok() > 0 && late.ok() > 0 {
		fmt.Fprintf(b.errOut, "switchboard-bench: fanout: first %d messages p50 %.2f ms, p99 %.2f ms; last %d messages p50 %.2f ms, p99 %.2f ms\n",
			tenth, early.percentileMS(50), early.percentileMS(99), tenth, late.percentileMS(50), late.percentileMS(99))
	}
	return &msgResult{phaseResult: res, cpu: cpu}, roomID
}

// initialSyncResult is the initial-sync phase's outcome.
type initialSyncResult struct {
	setup       time.Duration
	setupEvents int
	setupCPU    cpuUsage
	syncCPU     cpuUsage // both syncs
	first       time.Duration
	again       time.Duration
	bytes       int
	errors      phaseResult
}

func (r *initialSyncResult) setupEventsPerSec() float64 {
	if r.setup <= 0 {
		return 0
	}
	return float64(r.setupEvents) / r.setup.Seconds()
}

func (r *initialSyncResult) fail(err error) {
	r.errors.errors++
	if r.errors.errorMsgs == nil {
		r.errors.errorMsgs = map[string]int{}
	}
	if len(r.errors.errorMsgs) < 20 {
		r.errors.errorMsgs[err.Error()]++
	}
}

// initialSyncPhase: the workers build rooms rooms (each: created by a
// worker with the user invited, the user joins, the worker sends events
// messages), concurrently; then the user's initial /sync with the
// lazy-loading filter is timed, twice.
func (b *bench) initialSyncPhase(ctx context.Context, user *messagingClient, workers []*messagingClient, rooms, events int) *initialSyncResult {
	res := &initialSyncResult{}
	res.errors.errorMsgs = map[string]int{}
	var mu sync.Mutex
	m := b.startMeter()
	start := time.Now()
	errs := parallel(len(workers), len(workers), func(w int) error {
		cli := workers[w]
		var errs []error
		sent := 0
		for r := w; r < rooms && ctx.Err() == nil; r += len(workers) {
			resp, err := cli.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat", Name: fmt.Sprintf("room %d", r), Invite: []id.UserID{user.UserID}})
			if err != nil {
				errs = append(errs, fmt.Errorf("create room: %w", err))
				continue
			}
			if _, err := user.JoinRoomByID(ctx, resp.RoomID); err != nil {
				errs = append(errs, fmt.Errorf("join: %w", err))
				continue
			}
			for i := range events {
				if _, err := cli.SendMessageEvent(ctx, resp.RoomID, event.EventMessage, textMessage(fmt.Sprintf("room %d message %d", r, i), i)); err != nil {
					errs = append(errs, fmt.Errorf("send: %w", err))
					continue
				}
				sent++
			}
		}
		mu.Lock()
		res.setupEvents += sent
		mu.Unlock()
		return errors.Join(errs...)
	})
	res.setup = time.Since(start)
	res.setupCPU = m.stop()
	for _, err := range errs {
		if err != nil {
			for _, e := range strings.Split(err.Error(), "\n") {
				res.fail(errors.New("setup: " + e))
			}
		}
	}

	stopPerf := b.perfPhase("initial_sync")
	defer stopPerf()
	m = b.startMeter()
	defer func() { res.syncCPU = m.stop() }()
	for pass := range 2 {
		t := time.Now()
		sr, n, arrived, err := user.sync(ctx, "", 0)
		if err != nil {
			res.fail(fmt.Errorf("initial sync: %w", err))
			continue
		}
		took := arrived.Sub(t)
		if pass == 0 {
			res.first, res.bytes = took, n
			res.errors.latencies = append(res.errors.latencies, took)
			// Check the answer once: every room, the timeline limit kept,
			// and (when the timeline does not reach back to the room's
			// creation) the state before it.
			if len(sr.Rooms.Join) != rooms {
				res.fail(fmt.Errorf("initial sync has %d joined rooms, want %d", len(sr.Rooms.Join), rooms))
			}
			for roomID, jr := range sr.Rooms.Join {
				if n := len(jr.Timeline.Events); n == 0 || n > 10 || (events >= 10 && n != 10) {
					res.fail(fmt.Errorf("initial sync: room %s has %d timeline events, want 10", roomID, n))
				}
				if events >= 10 && len(jr.State.Events) == 0 {
					res.fail(fmt.Errorf("initial sync: room %s has no state", roomID))
				}
			}
		} else {
			res.again = took
		}
	}
	return res
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// loadAvg is the 1-minute load average (the machine may be shared: a
// figure taken under load says so).
func loadAvg() string {
	data, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(data))
	if len(f) == 0 {
		return "unknown"
	}
	return f[0]
}

// perfPhase records the server's CPU profile for one messaging phase into
// FILE.PHASE when the hidden --perf-record FILE flag is set.
func (b *bench) perfPhase(phase string) func() {
	if b.opts.serverPerf == "" {
		return func() {}
	}
	cmd := exec.Command("perf", "record", "-g", "-F", "999", "-o", b.opts.serverPerf+"."+phase, "-p", strconv.Itoa(b.srv.pid()))
	cmd.Stdout, cmd.Stderr = io.Discard, b.errOut
	if err := cmd.Start(); err != nil {
		fmt.Fprintf(b.errOut, "switchboard-bench: perf record: %v\n", err)
		return func() {}
	}
	time.Sleep(200 * time.Millisecond) // perf attaches
	return func() {
		cmd.Process.Signal(os.Interrupt)
		cmd.Wait()
	}
}
