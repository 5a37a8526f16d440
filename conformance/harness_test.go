package conformance

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// The harness runs the real tandem binary: TestMain builds ./cmd/tandem
// once, and each test starts its own broker on a temporary data directory
// with every listener on a free loopback port.

// tandemBinary is the binary TestMain built, "" if the build was skipped.
var tandemBinary string

// readyTimeout bounds the wait for a broker's "ready" line and for its
// exit after a signal; reaching it means a hang.
const readyTimeout = 30 * time.Second

func TestMain(m *testing.M) {
	os.Exit(testMain(m))
}

func testMain(m *testing.M) int {
	dir, err := os.MkdirTemp("", "tandem-conformance-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer func() { _ = os.RemoveAll(dir) }()
	bin := filepath.Join(dir, "tandem")
	args := []string{"build", "-o", bin}
	if raceEnabled {
		// The tests run under -race: so does the broker, and a data race
		// it reports fails the test that drove it (see checkRaces).
		args = append(args, "-race")
	}
	// The test runs in conformance/; the module root is its parent.
	cmd := exec.Command("go", append(args, "./cmd/tandem")...)
	cmd.Dir = ".."
	if out, err := cmd.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "go build ./cmd/tandem: %v\n%s", err, out)
		return 1
	}
	tandemBinary = bin
	return m.Run()
}

// logLines collects a process's stderr line by line and signals each
// write. exec.Cmd copies the child's stderr into it; Wait waits for that.
type logLines struct {
	mu      sync.Mutex
	partial []byte
	done    []string
	notify  chan struct{} // capacity 1: "something was written"
}

func newLogLines() *logLines { return &logLines{notify: make(chan struct{}, 1)} }

func (l *logLines) Write(p []byte) (int, error) {
	l.mu.Lock()
	l.partial = append(l.partial, p...)
	for {
		i := bytes.IndexByte(l.partial, '\n')
		if i < 0 {
			break
		}
		l.done = append(l.done, string(l.partial[:i]))
		l.partial = l.partial[i+1:]
	}
	l.mu.Unlock()
	select {
	case l.notify <- struct{}{}:
	default:
	}
	return len(p), nil
}

// all returns the complete lines so far.
func (l *logLines) all() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.done...)
}

// text returns everything written so far, the last partial line included.
func (l *logLines) text() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.done, "\n") + "\n" + string(l.partial)
}

// tandemProc is one running tandem binary.
type tandemProc struct {
	cmd     *exec.Cmd
	stderr  *logLines
	exited  chan struct{} // closed when Wait returns
	waitErr error         // Wait's result, set before exited closes

	// Bound addresses from the "ready" line.
	STOMP, Admin string
	// MQTT is the MQTT listener's address, "" if the ready line has none
	// (see requireMQTT).
	MQTT string
}

// startTandem starts the broker on dataDir, waits for its "ready" line and
// returns it with its bound addresses. env adds KEY=VALUE settings.
func startTandem(t *testing.T, dataDir string, env ...string) *tandemProc {
	t.Helper()
	return startTandemArgs(t, dataDir, nil, env...)
}

// startTandemConfig is startTandem with the YAML config file text given
// (written next to the test's other temporary files).
func startTandemConfig(t *testing.T, dataDir, config string, env ...string) *tandemProc {
	t.Helper()
	path := filepath.Join(t.TempDir(), "tandem.yaml")
	if err := os.WriteFile(path, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	return startTandemArgs(t, dataDir, []string{"--config", path}, env...)
}

// startTandemArgs is startTandem with extra command-line arguments.
func startTandemArgs(t *testing.T, dataDir string, args []string, env ...string) *tandemProc {
	t.Helper()
	p := &tandemProc{
		cmd:    exec.Command(tandemBinary, append([]string{"--data", dataDir, "--log-format", "json"}, args...)...),
		stderr: newLogLines(),
		exited: make(chan struct{}),
	}
	p.cmd.Env = brokerEnv(env...)
	p.cmd.Stderr = p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start tandem: %v", err)
	}
	go func() {
		p.waitErr = p.cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() {
		select {
		case <-p.exited:
		default:
			// The test ended without stopping it (it failed midway):
			// kill the process we started, by its PID, and reap it.
			_ = p.cmd.Process.Kill()
			<-p.exited
		}
		p.checkRaces(t)
		if t.Failed() {
			t.Logf("tandem (pid %d) stderr, last lines:\n%s", p.cmd.Process.Pid, tail(p.stderr.all(), 40))
		}
	})
	rec := p.waitReady(t)
	p.STOMP, _ = rec["stomp"].(string)
	p.Admin, _ = rec["admin"].(string)
	p.MQTT, _ = rec["mqtt"].(string)
	if p.STOMP == "" || p.Admin == "" {
		t.Fatalf("ready line lacks the stomp or admin address: %v", rec)
	}
	return p
}

// requireMQTT returns the broker's MQTT host and port, failing the test if
// the ready line named no MQTT listener.
func (p *tandemProc) requireMQTT(t *testing.T) (host, port string) {
	t.Helper()
	host, port, err := net.SplitHostPort(p.MQTT)
	if err != nil {
		t.Fatalf("ready line has no usable mqtt address (%q): %v", p.MQTT, err)
	}
	return host, port
}

// brokerEnv is the test's environment without TANDEM_* variables, with
// every listener on a free loopback port, then env.
func brokerEnv(env ...string) []string {
	var out []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "TANDEM_") {
			out = append(out, kv)
		}
	}
	out = append(out,
		"TANDEM_ADMIN_ADDR=127.0.0.1:0",
		"TANDEM_STOMP_ADDR=127.0.0.1:0",
		"TANDEM_MQTT_ADDR=127.0.0.1:0",
		"TANDEM_WS_ADDR=127.0.0.1:0",
	)
	return append(out, env...)
}

// waitReady returns the JSON "ready" log line, failing the test if the
// process exits or readyTimeout passes first.
func (p *tandemProc) waitReady(t *testing.T) map[string]any {
	t.Helper()
	deadline := time.NewTimer(readyTimeout)
	defer deadline.Stop()
	find := func() map[string]any {
		for _, line := range p.stderr.all() {
			var rec map[string]any
			if json.Unmarshal([]byte(line), &rec) == nil && rec["message"] == "ready" {
				return rec
			}
		}
		return nil
	}
	for {
		if rec := find(); rec != nil {
			return rec
		}
		select {
		case <-p.stderr.notify:
		case <-p.exited:
			if rec := find(); rec != nil {
				return rec
			}
			t.Fatalf("tandem exited (%v) before it was ready; stderr:\n%s", p.waitErr, p.stderr.text())
		case <-deadline.C:
			t.Fatalf("tandem not ready within %v; stderr:\n%s", readyTimeout, p.stderr.text())
		}
	}
}

// Stop sends SIGTERM and fails the test unless the broker exits with
// status 0 within readyTimeout.
func (p *tandemProc) Stop(t *testing.T) {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatalf("SIGTERM tandem: %v", err)
	}
	p.wait(t)
	if p.waitErr != nil {
		t.Fatalf("tandem exited with %v after SIGTERM, want status 0; stderr:\n%s", p.waitErr, tail(p.stderr.all(), 40))
	}
}

// Kill sends SIGKILL (a crash: no shutdown code runs) and waits for the
// process to be gone.
func (p *tandemProc) Kill(t *testing.T) {
	t.Helper()
	if err := p.cmd.Process.Kill(); err != nil {
		t.Fatalf("SIGKILL tandem: %v", err)
	}
	p.wait(t)
}

func (p *tandemProc) wait(t *testing.T) {
	t.Helper()
	select {
	case <-p.exited:
	case <-time.After(readyTimeout):
		t.Fatalf("tandem did not exit within %v; stderr:\n%s", readyTimeout, tail(p.stderr.all(), 40))
	}
}

// checkRaces fails the test if a -race broker reported a data race.
func (p *tandemProc) checkRaces(t *testing.T) {
	t.Helper()
	if s := p.stderr.text(); strings.Contains(s, "WARNING: DATA RACE") {
		i := strings.Index(s, "WARNING: DATA RACE")
		t.Errorf("the broker reported a data race:\n%s", s[i:min(len(s), i+6000)])
	}
}

// tail returns the last n lines, joined.
func tail(lines []string, n int) string {
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
