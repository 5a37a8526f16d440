package conformance

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	pahov3 "github.com/eclipse/paho.mqtt.golang"
	gostomp "github.com/go-stomp/stomp/v3"
	"golang.org/x/crypto/bcrypt"
)

// These tests run browser clients in headless Chromium (Debian's
// chromium, never a downloaded browser) against a real tandem process:
// mqtt.js and @stomp/stompjs, at the versions pinned by
// testdata/browser/package-lock.json, in pages served by the test
// (testdata/browser/pages), and the live page the broker serves itself.
// testdata/browser/drive.mjs (playwright-core) runs the browser: the test
// writes commands to it and reads what the pages reported, one JSON object
// a line each way (drive.mjs says which). Go clients (paho.mqtt.golang,
// go-stomp) sit on the other side of each exchange.
//
// References: RFC 6455 (The WebSocket Protocol), MQTT 5.0 section 6
// (Using WebSocket as a network transport), STOMP 1.2.

// browserWait bounds each wait for something the browser does or sees.
const browserWait = 20 * time.Second

var browserDir = filepath.Join("testdata", "browser")

// browserTools is what requireBrowser found, once.
var browserTools struct {
	once           sync.Once
	node, chromium string
	reason         string // what is missing, "" if nothing
}

// requireBrowser returns node and Chromium, or skips the test when either,
// or the npm packages, are missing.
func requireBrowser(t *testing.T) (node, chromium string) {
	t.Helper()
	bt := &browserTools
	bt.once.Do(func() {
		var missing []string
		var err error
		if bt.node, err = exec.LookPath("node"); err != nil {
			missing = append(missing, "node (apt-get install nodejs)")
		}
		bt.chromium = os.Getenv("CHROMIUM")
		if bt.chromium == "" {
			bt.chromium = "/usr/bin/chromium"
		}
		if _, err := os.Stat(bt.chromium); err != nil {
			missing = append(missing, bt.chromium+" (apt-get install chromium)")
		}
		for _, p := range []string{"mqtt/dist/mqtt.min.js", "@stomp/stompjs/bundles/stomp.umd.min.js", "playwright-core/package.json"} {
			if _, err := os.Stat(filepath.Join(browserDir, "node_modules", p)); err != nil {
				missing = append(missing, "node_modules/"+p+" (npm ci in conformance/testdata/browser)")
			}
		}
		bt.reason = strings.Join(missing, ", ")
	})
	if bt.reason != "" {
		t.Skipf("browser tests need %s; .ci/run installs them", bt.reason)
	}
	return bt.node, bt.chromium
}

// browserEvent is one line drive.mjs printed: a reply to a command, or an
// event a page reported.
type browserEvent struct {
	Reply *int            `json:"reply"`
	Value json.RawMessage `json:"value"`
	Error string          `json:"error"`

	Page  string `json:"page"`
	Event string `json:"event"`
	N     int    `json:"n"` // the page's connection count at the event
	Text  string `json:"text"`
	// MQTT
	Topic   string `json:"topic"`
	Payload string `json:"payload"`
	Granted []int  `json:"granted"`
	// STOMP
	Destination string            `json:"destination"`
	Headers     map[string]string `json:"headers"`
	Body        string            `json:"body"`
	Receipt     string            `json:"receipt"`
}

// browser is one drive.mjs process and the Chromium it runs.
type browser struct {
	t       *testing.T
	cmd     *exec.Cmd
	stdin   io.WriteCloser
	out     *logLines // stdout: JSON lines
	errs    *logLines // stderr
	exited  chan struct{}
	waitErr error
	seq     int
}

// startBrowser starts drive.mjs and waits for Chromium to be up. The
// test's cleanup closes it.
func startBrowser(t *testing.T) *browser {
	t.Helper()
	node, chromium := requireBrowser(t)
	dir, err := filepath.Abs(browserDir)
	if err != nil {
		t.Fatal(err)
	}
	br := &browser{t: t, out: newLogLines(), errs: newLogLines(), exited: make(chan struct{})}
	br.cmd = exec.Command(node, "drive.mjs")
	br.cmd.Dir = dir
	br.cmd.Env = append(os.Environ(), "CHROMIUM="+chromium, fmt.Sprintf("COMMAND_TIMEOUT_MS=%d", (browserWait-5*time.Second).Milliseconds()))
	br.cmd.Stdout, br.cmd.Stderr = br.out, br.errs
	if br.stdin, err = br.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	if err := br.cmd.Start(); err != nil {
		t.Fatalf("start drive.mjs: %v", err)
	}
	go func() {
		br.waitErr = br.cmd.Wait()
		close(br.exited)
	}()
	t.Cleanup(func() {
		// End of input: drive.mjs closes Chromium and exits. If it does
		// not, kill the process we started, by its PID; Chromium, on the
		// other end of its pipe, then exits too.
		_ = br.stdin.Close()
		select {
		case <-br.exited:
		case <-time.After(browserWait):
			_ = br.cmd.Process.Kill()
			<-br.exited
		}
		if t.Failed() {
			t.Logf("drive.mjs (pid %d) printed, last lines:\n%s\nstderr:\n%s", br.cmd.Process.Pid, tail(br.out.all(), 60), tail(strings.Split(br.errs.text(), "\n"), 30))
		}
	})
	br.wait("Chromium to start", func(e browserEvent) bool { return e.Event == "launched" })
	return br
}

// wait returns the first line that matches, failing the test if drive.mjs
// exits or browserWait passes first.
func (br *browser) wait(what string, match func(browserEvent) bool) browserEvent {
	br.t.Helper()
	deadline := time.NewTimer(browserWait)
	defer deadline.Stop()
	find := func() (browserEvent, bool) {
		for _, line := range br.out.all() {
			var e browserEvent
			if err := json.Unmarshal([]byte(line), &e); err != nil {
				// A field of another type than browserEvent's is no
				// match, not a failure.
				if !json.Valid([]byte(line)) {
					br.t.Fatalf("drive.mjs printed a line that is not JSON: %q", line)
				}
				continue
			}
			if match(e) {
				return e, true
			}
		}
		return browserEvent{}, false
	}
	for {
		if e, ok := find(); ok {
			return e
		}
		select {
		case <-br.out.notify:
		case <-br.exited:
			if e, ok := find(); ok {
				return e
			}
			br.t.Fatalf("drive.mjs exited (%v) while the test waited for %s", br.waitErr, what)
		case <-deadline.C:
			br.t.Fatalf("waited %v for %s", browserWait, what)
		}
	}
}

// waitEvent waits for an event of page.
func (br *browser) waitEvent(page, what string, match func(browserEvent) bool) browserEvent {
	br.t.Helper()
	return br.wait(page+": "+what, func(e browserEvent) bool { return e.Reply == nil && e.Page == page && match(e) })
}

// do runs a drive.mjs command on page and returns its reply's value.
func (br *browser) do(page, cmd string, fields map[string]any) json.RawMessage {
	br.t.Helper()
	br.seq++
	seq := br.seq
	c := map[string]any{"seq": seq, "cmd": cmd, "page": page}
	for k, v := range fields {
		c[k] = v
	}
	line, err := json.Marshal(c)
	if err != nil {
		br.t.Fatal(err)
	}
	if _, err := br.stdin.Write(append(line, '\n')); err != nil {
		br.t.Fatalf("write to drive.mjs: %v", err)
	}
	r := br.wait(fmt.Sprintf("the reply to %s", line), func(e browserEvent) bool { return e.Reply != nil && *e.Reply == seq })
	if r.Error != "" {
		br.t.Fatalf("%s: %s", line, r.Error)
	}
	return r.Value
}

// open opens url in a new tab named page and returns the HTTP status.
func (br *browser) open(page, url string) int {
	br.t.Helper()
	var status int
	if err := json.Unmarshal(br.do(page, "open", map[string]any{"url": url}), &status); err != nil {
		br.t.Fatalf("open %s: %v", url, err)
	}
	return status
}

// call runs window[fn](args...) in page and returns its result.
func (br *browser) call(page, fn string, args ...any) json.RawMessage {
	br.t.Helper()
	if args == nil {
		args = []any{}
	}
	return br.do(page, "call", map[string]any{"fn": fn, "args": args})
}

// texts returns the textContent of every element of page that selector
// matches.
func (br *browser) texts(page, selector string) []string {
	br.t.Helper()
	var out []string
	if err := json.Unmarshal(br.do(page, "texts", map[string]any{"selector": selector}), &out); err != nil {
		br.t.Fatal(err)
	}
	return out
}

// noPageErrors fails the test if page threw an uncaught error or logged
// one (a Content-Security-Policy violation, say), except errors that
// contain one of expected.
func (br *browser) noPageErrors(page string, expected ...string) {
	br.t.Helper()
	for _, line := range br.out.all() {
		var e browserEvent
		_ = json.Unmarshal([]byte(line), &e)
		if e.Page != page || e.Event != "pageerror" && !(e.Event == "console" && strings.HasPrefix(e.Text, "error")) {
			continue
		}
		if !slices.ContainsFunc(expected, func(s string) bool { return strings.Contains(e.Text, s) }) {
			br.t.Errorf("%s: %s %s", page, e.Event, e.Text)
		}
	}
}

// servePages serves testdata/browser/pages and the two libraries' browser
// builds (from node_modules: nothing is fetched from the network) on a
// loopback port, and returns the server's URL.
func servePages(t *testing.T) string {
	t.Helper()
	mux := http.NewServeMux()
	mux.Handle("/", http.FileServer(http.Dir(filepath.Join(browserDir, "pages"))))
	mux.HandleFunc("/favicon.ico", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusNoContent) })
	for name, path := range map[string]string{
		"/lib/mqtt.min.js":      "mqtt/dist/mqtt.min.js",
		"/lib/stomp.umd.min.js": "@stomp/stompjs/bundles/stomp.umd.min.js",
	} {
		file := filepath.Join(browserDir, "node_modules", filepath.FromSlash(path))
		mux.HandleFunc(name, func(w http.ResponseWriter, r *http.Request) { http.ServeFile(w, r, file) })
	}
	srv := httptest.NewServer(mux) // 127.0.0.1
	t.Cleanup(srv.Close)
	return srv.URL
}

// browserBroker starts a broker that lets pages from origin open
// WebSockets, and returns it with its WebSocket address. env as for
// startTandem.
func browserBroker(t *testing.T, dataDir, origin string, env ...string) (*tandemProc, string) {
	t.Helper()
	b := startTandemConfig(t, dataDir, fmt.Sprintf("websocket:\n  allowed_origins: [%q]\n", origin), env...)
	return b, wsAddr(t, b)
}

// wsAddr is the WebSocket listener's address from b's ready line.
func wsAddr(t *testing.T, b *tandemProc) string {
	t.Helper()
	ws, _ := b.waitReady(t)["websocket"].(string)
	if ws == "" {
		t.Fatal("the ready line has no websocket address")
	}
	return ws
}

// waitLogLine waits for a line of b's log that matches.
func waitLogLine(t *testing.T, b *tandemProc, what string, match func(string) bool) {
	t.Helper()
	deadline := time.NewTimer(browserWait)
	defer deadline.Stop()
	for !slices.ContainsFunc(b.stderr.all(), match) {
		select {
		case <-b.stderr.notify:
		case <-b.exited:
			if slices.ContainsFunc(b.stderr.all(), match) {
				return
			}
			t.Fatalf("the broker exited before it logged %s", what)
		case <-deadline.C:
			t.Fatalf("the broker did not log %s within %v", what, browserWait)
		}
	}
}

// goMQTT connects a paho.mqtt.golang (MQTT 3.1.1) client to b over TCP.
func goMQTT(t *testing.T, b *tandemProc, id string) pahov3.Client {
	t.Helper()
	opts := pahov3.NewClientOptions().AddBroker("tcp://" + b.MQTT).SetClientID(id).
		SetAutoReconnect(false).SetConnectTimeout(browserWait).SetOrderMatters(true)
	c := pahov3.NewClient(opts)
	waitToken(t, "CONNECT "+id, c.Connect())
	t.Cleanup(func() { c.Disconnect(250) })
	return c
}

func waitToken(t *testing.T, what string, tok pahov3.Token) {
	t.Helper()
	if !tok.WaitTimeout(browserWait) {
		t.Fatalf("%s: no answer within %v", what, browserWait)
	}
	if err := tok.Error(); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// goSubscribe subscribes c to filter at QoS 1 and returns the messages.
func goSubscribe(t *testing.T, c pahov3.Client, filter string) <-chan pahov3.Message {
	t.Helper()
	ch := make(chan pahov3.Message, 64)
	waitToken(t, "SUBSCRIBE "+filter, c.Subscribe(filter, 1, func(_ pahov3.Client, m pahov3.Message) { ch <- m }))
	return ch
}

func nextGoMessage(t *testing.T, ch <-chan pahov3.Message, who string) pahov3.Message {
	t.Helper()
	select {
	case m := <-ch:
		return m
	case <-time.After(browserWait):
		t.Fatalf("%s got nothing within %v", who, browserWait)
		return nil
	}
}

func nextSTOMPMessage(t *testing.T, sub *gostomp.Subscription, who string) *gostomp.Message {
	t.Helper()
	select {
	case m := <-sub.C:
		if m == nil || m.Err != nil {
			t.Fatalf("%s: subscription ended: %v", who, m)
		}
		return m
	case <-time.After(browserWait):
		t.Fatalf("%s got nothing within %v", who, browserWait)
		return nil
	}
}

// stompBarrier sends a frame with a receipt on c and waits for it: the
// broker handles a connection's frames in order, so everything c sent
// before (SUBSCRIBE, ACK) is in effect.
func stompBarrier(t *testing.T, c *gostomp.Conn) {
	t.Helper()
	if err := c.Send("/topic/unrelated", "", []byte("x"), gostomp.SendOpt.Receipt); err != nil {
		t.Fatal(err)
	}
}

// connectPageMQTT opens the mqtt.js page and connects it to ws.
func connectPageMQTT(br *browser, pages, page, ws string, opts map[string]any) {
	br.t.Helper()
	br.open(page, pages+"/mqtt.html")
	br.call(page, "connectMQTT", "ws://"+ws+"/mqtt", opts)
	br.waitEvent(page, "mqtt.js CONNACK", func(e browserEvent) bool { return e.Event == "connect" && e.N == 1 })
}

// connectPageSTOMP opens the @stomp/stompjs page and connects it to ws.
func connectPageSTOMP(br *browser, pages, page, ws string, opts map[string]any) {
	br.t.Helper()
	br.open(page, pages+"/stomp.html")
	br.call(page, "connectSTOMP", "ws://"+ws+"/stomp", opts)
	br.waitEvent(page, "stompjs CONNECTED", func(e browserEvent) bool { return e.Event == "connect" && e.N == 1 })
}

// TestBrowser_MQTTjsPublishReachesStompjsAndGo: a QoS 1 PUBLISH by mqtt.js
// (MQTT 5 over WebSocket, binary messages [MQTT-6.0.0-1], subprotocol
// "mqtt" [MQTT-6.0.0-3]) in a page on another origin, allowed by
// websocket.allowed_origins, is PUBACKed and reaches an @stomp/stompjs
// subscriber in the browser (with its content type and user property as
// headers) and a Go MQTT subscriber. A page from an origin the list does
// not name cannot open a WebSocket (RFC 6455 section 10.2: the server
// refuses the handshake with 403).
func TestBrowser_MQTTjsPublishReachesStompjsAndGo(t *testing.T) {
	pages := servePages(t)
	elsewhere := servePages(t) // another port: another origin
	br := startBrowser(t)
	b, ws := browserBroker(t, t.TempDir(), pages)

	goSub := goSubscribe(t, goMQTT(t, b, "go-sub"), "sensors/+/temp")

	connectPageSTOMP(br, pages, "stomp", ws, nil)
	br.call("stomp", "subscribeSTOMP", "/topic/sensors.*.temp")
	br.waitEvent("stomp", "RECEIPT of SUBSCRIBE", func(e browserEvent) bool { return e.Event == "subscribed" })

	connectPageMQTT(br, pages, "mqtt", ws, map[string]any{"protocolVersion": 5, "clientId": "browser-pub"})
	const payload = "21.5 °C"
	br.call("mqtt", "publishMQTT", "sensors/room1/temp", payload, map[string]any{
		"qos": 1, "properties": map[string]any{"contentType": "text/plain", "userProperties": map[string]string{"unit": "C"}},
	})
	if e := br.waitEvent("mqtt", "PUBACK", func(e browserEvent) bool { return e.Event == "published" }); e.Text != "" {
		t.Fatalf("mqtt.js publish failed: %s", e.Text)
	}

	m := br.waitEvent("stomp", "the MESSAGE", func(e browserEvent) bool { return e.Event == "message" })
	if m.Destination != "/topic/sensors.room1.temp" || m.Body != payload {
		t.Errorf("stompjs got %q on %s, want %q on /topic/sensors.room1.temp", m.Body, m.Destination, payload)
	}
	if m.Headers["content-type"] != "text/plain" || m.Headers["unit"] != "C" {
		t.Errorf("stompjs got headers %v, want content-type text/plain and unit C", m.Headers)
	}
	if g := nextGoMessage(t, goSub, "the Go subscriber"); g.Topic() != "sensors/room1/temp" || string(g.Payload()) != payload {
		t.Errorf("the Go subscriber got %q on %s, want %q on sensors/room1/temp", g.Payload(), g.Topic(), payload)
	}

	br.open("elsewhere", elsewhere+"/mqtt.html")
	var got string
	if err := json.Unmarshal(br.call("elsewhere", "probeWebSocket", "ws://"+ws+"/mqtt", []string{"mqtt"}), &got); err != nil {
		t.Fatal(err)
	}
	if got != "closed 1006" { // the handshake failed: no close frame
		t.Errorf("a page from %s, not in websocket.allowed_origins, opening a WebSocket: %s, want closed 1006", elsewhere, got)
	}
	// The broker logs the refusal after writing the 403.
	waitLogLine(t, b, "the refused handshake from "+elsewhere, func(l string) bool {
		return strings.Contains(l, "websocket handshake refused") && strings.Contains(l, elsewhere)
	})
	br.noPageErrors("mqtt")
	br.noPageErrors("stomp")
}

// TestBrowser_StompjsSendToQueueConsumedByGoWorker: SENDs by
// @stomp/stompjs to /queue/jobs (each RECEIPTed) are consumed, in order,
// by a Go worker with ack:client-individual. The worker ACKs two and goes
// away holding the third: a second worker gets the third again
// (redelivered, delivery count 2) and then the next job, never the two
// acked ones (STOMP 1.2 ACK; an unacked message returns to the queue).
func TestBrowser_StompjsSendToQueueConsumedByGoWorker(t *testing.T) {
	pages := servePages(t)
	br := startBrowser(t)
	b, ws := browserBroker(t, t.TempDir(), pages)
	connectPageSTOMP(br, pages, "stomp", ws, nil)

	send := func(job string) {
		t.Helper()
		var receipt string
		if err := json.Unmarshal(br.call("stomp", "sendSTOMP", "/queue/jobs", `{"job":"`+job+`"}`,
			map[string]string{"content-type": "application/json", "job-id": job}), &receipt); err != nil {
			t.Fatal(err)
		}
		br.waitEvent("stomp", "RECEIPT of SEND "+job, func(e browserEvent) bool { return e.Event == "receipt" && e.Receipt == receipt })
	}
	check := func(m *gostomp.Message, job string) {
		t.Helper()
		if got := m.Header.Get("job-id"); got != job || string(m.Body) != `{"job":"`+job+`"}` || m.ContentType != "application/json" {
			t.Fatalf("the worker got job %q %s (%s), want job %s", got, m.Body, m.ContentType, job)
		}
	}

	w1 := dialSTOMP(t, b)
	sub1, err := w1.Subscribe("/queue/jobs", gostomp.AckClientIndividual)
	if err != nil {
		t.Fatal(err)
	}
	stompBarrier(t, w1)
	for _, job := range []string{"1", "2", "3"} {
		send(job)
	}
	for _, job := range []string{"1", "2", "3"} {
		m := nextSTOMPMessage(t, sub1, "worker 1")
		check(m, job)
		if m.Header.Get("redelivered") != "false" {
			t.Errorf("job %s: redelivered %q on its first delivery", job, m.Header.Get("redelivered"))
		}
		if job == "3" {
			continue // held, unacked, when the worker goes away
		}
		if err := w1.Ack(m); err != nil {
			t.Fatal(err)
		}
	}
	stompBarrier(t, w1) // the ACKs are applied
	if err := w1.Disconnect(); err != nil {
		t.Fatal(err)
	}

	w2 := dialSTOMP(t, b)
	sub2, err := w2.Subscribe("/queue/jobs", gostomp.AckClientIndividual)
	if err != nil {
		t.Fatal(err)
	}
	m := nextSTOMPMessage(t, sub2, "worker 2")
	check(m, "3")
	if m.Header.Get("redelivered") != "true" || m.Header.Get("x-delivery-count") != "2" {
		t.Errorf("job 3 again: redelivered %q, x-delivery-count %q; want true and 2", m.Header.Get("redelivered"), m.Header.Get("x-delivery-count"))
	}
	if err := w2.Ack(m); err != nil {
		t.Fatal(err)
	}
	send("4")
	m = nextSTOMPMessage(t, sub2, "worker 2")
	check(m, "4") // not 1 or 2: their ACKs held
	if err := w2.Ack(m); err != nil {
		t.Fatal(err)
	}
	stompBarrier(t, w2)
	br.noPageErrors("stomp")
}

// TestBrowser_SubscribersSurviveRestart: an mqtt.js subscriber
// (reconnectPeriod) and an @stomp/stompjs subscriber (reconnectDelay),
// each subscribing again on every connect, get a message published after
// the broker was stopped and started again on the same WebSocket port and
// data directory.
func TestBrowser_SubscribersSurviveRestart(t *testing.T) {
	pages := servePages(t)
	br := startBrowser(t)
	dir := t.TempDir()
	b, ws := browserBroker(t, dir, pages)

	connectPageMQTT(br, pages, "mqtt", ws, map[string]any{"clientId": "browser-sub", "reconnectPeriod": 200})
	br.call("mqtt", "subscribeMQTT", "alerts/#", 1)
	connectPageSTOMP(br, pages, "stomp", ws, map[string]any{"reconnectDelay": 200})
	br.call("stomp", "subscribeSTOMP", "/topic/alerts.#")
	subscribed := func(n int) {
		t.Helper()
		e := br.waitEvent("mqtt", fmt.Sprintf("SUBACK on connection %d", n), func(e browserEvent) bool { return e.Event == "subscribed" && e.N == n })
		if !slices.Equal(e.Granted, []int{1}) {
			t.Fatalf("mqtt.js subscription on connection %d: granted %v (%s), want [1]", n, e.Granted, e.Text)
		}
		br.waitEvent("stomp", fmt.Sprintf("RECEIPT of SUBSCRIBE on connection %d", n), func(e browserEvent) bool { return e.Event == "subscribed" && e.N == n })
	}
	received := func(payload string) {
		t.Helper()
		br.waitEvent("mqtt", "message "+payload, func(e browserEvent) bool {
			return e.Event == "message" && e.Topic == "alerts/door" && e.Payload == payload
		})
		br.waitEvent("stomp", "message "+payload, func(e browserEvent) bool {
			return e.Event == "message" && e.Destination == "/topic/alerts.door" && e.Body == payload
		})
	}
	subscribed(1)
	waitToken(t, "PUBLISH", goMQTT(t, b, "go-pub-1").Publish("alerts/door", 1, false, "before the restart"))
	received("before the restart")

	b.Stop(t)
	br.waitEvent("mqtt", "the connection to close", func(e browserEvent) bool { return e.Event == "close" && e.N == 1 })
	br.waitEvent("stomp", "the connection to close", func(e browserEvent) bool { return e.Event == "close" && e.N == 1 })
	b, _ = browserBroker(t, dir, pages, "TANDEM_WS_ADDR="+ws)

	br.waitEvent("mqtt", "the reconnect", func(e browserEvent) bool { return e.Event == "connect" && e.N == 2 })
	br.waitEvent("stomp", "the reconnect", func(e browserEvent) bool { return e.Event == "connect" && e.N == 2 })
	subscribed(2)
	waitToken(t, "PUBLISH", goMQTT(t, b, "go-pub-2").Publish("alerts/door", 1, false, "after the restart"))
	received("after the restart")
	// While the broker was down, the reconnect attempts were refused.
	br.noPageErrors("mqtt", "ERR_CONNECTION_REFUSED")
	br.noPageErrors("stomp", "ERR_CONNECTION_REFUSED")
}

// TestBrowser_LivePage: with websocket.live_page on, the broker serves its
// live page at / of the WebSocket port. In Chromium, the page connects
// (its inline script allowed by the page's Content-Security-Policy),
// subscribes to sensors/+/# from its form (STOMP /topic/sensors.*.#),
// publishes from its form, and shows both its own message and one a Go
// MQTT client published (on a topic with a dot in a level, which must come
// back unchanged); a Go MQTT subscriber gets the page's message too. A
// message on a topic outside the filter, published before, is not shown.
func TestBrowser_LivePage(t *testing.T) {
	br := startBrowser(t)
	b := startTandemConfig(t, t.TempDir(), "websocket:\n  live_page: true\n")
	ws := wsAddr(t, b)
	goPub := goMQTT(t, b, "go-pub")
	goSub := goSubscribe(t, goMQTT(t, b, "go-sub"), "sensors/#")

	const page = "live"
	if status := br.open(page, "http://"+ws+"/"); status != http.StatusOK {
		t.Fatalf("GET / = %d, want 200", status)
	}
	waitText := func(selector, text string) {
		t.Helper()
		br.do(page, "waitText", map[string]any{"selector": selector, "text": text})
	}
	waitText("#status", "connected to ws://"+ws+"/stomp")
	br.do(page, "fill", map[string]any{"selector": "#filter", "value": "sensors/+/#"})
	br.do(page, "click", map[string]any{"selector": "#subscribe"})
	waitText("#status", "subscribed to sensors/+/#")
	waitText("#subs", "sensors/+/# (/topic/sensors.*.#)")

	br.do(page, "fill", map[string]any{"selector": "#topic", "value": "sensors/room1/temp"})
	br.do(page, "fill", map[string]any{"selector": "#payload", "value": "21.5 from the page"})
	br.do(page, "click", map[string]any{"selector": "#publish"})
	waitText("#status", "published to sensors/room1/temp")
	waitText(".msg .body", "21.5 from the page")
	if g := nextGoMessage(t, goSub, "the Go subscriber"); g.Topic() != "sensors/room1/temp" || string(g.Payload()) != "21.5 from the page" {
		t.Errorf("the Go subscriber got %q on %s, want the page's message on sensors/room1/temp", g.Payload(), g.Topic())
	}

	// One publisher's messages arrive in order: once the second is shown,
	// the first would have been.
	waitToken(t, "PUBLISH", goPub.Publish("other/room2", 1, false, "not for the page"))
	waitToken(t, "PUBLISH", goPub.Publish("sensors/room2.east/hum", 1, false, "40% from Go"))
	waitText(".msg .body", "40% from Go")
	if got, want := br.texts(page, ".msg .topic"), []string{"sensors/room2.east/hum", "sensors/room1/temp"}; !slices.Equal(got, want) {
		t.Errorf("the page shows topics %q, want %q (newest first)", got, want)
	}
	if got, want := br.texts(page, ".msg .body"), []string{"40% from Go", "21.5 from the page"}; !slices.Equal(got, want) {
		t.Errorf("the page shows bodies %q, want %q", got, want)
	}
	if h := br.texts(page, ".msg .headers"); len(h) != 2 || !strings.Contains(h[1], "content-type: text/plain;charset=utf-8") {
		t.Errorf("the page's own message shows headers %q, want its content-type among them", h)
	}
	br.noPageErrors(page)
}

// TestBrowser_LivePageLogin: where every client must log in
// (auth.anonymous: none), the live page is refused until a user logs in
// with its login form; then it connects and subscribes.
func TestBrowser_LivePageLogin(t *testing.T) {
	br := startBrowser(t)
	hash, err := bcrypt.GenerateFromPassword([]byte("pw"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	b := startTandemConfig(t, t.TempDir(), "websocket:\n  live_page: true\nauth:\n  anonymous: none\n  users:\n    - name: alice\n      password_hash: \""+string(hash)+"\"\n      publish: [\"#\"]\n      subscribe: [\"#\"]\n")
	ws := wsAddr(t, b)
	const page = "live-login"
	if status := br.open(page, "http://"+ws+"/"); status != http.StatusOK {
		t.Fatalf("GET / = %d, want 200", status)
	}
	br.do(page, "waitText", map[string]any{"selector": "#status", "text": "authentication failed"})
	br.do(page, "fill", map[string]any{"selector": "#login", "value": "alice"})
	br.do(page, "fill", map[string]any{"selector": "#passcode", "value": "pw"})
	br.do(page, "click", map[string]any{"selector": "#log-in"})
	br.do(page, "waitText", map[string]any{"selector": "#status", "text": "connected to ws://" + ws + "/stomp"})
	br.do(page, "click", map[string]any{"selector": "#subscribe"})
	br.do(page, "waitText", map[string]any{"selector": "#status", "text": "subscribed to sensors/#"})
}

// TestLivePage_OffByDefault: without websocket.live_page, / on the
// WebSocket port is 404; with it, only / itself is served (GET and HEAD),
// as HTML with a Content-Security-Policy.
func TestLivePage_OffByDefault(t *testing.T) {
	get := func(method, url string) *http.Response {
		t.Helper()
		req, err := http.NewRequest(method, url, nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
		return resp
	}
	off := startTandem(t, t.TempDir())
	if resp := get("GET", "http://"+wsAddr(t, off)+"/"); resp.StatusCode != http.StatusNotFound {
		t.Errorf("GET / with the defaults = %d, want 404", resp.StatusCode)
	}
	on := startTandemConfig(t, t.TempDir(), "websocket:\n  live_page: true\n")
	ws := wsAddr(t, on)
	for _, method := range []string{"GET", "HEAD"} {
		resp := get(method, "http://"+ws+"/")
		if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") ||
			!strings.Contains(resp.Header.Get("Content-Security-Policy"), "script-src 'sha256-") {
			t.Errorf("%s / with live_page on = %d, %q, CSP %q; want 200, text/html and a script hash", method, resp.StatusCode, resp.Header.Get("Content-Type"), resp.Header.Get("Content-Security-Policy"))
		}
	}
	if resp := get("GET", "http://"+ws+"/index.html"); resp.StatusCode != http.StatusNotFound {
		t.Errorf("GET /index.html = %d, want 404", resp.StatusCode)
	}
	if resp := get("POST", "http://"+ws+"/"); resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST / = %d, want 405", resp.StatusCode)
	}
}
