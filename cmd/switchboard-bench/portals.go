package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"maunium.net/go/mautrix/id"

	"github.com/switchboard-im/switchboard/framework/bridge"
)

// fwPortalPhase measures the memory the bridge API holds per portal: n
// portals, each bridged to a room, loaded the way a running bridge loads
// them (PortalByRoom for the room of each incoming event). The portals are
// written straight into the bridge's table, with made-up room IDs, as
// after a restart of a bridge that had created them: creating 10,000 real
// rooms would measure the homeserver, not the framework. The bridge is
// never started; it is created with framework.New's database and a
// network that does nothing.
func (b *bench) fwPortalPhase(ctx context.Context, fb *frameworkBot, n int, ghostHeapMB float64) (problems []string) {
	dir := filepath.Join(filepath.Dir(fb.cfg.DataDir), "bridge")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return []string{"portal phase: " + err.Error()}
	}
	cfg := &bridge.Config{Config: *fb.cfg}
	cfg.ID, cfg.DataDir = "benchbridge", dir
	cfg.Registration = filepath.Join(dir, "registration.yaml")
	cfg.Database = "sqlite:bridge.db"
	br, err := bridge.New(ctx, cfg, idleNetwork{}, fb.log)
	if err != nil {
		return []string{"portal phase: " + err.Error()}
	}
	defer br.Stop()
	rooms := make([]id.RoomID, n)
	err = br.DB.DoTxn(ctx, nil, func(ctx context.Context) error {
		now := time.Now().UnixMilli()
		for i := range rooms {
			rooms[i] = id.RoomID("!benchportal" + strconv.Itoa(i) + ":" + cfg.ServerName)
			_, err := br.DB.Exec(ctx, `INSERT INTO bridge_portals (portal_id, room_id, name, topic, created_at) VALUES ($1, $2, $3, $4, $5)`,
				"#bench-channel-"+strconv.Itoa(i), rooms[i], "Bench channel "+strconv.Itoa(i), "A channel of the portal benchmark", now)
			if err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return []string{"portal phase: " + err.Error()}
	}
	heapBefore, _ := settledHeap()
	start := time.Now()
	for _, room := range rooms {
		p, err := br.PortalByRoom(ctx, room)
		if err != nil || p == nil {
			return []string{fmt.Sprintf("portal phase: PortalByRoom(%s) = %v, %v", room, p, err)}
		}
	}
	took := time.Since(start)
	heapAfter, _ := settledHeap()
	portalMB := float64(int64(heapAfter)-int64(heapBefore)) / (1 << 20) / float64(n) * 10000
	b.reportFramework("portals=%d portals_load_s=%.2f heap_mb_per_10k_portals=%.2f heap_mb_per_10k_ghosts_and_10k_portals=%.2f load_1m=%s",
		n, took.Seconds(), portalMB, ghostHeapMB+portalMB, loadAvg())
	return nil
}

// idleNetwork is a bridge.Network that does nothing: the portal phase only
// loads portals.
type idleNetwork struct{}

func (idleNetwork) Info() bridge.NetworkInfo {
	return bridge.NetworkInfo{ID: "bench", DisplayName: "Bench"}
}
func (idleNetwork) Start(context.Context, *bridge.Bridge) error { return nil }
func (idleNetwork) Stop()                                       {}
func (idleNetwork) ResolveChannel(context.Context, string) (*bridge.ChannelInfo, error) {
	return nil, bridge.ErrUnknownChannel
}
func (idleNetwork) SendMessage(context.Context, *bridge.MatrixMessage) (string, error) {
	return "", nil
}
