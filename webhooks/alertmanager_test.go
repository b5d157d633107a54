package webhooks_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"maunium.net/go/mautrix/event"

	"github.com/switchboard-im/switchboard/framework/testkit"
	"github.com/switchboard-im/switchboard/internal/loopback"
	"github.com/switchboard-im/switchboard/internal/testpeer"
)

// alertmanagerBin is where Debian's prometheus-alertmanager package puts
// the server.
const alertmanagerBin = "/usr/bin/prometheus-alertmanager"

// TestRealAlertmanager: a real Prometheus Alertmanager, configured with a
// hook's URL as its webhook receiver, posts an alert's firing notification
// into the room from a ghost, and its resolution as a reply to it.
func TestRealAlertmanager(t *testing.T) {
	bin := findAlertmanager(t)
	kit := testkit.Start(t)
	svc := startWebhooks(t, kit, nil)
	alice := kit.NewUser("alice")
	r := room(t, kit, alice, svc)
	hook := newHook(t, svc, alice, r, "alertmanager")

	am := startAlertmanager(t, bin, hook)
	startsAt := time.Now().UTC().Add(-time.Minute).Truncate(time.Second)
	const summary = "Disk almost full on db1 (97.5% used)"
	alert := func(endsAt time.Time) map[string]any {
		return map[string]any{
			"labels":       map[string]string{"alertname": "DiskFull", "severity": "critical", "instance": "db1:9100"},
			"annotations":  map[string]string{"summary": summary, "description": "The root file system of db1 is 97.5% full."},
			"startsAt":     startsAt.Format(time.RFC3339),
			"endsAt":       endsAt.UTC().Format(time.RFC3339Nano),
			"generatorURL": "http://prometheus.example:9090/graph?g0.expr=disk_used_ratio%3E0.95",
		}
	}

	am.pushAlert(t, alert(time.Now().Add(time.Hour)))
	fired := testkit.WaitForEvent(t, alice, r, func(evt *event.Event) bool {
		return bodyContains(summary)(evt) && !mentionsResolved(evt)
	}, wait)
	msg := fired.Content.AsMessage()
	if !svc.Config.IsGhost(fired.Sender) {
		t.Errorf("the firing notification comes from %s, want one of the bridge's ghosts (%s…)", fired.Sender, svc.Config.GhostPrefix)
	}
	if !strings.Contains(strings.ToLower(msg.Body), "firing") || !strings.Contains(msg.Body, "DiskFull") {
		t.Errorf("firing notification does not say the alert DiskFull is firing: %q", msg.Body)
	}
	if msg.RelatesTo.GetReplyTo() != "" {
		t.Errorf("the firing notification replies to %s; it should start the thread", msg.RelatesTo.GetReplyTo())
	}

	// endsAt now: Alertmanager resolves the alert and, with send_resolved,
	// notifies the receiver at the group's next flush.
	am.pushAlert(t, alert(time.Now()))
	resolved := testkit.WaitForEvent(t, alice, r, func(evt *event.Event) bool {
		return evt.ID != fired.ID && bodyContains("DiskFull")(evt) && mentionsResolved(evt)
	}, wait)
	if to := resolved.Content.AsMessage().RelatesTo.GetReplyTo(); to != fired.ID {
		t.Errorf("the resolved notification replies to %q, want the firing one %s; its body: %q",
			to, fired.ID, resolved.Content.AsMessage().Body)
	}
	if !svc.Config.IsGhost(resolved.Sender) {
		t.Errorf("the resolved notification comes from %s, want one of the bridge's ghosts", resolved.Sender)
	}
}

func mentionsResolved(evt *event.Event) bool {
	return strings.Contains(strings.ToLower(evt.Content.AsMessage().Body), "resolved")
}

// findAlertmanager returns the Alertmanager binary, or skips the test
// (fails it under CI=true, where a missing peer must not pass silently).
func findAlertmanager(t *testing.T) string {
	t.Helper()
	bin := alertmanagerBin
	if _, err := os.Stat(bin); err != nil {
		if p, lookErr := exec.LookPath("prometheus-alertmanager"); lookErr == nil {
			bin = p
		} else {
			testpeer.Missing(t, fmt.Sprintf("Prometheus Alertmanager not found (%s, or prometheus-alertmanager on PATH); "+
				"install it with `apt-get install prometheus-alertmanager` (scripts/install-test-deps.sh does as root)", alertmanagerBin))
		}
	}
	return bin
}

// alertmanager is a running Alertmanager started by the test.
type alertmanager struct {
	url string // http://127.0.0.1:PORT
	log *lockedBuffer
}

// startAlertmanager starts Alertmanager on a free loopback port, without
// clustering, with one receiver: a webhook to hookURL that also sends
// resolutions. Groups flush after a second, so notifications come quickly.
// It is stopped when the test ends; its log is printed if the test failed.
func startAlertmanager(t *testing.T, bin, hookURL string) *alertmanager {
	t.Helper()
	dir := t.TempDir()
	config := fmt.Sprintf(`route:
  receiver: matrix
  group_by: [alertname]
  group_wait: 1s
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: matrix
    webhook_configs:
      - url: %q
        send_resolved: true
`, hookURL)
	cfgPath := filepath.Join(dir, "alertmanager.yml")
	if err := os.WriteFile(cfgPath, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	// The free port is found by binding and closing it, so another process
	// may take it first: then start again on another.
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		addr, err := loopback.FreeAddr()
		if err != nil {
			t.Fatal(err)
		}
		am := &alertmanager{url: "http://" + addr, log: &lockedBuffer{}}
		cmd := exec.Command(bin,
			"--config.file="+cfgPath,
			"--storage.path="+filepath.Join(dir, "data"),
			"--web.listen-address="+addr,
			"--web.external-url="+am.url,
			"--cluster.listen-address=", // no HA mode: no gossip port, no settle wait
			"--log.level=debug",
		)
		cmd.Stdout, cmd.Stderr = am.log, am.log
		cmd.WaitDelay = 5 * time.Second
		if err := cmd.Start(); err != nil {
			t.Fatalf("start %s: %v", bin, err)
		}
		exited := make(chan struct{})
		go func() { _ = cmd.Wait(); close(exited) }()
		stop := func() {
			_ = cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-exited:
			case <-time.After(5 * time.Second):
				_ = cmd.Process.Kill()
				<-exited
			}
		}
		lastErr = am.waitReady(exited, 20*time.Second)
		if lastErr == nil {
			t.Cleanup(func() {
				stop()
				if t.Failed() {
					t.Logf("Alertmanager log:\n%s", am.log.String())
				}
			})
			return am
		}
		stop()
		if !strings.Contains(am.log.String(), "address already in use") {
			break
		}
	}
	t.Fatalf("Alertmanager did not start: %v", lastErr)
	return nil
}

// waitReady polls /-/ready until Alertmanager answers 200.
func (am *alertmanager) waitReady(exited <-chan struct{}, timeout time.Duration) error {
	client := &http.Client{Timeout: 2 * time.Second}
	deadline := time.Now().Add(timeout)
	for {
		resp, err := client.Get(am.url + "/-/ready")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("/-/ready: HTTP %d", resp.StatusCode)
		}
		select {
		case <-exited:
			return fmt.Errorf("Alertmanager exited; its log:\n%s", am.log.String())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not ready within %v (%v); its log:\n%s", timeout, err, am.log.String())
		}
	}
}

// pushAlert posts one alert to Alertmanager's API, as Prometheus does.
func (am *alertmanager) pushAlert(t *testing.T, alert map[string]any) {
	t.Helper()
	body, err := json.Marshal([]map[string]any{alert})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, am.url+"/api/v2/alerts", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("push alert: %v", err)
	}
	defer resp.Body.Close()
	answer, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("push alert: HTTP %d: %s", resp.StatusCode, answer)
	}
}

// lockedBuffer collects a process's output while the test reads it.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
