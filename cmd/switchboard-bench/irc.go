package main

import (
	"bufio"
	"bytes"
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
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"gopkg.in/yaml.v3"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/switchboard-im/switchboard/internal/loopback"
)

// The irc suite measures the IRC bridge that `switchboard run` starts
// beside the homeserver, against a real ngircd (/usr/sbin/ngircd) the
// bench starts on a loopback port. The bench adds an irc section to the
// generated switchboard.yaml (one network "bench", the bot joins #bench
// and --irc-channels-1 more channels #bench-1… at start, connection_rate --irc-rate a second with an equal burst, a flood
// control of 100 lines a second so that the relay phase measures the
// bridge and not the pacing) and an appservice registration of its own
// (users @ircb_…, no URL) through which it registers --irc-puppets users
// without password hashing and joins them to the portal room by its alias,
// masquerading with ?user_id=, user i to channel i mod --irc-channels.
// Each join makes the bridge connect that user's puppet and join it to the
// channel. Spreading them is what real bridges see, and it keeps the
// server's work linear: in one channel every JOIN goes to every member,
// N²/2 lines (12.5 million for 5,000), which one ngircd cannot send in
// minutes (--irc-channels=1 shows it). Lines:
//
//	bench irc db=sqlite puppets=… connect_s=… rss_kib_per_puppet=… reconnect_s=… relay_irc_to_matrix_p50_ms=… p99_ms=… relay_matrix_to_irc_p50_ms=… p99_ms=…
//
// plus one line per phase with details. Phases:
//
//   - connect: from the first of the N joins until an IRC observer in
//     every channel (a scripted client counting NAMES and JOINs) sees all N
//     puppets (nicks ending in "[m]"). The joins run 32 at a time.
//   - memory: the server's RSS before the joins (bot and one puppet
//     connected) and after all N are in, settled 5 s; the difference per
//     puppet. It includes the homeserver's share (N more members of one
//     room), not just the puppets'.
//   - reconnect: ngircd is stopped (SIGTERM) and started again on the same
//     port; from when it accepts connections again until the observer sees
//     all N back (the bot reconnects with its backoff, then the puppets,
//     paced by connection_rate).
//   - relay: the observer sends --irc-messages PRIVMSGs to #bench (20 a
//     second); latency to a logged-in Matrix user's /sync. Then that user
//     sends as many messages to the room; latency to the observer's PRIVMSG
//     from the user's puppet.
//
// BENCH_IRC_LOG=info (a diagnosis aid) sets the server's log level, to see
// why puppets failed to connect.

type ircOptions struct {
	joinRate int
	puppets  int
	rate     int
	messages int
	channels int
}

func addIRCFlags(fs *flag.FlagSet, o *ircOptions) {
	fs.IntVar(&o.puppets, "irc-puppets", 5000, "irc: puppets (Matrix users joined to the portal room)")
	fs.IntVar(&o.rate, "irc-rate", 100, "irc: the network's connection_rate (new connections a second, also the burst)")
	fs.IntVar(&o.joinRate, "irc-join-rate", 0, "irc: Matrix joins a second in the connect phase (0: as fast as the homeserver takes them, 32 at a time)")
	fs.IntVar(&o.messages, "irc-messages", 200, "irc: messages each way in the relay phase")
	fs.IntVar(&o.channels, "irc-channels", 50, "irc: channels the puppets are spread over (1: all in #bench, where every JOIN goes to every member)")
}

func (o ircOptions) validate() error {
	if o.puppets < 1 || o.puppets > 100000 {
		return errors.New("--irc-puppets must be between 1 and 100000")
	}
	if o.rate < 1 || o.rate > 10000 {
		return errors.New("--irc-rate must be between 1 and 10000")
	}
	if o.messages < 1 || o.messages > 100000 {
		return errors.New("--irc-messages must be between 1 and 100000")
	}
	if o.channels < 1 || o.channels > 1000 {
		return errors.New("--irc-channels must be between 1 and 1000")
	}
	return nil
}

func (b *bench) reportIRC(format string, args ...any) {
	fmt.Fprintf(b.out, "bench irc db=%s "+format+"\n", append([]any{b.label}, args...)...)
}

const (
	ircChannel      = "#bench"
	ircNetwork      = "bench"
	ircObserverNick = "observer"
	ircUserLocal    = "ircb_"
	ircJoiners      = 32
)

// ircChannels are the bench's channels: #bench (the relay phase's, with
// the listener), then #bench-1….
func ircChannels(n int) []string {
	chans := []string{ircChannel}
	for i := 1; i < n; i++ {
		chans = append(chans, fmt.Sprintf("%s-%d", ircChannel, i))
	}
	return chans
}

func (b *bench) runIRC(ctx context.Context) (err error) {
	o := b.opts.irc
	channels := ircChannels(o.channels)
	raiseNoFile()
	ngircd, err := startNgircd()
	if err != nil {
		return err
	}
	defer ngircd.close()

	asToken, hsToken := randomHex(16), randomHex(16)
	_, done, err := b.startSuite(ctx, "irc", func() error {
		if err := writeIRCBenchRegistration(b.srv.dataDir, asToken, hsToken); err != nil {
			return err
		}
		return editConfig(b.srv.dataDir, func(root *yaml.Node) error {
			var section yaml.Node
			quoted := make([]string, len(channels))
			for i, ch := range channels {
				quoted[i] = strconv.Quote(ch)
			}
			cfg := fmt.Sprintf(`networks:
  - id: %s
    host: 127.0.0.1
    port: %d
    channels: [%s]
    connection_rate: {per_second: %d, burst: %d}
    rate_limit: {lines_per_second: 100, burst: 100}
`, ircNetwork, ngircd.port, strings.Join(quoted, ", "), o.rate, o.rate)
			if err := yaml.Unmarshal([]byte(cfg), &section); err != nil {
				return err
			}
			if level := mapValue(mapValue(root, "logging"), "level"); level != nil && os.Getenv("BENCH_IRC_LOG") != "" {
				level.Value = os.Getenv("BENCH_IRC_LOG")
			}
			if existing := mapValue(root, "irc"); existing != nil {
				*existing = *section.Content[0]
			} else {
				root.Content = append(root.Content, &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: "irc"}, section.Content[0])
			}
			return nil
		})
	})
	if err != nil {
		return err
	}
	defer done()
	serverName, err := readServerName(b.srv.dataDir)
	if err != nil {
		return err
	}
	prefix, err := readIRCBanner(b.srv.logPath)
	if err != nil {
		return err
	}
	aliasOf := func(channel string) string {
		return fmt.Sprintf("#%s%s_%s:%s", prefix, ircNetwork, channel, serverName)
	}
	alias := aliasOf(ircChannel)
	b.reportIRC("puppets=%d channels=%d connection_rate=%d join_rate=%d messages=%d cpus=%d load_1m=%s",
		o.puppets, len(channels), o.rate, o.joinRate, o.messages, runtime.NumCPU(), loadAvg())

	obs, err := dialObserver(ctx, ngircd.addr, channels)
	if err != nil {
		return err
	}
	defer func() { obs.close() }()
	// The bot is in #bench and the portal room has its alias.
	if !obs.waitFor(ctx, 60*time.Second, func() bool { return obs.hasNick("mxbridge") }) {
		b.srv.printLogTail(b.errOut)
		return errors.New("the IRC bridge's bot did not join #bench within 60s")
	}
	hs := &ircHS{base: b.srv.baseURL, asToken: asToken, server: serverName,
		http: &http.Client{Timeout: 2 * time.Minute, Transport: newMessagingTransport()}}
	roomIDs := make([]id.RoomID, len(channels))
	deadline := time.Now().Add(60 * time.Second)
	for i, ch := range channels {
		for {
			if roomIDs[i], err = hs.resolve(ctx, aliasOf(ch)); err == nil {
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("portal alias %s: %w", aliasOf(ch), err)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	roomID := roomIDs[0]

	// The listener: a logged-in user (it follows the room by /sync and
	// speaks for the Matrix → IRC direction); its puppet is puppet 0.
	users, err := b.srv.createUsers(ctx, 1)
	if err != nil {
		return err
	}
	clients, err := b.loginAll(ctx, users)
	if err != nil {
		return err
	}
	listener := clients[0]
	if _, err := listener.JoinRoom(ctx, alias, nil); err != nil {
		return fmt.Errorf("listener join %s: %w", alias, err)
	}
	if !obs.waitFor(ctx, 60*time.Second, func() bool { return obs.puppetCount() >= 1 }) {
		b.srv.printLogTail(b.errOut)
		return errors.New("the listener's puppet did not join #bench within 60s")
	}
	want := o.puppets + 1
	var problems []string

	// Users, registered through the bench appservice (no password hash).
	setup := time.Now()
	names := make([]string, o.puppets)
	for i := range names {
		names[i] = fmt.Sprintf("%s%s_%05d", ircUserLocal, randomHex(2), i)
	}
	if err := errors.Join(parallel(len(names), ircJoiners, func(i int) error { return hs.register(ctx, names[i]) })...); err != nil {
		return err
	}
	fmt.Fprintf(b.errOut, "switchboard-bench: irc: %d users registered in %.1fs\n", o.puppets, time.Since(setup).Seconds())
	time.Sleep(2 * time.Second)
	before, err := readProcStatus(b.srv.pid())
	if err != nil {
		return err
	}

	// Connect: the joins, until the observer sees every puppet.
	m := b.startMeter()
	start := time.Now()
	joinErrs := errors.Join(parallel(len(names), ircJoiners, func(i int) error {
		if o.joinRate > 0 {
			time.Sleep(time.Until(start.Add(time.Duration(i) * time.Second / time.Duration(o.joinRate))))
		}
		return hs.join(ctx, roomIDs[i%len(roomIDs)], names[i])
	})...)
	joinsDone := time.Since(start)
	if joinErrs != nil {
		fmt.Fprintf(b.errOut, "switchboard-bench: irc: joins: %.500v\n", joinErrs)
		// Reported, not a failure of the suite: the figures say how many came.
	}
	all := obs.waitCount(ctx, want, ircStall)
	connect := time.Since(start)
	cpu := m.stop()
	got := obs.puppetCount() - 1
	if !all {
		fmt.Fprintf(b.errOut, "switchboard-bench: irc: only %d of %d puppets in #bench (no new one for %s)\n", got, o.puppets, ircStall)
		if got <= 0 {
			problems = append(problems, "no puppet reached #bench")
		}
		connect -= ircStall // to the last one seen, about
	}
	b.reportIRC("phase=connect puppets=%d connect_s=%.1f joins_s=%.1f connected=%d %s load_1m=%s",
		o.puppets, connect.Seconds(), joinsDone.Seconds(), got, cpu, loadAvg())
	time.Sleep(5 * time.Second)
	after, err := readProcStatus(b.srv.pid())
	if err != nil {
		return err
	}
	perPuppet := float64(after.rssKiB-before.rssKiB) / float64(max(got, 1))
	ngRSS, _ := readProcStatus(ngircd.pid())
	b.reportIRC("phase=memory rss_before_mb=%.1f rss_after_mb=%.1f rss_peak_mb=%.1f rss_kib_per_puppet=%.1f ngircd_rss_mb=%.1f fds=%d",
		mib(before.rssKiB), mib(after.rssKiB), mib(after.hwmKiB), perPuppet, mib(ngRSS.rssKiB), countFDs(b.srv.pid()))

	// Reconnect: ngircd restarts; the observer comes back first.
	var reconnect time.Duration
	reconnected := 0
	if ctx.Err() == nil && got > 0 {
		obs.close()
		stopAt := time.Now()
		if err := ngircd.restart(); err != nil {
			return err
		}
		upAt := time.Now()
		if obs, err = dialObserver(ctx, ngircd.addr, channels); err != nil {
			return err
		}
		m := b.startMeter()
		ok := obs.waitCount(ctx, got+1, ircStall)
		reconnect = time.Since(upAt)
		cpu := m.stop()
		reconnected = obs.puppetCount() - 1
		botBack := obs.firstBot.Sub(upAt)
		b.reportIRC("phase=reconnect puppets=%d reconnect_s=%.1f restart_s=%.1f bot_back_s=%.1f reconnected=%d %s load_1m=%s",
			o.puppets, reconnect.Seconds(), upAt.Sub(stopAt).Seconds(), botBack.Seconds(), reconnected, cpu, loadAvg())
		if !ok {
			reconnect -= ircStall
			fmt.Fprintf(b.errOut, "switchboard-bench: irc: only %d of %d puppets back in #bench after the IRC server restarted (no new one for %s)\n", reconnected, got, ircStall)
			if reconnected <= 0 {
				problems = append(problems, "no puppet came back after the IRC server restarted")
			}
		}
	}

	// Relay, both ways.
	var i2m, m2i *phaseResult
	if ctx.Err() == nil {
		var perr []string
		i2m, m2i, perr = b.ircRelay(ctx, obs, listener, roomID)
		problems = append(problems, perr...)
	}
	p := func(r *phaseResult, q float64) float64 {
		if r == nil || r.ok() == 0 {
			return -1
		}
		return r.percentileMS(q)
	}
	b.reportIRC("puppets=%d connect_s=%.1f rss_kib_per_puppet=%.1f reconnect_s=%.1f relay_irc_to_matrix_p50_ms=%.2f p99_ms=%.2f relay_matrix_to_irc_p50_ms=%.2f p99_ms=%.2f",
		got, connect.Seconds(), perPuppet, reconnect.Seconds(), p(i2m, 50), p(i2m, 99), p(m2i, 50), p(m2i, 99))
	return b.endSuite(ctx, b.reportIRC, problems)
}

// ircRelay measures both directions at 20 messages a second.
func (b *bench) ircRelay(ctx context.Context, obs *ircObserver, listener *messagingClient, roomID id.RoomID) (i2m, m2i *phaseResult, problems []string) {
	n := b.opts.irc.messages
	tracker := newWHTracker()
	sctx, stopSync := context.WithCancel(ctx)
	defer stopSync()
	if _, err := b.whSyncLoop(sctx, listener, roomID, tracker); err != nil {
		return nil, nil, []string{"listener sync: " + err.Error()}
	}
	time.Sleep(time.Second)
	// IRC → Matrix.
	lo := tracker.nextID.Load()
	for i := 0; i < n && ctx.Err() == nil; i++ {
		msgID := tracker.nextID.Add(1) - 1
		t := time.Now()
		tracker.accepted(msgID, t)
		if err := obs.send(fmt.Sprintf("PRIVMSG %s :relay whb-%d from IRC", ircChannel, msgID)); err != nil {
			return nil, nil, []string{"observer send: " + err.Error()}
		}
		time.Sleep(50 * time.Millisecond)
	}
	hi := tracker.nextID.Load()
	tracker.waitSeen(ctx, lo, hi, time.Now().Add(60*time.Second))
	ph := tracker.phase(lo, hi)
	i2m = &phaseResult{}
	tracker.mu.Lock()
	for msgID := lo; msgID < hi; msgID++ {
		if seen, ok := tracker.seenAt[msgID]; ok {
			i2m.latencies = append(i2m.latencies, seen.Sub(tracker.sentAt[msgID]))
		}
	}
	tracker.mu.Unlock()
	slices.Sort(i2m.latencies)
	b.reportIRC("phase=relay_irc_to_matrix messages=%d delivered=%d missing=%d p50_ms=%.2f p99_ms=%.2f max_ms=%.2f",
		n, ph.delivered, ph.missing, i2m.percentileMS(50), i2m.percentileMS(99), i2m.percentileMS(100))
	if ph.missing > 0 {
		fmt.Fprintf(b.errOut, "switchboard-bench: irc: %d IRC messages did not reach Matrix within 60s\n", ph.missing)
		if ph.delivered == 0 {
			problems = append(problems, "no IRC message reached Matrix")
		}
	}

	// Matrix → IRC: the listener's puppet speaks; the observer sees it.
	obs.resetSeen()
	sent := make([]time.Time, n)
	var wg sync.WaitGroup
	var sendErrs int
	var mu sync.Mutex
	for i := 0; i < n && ctx.Err() == nil; i++ {
		sent[i] = time.Now()
		wg.Add(1)
		go func() {
			defer wg.Done()
			content := map[string]any{"msgtype": "m.text", "body": fmt.Sprintf("relay mxb-%d from Matrix", i)}
			if _, err := listener.SendMessageEvent(ctx, roomID, event.EventMessage, content); err != nil {
				mu.Lock()
				sendErrs++
				mu.Unlock()
			}
		}()
		time.Sleep(50 * time.Millisecond)
	}
	wg.Wait()
	obs.waitFor(ctx, 60*time.Second, func() bool { return len(obs.seen) >= n })
	m2i = &phaseResult{}
	obs.mu.Lock()
	for i, at := range obs.seen {
		if i >= 0 && i < n {
			m2i.latencies = append(m2i.latencies, at.Sub(sent[i]))
		}
	}
	obs.mu.Unlock()
	slices.Sort(m2i.latencies)
	b.reportIRC("phase=relay_matrix_to_irc messages=%d delivered=%d missing=%d send_errors=%d p50_ms=%.2f p99_ms=%.2f max_ms=%.2f",
		n, m2i.ok(), n-m2i.ok(), sendErrs, m2i.percentileMS(50), m2i.percentileMS(99), m2i.percentileMS(100))
	if m2i.ok() < n {
		fmt.Fprintf(b.errOut, "switchboard-bench: irc: %d Matrix messages did not reach IRC within 60s\n", n-m2i.ok())
		if m2i.ok() == 0 {
			problems = append(problems, "no Matrix message reached IRC")
		}
	}
	return i2m, m2i, problems
}

// ircHS talks to the homeserver as the bench appservice, masquerading as
// its users.
type ircHS struct {
	base, asToken, server string
	http                  *http.Client
}

func (h *ircHS) do(ctx context.Context, method, path string, query url.Values, body any) ([]byte, error) {
	data, _ := json.Marshal(body)
	u := h.base + path
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, method, u, bytes.NewReader(data))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+h.asToken)
	req.Header.Set("Content-Type", "application/json")
	resp, err := h.http.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return out, fmt.Errorf("%s %s: HTTP %d: %.200s", method, path, resp.StatusCode, out)
	}
	return out, nil
}

func (h *ircHS) register(ctx context.Context, localpart string) error {
	_, err := h.do(ctx, http.MethodPost, "/_matrix/client/v3/register", nil,
		map[string]any{"type": mautrix.AuthTypeAppservice, "username": localpart, "inhibit_login": true})
	return err
}

func (h *ircHS) join(ctx context.Context, roomID id.RoomID, localpart string) error {
	_, err := h.do(ctx, http.MethodPost, "/_matrix/client/v3/join/"+url.PathEscape(string(roomID)),
		url.Values{"user_id": {fmt.Sprintf("@%s:%s", localpart, h.server)}}, map[string]any{})
	return err
}

func (h *ircHS) resolve(ctx context.Context, alias string) (id.RoomID, error) {
	out, err := h.do(ctx, http.MethodGet, "/_matrix/client/v3/directory/room/"+url.PathEscape(alias), nil, nil)
	if err != nil {
		return "", err
	}
	var r struct {
		RoomID id.RoomID `json:"room_id"`
	}
	if err := json.Unmarshal(out, &r); err != nil || r.RoomID == "" {
		return "", fmt.Errorf("directory answer %.200s", out)
	}
	return r.RoomID, nil
}

func writeIRCBenchRegistration(dataDir, asToken, hsToken string) error {
	reg := fmt.Sprintf(`id: ircbench
url: ""
as_token: %s
hs_token: %s
sender_localpart: ircb_bot
rate_limited: false
namespaces:
  users:
    - exclusive: true
      regex: "@%s.*"
`, asToken, hsToken, ircUserLocal)
	dir := filepath.Join(dataDir, "appservices")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "ircbench.yaml"), []byte(reg), 0o600)
}

var ircBannerRE = regexp.MustCompile(`IRC:\s+\S+\s+\(join #(\S*)\{network\}`)

// readIRCBanner returns the alias prefix from the `run` banner.
func readIRCBanner(logPath string) (string, error) {
	deadline := time.Now().Add(10 * time.Second)
	for {
		data, err := os.ReadFile(logPath)
		if err != nil {
			return "", err
		}
		if m := ircBannerRE.FindSubmatch(data); m != nil {
			return string(m[1]), nil
		}
		if time.Now().After(deadline) {
			return "", errors.New(`the server's banner has no "IRC: … (join #…{network}_{#channel}:…)" line: is the IRC bridge enabled?`)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func countFDs(pid int) int {
	ents, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	return len(ents)
}

// raiseNoFile raises this process's open files limit to its maximum (the
// server, its child, gets it too).
func raiseNoFile() {
	var r syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &r) == nil && r.Cur < r.Max {
		r.Cur = r.Max
		_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &r)
	}
}

// ircObserver is a scripted IRC user in #bench: it tracks the channel's
// members and the bench messages it sees.
type ircObserver struct {
	conn     net.Conn
	channels []string
	changed  chan struct{}

	mu       sync.Mutex
	members  map[string]bool // lower-cased nicks
	seen     map[int]time.Time
	firstBot time.Time
	err      error
}

var mxbRE = regexp.MustCompile(`mxb-(\d+)`)

func dialObserver(ctx context.Context, addr string, channels []string) (*ircObserver, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("observer: %w", err)
	}
	o := &ircObserver{conn: c, channels: channels, changed: make(chan struct{}, 1), members: map[string]bool{}, seen: map[int]time.Time{}}
	if err := o.send("NICK " + ircObserverNick + "\r\nUSER observer 0 * :bench observer"); err != nil {
		c.Close()
		return nil, err
	}
	go o.read()
	return o, nil
}

func (o *ircObserver) close() { o.conn.Close() }

func (o *ircObserver) send(line string) error {
	o.conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
	_, err := io.WriteString(o.conn, line+"\r\n")
	return err
}

func (o *ircObserver) notify() {
	select {
	case o.changed <- struct{}{}:
	default:
	}
}

func nickOf(prefix string) string {
	nick, _, _ := strings.Cut(strings.TrimPrefix(prefix, ":"), "!")
	return strings.ToLower(nick)
}

func (o *ircObserver) read() {
	sc := bufio.NewScanner(o.conn)
	sc.Buffer(make([]byte, 64*1024), 1<<20)
	for sc.Scan() {
		at := time.Now()
		line := sc.Text()
		var prefix string
		if strings.HasPrefix(line, ":") {
			prefix, line, _ = strings.Cut(line, " ")
		}
		cmd, rest, _ := strings.Cut(line, " ")
		params, trailing, _ := strings.Cut(rest, " :")
		fields := strings.Fields(params)
		o.mu.Lock()
		switch cmd {
		case "PING":
			o.mu.Unlock()
			_ = o.send("PONG :" + trailing)
			o.mu.Lock()
		case "001":
			o.mu.Unlock()
			_ = o.send("JOIN " + strings.Join(o.channels, ","))
			o.mu.Lock()
		case "353":
			for _, n := range strings.Fields(trailing) {
				o.add(strings.ToLower(strings.TrimLeft(n, "~&@%+")), at)
			}
		case "JOIN":
			o.add(nickOf(prefix), at)
		case "PART", "QUIT":
			delete(o.members, nickOf(prefix))
		case "KICK":
			if len(fields) > 1 {
				delete(o.members, strings.ToLower(fields[1]))
			}
		case "NICK":
			delete(o.members, nickOf(prefix))
			o.add(strings.ToLower(strings.TrimPrefix(trailing+strings.Join(fields, ""), ":")), at)
		case "PRIVMSG":
			if m := mxbRE.FindStringSubmatch(trailing); m != nil {
				if i, err := strconv.Atoi(m[1]); err == nil {
					if _, ok := o.seen[i]; !ok {
						o.seen[i] = at
					}
				}
			}
		}
		o.mu.Unlock()
		o.notify()
	}
	o.mu.Lock()
	o.err = sc.Err()
	o.mu.Unlock()
	o.notify()
}

// add records a member; o.mu is held.
func (o *ircObserver) add(nick string, at time.Time) {
	if nick == "mxbridge" && o.firstBot.IsZero() {
		o.firstBot = at
	}
	o.members[nick] = true
}

func (o *ircObserver) hasNick(nick string) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.members[nick]
}

// puppetCount counts the members whose nick ends in "[m]".
func (o *ircObserver) puppetCount() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	n := 0
	for nick := range o.members {
		if strings.HasSuffix(nick, "[m]") {
			n++
		}
	}
	return n
}

func (o *ircObserver) resetSeen() {
	o.mu.Lock()
	clear(o.seen)
	o.mu.Unlock()
}

// ircStall: a wait for puppets gives up when no new one came for this long.
const ircStall = 60 * time.Second

// waitCount waits until n puppets are in the channel, or until none came
// for stall.
func (o *ircObserver) waitCount(ctx context.Context, n int, stall time.Duration) bool {
	last, lastAt := o.puppetCount(), time.Now()
	for {
		if o.waitFor(ctx, time.Second, func() bool { return o.puppetCount() >= n }) {
			return true
		}
		if ctx.Err() != nil {
			return false
		}
		if c := o.puppetCount(); c != last {
			last, lastAt = c, time.Now()
		} else if time.Since(lastAt) > stall {
			return false
		}
	}
}

// waitFor waits until cond (called without o.mu) holds, or timeout.
func (o *ircObserver) waitFor(ctx context.Context, timeout time.Duration, cond func() bool) bool {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for {
		if cond() {
			return true
		}
		select {
		case <-o.changed:
		case <-tick.C:
		case <-deadline.C:
			return false
		case <-ctx.Done():
			return false
		}
	}
}

// ngircdProc is the bench's IRC server: ngircd configured as ircxtest's
// (no per-address or per-user channel limits, 30-byte nicks, no penalty
// delays, no DNS/ident/PAM), as nobody when the bench runs as root, with
// the open files limit at its maximum.
type ngircdProc struct {
	dir, config, addr string
	port              int
	cmd               *exec.Cmd
	exited            chan struct{}
	log               bytes.Buffer
	logMu             sync.Mutex
}

const ngircdBinary = "/usr/sbin/ngircd"

func startNgircd() (*ngircdProc, error) {
	if _, err := os.Stat(ngircdBinary); err != nil {
		return nil, fmt.Errorf("the irc suite needs ngircd (%s): apt-get install ngircd", ngircdBinary)
	}
	dir, err := os.MkdirTemp("", "switchboard-bench-ngircd-")
	if err != nil {
		return nil, err
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		return nil, err
	}
	port, err := loopback.FreePort()
	if err != nil {
		return nil, err
	}
	s := &ngircdProc{dir: dir, port: port, addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), config: filepath.Join(dir, "ngircd.conf")}
	conf := fmt.Sprintf(`[Global]
	Name = irc.bench
	Info = Switchboard bench server
	Network = SwitchboardBench
	Listen = 127.0.0.1
	Ports = %d
	MotdPhrase = "Switchboard bench server"
	PidFile = %s
[Limits]
	MaxConnections = 0
	MaxConnectionsIP = 0
	MaxJoins = 0
	MaxNickLength = 30
	MaxPenaltyTime = 0
	PingTimeout = 120
	PongTimeout = 20
[Options]
	DNS = no
	Ident = no
	PAM = no
`, port, filepath.Join(dir, "ngircd.pid"))
	if err := os.WriteFile(s.config, []byte(conf), 0o644); err != nil {
		return nil, err
	}
	if os.Geteuid() == 0 {
		if uid, gid, err := nobodyIDs(); err == nil {
			_ = os.Chown(dir, uid, gid)
		}
	}
	if err := s.start(); err != nil {
		s.close()
		return nil, err
	}
	return s, nil
}

func nobodyIDs() (int, int, error) {
	u, err := user.Lookup("nobody")
	if err != nil {
		return 0, 0, err
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return uid, gid, nil
}

type lockedBuf struct {
	mu  *sync.Mutex
	buf *bytes.Buffer
}

func (w lockedBuf) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.Write(p)
}

func (s *ngircdProc) start() error {
	cmd := exec.Command("/bin/sh", "-c", `ulimit -n "$(ulimit -H -n)" 2>/dev/null; exec "$0" "$@"`,
		ngircdBinary, "--nodaemon", "--passive", "--config", s.config)
	if os.Geteuid() == 0 {
		if uid, gid, err := nobodyIDs(); err == nil {
			cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}}
		}
	}
	w := lockedBuf{mu: &s.logMu, buf: &s.log}
	cmd.Stdout, cmd.Stderr = w, w
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start ngircd: %w", err)
	}
	s.cmd, s.exited = cmd, make(chan struct{})
	exited := s.exited
	go func() { _ = cmd.Wait(); close(exited) }()
	deadline := time.Now().Add(15 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", s.addr, time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		select {
		case <-exited:
			s.logMu.Lock()
			defer s.logMu.Unlock()
			return fmt.Errorf("ngircd exited at start:\n%s", s.log.String())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("ngircd does not accept connections on %s: %v", s.addr, err)
		}
	}
}

func (s *ngircdProc) pid() int { return s.cmd.Process.Pid }

func (s *ngircdProc) stop() {
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.exited:
	case <-time.After(10 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.exited
	}
	s.cmd = nil
}

func (s *ngircdProc) restart() error {
	s.stop()
	return s.start()
}

func (s *ngircdProc) close() {
	s.stop()
	os.RemoveAll(s.dir)
}
