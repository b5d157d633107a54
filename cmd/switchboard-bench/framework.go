package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"

	_ "github.com/mattn/go-sqlite3" // the bot's database: package framework does not link a driver
	"github.com/rs/zerolog"
	"gopkg.in/yaml.v3"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/switchboard-im/switchboard/framework"
	"github.com/switchboard-im/switchboard/internal/loopback"
)

// The framework suite measures the appservice framework (package
// framework) from the side of what is built on it: a no-op bot — framework.New
// and one OnEvent handler that counts message events — runs inside the bench
// process, registered (before the server starts) in
// DATA/appservices/framework.yaml by Config.EnsureRegistration, with an
// SQLite database in the suite's temp dir. Its bot user joins --fw-rooms
// public rooms; --clients ordinary users, spread over those rooms, send
// messages. Lines:
//
//	bench framework db=sqlite handled_events_per_sec=… latency_p50_ms=… latency_p99_ms=… senders=32 rooms=16 … errors=0 …
//	bench framework db=sqlite backlog_events=20000 drain_s=… drain_events_per_sec=… … errors=0 …
//	bench framework db=sqlite ghosts=10000 ghosts_s=… ghosts_per_sec=… heap_mb_per_10k_ghosts=… …
//	bench framework db=sqlite portals=10000 portals_load_s=… heap_mb_per_10k_portals=… heap_mb_per_10k_ghosts_and_10k_portals=… …
//
// Live: the senders send back to back for --duration; latency runs from the
// start of a sender's PUT /send to the handler being called with the event
// (transaction to the framework, inbox write, room worker). Backlog: the bot
// is stopped, --fw-backlog messages are sent, the bot is started again (a
// new framework.New on the same database and registration) and the server
// sent SIGHUP, which ends the pusher's backoff wait; drain is the time from
// the bot's start to its handling the last of them, so it includes the
// homeserver's transaction throughput (the appservice suite's drain figure
// is that alone). Ghosts: EnsureGhost for --fw-ghosts ghosts (registration
// and display name, i.e. HTTP requests to the server); the memory figure is
// the bench process's Go heap after GC, before and after. Portals: see
// fwPortalPhase; the last figure adds the two.

type frameworkOptions struct {
	rooms   int
	backlog int
	ghosts  int
	portals int
	// cpuProfile, when set, is where the bench process's CPU profile (bot
	// and senders) is written for the live and backlog phases, as
	// FILE.live and FILE.backlog (hidden flag: a diagnosis aid).
	cpuProfile string
}

func addFrameworkFlags(fs *flag.FlagSet, o *frameworkOptions) {
	fs.IntVar(&o.rooms, "fw-rooms", 16, "framework: rooms the senders are spread over (the bot is in all of them)")
	fs.IntVar(&o.backlog, "fw-backlog", 20000, "framework: messages sent while the bot is stopped, then handled after it starts")
	fs.IntVar(&o.ghosts, "fw-ghosts", 10000, "framework: ghosts registered with EnsureGhost for the memory figure")
	fs.IntVar(&o.portals, "fw-portals", 10000, "framework: bridge portals loaded for the memory figure")
	fs.StringVar(&o.cpuProfile, "fw-cpuprofile", "", "")
}

func (o frameworkOptions) validate() error {
	if o.rooms < 1 || o.backlog < 1 || o.ghosts < 1 || o.portals < 1 {
		return errors.New("--fw-rooms, --fw-backlog, --fw-ghosts and --fw-portals must be ≥ 1")
	}
	return nil
}

// reportFramework prints one framework figure line.
func (b *bench) reportFramework(format string, args ...any) {
	fmt.Fprintf(b.out, "bench framework db=%s "+format+"\n", append([]any{b.label}, args...)...)
}

// fwGhostParallelism is how many EnsureGhost calls run at once (a bridge
// creating ghosts for a burst of remote users).
const fwGhostParallelism = 16

// frameworkBot is the no-op bot under test. The message IDs it sees are
// recorded in an asReceiver (the appservice suite's bookkeeping: send and
// arrival times by message ID), "arrival" being the handler's call.
type frameworkBot struct {
	cfg  *framework.Config
	log  zerolog.Logger
	recv *asReceiver
	app  *framework.Appservice
	// handled counts message events handled (bench messages or not).
	handled atomic.Int64
}

// start creates and starts the appservice (a fresh one after a stop: an
// Appservice is started once).
func (f *frameworkBot) start(ctx context.Context) error {
	app, err := framework.New(ctx, f.cfg, f.log)
	if err != nil {
		return fmt.Errorf("framework.New: %w", err)
	}
	app.OnEvent(f.onEvent)
	if err := app.Start(ctx); err != nil {
		app.Stop()
		return fmt.Errorf("framework start: %w", err)
	}
	f.app = app
	return nil
}

func (f *frameworkBot) onEvent(_ context.Context, evt *event.Event) {
	switch evt.Type {
	case event.EventMessage:
		f.handled.Add(1)
		if v, ok := evt.Content.Raw[asMsgKey].(float64); ok {
			f.recv.arrived(int64(v), time.Now())
		}
	case event.StateMember:
		if evt.GetStateKey() == string(f.cfg.BotID()) && evt.Content.AsMember().Membership == event.MembershipJoin {
			f.recv.arrivedJoin(string(evt.RoomID))
		}
	}
}

// arrived records a bench message's first arrival (a handled event, for the
// framework suite).
func (r *asReceiver) arrived(msgID int64, at time.Time) {
	r.mu.Lock()
	if _, ok := r.recvAt[msgID]; ok {
		r.dupes++
	} else {
		r.recvAt[msgID] = at
		r.msgCount++
	}
	r.mu.Unlock()
	select {
	case r.changed <- struct{}{}:
	default:
	}
}

// arrivedJoin records a join (for the framework suite: the bot's, by room).
func (r *asReceiver) arrivedJoin(key string) {
	r.mu.Lock()
	r.joined[key] = true
	r.mu.Unlock()
	select {
	case r.changed <- struct{}{}:
	default:
	}
}

// runFramework is the framework suite, on its own server and data dir.
func (b *bench) runFramework(ctx context.Context) (err error) {
	fo := b.opts.framework
	listen, err := loopback.FreeAddr()
	if err != nil {
		return fmt.Errorf("bot listener: %w", err)
	}
	recv := newASReceiver("")
	fb := &frameworkBot{recv: recv}
	var botLog *os.File
	defer func() {
		if botLog != nil {
			botLog.Close()
		}
	}()
	idle, done, err := b.startSuite(ctx, "framework", func() error {
		serverName, err := readServerName(b.srv.dataDir)
		if err != nil {
			return err
		}
		botDir := filepath.Join(filepath.Dir(b.srv.dataDir), "bot")
		if err := os.MkdirAll(botDir, 0o700); err != nil {
			return fmt.Errorf("bot data dir: %w", err)
		}
		if botLog, err = os.Create(filepath.Join(botDir, "bot.log")); err != nil {
			return fmt.Errorf("bot log: %w", err)
		}
		fb.log = zerolog.New(botLog).Level(zerolog.WarnLevel).With().Timestamp().Logger()
		fb.cfg = &framework.Config{
			HomeserverURL:  b.srv.baseURL,
			ServerName:     serverName,
			ID:             "benchframework",
			Listen:         listen,
			Registration:   filepath.Join(b.srv.dataDir, "appservices", "framework.yaml"),
			BotLocalpart:   "fwbench_bot",
			BotDisplayName: "Framework bench bot",
			GhostPrefix:    "fwbench_ghost_",
			Database:       "sqlite:bot.db",
			DataDir:        botDir,
		}
		if err := fb.cfg.Validate(); err != nil {
			return fmt.Errorf("bot config: %w", err)
		}
		_, _, err = fb.cfg.EnsureRegistration()
		return err
	})
	if err != nil {
		return err
	}
	defer done()
	defer func() {
		if fb.app != nil {
			fb.app.Stop()
		}
	}()
	b.reportFramework("senders=%d rooms=%d duration=%s backlog_events=%d ghosts=%d workers=%d cpus=%d load_1m=%s",
		b.opts.clients, fo.rooms, b.opts.duration, fo.backlog, fo.ghosts, fb.cfg.Workers, runtime.NumCPU(), loadAvg())

	setupStart := time.Now()
	if err := fb.start(ctx); err != nil {
		return err
	}
	users, err := b.srv.createUsers(ctx, b.opts.clients)
	if err != nil {
		return err
	}
	senders, err := b.loginAll(ctx, users)
	if err != nil {
		return err
	}
	// Sender i sends into room i mod rooms; the first sender of a room
	// creates it.
	nRooms := min(fo.rooms, len(senders))
	rooms := make([]id.RoomID, nRooms)
	errs := parallel(nRooms, 4, func(r int) error {
		var others []*messagingClient
		for i := r + nRooms; i < len(senders); i += nRooms {
			others = append(others, senders[i])
		}
		roomID, err := setupRoom(ctx, senders[r], others, "framework-"+strconv.Itoa(r))
		rooms[r] = roomID
		return err
	})
	if err := errors.Join(errs...); err != nil {
		return err
	}
	bot := fb.app.Bot()
	if err := bot.EnsureRegistered(ctx); err != nil {
		return fmt.Errorf("register bot: %w", err)
	}
	for _, roomID := range rooms {
		if _, err := bot.JoinRoomByID(ctx, roomID); err != nil {
			return fmt.Errorf("bot join %s: %w", roomID, err)
		}
	}
	// The bot's joins reaching its handler show the pipeline works before
	// anything is timed.
	if !waitUntil(ctx, recv, 10*time.Second, func() bool {
		for _, roomID := range rooms {
			if !recv.joined[string(roomID)] {
				return false
			}
		}
		return true
	}) {
		b.srv.printLogTail(b.errOut)
		return fmt.Errorf("the bot did not handle its joins to the %d rooms within 10s (see %s)", nRooms, botLog.Name())
	}
	fmt.Fprintf(b.errOut, "switchboard-bench: framework: %d senders in %d rooms with bot %s, set up in %.1fs\n",
		len(senders), nRooms, fb.cfg.BotID(), time.Since(setupStart).Seconds())
	roomFor := func(i int) id.RoomID { return rooms[i%nRooms] }

	var problems []string

	// Live: senders back to back for --duration, the bot handling.
	stopProfile := b.fwProfile("live")
	m := b.startMeter()
	lo := recv.nextID.Load()
	start := time.Now()
	sendEnd := start.Add(b.opts.duration)
	send := b.asSendPhase(ctx, senders, roomFor, recv, func() bool { return time.Now().Before(sendEnd) })
	hi := recv.nextID.Load()
	allArrived := recv.waitFor(ctx, lo, hi, time.Now().Add(deliveryTimeout))
	cpu := m.stop()
	stopProfile()
	live := recv.phase(lo, hi)
	dupes := recv.counters().dupes
	var handled, steady float64
	if wall := live.lastRecv.Sub(start); wall > 0 {
		handled = float64(live.received+live.strays) / wall.Seconds()
	}
	warm := min(time.Second, b.opts.duration/10)
	if window := sendEnd.Sub(start.Add(warm)); window > 0 {
		steady = float64(live.receivedBetween(start.Add(warm), sendEnd)) / window.Seconds()
	}
	b.reportFramework("handled_events_per_sec=%.1f steady_handled_events_per_sec=%.1f latency_p50_ms=%.2f latency_p99_ms=%.2f latency_max_ms=%.2f senders=%d rooms=%d sent_events_per_sec=%.1f events=%d errors=%d %s bench_cpu_ms_per_event=%.3f server_cpu_ms_per_event=%.3f load_1m=%s",
		handled, steady, live.percentileMS(50), live.percentileMS(99), live.percentileMS(100), len(senders), nRooms,
		float64(live.sent)/send.elapsed.Seconds(), live.received, live.sendErrors+live.missing+dupes,
		cpu, ms(cpu.bench)/float64(max(live.received, 1)), cpu.serverMSPer(live.received), loadAvg())
	send.printErrors(b.errOut, "framework send")
	fmt.Fprintf(b.errOut, "switchboard-bench: framework: send p50 %.2f ms, p99 %.2f ms; handled p99.9 %.2f ms; %d sent, %d handled, %d missing, %d handled twice, %d handled despite a failed send\n",
		send.percentileMS(50), send.percentileMS(99), live.percentileMS(99.9), live.sent, live.received, live.missing, dupes, live.strays)
	if !allArrived && live.missing > 0 {
		fmt.Fprintf(b.errOut, "switchboard-bench: framework: %d of %d messages were not handled within %s\n", live.missing, live.sent, deliveryTimeout)
	}
	if live.received == 0 {
		problems = append(problems, "no message of the live phase reached the bot's handler")
	}

	if ctx.Err() == nil {
		problems = append(problems, b.fwBacklogPhase(ctx, fb, senders, roomFor, fo.backlog)...)
	}
	if ctx.Err() == nil && fb.app != nil {
		ghostMB, ghostProblems := b.fwGhostPhase(ctx, fb, fo.ghosts)
		problems = append(problems, ghostProblems...)
		if ctx.Err() == nil {
			problems = append(problems, b.fwPortalPhase(ctx, fb, fo.portals, ghostMB)...)
		}
	}

	after, err := readProcStatus(b.srv.pid())
	if err != nil {
		return err
	}
	b.reportFramework("rss_idle_mb=%.1f rss_after_mb=%.1f rss_peak_mb=%.1f", mib(idle.rssKiB), mib(after.rssKiB), mib(after.hwmKiB))

	if fb.app != nil {
		fb.app.Stop()
		fb.app = nil
	}
	return b.endSuite(ctx, b.reportFramework, problems)
}

// fwBacklogPhase stops the bot, sends n messages, starts the bot again and
// times until it has handled them all.
func (b *bench) fwBacklogPhase(ctx context.Context, fb *frameworkBot, senders []*messagingClient, roomFor func(int) id.RoomID, n int) (problems []string) {
	r := fb.recv
	fb.app.Stop()
	fb.app = nil
	before := r.counters()
	lo := r.nextID.Load()
	var claimed atomic.Int64
	fillStart := time.Now()
	send := b.asSendPhase(ctx, senders, roomFor, r, func() bool { return claimed.Add(1) <= int64(n) })
	fill := time.Since(fillStart)
	hi := r.nextID.Load()
	send.printErrors(b.errOut, "framework backlog send")

	stopProfile := b.fwProfile("backlog")
	m := b.startMeter()
	resume := time.Now()
	if err := fb.start(ctx); err != nil {
		stopProfile()
		return []string{"restart the bot: " + err.Error()}
	}
	started := time.Since(resume)
	// The pusher is waiting out its backoff after failing to connect; a
	// reload of the registrations (SIGHUP) pokes it, as in the appservice
	// suite.
	if err := b.srv.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		problems = append(problems, "SIGHUP: "+err.Error())
	}
	all := r.waitFor(ctx, lo, hi, time.Now().Add(backlogDrainTimeout))
	cpu := m.stop()
	stopProfile()
	p := r.phase(lo, hi)
	dupes := r.counters().sub(before).dupes
	arrived := p.received + p.strays
	var firstEvent, drain time.Duration
	var perSec float64
	if !p.firstRecv.IsZero() {
		firstEvent, drain = p.firstRecv.Sub(resume), p.lastRecv.Sub(resume)
		if drain > 0 {
			perSec = float64(arrived) / drain.Seconds()
		}
	}
	b.reportFramework("backlog_events=%d drain_s=%.2f drain_events_per_sec=%.1f first_event_ms=%.1f bot_start_ms=%.1f fill_s=%.2f fill_events_per_sec=%.1f errors=%d %s bench_cpu_ms_per_event=%.3f server_cpu_ms_per_event=%.3f load_1m=%s",
		p.sent, drain.Seconds(), perSec, ms(firstEvent), ms(started), fill.Seconds(), float64(p.sent)/fill.Seconds(),
		p.sendErrors+p.missing+dupes, cpu, ms(cpu.bench)/float64(max(arrived, 1)), cpu.serverMSPer(arrived), loadAvg())
	fmt.Fprintf(b.errOut, "switchboard-bench: framework backlog: %d sent in %.1fs (send p50 %.2f ms, p99 %.2f ms), %d handled, %d missing, %d handled twice\n",
		p.sent, fill.Seconds(), send.percentileMS(50), send.percentileMS(99), arrived, p.missing, dupes)
	if !all && p.missing > 0 {
		fmt.Fprintf(b.errOut, "switchboard-bench: framework backlog: %d of %d messages were not handled within %s of the bot's start\n", p.missing, p.sent, backlogDrainTimeout)
	}
	if p.sent == 0 {
		problems = append(problems, "every send of the backlog phase failed")
	} else if arrived == 0 {
		problems = append(problems, "no message of the backlog reached the bot's handler")
	}
	return problems
}

// fwGhostPhase registers n ghosts with EnsureGhost and measures the Go heap
// they hold in the bench process.
func (b *bench) fwGhostPhase(ctx context.Context, fb *frameworkBot, n int) (heapMBPer10k float64, problems []string) {
	heapBefore, rssBefore := settledHeap()
	start := time.Now()
	var failed atomic.Int64
	var firstErr atomic.Value
	errs := parallel(n, fwGhostParallelism, func(i int) error {
		name := "Bench ghost " + strconv.Itoa(i)
		if _, err := fb.app.EnsureGhost(ctx, fb.cfg.GhostID(strconv.Itoa(i)), name, id.ContentURI{}); err != nil {
			failed.Add(1)
			firstErr.CompareAndSwap(nil, err.Error())
			return err
		}
		return nil
	})
	took := time.Since(start)
	heapAfter, rssAfter := settledHeap()
	ok := n - int(failed.Load())
	per10k := func(bytes int64) float64 {
		if ok == 0 {
			return 0
		}
		return float64(bytes) / (1 << 20) / float64(ok) * 10000
	}
	heapMBPer10k = per10k(int64(heapAfter) - int64(heapBefore))
	b.reportFramework("ghosts=%d ghosts_s=%.2f ghosts_per_sec=%.1f heap_mb_per_10k_ghosts=%.2f bench_rss_mb_per_10k_ghosts=%.2f heap_before_mb=%.1f heap_after_mb=%.1f errors=%d load_1m=%s",
		ok, took.Seconds(), float64(ok)/took.Seconds(), heapMBPer10k, per10k((rssAfter-rssBefore)*1024),
		float64(heapBefore)/(1<<20), float64(heapAfter)/(1<<20), failed.Load(), loadAvg())
	fmt.Fprintf(b.errOut, "switchboard-bench: framework ghosts and portals: memory is the bench process's Go heap after GC (SQLite's cgo memory is not in it; the ghosts' RSS figure includes it)\n")
	if e := firstErr.Load(); e != nil {
		fmt.Fprintf(b.errOut, "switchboard-bench: framework ghosts: %d failed, first: %s\n", failed.Load(), e)
	}
	if ok == 0 {
		problems = append(problems, "every EnsureGhost failed: "+errors.Join(errs...).Error())
	}
	return heapMBPer10k, problems
}

// settledHeap is the bench process's live Go heap after a full GC, and its
// resident memory (KiB).
func settledHeap() (heap uint64, rssKiB int64) {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	st, _ := readProcStatus(os.Getpid())
	return ms.HeapAlloc, st.rssKiB
}

// fwProfile writes the bench process's CPU profile for one phase into
// FILE.PHASE when the hidden --fw-cpuprofile FILE flag is set.
func (b *bench) fwProfile(phase string) func() {
	if b.opts.framework.cpuProfile == "" {
		return func() {}
	}
	f, err := os.Create(b.opts.framework.cpuProfile + "." + phase)
	if err == nil {
		err = pprof.StartCPUProfile(f)
	}
	if err != nil {
		fmt.Fprintf(b.errOut, "switchboard-bench: cpu profile: %v\n", err)
		if f != nil {
			f.Close()
		}
		return func() {}
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}
}

// readServerName reads server_name from the generated config.
func readServerName(dataDir string) (string, error) {
	data, err := os.ReadFile(filepath.Join(dataDir, "switchboard.yaml"))
	if err != nil {
		return "", fmt.Errorf("read config: %w", err)
	}
	var cfg struct {
		ServerName string `yaml:"server_name"`
	}
	if err := yaml.Unmarshal(data, &cfg); err != nil {
		return "", fmt.Errorf("parse config: %w", err)
	}
	if cfg.ServerName == "" {
		return "", errors.New("generated config has no server_name")
	}
	return cfg.ServerName, nil
}
