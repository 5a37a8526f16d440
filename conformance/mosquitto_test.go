package conformance

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	gostomp "github.com/go-stomp/stomp/v3"
)

// These tests drive the Mosquitto command-line clients (Debian package
// mosquitto-clients), which the broker's authors did not write, against a
// real tandem process. Test names cite the normative statement or section
// they check, of
//
//	3.1.1: https://docs.oasis-open.org/mqtt/mqtt/v3.1.1/mqtt-v3.1.1.html
//	5.0:   https://docs.oasis-open.org/mqtt/mqtt/v5.0/mqtt-v5.0.html
//
// Every mosquitto_sub runs with -C (stop after N messages) and -W (stop
// after mqttWait), and with -d so its SUBACK can be waited for before
// anything is published: nothing here sleeps to order events.

// mqttWait bounds one client run and every wait for a client's output.
const mqttWait = 20 * time.Second

// mqttVersions are mosquitto's -V values for MQTT 3.1.1 and 5.0.
var mqttVersions = []string{"mqttv311", "mqttv5"}

// mosquitto holds the clients' paths, found once.
var mosquitto struct {
	once             sync.Once
	pub, sub, stdbuf string
	reason           string
}

// requireMosquitto returns the paths of mosquitto_pub and mosquitto_sub, or
// skips the test.
func requireMosquitto(t *testing.T) (pub, sub string) {
	t.Helper()
	mosquitto.once.Do(func() {
		var missing []string
		var err error
		if mosquitto.pub, err = exec.LookPath("mosquitto_pub"); err != nil {
			missing = append(missing, err.Error())
		}
		if mosquitto.sub, err = exec.LookPath("mosquitto_sub"); err != nil {
			missing = append(missing, err.Error())
		}
		// mosquitto_sub flushes stdout after each message but not after
		// its -d lines; stdbuf -oL makes the SUBACK line visible at once.
		if mosquitto.stdbuf, err = exec.LookPath("stdbuf"); err != nil {
			missing = append(missing, err.Error()+" (coreutils)")
		}
		mosquitto.reason = strings.Join(missing, "; ")
	})
	if mosquitto.reason != "" {
		t.Skipf("the Mosquitto clients are not installed (apt-get install mosquitto-clients) or stdbuf is missing: %s", mosquitto.reason)
	}
	return mosquitto.pub, mosquitto.sub
}

// forMQTTVersions runs f as a parallel subtest per MQTT version, each
// with its own broker.
func forMQTTVersions(t *testing.T, f func(t *testing.T, v string, b *tandemProc)) {
	requireMosquitto(t)
	for _, v := range mqttVersions {
		t.Run(v, func(t *testing.T) {
			t.Parallel()
			f(t, v, startTandem(t, t.TempDir()))
		})
	}
}

// subFormat is mosquitto_sub's -F output: one line per message, with the
// payload in hex so NUL bytes and newlines survive.
const subFormat = "MSG|%t|%q|%x|%C|%R|%D|%F|%P"

// subMsg is one message mosquitto_sub printed.
type subMsg struct {
	Topic         string
	QoS           int
	Payload       []byte
	ContentType   string
	ResponseTopic string
	Correlation   string
	PayloadFormat string
	User          []string // "key:value", in the order received
}

func (m subMsg) String() string {
	s := fmt.Sprintf("%s QoS %d %q", m.Topic, m.QoS, m.Payload)
	if m.ContentType != "" || m.ResponseTopic != "" || m.Correlation != "" || m.PayloadFormat != "" || len(m.User) > 0 {
		s += fmt.Sprintf(" content-type=%q response-topic=%q correlation=%q payload-format=%q user=%q",
			m.ContentType, m.ResponseTopic, m.Correlation, m.PayloadFormat, m.User)
	}
	return s
}

func topics(msgs []subMsg) []string {
	var out []string
	for _, m := range msgs {
		out = append(out, m.Topic)
	}
	return out
}

// mosqSub is a running mosquitto_sub.
type mosqSub struct {
	args    []string
	count   int
	out     *logLines // stdout and stderr
	exited  chan struct{}
	waitErr error
	Granted []int // the SUBACK's granted QoS (or reason codes), per filter
}

// startSub starts mosquitto_sub against b with the given -V version,
// stopping after count messages, and returns once it printed its SUBACK.
// args names the filters (-t) and the requested QoS (-q).
func startSub(t *testing.T, b *tandemProc, v string, count int, args ...string) *mosqSub {
	t.Helper()
	_, sub := requireMosquitto(t)
	host, port := b.requireMQTT(t)
	s := &mosqSub{
		args:   append([]string{"-h", host, "-p", port, "-V", v, "-d", "-C", strconv.Itoa(count), "-W", strconv.Itoa(int(mqttWait / time.Second)), "-F", subFormat}, args...),
		count:  count,
		out:    newLogLines(),
		exited: make(chan struct{}),
	}
	cmd := exec.Command(mosquitto.stdbuf, append([]string{"-oL", sub}, s.args...)...)
	cmd.Stdout, cmd.Stderr = s.out, s.out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start mosquitto_sub: %v", err)
	}
	go func() {
		s.waitErr = cmd.Wait()
		close(s.exited)
	}()
	t.Cleanup(func() {
		select {
		case <-s.exited:
		default:
			_ = cmd.Process.Kill()
			<-s.exited
		}
		if t.Failed() {
			t.Logf("mosquitto_sub %s printed:\n%s", strings.Join(s.args, " "), s.out.text())
		}
	})
	// -d prints "Subscribed (mid: 1): 1, 0" once the SUBACK is in.
	deadline := time.NewTimer(mqttWait)
	defer deadline.Stop()
	for {
		for _, line := range s.out.all() {
			if rest, ok := strings.CutPrefix(line, "Subscribed (mid: "); ok {
				_, codes, _ := strings.Cut(rest, "): ")
				for c := range strings.SplitSeq(codes, ",") {
					n, err := strconv.Atoi(strings.TrimSpace(c))
					if err != nil {
						t.Fatalf("mosquitto_sub SUBACK line %q: %v", line, err)
					}
					s.Granted = append(s.Granted, n)
				}
				return s
			}
		}
		select {
		case <-s.out.notify:
		case <-s.exited:
			t.Fatalf("mosquitto_sub exited (%v) before its SUBACK:\n%s", s.waitErr, s.out.text())
		case <-deadline.C:
			t.Fatalf("mosquitto_sub got no SUBACK within %v:\n%s", mqttWait, s.out.text())
		}
	}
}

// messages waits for mosquitto_sub to exit and returns the messages it
// printed. Fewer than count (it timed out, -W) is an error in the test.
func (s *mosqSub) messages(t *testing.T) []subMsg {
	t.Helper()
	select {
	case <-s.exited:
	case <-time.After(2 * mqttWait):
		t.Fatalf("mosquitto_sub did not exit within %v despite -W", 2*mqttWait)
	}
	var msgs []subMsg
	for _, line := range s.out.all() {
		rest, ok := strings.CutPrefix(line, "MSG|")
		if !ok {
			continue
		}
		f := strings.SplitN(rest, "|", 8)
		if len(f) != 8 {
			t.Fatalf("mosquitto_sub line %q does not have the -F %q fields", line, subFormat)
		}
		qos, err := strconv.Atoi(f[1])
		if err != nil {
			t.Fatalf("mosquitto_sub line %q: QoS: %v", line, err)
		}
		payload, err := hex.DecodeString(f[2])
		if err != nil {
			t.Fatalf("mosquitto_sub line %q: payload: %v", line, err)
		}
		m := subMsg{Topic: f[0], QoS: qos, Payload: payload, ContentType: f[3], ResponseTopic: f[4], Correlation: f[5], PayloadFormat: f[6]}
		if f[7] != "" {
			m.User = strings.Split(f[7], " ")
		}
		msgs = append(msgs, m)
	}
	if len(msgs) < s.count {
		t.Errorf("mosquitto_sub %s got %d of %d messages before it gave up (-W %v); got %v",
			strings.Join(s.args, " "), len(msgs), s.count, mqttWait, msgs)
	} else if s.waitErr != nil {
		t.Errorf("mosquitto_sub exited with %v after its messages", s.waitErr)
	}
	return msgs
}

// publish runs mosquitto_pub against b with the given -V version and
// returns its -d output; a failed run fails the test. A QoS 1 publish
// returns only after mosquitto_pub got the PUBACK, so successive publish
// calls reach the broker in order.
func publish(t *testing.T, b *tandemProc, v string, args ...string) string {
	t.Helper()
	pub, _ := requireMosquitto(t)
	host, port := b.requireMQTT(t)
	ctx, cancel := context.WithTimeout(context.Background(), mqttWait)
	defer cancel()
	all := append([]string{"-h", host, "-p", port, "-V", v, "-d"}, args...)
	out, err := exec.CommandContext(ctx, pub, all...).CombinedOutput()
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		t.Fatalf("mosquitto_pub %s did not finish within %v:\n%s", strings.Join(all, " "), mqttWait, out)
	}
	if err != nil {
		t.Fatalf("mosquitto_pub %s: %v\n%s", strings.Join(all, " "), err, out)
	}
	return string(out)
}

// requirePuback fails the test unless mosquitto_pub's -d output shows a
// successful PUBACK.
func requirePuback(t *testing.T, v, out string) {
	t.Helper()
	for line := range strings.SplitSeq(out, "\n") {
		if strings.Contains(line, "received PUBACK") {
			if v == "mqttv5" && !strings.Contains(line, "RC:0)") {
				t.Errorf("PUBACK with a failure reason code: %q", line)
			}
			return
		}
	}
	t.Errorf("mosquitto_pub -q 1 saw no PUBACK (3.3.4: the receiver of a QoS 1 PUBLISH responds with a PUBACK):\n%s", out)
}

// TestMQTT_3_3_4_QoS0AndQoS1PublishSubscribe: a QoS 0 PUBLISH gets no
// response and a QoS 1 PUBLISH gets a PUBACK (3.3.4 PUBLISH Actions, 4.3.1,
// 4.3.2); a QoS 1 subscriber gets each at the QoS it was published with,
// in publish order (4.6 Message ordering).
func TestMQTT_3_3_4_QoS0AndQoS1PublishSubscribe(t *testing.T) {
	forMQTTVersions(t, func(t *testing.T, v string, b *tandemProc) {
		s := startSub(t, b, v, 2, "-q", "1", "-t", "qos/test")
		if !slices.Equal(s.Granted, []int{1}) {
			t.Errorf("SUBACK for a QoS 1 subscription granted %v, want [1]", s.Granted)
		}
		out := publish(t, b, v, "-q", "0", "-t", "qos/test", "-m", "zero")
		if strings.Contains(out, "PUBACK") {
			t.Errorf("a QoS 0 PUBLISH got a PUBACK (4.3.1: no response is sent by the receiver):\n%s", out)
		}
		requirePuback(t, v, publish(t, b, v, "-q", "1", "-t", "qos/test", "-m", "one"))
		got := s.messages(t)
		want := []subMsg{{Topic: "qos/test", QoS: 0, Payload: []byte("zero")}, {Topic: "qos/test", QoS: 1, Payload: []byte("one")}}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("QoS 1 subscriber got %v, want %v", got, want)
		}
	})
}

// TestMQTT_3_8_4_DeliveredQoSIsMinimumOfPublishedAndGranted: "The QoS of
// Payload Messages sent in response to a Subscription MUST be the minimum
// of the QoS of the originally published message and the maximum QoS
// granted by the Server" (3.1.1 [MQTT-3.8.4-6], 5.0 [MQTT-3.8.4-8]).
func TestMQTT_3_8_4_DeliveredQoSIsMinimumOfPublishedAndGranted(t *testing.T) {
	forMQTTVersions(t, func(t *testing.T, v string, b *tandemProc) {
		s := startSub(t, b, v, 1, "-q", "0", "-t", "qos/min")
		if !slices.Equal(s.Granted, []int{0}) {
			t.Errorf("SUBACK for a QoS 0 subscription granted %v, want [0]", s.Granted)
		}
		requirePuback(t, v, publish(t, b, v, "-q", "1", "-t", "qos/min", "-m", "one"))
		got := s.messages(t)
		if len(got) == 1 && got[0].QoS != 0 {
			t.Errorf("a QoS 1 message reached a QoS 0 subscription at QoS %d, want 0", got[0].QoS)
		}
	})
}

// TestMQTT_4_7_1_WildcardSubscriptions: '+' matches exactly one level, an
// empty one included ("sport/+" matches "sport/"); '#' matches the parent
// and any number of child levels ("sport/#" also matches "sport")
// (4.7.1.2, 4.7.1.3). Each subscriber ends with a marker, so anything it
// should not have got shows up in its list.
func TestMQTT_4_7_1_WildcardSubscriptions(t *testing.T) {
	forMQTTVersions(t, func(t *testing.T, v string, b *tandemProc) {
		plusTemp := startSub(t, b, v, 3, "-q", "1", "-t", "sensors/+/temp")
		hash := startSub(t, b, v, 8, "-q", "1", "-t", "sensors/#")
		plus := startSub(t, b, v, 2, "-q", "1", "-t", "sensors/+")
		for _, topic := range []string{
			"sensors/room1/temp", "sensors/room1/humidity", "sensors/room1/temp/raw", "sensors//temp",
			"sensors/room2", "sensors", "other/room1/temp", "sensors/end/temp", "sensors/end",
		} {
			requirePuback(t, v, publish(t, b, v, "-q", "1", "-t", topic, "-m", topic))
		}
		for _, c := range []struct {
			sub    *mosqSub
			filter string
			want   []string
		}{
			{plusTemp, "sensors/+/temp", []string{"sensors/room1/temp", "sensors//temp", "sensors/end/temp"}},
			{hash, "sensors/#", []string{"sensors/room1/temp", "sensors/room1/humidity", "sensors/room1/temp/raw", "sensors//temp",
				"sensors/room2", "sensors", "sensors/end/temp", "sensors/end"}},
			{plus, "sensors/+", []string{"sensors/room2", "sensors/end"}},
		} {
			msgs := c.sub.messages(t)
			if got := topics(msgs); !slices.Equal(got, c.want) {
				t.Errorf("filter %s got topics %q, want %q (in publish order)", c.filter, got, c.want)
			}
			for _, m := range msgs {
				if string(m.Payload) != m.Topic {
					t.Errorf("filter %s: message on %s has payload %q, published with %q", c.filter, m.Topic, m.Payload, m.Topic)
				}
			}
		}
	})
}

// TestMQTT_4_7_2_1_DollarTopicsNotMatchedByWildcard: "The Server MUST NOT
// match Topic Filters starting with a wildcard character (# or +) with
// Topic Names beginning with a $ character" [MQTT-4.7.2-1]; a filter that
// names the $ topic does get it.
func TestMQTT_4_7_2_1_DollarTopicsNotMatchedByWildcard(t *testing.T) {
	forMQTTVersions(t, func(t *testing.T, v string, b *tandemProc) {
		hash := startSub(t, b, v, 1, "-q", "1", "-t", "#")
		plus := startSub(t, b, v, 1, "-q", "1", "-t", "+/status")
		exact := startSub(t, b, v, 1, "-q", "1", "-t", "$app/status")
		requirePuback(t, v, publish(t, b, v, "-q", "1", "-t", "$app/status", "-m", "dollar"))
		requirePuback(t, v, publish(t, b, v, "-q", "1", "-t", "plain/status", "-m", "plain"))
		if got := topics(hash.messages(t)); !slices.Equal(got, []string{"plain/status"}) {
			t.Errorf("filter # got %q, want only plain/status: a $ topic matched a leading wildcard [MQTT-4.7.2-1]", got)
		}
		if got := topics(plus.messages(t)); !slices.Equal(got, []string{"plain/status"}) {
			t.Errorf("filter +/status got %q, want only plain/status: a $ topic matched a leading wildcard [MQTT-4.7.2-1]", got)
		}
		if got := topics(exact.messages(t)); !slices.Equal(got, []string{"$app/status"}) {
			t.Errorf("filter $app/status got %q, want [$app/status]", got)
		}
	})
}

// TestMQTT_3_3_2_PropertiesForwardedUnaltered: the Server MUST send the
// Payload Format Indicator [MQTT-3.3.2-4], Response Topic [MQTT-3.3.2-15],
// Correlation Data [MQTT-3.3.2-16], all User Properties [MQTT-3.3.2-17] in
// their order [MQTT-3.3.2-18] and the Content Type [MQTT-3.3.2-20]
// unaltered to the subscriber (5.0 3.3.2.3). A 3.1.1 subscriber to the
// same topic gets the message without them.
func TestMQTT_3_3_2_PropertiesForwardedUnaltered(t *testing.T) {
	requireMosquitto(t)
	b := startTandem(t, t.TempDir())
	s5 := startSub(t, b, "mqttv5", 1, "-q", "1", "-t", "props/#")
	s3 := startSub(t, b, "mqttv311", 1, "-q", "1", "-t", "props/#")
	requirePuback(t, "mqttv5", publish(t, b, "mqttv5", "-q", "1", "-t", "props/kitchen/temp", "-m", "21.5",
		"-D", "publish", "content-type", "text/plain; charset=utf-8",
		"-D", "publish", "payload-format-indicator", "1",
		"-D", "publish", "response-topic", "replies/kitchen",
		"-D", "publish", "correlation-data", "req-42",
		"-D", "publish", "user-property", "unit", "C",
		"-D", "publish", "user-property", "sensor", "t1",
		"-D", "publish", "user-property", "unit", "K", // a repeated key is allowed (3.3.2.3.7)
	))
	want := subMsg{Topic: "props/kitchen/temp", QoS: 1, Payload: []byte("21.5"),
		ContentType: "text/plain; charset=utf-8", PayloadFormat: "1", ResponseTopic: "replies/kitchen", Correlation: "req-42",
		User: []string{"unit:C", "sensor:t1", "unit:K"}}
	if got := s5.messages(t); len(got) != 1 || fmt.Sprint(got[0]) != fmt.Sprint(want) {
		t.Errorf("MQTT 5 subscriber got %v, want %v", got, want)
	}
	want = subMsg{Topic: "props/kitchen/temp", QoS: 1, Payload: []byte("21.5")}
	if got := s3.messages(t); len(got) != 1 || fmt.Sprint(got[0]) != fmt.Sprint(want) {
		t.Errorf("MQTT 3.1.1 subscriber got %v, want %v", got, want)
	}
}

// TestMQTT_3_3_3_PayloadBytesUnaltered: the payload is application data
// whose content and format are the application's (3.3.3): every byte value,
// NULs included, arrives as sent, and a zero-length payload is valid.
func TestMQTT_3_3_3_PayloadBytesUnaltered(t *testing.T) {
	payload := []byte("\x00\x00nul\x00head\r\n")
	for i := range 256 {
		payload = append(payload, byte(i))
	}
	payload = append(payload, 0, 0)
	file := filepath.Join(t.TempDir(), "payload.bin")
	if err := os.WriteFile(file, payload, 0o600); err != nil {
		t.Fatal(err)
	}
	forMQTTVersions(t, func(t *testing.T, v string, b *tandemProc) {
		s := startSub(t, b, v, 3, "-q", "1", "-t", "bin/+")
		requirePuback(t, v, publish(t, b, v, "-q", "1", "-t", "bin/q1", "-f", file))
		publish(t, b, v, "-q", "0", "-t", "bin/q0", "-f", file)
		requirePuback(t, v, publish(t, b, v, "-q", "1", "-t", "bin/empty", "-n"))
		got := s.messages(t)
		if len(got) != 3 {
			t.Fatalf("got %d messages, want 3", len(got))
		}
		for i, topic := range []string{"bin/q1", "bin/q0"} {
			if got[i].Topic != topic || !bytes.Equal(got[i].Payload, payload) {
				t.Errorf("message %d: %s with %d bytes %x, want %s with the %d bytes sent %x", i, got[i].Topic, len(got[i].Payload), got[i].Payload, topic, len(payload), payload)
			}
		}
		if got[2].Topic != "bin/empty" || len(got[2].Payload) != 0 {
			t.Errorf("zero-length publish arrived as %v", got[2])
		}
	})
}

// dialSTOMP connects a go-stomp client to b.
func dialSTOMP(t *testing.T, b *tandemProc) *gostomp.Conn {
	t.Helper()
	c, err := gostomp.Dial("tcp", b.STOMP, gostomp.ConnOpt.HeartBeat(0, 0))
	if err != nil {
		t.Fatalf("STOMP connect: %v", err)
	}
	t.Cleanup(func() { _ = c.Disconnect() })
	return c
}

// TestMQTT_CrossProtocol_PublishReachesSTOMPTopic: an MQTT PUBLISH to
// sensors/room1/temp reaches a STOMP subscriber of /topic/sensors.room1.temp
// ('/' and '.' swap, README "Try it with MQTT"); MQTT 5 content type and
// user properties arrive as STOMP headers.
func TestMQTT_CrossProtocol_PublishReachesSTOMPTopic(t *testing.T) {
	forMQTTVersions(t, func(t *testing.T, v string, b *tandemProc) {
		sc := dialSTOMP(t, b)
		sub, err := sc.Subscribe("/topic/sensors.room1.temp", gostomp.AckAuto)
		if err != nil {
			t.Fatal(err)
		}
		// A connection's frames are handled in order: this RECEIPT means
		// the SUBSCRIBE above is in place.
		if err := sc.Send("/topic/unrelated", "", []byte("x"), gostomp.SendOpt.Receipt); err != nil {
			t.Fatal(err)
		}
		args := []string{"-q", "1", "-t", "sensors/room1/temp", "-m", "21.5"}
		if v == "mqttv5" {
			args = append(args, "-D", "publish", "content-type", "text/plain", "-D", "publish", "user-property", "unit", "C")
		}
		requirePuback(t, v, publish(t, b, v, args...))
		var m *gostomp.Message
		select {
		case m = <-sub.C:
		case <-time.After(mqttWait):
			t.Fatalf("the STOMP subscriber got nothing within %v", mqttWait)
		}
		if m.Err != nil {
			t.Fatalf("STOMP subscription: %v", m.Err)
		}
		if string(m.Body) != "21.5" || m.Destination != "/topic/sensors.room1.temp" {
			t.Errorf("STOMP got %q at %s, want \"21.5\" at /topic/sensors.room1.temp", m.Body, m.Destination)
		}
		if v == "mqttv5" && (m.ContentType != "text/plain" || m.Header.Get("unit") != "C") {
			t.Errorf("STOMP headers %v, want content-type:text/plain and unit:C from the MQTT 5 properties", m.Header)
		}
	})
}

// TestMQTT_CrossProtocol_STOMPSendReachesMQTTWildcard: a STOMP SEND to
// /topic/a.b reaches an MQTT subscriber of a/+ on topic a/b; to an MQTT 5
// subscriber the STOMP content-type is the Content Type property.
func TestMQTT_CrossProtocol_STOMPSendReachesMQTTWildcard(t *testing.T) {
	forMQTTVersions(t, func(t *testing.T, v string, b *tandemProc) {
		s := startSub(t, b, v, 1, "-q", "1", "-t", "a/+")
		sc := dialSTOMP(t, b)
		if err := sc.Send("/topic/a.b", "text/plain", []byte("from stomp"), gostomp.SendOpt.Receipt); err != nil {
			t.Fatal(err)
		}
		want := subMsg{Topic: "a/b", QoS: 1, Payload: []byte("from stomp")}
		if v == "mqttv5" {
			want.ContentType = "text/plain"
		}
		if got := s.messages(t); len(got) != 1 || fmt.Sprint(got[0]) != fmt.Sprint(want) {
			t.Errorf("MQTT subscriber of a/+ got %v, want %v", got, want)
		}
	})
}
