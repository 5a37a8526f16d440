package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	pahov3 "github.com/eclipse/paho.mqtt.golang"
	gostomp "github.com/go-stomp/stomp/v3"
	"github.com/rs/zerolog"
)

// binary is the tandem binary TestMain builds once for the subprocess
// tests.
var binary string

func TestMain(m *testing.M) {
	os.Exit(testMain(m))
}

func testMain(m *testing.M) int {
	dir, err := os.MkdirTemp("", "tandem-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer func() { _ = os.RemoveAll(dir) }()
	binary = filepath.Join(dir, "tandem")
	out, err := exec.Command("go", "build", "-o", binary, ".").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "go build: %v\n%s", err, out)
		return 1
	}
	return m.Run()
}

// waitTimeout bounds every wait in these tests; it is far above what any
// step takes, so reaching it means a hang.
const waitTimeout = 30 * time.Second

// lines is an io.Writer that collects the lines written to it and signals
// each write. exec.Cmd copies a child's stderr into it and Wait waits for
// that copy.
type lines struct {
	mu      sync.Mutex
	partial []byte
	done    []string
	notify  chan struct{} // capacity 1: "something was written"
}

func newLines() *lines { return &lines{notify: make(chan struct{}, 1)} }

func (l *lines) Write(p []byte) (int, error) {
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
func (l *lines) all() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.done...)
}

// waitFor returns the first JSON log line whose message is msg. It fails
// the test if exited closes or the deadline passes first.
func (l *lines) waitFor(t *testing.T, msg string, exited <-chan struct{}) map[string]any {
	t.Helper()
	deadline := time.NewTimer(waitTimeout)
	defer deadline.Stop()
	for {
		for _, line := range l.all() {
			var rec map[string]any
			if json.Unmarshal([]byte(line), &rec) == nil && rec["message"] == msg {
				return rec
			}
		}
		select {
		case <-l.notify:
		case <-exited:
			// Check once more: the line may have come with the exit.
			for _, line := range l.all() {
				var rec map[string]any
				if json.Unmarshal([]byte(line), &rec) == nil && rec["message"] == msg {
					return rec
				}
			}
			t.Fatalf("process exited before logging %q; stderr:\n%s", msg, strings.Join(l.all(), "\n"))
		case <-deadline.C:
			t.Fatalf("no %q log line within %v; stderr:\n%s", msg, waitTimeout, strings.Join(l.all(), "\n"))
		}
	}
}

// proc is a running tandem binary.
type proc struct {
	cmd    *exec.Cmd
	stderr *lines
	exited chan struct{} // closed when Wait returns
	err    error         // Wait's result, set before exited closes
}

// testEnv is the test's environment without TANDEM_* variables, with every
// protocol listener on a free loopback port, plus env.
func testEnv(env ...string) []string {
	var out []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "TANDEM_") {
			out = append(out, kv)
		}
	}
	out = append(out, loopbackListeners...)
	return append(out, env...)
}

// loopbackListeners keeps test brokers off the default ports and off
// every interface but loopback.
var loopbackListeners = []string{
	"TANDEM_STOMP_ADDR=127.0.0.1:0",
	"TANDEM_MQTT_ADDR=127.0.0.1:0",
	"TANDEM_WS_ADDR=127.0.0.1:0",
}

// start runs the binary with args and extra environment.
func start(t *testing.T, args []string, env ...string) *proc {
	t.Helper()
	p := &proc{
		cmd:    exec.Command(binary, args...),
		stderr: newLines(),
		exited: make(chan struct{}),
	}
	p.cmd.Env = testEnv(env...)
	p.cmd.Stderr = p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() {
		select {
		case <-p.exited:
		default:
			_ = p.cmd.Process.Kill() // the test failed midway; Wait reaps it
			<-p.exited
		}
	})
	return p
}

// startReady starts a broker on dataDir with the admin server on a free
// port, waits for its "ready" line and returns the admin address.
func startReady(t *testing.T, dataDir string) (*proc, string) {
	t.Helper()
	p := start(t, []string{"--data", dataDir, "--log-format", "json"}, "TANDEM_ADMIN_ADDR=127.0.0.1:0")
	rec := p.stderr.waitFor(t, "ready", p.exited)
	addr, ok := rec["admin"].(string)
	if !ok {
		t.Fatalf("ready line has no admin address: %v", rec)
	}
	return p, addr
}

// wait waits for the process to exit and returns its exit code.
func (p *proc) wait(t *testing.T) int {
	t.Helper()
	select {
	case <-p.exited:
	case <-time.After(waitTimeout):
		t.Fatalf("process did not exit within %v; stderr:\n%s", waitTimeout, strings.Join(p.stderr.all(), "\n"))
	}
	if p.err == nil {
		return 0
	}
	if ee, ok := p.err.(*exec.ExitError); ok {
		return ee.ExitCode()
	}
	t.Fatalf("wait: %v", p.err)
	return -1
}

// client bounds each admin request, so a hung server fails the test
// instead of hanging it.
var client = &http.Client{Timeout: 5 * time.Second}

// get fetches url and returns the status code and body.
func get(url string) (int, string, error) {
	resp, err := client.Get(url)
	if err != nil {
		return 0, "", err
	}
	defer func() { _ = resp.Body.Close() }()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body), err
}

// waitReadyz polls /readyz until it answers 200.
func waitReadyz(t *testing.T, addr string) {
	t.Helper()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	deadline := time.NewTimer(waitTimeout)
	defer deadline.Stop()
	for {
		code, body, err := get("http://" + addr + "/readyz")
		if err == nil && code == http.StatusOK && body == "ready\n" {
			return
		}
		select {
		case <-tick.C:
		case <-deadline.C:
			t.Fatalf("/readyz not ready within %v: %d %q %v", waitTimeout, code, body, err)
		}
	}
}

func TestStartStop(t *testing.T) {
	dataDir := filepath.Join(t.TempDir(), "data")
	p, addr := startReady(t, dataDir)
	waitReadyz(t, addr)
	if code, body, err := get("http://" + addr + "/healthz"); err != nil || code != http.StatusOK || body != "ok\n" {
		t.Errorf("/healthz = %d %q %v", code, body, err)
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := p.wait(t); code != 0 {
		t.Fatalf("exit code %d after SIGTERM; stderr:\n%s", code, strings.Join(p.stderr.all(), "\n"))
	}
	p.stderr.waitFor(t, "stopped", p.exited)

	// The store was closed cleanly: it opens again at once.
	cfg := defaults()
	cfg.DataDir = dataDir
	store, err := openStore(cfg, zerolog.New(zerolog.NewTestWriter(t)), nil)
	if err != nil {
		t.Fatalf("reopen after shutdown: %v", err)
	}
	if err := store.Close(); err != nil {
		t.Fatal(err)
	}

	// And so does a second broker on the same directory.
	p, addr = startReady(t, dataDir)
	waitReadyz(t, addr)
	if err := p.cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	if code := p.wait(t); code != 0 {
		t.Fatalf("exit code %d after SIGINT; stderr:\n%s", code, strings.Join(p.stderr.all(), "\n"))
	}
}

func TestSecondInstanceOnSameDataDir(t *testing.T) {
	dataDir := filepath.Join(t.TempDir(), "data")
	first, _ := startReady(t, dataDir)

	second := start(t, []string{"--data", dataDir}, "TANDEM_ADMIN_ADDR=127.0.0.1:0")
	if code := second.wait(t); code != 1 {
		t.Errorf("second instance exit code %d, want 1", code)
	}
	want := "tandem: data directory " + dataDir + " is in use by another tandem process"
	if got := second.stderr.all(); len(got) != 1 || got[0] != want {
		t.Errorf("second instance stderr:\n%s\nwant the one line:\n%s", strings.Join(got, "\n"), want)
	}

	if err := first.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := first.wait(t); code != 0 {
		t.Errorf("first instance exit code %d", code)
	}
}

func TestBadConfigExits2(t *testing.T) {
	file := writeConfig(t, "log:\n  level: info\n  foo: bar\n")
	tests := []struct {
		name string
		args []string
		env  []string
		want string
	}{
		{"unknown field", []string{"--config", file}, nil, "tandem: config " + file + ": line 3: field foo not found"},
		{"missing file", []string{"--config", file + ".nope"}, nil, "tandem: config " + file + ".nope: no such file or directory"},
		{"bad flag", []string{"--bogus"}, nil, "tandem: flag provided but not defined: -bogus"},
		{"bad env", nil, []string{"TANDEM_LOG_LEVEL=loud"}, `tandem: config: log.level must be one of trace, debug, info, warn, error, got "loud"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := start(t, tt.args, tt.env...)
			if code := p.wait(t); code != 2 {
				t.Errorf("exit code %d, want 2", code)
			}
			if got := p.stderr.all(); len(got) != 1 || got[0] != tt.want {
				t.Errorf("stderr:\n%s\nwant the one line:\n%s", strings.Join(got, "\n"), tt.want)
			}
		})
	}
}

// TestRunInProcess runs the program in this process, so the race detector
// sees serve and shutdown.
func TestRunInProcess(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	env := map[string]string{
		"TANDEM_DATA_DIR":   t.TempDir(),
		"TANDEM_ADMIN_ADDR": "127.0.0.1:0",
		"TANDEM_STOMP_ADDR": "127.0.0.1:0",
		"TANDEM_MQTT_ADDR":  "127.0.0.1:0",
		"TANDEM_WS_ADDR":    "127.0.0.1:0",
		"TANDEM_LOG_FORMAT": "json",
	}
	stderr := newLines()
	var stopped atomic.Bool
	exited := make(chan struct{})
	var code int
	go func() {
		defer close(exited)
		code = run(ctx, process{
			getenv:      func(k string) string { return env[k] },
			stderr:      stderr,
			stopSignals: func() { stopped.Store(true) },
		})
	}()
	rec := stderr.waitFor(t, "ready", exited)
	addr, _ := rec["admin"].(string)
	waitReadyz(t, addr)
	cancel()
	<-exited
	if code != 0 {
		t.Fatalf("run = %d; stderr:\n%s", code, strings.Join(stderr.all(), "\n"))
	}
	if !stopped.Load() {
		t.Error("signals were not released at shutdown")
	}
	stderr.waitFor(t, "stopped", exited)
}

func TestAdminHandler(t *testing.T) {
	var ready atomic.Bool
	h := newAdminHandler(&ready)
	check := func(path string, wantCode int, wantBody string) {
		t.Helper()
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
		if rec.Code != wantCode || rec.Body.String() != wantBody {
			t.Errorf("GET %s = %d %q, want %d %q", path, rec.Code, rec.Body.String(), wantCode, wantBody)
		}
	}
	check("/healthz", 200, "ok\n")
	check("/readyz", 503, "not ready\n")
	ready.Store(true)
	check("/readyz", 200, "ready\n")
	check("/healthz", 200, "ok\n")
	check("/nope", 404, "404 page not found\n")
}

func TestLoggerFormats(t *testing.T) {
	var buf bytes.Buffer
	log := newLogger(LogConfig{Level: "warn", Format: "json"}, &buf)
	log.Info().Msg("hidden")
	log.Warn().Msg("shown")
	var rec map[string]any
	if err := json.Unmarshal(buf.Bytes(), &rec); err != nil || rec["message"] != "shown" || rec["level"] != "warn" {
		t.Errorf("json log: %q %v", buf.String(), err)
	}
	buf.Reset()
	log = newLogger(LogConfig{Level: "info", Format: "console"}, &buf)
	log.Info().Msg("hello")
	if s := buf.String(); !strings.Contains(s, "INF") || !strings.Contains(s, "hello") || strings.HasPrefix(s, "{") {
		t.Errorf("console log: %q", s)
	}
	buf.Reset()
	// auto: a buffer is not a terminal, so JSON.
	log = newLogger(LogConfig{Level: "info", Format: "auto"}, &buf)
	log.Info().Msg("hello")
	if !strings.HasPrefix(buf.String(), "{") {
		t.Errorf("auto log on a non-terminal: %q", buf.String())
	}
}

// TestMQTTAndSTOMPShareTopics runs the binary and checks DESIGN.md's name
// mapping across protocols with real clients: MQTT a/b is STOMP
// /topic/a.b both ways, MQTT wildcards match STOMP publishes, a dot inside
// a level survives the round trip (MQTT v1.2/temp is STOMP
// /topic/v1/2.temp), and properties map onto headers and back.
func TestMQTTAndSTOMPShareTopics(t *testing.T) {
	p := start(t, []string{"--data", t.TempDir(), "--log-format", "json"}, "TANDEM_ADMIN_ADDR=127.0.0.1:0")
	rec := p.stderr.waitFor(t, "ready", p.exited)
	stompAddr, _ := rec["stomp"].(string)
	mqttAddr, _ := rec["mqtt"].(string)
	if stompAddr == "" || mqttAddr == "" {
		t.Fatalf("ready line lacks stomp or mqtt address: %v", rec)
	}

	// MQTT subscribers, each subscribed (SUBACK received) before any
	// publish.
	m1 := dialMQTT3(t, mqttAddr, "m1", "a/b", 1)
	m2 := dialMQTT5(t, mqttAddr, "m2", "a/+", 1)
	m3 := dialMQTT3(t, mqttAddr, "m3", "#", 0)
	m4 := dialMQTT5(t, mqttAddr, "m4", "v1.2/temp", 1)

	sc, err := gostomp.Dial("tcp", stompAddr, gostomp.ConnOpt.HeartBeat(0, 0))
	if err != nil {
		t.Fatal(err)
	}
	defer sc.MustDisconnect()
	sab, err := sc.Subscribe("/topic/a.b", gostomp.AckAuto)
	if err != nil {
		t.Fatal(err)
	}
	sdot, err := sc.Subscribe("/topic/v1/2.temp", gostomp.AckAuto)
	if err != nil {
		t.Fatal(err)
	}

	// STOMP -> MQTT. The receipts also prove the SUBSCRIBEs above were
	// processed (frames of one connection are handled in order).
	if err := sc.Send("/topic/a.b", "text/plain", []byte("from stomp"), gostomp.SendOpt.Receipt, gostomp.SendOpt.Header("k", "v")); err != nil {
		t.Fatal(err)
	}
	if err := sc.Send("/topic/v1/2.temp", "", []byte("dot"), gostomp.SendOpt.Receipt); err != nil {
		t.Fatal(err)
	}
	if m := m1.next(t); m.Topic() != "a/b" || string(m.Payload()) != "from stomp" || m.Qos() != 1 {
		t.Fatalf("m1 got %s %q QoS %d", m.Topic(), m.Payload(), m.Qos())
	}
	if m := m2.next(t); m.Topic != "a/b" || string(m.Payload) != "from stomp" || m.Properties.ContentType != "text/plain" ||
		m.Properties.User.Get("k") != "v" {
		t.Fatalf("m2 got %s %q %+v", m.Topic, m.Payload, m.Properties)
	}
	for _, want := range []string{"a/b", "v1.2/temp"} {
		if m := m3.next(t); m.Topic() != want {
			t.Fatalf("m3 got %s, want %s", m.Topic(), want)
		}
	}
	if m := m4.next(t); m.Topic != "v1.2/temp" || string(m.Payload) != "dot" {
		t.Fatalf("m4 got %s %q", m.Topic, m.Payload)
	}
	if m := recvSTOMP(t, sab); string(m.Body) != "from stomp" {
		t.Fatalf("STOMP got its own %q", m.Body)
	}
	if m := recvSTOMP(t, sdot); string(m.Body) != "dot" {
		t.Fatalf("STOMP got its own %q", m.Body)
	}

	// MQTT -> STOMP, with MQTT 5 properties as headers.
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	_, err = m2.Publish(ctx, &paho.Publish{Topic: "a/b", QoS: 1, Payload: []byte("from mqtt"), Properties: &paho.PublishProperties{
		ContentType: "application/json", ResponseTopic: "replies/v1.2", User: paho.UserProperties{{Key: "unit", Value: "C"}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	if tok := m1.Publish("v1.2/temp", 1, false, "21.5"); !tok.WaitTimeout(waitTimeout) || tok.Error() != nil {
		t.Fatalf("publish: %v", tok.Error())
	}
	m := recvSTOMP(t, sab)
	if string(m.Body) != "from mqtt" || m.Destination != "/topic/a.b" || m.ContentType != "application/json" ||
		m.Header.Get("unit") != "C" || m.Header.Get("reply-to") != "/topic/replies.v1/2" {
		t.Fatalf("STOMP got %q at %s, headers %v", m.Body, m.Destination, m.Header)
	}
	if m := recvSTOMP(t, sdot); string(m.Body) != "21.5" || m.Destination != "/topic/v1/2.temp" {
		t.Fatalf("STOMP got %q at %s", m.Body, m.Destination)
	}
}

func recvSTOMP(t *testing.T, sub *gostomp.Subscription) *gostomp.Message {
	t.Helper()
	select {
	case m := <-sub.C:
		if m == nil || m.Err != nil {
			t.Fatalf("STOMP subscription: %v", m)
		}
		return m
	case <-time.After(waitTimeout):
		t.Fatal("no STOMP message")
	}
	return nil
}

// mqtt3 is a paho.mqtt.golang (MQTT 3.1.1) client with one subscription.
type mqtt3 struct {
	pahov3.Client
	c chan pahov3.Message
}

func dialMQTT3(t *testing.T, addr, id, filter string, qos byte) *mqtt3 {
	t.Helper()
	c := &mqtt3{c: make(chan pahov3.Message, 100)}
	c.Client = pahov3.NewClient(pahov3.NewClientOptions().AddBroker("tcp://" + addr).SetClientID(id).
		SetProtocolVersion(4).SetAutoReconnect(false))
	if tok := c.Connect(); !tok.WaitTimeout(waitTimeout) || tok.Error() != nil {
		t.Fatalf("connect: %v", tok.Error())
	}
	t.Cleanup(func() { c.Disconnect(0) })
	tok := c.Subscribe(filter, qos, func(_ pahov3.Client, m pahov3.Message) { c.c <- m })
	if !tok.WaitTimeout(waitTimeout) || tok.Error() != nil {
		t.Fatalf("subscribe: %v", tok.Error())
	}
	return c
}

func (c *mqtt3) next(t *testing.T) pahov3.Message {
	t.Helper()
	select {
	case m := <-c.c:
		return m
	case <-time.After(waitTimeout):
		t.Fatal("no MQTT message")
	}
	return nil
}

// mqtt5 is a paho.golang (MQTT 5) client with one subscription.
type mqtt5 struct {
	*paho.Client
	c chan *paho.Publish
}

func dialMQTT5(t *testing.T, addr, id, filter string, qos byte) *mqtt5 {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c := &mqtt5{c: make(chan *paho.Publish, 100)}
	c.Client = paho.NewClient(paho.ClientConfig{ClientID: id, Conn: nc,
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){
			func(pr paho.PublishReceived) (bool, error) { c.c <- pr.Packet; return true, nil },
		}})
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	if _, err := c.Connect(ctx, &paho.Connect{ClientID: id, CleanStart: true, KeepAlive: 30}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Disconnect(&paho.Disconnect{}) })
	if _, err := c.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: filter, QoS: qos}}}); err != nil {
		t.Fatal(err)
	}
	return c
}

func (c *mqtt5) next(t *testing.T) *paho.Publish {
	t.Helper()
	select {
	case m := <-c.c:
		return m
	case <-time.After(waitTimeout):
		t.Fatal("no MQTT message")
	}
	return nil
}
