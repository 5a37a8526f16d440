package main

import (
	"bufio"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	pahov3 "github.com/eclipse/paho.mqtt.golang"
	gostomp "github.com/go-stomp/stomp/v3"
	"golang.org/x/crypto/bcrypt"
)

// scrape fetches /metrics (no token: it is open on the admin listener) and
// returns every sample by its series, `name{label="value",...}`.
func scrape(t *testing.T, admin string) map[string]float64 {
	t.Helper()
	resp, err := client.Get("http://" + admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("/metrics: %s", resp.Status)
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("metrics line %q: %v", line, err)
		}
		out[line[:i]] = v
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestMetricsMatchTraffic sends messages over both protocols and all four
// transports, consumes and acks some, and checks the figures /metrics
// gives against them: per queue, per protocol and transport, and the
// fsync histogram.
func TestMetricsMatchTraffic(t *testing.T) {
	b, tlsCfg, _, _ := tlsBroker(t, nil)
	admin := b.addr(t, "admin")
	wss := "wss://" + b.addr(t, "websocket_tls")

	// Before any traffic the connection series are there, at 0.
	m := scrape(t, admin)
	for _, s := range []string{`tandem_connections{protocol="mqtt",transport="tcp"}`, `tandem_connections{protocol="stomp",transport="wss"}`} {
		if v, ok := m[s]; !ok || v != 0 {
			t.Fatalf("%s = %v (present %v) before any connection", s, v, ok)
		}
	}

	// 6 messages from STOMP over TCP, 4 from MQTT over TLS, each confirmed
	// (RECEIPT, PUBACK) once stored.
	sp, err := gostomp.Dial("tcp", b.addr(t, "stomp"), gostomp.ConnOpt.HeartBeat(0, 0))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sp.Disconnect() })
	for i := range 6 {
		if err := sp.Send("/queue/m", "text/plain", []byte(fmt.Sprint("s", i)), gostomp.SendOpt.Receipt); err != nil {
			t.Fatal(err)
		}
	}
	mp := mqtt3At(t, pahov3.NewClientOptions().AddBroker("ssl://"+b.addr(t, "mqtt_tls")).SetTLSConfig(tlsCfg), "pub", "unused/x")
	for i := range 4 {
		if tok := mp.Publish("$queue/m", 1, false, fmt.Sprint("m", i)); !tok.WaitTimeout(waitTimeout) || tok.Error() != nil {
			t.Fatalf("publish: %v", tok.Error())
		}
	}
	// An MQTT client over wss:// and a STOMP consumer over ws://.
	mqtt3At(t, pahov3.NewClientOptions().AddBroker(wss+"/mqtt").SetTLSConfig(tlsCfg), "watcher", "unused/y")
	sc := stompOverWS(t, "ws://"+b.addr(t, "websocket")+"/stomp", nil)
	sub, err := sc.Subscribe("/queue/m", gostomp.AckClientIndividual, gostomp.SubscribeOpt.Header("prefetch-count", "100"))
	if err != nil {
		t.Fatal(err)
	}
	for i := range 10 {
		msg := recvSTOMP(t, sub)
		if i < 7 {
			if err := sc.Ack(msg); err != nil {
				t.Fatal(err)
			}
		}
	}

	want := map[string]float64{
		`tandem_queue_published_total{queue="m"}`:                          10,
		`tandem_queue_delivered_total{queue="m"}`:                          10,
		`tandem_queue_acked_total{queue="m"}`:                              7,
		`tandem_queue_redelivered_total{queue="m"}`:                        0,
		`tandem_queue_dead_lettered_total{queue="m"}`:                      0,
		`tandem_queue_expired_total{queue="m"}`:                            0,
		`tandem_queue_messages{queue="m"}`:                                 3,
		`tandem_queue_messages_unacked{queue="m"}`:                         3,
		`tandem_queue_messages_ready{queue="m"}`:                           0,
		`tandem_queue_consumers{queue="m"}`:                                1,
		`tandem_connections{protocol="stomp",transport="tcp"}`:             1,
		`tandem_connections{protocol="stomp",transport="websocket"}`:       1,
		`tandem_connections{protocol="stomp",transport="tls"}`:             0,
		`tandem_connections{protocol="mqtt",transport="tls"}`:              1,
		`tandem_connections{protocol="mqtt",transport="wss"}`:              1,
		`tandem_connections{protocol="mqtt",transport="tcp"}`:              0,
		`tandem_connections_opened_total{protocol="mqtt",transport="wss"}`: 1,
	}
	// ACKs are not confirmed to a STOMP client: wait until the broker has
	// applied them (bounded), then compare everything.
	deadline := time.Now().Add(waitTimeout)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		m = scrape(t, admin)
		if m[`tandem_queue_acked_total{queue="m"}`] == 7 || time.Now().After(deadline) {
			break
		}
		<-tick.C
	}
	for s, v := range want {
		if got, ok := m[s]; !ok || got != v {
			t.Errorf("%s = %v (present %v), want %v", s, got, ok, v)
		}
	}
	if age := m[`tandem_queue_oldest_message_age_seconds{queue="m"}`]; age <= 0 || age > waitTimeout.Seconds()*4 {
		t.Errorf("oldest message age %v s", age)
	}
	// Every confirmed publish was fsynced: at least one group commit.
	if n := m["tandem_fsync_duration_seconds_count"]; n < 1 {
		t.Errorf("fsync histogram count %v", n)
	}
	if _, ok := m[`go_goroutines`]; !ok {
		t.Error("no Go runtime series")
	}

	// The consumer leaves: its unacked messages are ready again, and the
	// connection gauge drops.
	_ = sc.Disconnect() // over a WebSocket it reports closing the socket the server closed
	deadline = time.Now().Add(waitTimeout)
	for {
		m = scrape(t, admin)
		if m[`tandem_queue_messages_ready{queue="m"}`] == 3 && m[`tandem_connections{protocol="stomp",transport="websocket"}`] == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after the consumer left: ready %v, stomp websocket connections %v",
				m[`tandem_queue_messages_ready{queue="m"}`], m[`tandem_connections{protocol="stomp",transport="websocket"}`])
		}
		<-tick.C
	}
}

// TestMetricsSummarizeClientQueues checks that an MQTT persistent
// session's queue is counted by kind, not exported as a series of its own.
func TestMetricsSummarizeClientQueues(t *testing.T) {
	b := startInProcess(t, nil)
	c := &mqtt3{c: make(chan pahov3.Message, 10)}
	c.Client = pahov3.NewClient(pahov3.NewClientOptions().AddBroker("tcp://" + b.addr(t, "mqtt")).SetClientID("dev1").
		SetProtocolVersion(4).SetCleanSession(false).SetAutoReconnect(false))
	if tok := c.Connect(); !tok.WaitTimeout(waitTimeout) || tok.Error() != nil {
		t.Fatalf("connect: %v", tok.Error())
	}
	t.Cleanup(func() { c.Disconnect(0) })
	if tok := c.Subscribe("d/#", 1, nil); !tok.WaitTimeout(waitTimeout) || tok.Error() != nil {
		t.Fatalf("subscribe: %v", tok.Error())
	}
	m := scrape(t, b.addr(t, "admin"))
	if v := m[`tandem_client_queues{kind="mqtt_session"}`]; v != 1 {
		t.Errorf("mqtt_session client queues = %v, want 1", v)
	}
	for s := range m {
		if strings.Contains(s, `queue="$mqtt/`) {
			t.Errorf("a session queue has its own series: %s", s)
		}
	}
}

// TestMetricsOddQueueNames scrapes with a queue whose name is not UTF-8
// (a STOMP client can make one): the scrape still answers, with the name
// made valid.
func TestMetricsOddQueueNames(t *testing.T) {
	dataDir := t.TempDir()
	b := startInProcess(t, map[string]string{"TANDEM_DATA_DIR": dataDir})
	ctlOK(t, dataDir, "queue", "create", "caf\xe9")
	m := scrape(t, b.addr(t, "admin"))
	if v, ok := m["tandem_queue_messages{queue=\"caf\uFFFD\"}"]; !ok || v != 0 {
		t.Fatalf("series of the queue: %v %v", v, ok)
	}
}

// TestMetricsCountRefusals: a failed login and a subscription outside the
// user's rules are each counted in tandem_refusals_total by reason.
func TestMetricsCountRefusals(t *testing.T) {
	hash, err := bcrypt.GenerateFromPassword([]byte("pw"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	config := filepath.Join(t.TempDir(), "tandem.yaml")
	if err := os.WriteFile(config, []byte("auth:\n  anonymous: none\n  users:\n    - name: alice\n      password_hash: \""+string(hash)+"\"\n      subscribe: [\"a/#\"]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	b := startInProcess(t, nil, "--config", config)
	stompAddr := b.addr(t, "stomp")
	if _, err := gostomp.Dial("tcp", stompAddr, gostomp.ConnOpt.Login("alice", "wrong"), gostomp.ConnOpt.HeartBeat(0, 0)); err == nil {
		t.Fatal("a wrong password was let in")
	}
	sc, err := gostomp.Dial("tcp", stompAddr, gostomp.ConnOpt.Login("alice", "pw"), gostomp.ConnOpt.HeartBeat(0, 0))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sc.Subscribe("/topic/b.#", gostomp.AckAuto); err != nil {
		t.Fatal(err)
	}
	// The refusal is an ERROR: a RECEIPT never comes, the connection ends.
	_ = sc.Send("/topic/a.x", "", []byte("x"), gostomp.SendOpt.Receipt)
	m := scrape(t, b.addr(t, "admin"))
	for reason, want := range map[string]float64{"authentication": 1, "subscribe": 1, "publish": 0, "connections_total": 0} {
		if got := m[`tandem_refusals_total{reason="`+reason+`"}`]; got != want {
			t.Errorf("refusals %s = %v, want %v", reason, got, want)
		}
	}
}
