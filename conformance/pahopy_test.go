package conformance

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// These tests drive Python's paho-mqtt (Debian package python3-paho-mqtt)
// against a real tandem process. testdata/pahopy/roundtrip.py runs one
// scenario per MQTT version and prints what it saw as JSON lines; the
// tests judge those against the MQTT specifications (see
// mosquitto_test.go for the documents cited).

// pahoTimeout bounds one script run; each of its waits is bounded by 10 s
// on the Python side (roundtrip.WAIT).
const pahoTimeout = 60 * time.Second

// pahoPayload is roundtrip.PAYLOAD.
var pahoPayload = []byte("\x00paho\x00\xff\x01 round trip\x00")

// pahopy is /usr/bin/python3 if it imports paho-mqtt, found once.
var pahopy struct {
	once   sync.Once
	python string
	reason string
}

// requirePahoPy returns Debian's python3 (where python3-paho-mqtt installs)
// if it can import paho.mqtt.client, or skips the test.
func requirePahoPy(t *testing.T) string {
	t.Helper()
	pahopy.once.Do(func() {
		const py = "/usr/bin/python3"
		cmd := exec.Command(py, "-c", "import paho.mqtt.client")
		// Not the module root: its mqtt/ folder (Go code) must not shadow
		// anything.
		cmd.Dir = os.TempDir()
		out, err := cmd.CombinedOutput()
		if err != nil {
			pahopy.reason = strings.TrimSpace(lastLine(string(out), err))
			return
		}
		pahopy.python = py
	})
	if pahopy.python == "" {
		t.Skipf(`paho-mqtt is not installed (apt-get install python3-paho-mqtt): /usr/bin/python3 -c "import paho.mqtt.client" failed: %s`, pahopy.reason)
	}
	return pahopy.python
}

// pahoEvent is one JSON line roundtrip.py printed.
type pahoEvent struct {
	Event      string         `json:"event"`
	Conn       string         `json:"conn"`
	RC         int            `json:"rc"`
	Props      map[string]any `json:"props"`
	Filter     string         `json:"filter"`
	Requested  int            `json:"requested"`
	Granted    []int          `json:"granted"`
	Topic      string         `json:"topic"`
	QoS        int            `json:"qos"`
	Payload    string         `json:"payload"` // hex
	WaitingFor string         `json:"waiting_for"`
	Version    string         `json:"version"`
}

type pahoRun []pahoEvent

func (r pahoRun) find(kind string) []pahoEvent {
	var out []pahoEvent
	for _, e := range r {
		if e.Event == kind {
			out = append(out, e)
		}
	}
	return out
}

// message returns the message the subscriber got on topic.
func (r pahoRun) message(t *testing.T, topic string) pahoEvent {
	t.Helper()
	for _, e := range r.find("message") {
		if e.Topic == topic {
			return e
		}
	}
	t.Fatalf("the subscriber got no message on %s", topic)
	return pahoEvent{}
}

// runPahoPy starts a broker, runs roundtrip.py against it with MQTT
// version v ("3.1.1" or "5") and returns what it printed. A script that
// timed out waiting, failed or did not finish fails the test.
func runPahoPy(t *testing.T, v string) pahoRun {
	t.Helper()
	python := requirePahoPy(t)
	b := startTandem(t, t.TempDir())
	_, port := b.requireMQTT(t)
	path, err := filepath.Abs(filepath.Join("testdata", "pahopy", "roundtrip.py"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), pahoTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, python, "-B", path, "--port", port, "--version", v)
	cmd.Dir = t.TempDir()
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	runErr := cmd.Run()
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("roundtrip.py --version %s printed:\n%s\nstderr:\n%s", v, stdout.String(), tail(strings.Split(stderr.String(), "\n"), 30))
		}
	})
	var run pahoRun
	for line := range strings.SplitSeq(strings.TrimSpace(stdout.String()), "\n") {
		if line == "" {
			continue
		}
		var e pahoEvent
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Fatalf("roundtrip.py printed a line that is not JSON: %q", line)
		}
		run = append(run, e)
	}
	switch {
	case errors.Is(ctx.Err(), context.DeadlineExceeded):
		t.Fatalf("roundtrip.py did not finish within %v", pahoTimeout)
	case len(run.find("timeout")) > 0:
		e := run.find("timeout")[0]
		t.Fatalf("roundtrip.py (%s) gave up waiting for %s", e.Conn, e.WaitingFor)
	case runErr != nil:
		t.Fatalf("roundtrip.py failed: %v", runErr)
	case len(run.find("done")) == 0:
		t.Fatalf("roundtrip.py exited without finishing its scenario")
	}
	return run
}

var pahoVersions = []string{"3.1.1", "5"}

// TestMQTT_3_3_4_PahoQoS1PubackThenDelivery: paho-mqtt connects (CONNACK
// return code 0, 3.2.2.3), subscribes at QoS 1 (SUBACK grants 1, 3.9.3),
// publishes at QoS 1 and gets the PUBACK (on_publish; 3.3.4, 4.3.2) and at
// QoS 0; the subscriber receives both, payload bytes unaltered, at the
// published QoS ([MQTT-3.8.4-6] 3.1.1, [MQTT-3.8.4-8] 5.0).
func TestMQTT_3_3_4_PahoQoS1PubackThenDelivery(t *testing.T) {
	for _, v := range pahoVersions {
		t.Run(v, func(t *testing.T) {
			t.Parallel()
			run := runPahoPy(t, v)
			for _, c := range run.find("connack") {
				if c.RC != 0 {
					t.Errorf("%s: CONNACK code %d, want 0 (success)", c.Conn, c.RC)
				}
			}
			for _, s := range run.find("suback") {
				if s.Filter == "paho/+/data" && !slices.Equal(s.Granted, []int{1}) {
					t.Errorf("SUBACK for %s at QoS 1 granted %v, want [1]", s.Filter, s.Granted)
				}
			}
			for _, want := range []struct {
				topic string
				qos   int
			}{{"paho/q1/data", 1}, {"paho/q0/data", 0}} {
				m := run.message(t, want.topic)
				if m.QoS != want.qos {
					t.Errorf("message on %s arrived at QoS %d, want %d", want.topic, m.QoS, want.qos)
				}
				if got, _ := hex.DecodeString(m.Payload); !bytes.Equal(got, pahoPayload) {
					t.Errorf("message on %s has payload %x, want %x", want.topic, got, pahoPayload)
				}
			}
		})
	}
}

// TestMQTT_3_3_2_PahoPropertiesRoundTrip: an MQTT 5 PUBLISH's Response
// Topic [MQTT-3.3.2-15], Correlation Data [MQTT-3.3.2-16], User Properties
// in order [MQTT-3.3.2-17, -18] and Content Type [MQTT-3.3.2-20] reach the
// subscriber unaltered.
func TestMQTT_3_3_2_PahoPropertiesRoundTrip(t *testing.T) {
	run := runPahoPy(t, "5")
	for _, topic := range []string{"paho/q1/data", "paho/q0/data"} {
		p := run.message(t, topic).Props
		want := map[string]any{
			"ResponseTopic":   "paho/replies",
			"CorrelationData": hex.EncodeToString([]byte("\x00corr-7\xff")),
			"UserProperty":    []any{[]any{"unit", "C"}, []any{"sensor", "t1"}},
			"ContentType":     "application/octet-stream",
		}
		for k, w := range want {
			if fmt.Sprint(p[k]) != fmt.Sprint(w) {
				t.Errorf("message on %s: property %s is %v, want %v (all properties: %v)", topic, k, p[k], w, p)
			}
		}
	}
}

// TestMQTT_4_3_3_PahoQoS2: Tandem supports QoS 2, so its MQTT 5 CONNACK
// carries no Maximum QoS (absent means 2, 5.0 3.2.2.3.4); a subscription
// requesting QoS 2 is granted QoS 2; paho-mqtt's QoS 2 publish completes
// (on_publish after PUBCOMP, 4.3.3) and reaches the QoS 2 subscriber once,
// at QoS 2, payload unaltered.
func TestMQTT_4_3_3_PahoQoS2(t *testing.T) {
	for _, v := range pahoVersions {
		t.Run(v, func(t *testing.T) {
			t.Parallel()
			run := runPahoPy(t, v)
			if v == "5" {
				for _, c := range run.find("connack") {
					if q, ok := c.Props["MaximumQoS"]; ok {
						t.Errorf("%s: CONNACK Maximum QoS %v, want none (QoS 2 supported)", c.Conn, q)
					}
				}
			}
			for _, s := range run.find("suback") {
				if s.Requested == 2 && !slices.Equal(s.Granted, []int{2}) {
					t.Errorf("SUBACK for %s at QoS 2 granted %v, want [2]", s.Filter, s.Granted)
				}
			}
			m := run.message(t, "paho/qos2")
			if m.QoS != 2 {
				t.Errorf("QoS 2 message arrived at QoS %d", m.QoS)
			}
			if got, _ := hex.DecodeString(m.Payload); !bytes.Equal(got, pahoPayload) {
				t.Errorf("QoS 2 message has payload %x, want %x", got, pahoPayload)
			}
			n := 0
			for _, e := range run.find("message") {
				if e.Topic == "paho/qos2" {
					n++
				}
			}
			if n != 1 {
				t.Errorf("QoS 2 message arrived %d times, want once", n)
			}
		})
	}
}
