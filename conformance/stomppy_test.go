package conformance

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// These tests drive Python's stomp.py (Debian package python3-stomp), a
// client the broker's authors did not write, against a real tandem
// process. Each scenario is a script in testdata/stomppy that prints what
// it saw as JSON lines; the test judges those against the STOMP
// specifications:
//
//	1.0: https://stomp.github.io/stomp-specification-1.0.html
//	1.1: https://stomp.github.io/stomp-specification-1.1.html
//	1.2: https://stomp.github.io/stomp-specification-1.2.html
//
// and, where the specification leaves a choice to the server, against
// DESIGN.md. Spec citations name the section ("1.2 MESSAGE").

// stomppyConfig is the broker configuration for these tests: a short
// redelivery delay so a NACKed message comes back quickly, and a short
// heart-beat interval so heart-beats can be observed in a second or two.
const stomppyConfig = `
queues:
  default:
    redelivery_delay: 100ms
stomp:
  heart_beat: 200ms
`

// stomppyTimeout bounds one script run; each of its waits is bounded by
// 10 s on the Python side (stomptest.WAIT).
const stomppyTimeout = 60 * time.Second

var (
	allVersions  = []string{"1.0", "1.1", "1.2"}
	nackVersions = []string{"1.1", "1.2"} // NACK and heart-beats are 1.1+
)

// stomppy is the python3 that imports stomp.py, found once.
var stomppy struct {
	once   sync.Once
	python string
	reason string // why none was found
}

// requireStompPy returns a python3 that can import stomp.py, or skips the
// test. It tries python3 on PATH, then Debian's /usr/bin/python3 (where
// python3-stomp installs, and which a pyenv or venv python3 on PATH hides).
func requireStompPy(t *testing.T) string {
	t.Helper()
	stomppy.once.Do(func() {
		var tried []string
		candidates := []string{"/usr/bin/python3"}
		if p, err := exec.LookPath("python3"); err == nil {
			candidates = append([]string{p}, candidates...)
		}
		for _, py := range slices.Compact(candidates) {
			cmd := exec.Command(py, "-c", "import stomp")
			// Not the module root: its stomp/ folder (Go code) would be
			// imported as a namespace package.
			cmd.Dir = os.TempDir()
			out, err := cmd.CombinedOutput()
			if err == nil {
				stomppy.python = py
				return
			}
			tried = append(tried, py+": "+strings.TrimSpace(lastLine(string(out), err)))
		}
		stomppy.reason = strings.Join(tried, "; ")
	})
	if stomppy.python == "" {
		t.Skipf(`stomp.py is not installed (apt-get install python3-stomp): python3 -c "import stomp" failed: %s`, stomppy.reason)
	}
	return stomppy.python
}

func lastLine(out string, err error) string {
	out = strings.TrimSpace(out)
	if out == "" {
		return err.Error()
	}
	lines := strings.Split(out, "\n")
	return lines[len(lines)-1]
}

// pyEvent is one JSON line a script printed.
type pyEvent struct {
	Event      string            `json:"event"`
	Conn       string            `json:"conn"`
	ID         string            `json:"id"`
	Headers    map[string]string `json:"headers"`
	Body       string            `json:"body"`
	WaitingFor string            `json:"waiting_for"`
	Bodies     []string          `json:"bodies"`
	Count      int               `json:"count"`
	Seconds    float64           `json:"seconds"`
	Closed     bool              `json:"closed"`
	Commands   []string          `json:"commands"`
	Frames     []string          `json:"frames"`
}

// pyRun is a finished script run.
type pyRun struct {
	events []pyEvent
	stdout string
}

// find returns the events of kind (and of connection conn unless "").
func (r pyRun) find(kind, conn string) []pyEvent {
	var out []pyEvent
	for _, e := range r.events {
		if e.Event == kind && (conn == "" || e.Conn == conn) {
			out = append(out, e)
		}
	}
	return out
}

// bodies returns the bodies of conn's MESSAGEs on subscription sub
// ("" for any), in the order the script consumed them.
func (r pyRun) bodies(conn, sub string) []string {
	var out []string
	for _, m := range r.find("message", conn) {
		if sub == "" || m.Headers["subscription"] == sub {
			out = append(out, m.Body)
		}
	}
	return out
}

// runStompPy starts a broker, runs testdata/stomppy/<script>.py against it
// with STOMP version v and returns what it printed. A script that timed
// out waiting, exited non-zero or saw an ERROR frame fails the test (after
// the caller's own checks, which say more, have run: the failure is
// reported with t.Errorf).
func runStompPy(t *testing.T, script, v string, args ...string) pyRun {
	t.Helper()
	python := requireStompPy(t)
	b := startTandemConfig(t, t.TempDir(), stomppyConfig)
	_, port, err := net.SplitHostPort(b.STOMP)
	if err != nil {
		t.Fatalf("stomp address %q: %v", b.STOMP, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), stomppyTimeout)
	defer cancel()
	path, err := filepath.Abs(filepath.Join("testdata", "stomppy", script+".py"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.CommandContext(ctx, python, append([]string{"-B", path, "--port", port, "--version", v}, args...)...)
	cmd.Dir = t.TempDir()
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	runErr := cmd.Run()

	run := pyRun{stdout: stdout.String()}
	for line := range strings.SplitSeq(strings.TrimSpace(stdout.String()), "\n") {
		if line == "" {
			continue
		}
		var e pyEvent
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Errorf("%s.py printed a line that is not JSON: %q", script, line)
			continue
		}
		run.events = append(run.events, e)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("%s.py --version %s printed:\n%s\nstderr:\n%s", script, v, stdout.String(), tail(strings.Split(stderr.String(), "\n"), 30))
		}
	})
	for _, e := range run.find("error", "") {
		t.Errorf("the broker sent an ERROR frame to %s: headers %v, body %q", e.Conn, e.Headers, e.Body)
	}
	for _, e := range run.find("heartbeat_timeout", "") {
		t.Errorf("stomp.py on %s saw no heart-beat from the broker in time (1.2 Heart-beating)", e.Conn)
	}
	switch {
	case errors.Is(ctx.Err(), context.DeadlineExceeded):
		t.Errorf("%s.py did not finish within %v", script, stomppyTimeout)
	case len(run.find("timeout", "")) > 0:
		t.Errorf("%s.py gave up waiting for %s", script, run.find("timeout", "")[0].WaitingFor)
	case runErr != nil:
		t.Errorf("%s.py failed: %v", script, runErr)
	case len(run.find("done", "")) == 0:
		t.Errorf("%s.py exited without finishing its scenario", script)
	}
	return run
}

// forVersions runs f as a parallel subtest per STOMP version, each with
// its own broker.
func forVersions(t *testing.T, versions []string, f func(t *testing.T, v string)) {
	for _, v := range versions {
		t.Run(v, func(t *testing.T) {
			t.Parallel()
			f(t, v)
		})
	}
}

// TestSTOMP_ReceiptAfterSendSubscribeAck: a SEND, a SUBSCRIBE and an ACK
// that ask for a receipt get a RECEIPT with the same receipt-id (1.2
// RECEIPT, "Header receipt"); the MESSAGE carries destination, message-id
// and subscription (1.2 MESSAGE), and in client-individual mode an ack
// header (1.2 MESSAGE: "MUST also contain an ack header"); an ACKed
// message is consumed and not delivered again (1.2 ACK).
func TestSTOMP_ReceiptAfterSendSubscribeAck(t *testing.T) {
	forVersions(t, allVersions, func(t *testing.T, v string) {
		run := runStompPy(t, "queue_ack", v)
		if v != "1.0" {
			for _, c := range run.find("connected", "") {
				if got := c.Headers["version"]; got != v {
					t.Errorf("CONNECTED version header %q, want %q (%s CONNECTED: the version the session will use)", got, v, v)
				}
			}
		}
		for _, id := range []string{"send-1", "sub-1", "ack-1", "bye"} {
			if !slices.ContainsFunc(run.find("receipt", "worker"), func(e pyEvent) bool { return e.ID == id }) {
				t.Errorf("no RECEIPT with receipt-id %q (%s RECEIPT)", id, v)
			}
		}
		msgs := run.find("message", "worker")
		if len(msgs) != 1 {
			t.Fatalf("worker got %d MESSAGEs, want 1", len(msgs))
		}
		m := msgs[0]
		if want := "job-1 over STOMP " + v; m.Body != want {
			t.Errorf("MESSAGE body %q, want %q", m.Body, want)
		}
		if got := m.Headers["destination"]; got != "/queue/jobs" {
			t.Errorf("MESSAGE destination %q, want /queue/jobs (%s MESSAGE)", got, v)
		}
		if m.Headers["message-id"] == "" {
			t.Errorf("MESSAGE has no message-id header (%s MESSAGE: MUST include a message-id)", v)
		}
		if got := m.Headers["subscription"]; got != "sub-1" {
			t.Errorf("MESSAGE subscription header %q, want the SUBSCRIBE id %q (%s MESSAGE)", got, "sub-1", v)
		}
		if v == "1.2" && m.Headers["ack"] == "" {
			t.Errorf("MESSAGE on a client-individual subscription has no ack header (1.2 MESSAGE: MUST also contain an ack header)")
		}
		if got := run.bodies("checker", ""); len(got) == 0 || got[0] != "marker" {
			t.Errorf("after the ACK (with its RECEIPT) a new subscriber first got %q, want the marker sent later: the acked message came back (%s ACK)", got, v)
		}
	})
}

// TestSTOMP_NackRedelivers: NACK tells the server the message was not
// consumed (1.2 NACK); what happens then is server specific, and
// DESIGN.md (Redelivery) says the message comes back after the queue's
// redelivery delay with its delivery count incremented.
func TestSTOMP_NackRedelivers(t *testing.T) {
	forVersions(t, nackVersions, func(t *testing.T, v string) {
		run := runStompPy(t, "nack", v)
		msgs := run.find("message", "worker")
		if len(msgs) != 2 {
			t.Fatalf("got %d MESSAGEs, want 2 (the first delivery and its redelivery after NACK)", len(msgs))
		}
		first, again := msgs[0], msgs[1]
		if again.Body != first.Body {
			t.Errorf("redelivered body %q, want %q", again.Body, first.Body)
		}
		if got := first.Headers["x-delivery-count"]; got != "1" {
			t.Errorf("first delivery x-delivery-count %q, want 1 (DESIGN.md, Message properties)", got)
		}
		if got := again.Headers["x-delivery-count"]; got != "2" {
			t.Errorf("redelivery x-delivery-count %q, want 2 (DESIGN.md: each delivery attempt increments the count)", got)
		}
		if got := again.Headers["redelivered"]; got != "true" {
			t.Errorf("redelivery redelivered header %q, want true (DESIGN.md, Message properties)", got)
		}
	})
}

// TestSTOMP_TopicWildcardSubscription: a topic subscription with '*' gets
// the messages of exactly one level there, one with '#' those of every
// level below (DESIGN.md, Names across protocols); each MESSAGE names the
// destination it was sent to and has a unique message-id (1.2 MESSAGE).
func TestSTOMP_TopicWildcardSubscription(t *testing.T) {
	forVersions(t, allVersions, func(t *testing.T, v string) {
		run := runStompPy(t, "topic_wildcard", v)
		if got, want := run.bodies("subscriber", "one-level"), []string{"t1"}; !slices.Equal(got, want) {
			t.Errorf("/topic/sensors.*.temp got %q, want %q", got, want)
		}
		if got, want := run.bodies("subscriber", "all-levels"), []string{"t1", "h1", "r1", "end"}; !slices.Equal(got, want) {
			t.Errorf("/topic/sensors.# got %q, want %q (in publish order)", got, want)
		}
		sent := map[string]string{"t1": "/topic/sensors.room1.temp", "h1": "/topic/sensors.room1.humidity",
			"r1": "/topic/sensors.room1.temp.raw", "end": "/topic/sensors.end"}
		ids := map[string]bool{}
		for _, m := range run.find("message", "subscriber") {
			if want, ok := sent[m.Body]; !ok {
				t.Errorf("a subscriber got %q, which matches none of its subscriptions", m.Body)
			} else if got := m.Headers["destination"]; got != want {
				t.Errorf("MESSAGE %q destination %q, want %q (%s MESSAGE)", m.Body, got, want, v)
			}
			id := m.Headers["message-id"]
			if id == "" || ids[id] {
				t.Errorf("MESSAGE %q message-id %q is empty or repeated (%s MESSAGE: a unique identifier)", m.Body, id, v)
			}
			ids[id] = true
		}
	})
}

// TestSTOMP_TransactionCommitAndAbort: SENDs and ACKs in a transaction
// are handled atomically on COMMIT; on ABORT they are dropped (1.2 BEGIN,
// COMMIT, ABORT: "any messages sent in the transaction will be handled
// atomically based on the transaction").
func TestSTOMP_TransactionCommitAndAbort(t *testing.T) {
	forVersions(t, allVersions, func(t *testing.T, v string) {
		run := runStompPy(t, "transaction", v)
		pend := run.find("pending", "client")
		if len(pend) != 2 {
			t.Fatalf("script printed %d pending lists, want 2", len(pend))
		}
		if slices.Contains(pend[0].Bodies, "in-tx1") {
			t.Errorf("a SEND in transaction tx1 was delivered before COMMIT (%s COMMIT)", v)
		}
		got := run.bodies("client", "txn")
		if want := []string{"outside-1", "in-tx1", "outside-2"}; !slices.Equal(got, want) {
			t.Errorf("/queue/txn deliveries %q, want %q", got, want)
		}
		if slices.Contains(pend[1].Bodies, "in-tx2") || slices.Contains(got, "in-tx2") {
			t.Errorf("a SEND in the aborted transaction tx2 was delivered (%s ABORT)", v)
		}
		if got := run.bodies("client2", ""); !slices.Equal(got, []string{"to-ack"}) {
			t.Errorf("after an ACK inside an aborted transaction, the next consumer got %q, want the message again (%s ABORT)", got, v)
		}
		if got := run.bodies("client3", ""); len(got) == 0 || got[0] != "marker" {
			t.Errorf("after an ACK inside a committed transaction, a new subscriber first got %q, want the later marker: the acked message came back (%s COMMIT)", got, v)
		}
	})
}

// TestSTOMP_DurableSubscriptionKeepsMessages: a topic subscription made
// durable with RabbitMQ's headers (id, durable:true, auto-delete:false)
// keeps the messages published while its subscriber is disconnected and
// delivers them, in order, when it subscribes again (DESIGN.md, Address
// model: "keeps messages while its consumer is away").
func TestSTOMP_DurableSubscriptionKeepsMessages(t *testing.T) {
	forVersions(t, allVersions, func(t *testing.T, v string) {
		run := runStompPy(t, "durable", v)
		if got := run.bodies("fan", ""); !slices.Equal(got, []string{"live-1"}) {
			t.Errorf("while connected the subscriber got %q, want [live-1]", got)
		}
		want := []string{"offline-1", "offline-2", "offline-3", "end"}
		if got := run.bodies("fan-again", ""); !slices.Equal(got, want) {
			t.Errorf("after subscribing again the durable subscriber got %q, want %q: the messages published while it was away, in order, and not the acked live-1", got, want)
		}
		for _, m := range run.find("message", "") {
			if got := m.Headers["destination"]; got != "/topic/news.sports" {
				t.Errorf("MESSAGE %q destination %q, want /topic/news.sports", m.Body, got)
			}
		}
	})
}

// TestSTOMP_HeartBeatNegotiation: with heart-beat cx,cy on CONNECT the
// CONNECTED frame answers sx,sy, and the server then sends heart-beats
// every max(sx,cy) ms when neither is 0 (1.2 Heart-beating); stomp.py
// sends its own and the connection stays up over many intervals with only
// heart-beats flowing. A client that promised heart-beats and is silent
// is disconnected: "If the receiver does not receive any new data within
// that time, it MAY consider the connection dead" (Tandem does, DESIGN.md
// and configs/tandem.yaml stomp.heart_beat).
func TestSTOMP_HeartBeatNegotiation(t *testing.T) {
	const interval = 300 // ms, what stomp.py offers and asks for
	forVersions(t, nackVersions, func(t *testing.T, v string) {
		run := runStompPy(t, "heartbeat", v, "--interval", strconv.Itoa(interval))
		conns := run.find("connected", "beating")
		if len(conns) != 1 {
			t.Fatalf("no CONNECTED frame")
		}
		hb := conns[0].Headers["heart-beat"]
		sx, sy, ok := parseHeartBeat(hb)
		if !ok {
			t.Fatalf("CONNECTED heart-beat header %q, want two comma-separated integers (%s Heart-beating)", hb, v)
		}
		if sx == 0 {
			t.Errorf("CONNECTED heart-beat %q: the server offers no heart-beats although the client asked for them every %d ms and the broker is configured to send them", hb, interval)
		}
		if sy == 0 {
			t.Errorf("CONNECTED heart-beat %q: the server asks for no heart-beats although the broker is configured to expect them", hb)
		}
		beats := run.find("heartbeats", "")
		if len(beats) != 1 || beats[0].Count < 5 {
			t.Errorf("stomp.py counted %v heart-beats from the server, want at least 5", beats)
		} else {
			// Five beats at max(sx, cy) apart, with generous slack for a
			// loaded machine.
			every := max(sx, interval)
			if limit := 5 * float64(every) / 1000 * 3; beats[0].Seconds > limit {
				t.Errorf("5 heart-beats took %.1fs, want about %.1fs (every %d ms)", beats[0].Seconds, 5*float64(every)/1000, every)
			}
		}
		if !slices.ContainsFunc(run.find("receipt", "beating"), func(e pyEvent) bool { return e.ID == "alive" }) {
			t.Errorf("after a period of heart-beats only, a SEND got no RECEIPT: the connection did not survive")
		}
		silent := run.find("silent_client", "")
		if len(silent) != 1 {
			t.Fatalf("no silent_client result")
		}
		s := silent[0]
		if !s.Closed {
			t.Errorf("a client that promised heart-beats every 100 ms and sent nothing was still connected after %.1fs (frames %q)", s.Seconds, s.Commands)
		}
		if len(s.Commands) == 0 || s.Commands[0] != "CONNECTED" {
			t.Errorf("silent client got frames %q, want CONNECTED first", s.Commands)
		}
		if !slices.Contains(s.Commands, "ERROR") {
			t.Logf("note: the broker closed the silent client's connection after %.1fs without an ERROR frame (frames %q)", s.Seconds, s.Commands)
		}
	})
}

// parseHeartBeat reads a heart-beat header "x,y".
func parseHeartBeat(h string) (x, y int, ok bool) {
	a, b, found := strings.Cut(h, ",")
	if !found {
		return 0, 0, false
	}
	x, err1 := strconv.Atoi(strings.TrimSpace(a))
	y, err2 := strconv.Atoi(strings.TrimSpace(b))
	return x, y, err1 == nil && err2 == nil && x >= 0 && y >= 0
}
