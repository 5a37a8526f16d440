package main

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"slices"
	"strings"
	"testing"

	"github.com/mochi-mqtt/server/v2/packets"
)

var testRun = [6]byte{1, 2, 3, 4, 5, 6}

func payloadOf(run [6]byte, p, seq int, ns int64) []byte {
	b := newPayload(64)
	putPayload(b, run, p, seq, ns)
	return b
}

func TestPayloadRoundTrip(t *testing.T) {
	l := newMQTTLedger(testRun, 3, 100, 1, false)
	b := payloadOf(testRun, 2, 99, 0)
	stampPayload(b, 123456789)
	if len(b) != 64 {
		t.Fatalf("payload of %d bytes, want 64", len(b))
	}
	first, ns := l.receive(0, b)
	if !first || ns != 123456789 {
		t.Fatalf("receive = %v, %d; want true, 123456789", first, ns)
	}
	if l.subs[0].seen[2*100+99] != 1 {
		t.Fatal("message 2/99 not marked seen")
	}
	if got := newPayload(5); len(got) != payloadHeader {
		t.Fatalf("newPayload(5) has %d bytes, want the header's %d", len(got), payloadHeader)
	}
}

func TestMQTTLedgerQoS1(t *testing.T) {
	// 2 publishers of up to 5 messages, 2 subscribers, PUBACKs tracked.
	l := newMQTTLedger(testRun, 2, 5, 2, true)
	for seq := range 5 {
		l.markSent(0, seq)
	}
	for seq := range 3 {
		l.markSent(1, seq)
	}
	for _, seq := range []int{0, 1, 2, 3} { // 0/4 not acked
		if !l.markAcked(0, seq) {
			t.Fatalf("first PUBACK of 0/%d reported as a second", seq)
		}
	}
	if l.markAcked(0, 1) {
		t.Fatal("second PUBACK of 0/1 not reported")
	}
	for _, seq := range []int{0, 1, 2} {
		l.markAcked(1, seq)
	}
	// Subscriber 0 gets everything, 0/2 twice. Subscriber 1 misses 0/3
	// (acked: lost) and 0/4 (not acked: in doubt), and 1/0 three times.
	for p, seqs := range [][]int{{0, 1, 2, 2, 3, 4}, {0, 1, 2}} {
		for _, seq := range seqs {
			l.receive(0, payloadOf(testRun, p, seq, 0))
		}
	}
	for p, seqs := range [][]int{{0, 1, 2}, {0, 0, 0, 1, 2}} {
		for _, seq := range seqs {
			l.receive(1, payloadOf(testRun, p, seq, 0))
		}
	}
	// Foreign: another run, a publisher or sequence out of range, too short.
	for _, b := range [][]byte{payloadOf([6]byte{9}, 0, 0, 0), payloadOf(testRun, 2, 0, 0), payloadOf(testRun, 0, 5, 0), []byte("TB")} {
		if first, _ := l.receive(1, b); first {
			t.Fatalf("foreign payload %x counted as a first delivery", b[:min(len(b), payloadHeader)])
		}
	}
	if l.totalSent() != 8 || l.received() != 8+6 {
		t.Fatalf("totalSent %d, received %d; want 8, 14", l.totalSent(), l.received())
	}
	got := l.counts()
	want := mqttCounts{
		Sent:       8,
		Acked:      7,
		Expected:   16,
		Received:   8 + 6,
		Deliveries: 9 + 8,
		Duplicates: 1 + 2,
		Lost:       1, // 0/3 at subscriber 1
		InDoubt:    1, // 0/4 at subscriber 1
		Foreign:    4,
	}
	if got != want {
		t.Fatalf("counts:\n got %+v\nwant %+v", got, want)
	}
	if got.exactlyOnce() {
		t.Fatal("exactlyOnce with loss and duplicates")
	}
}

func TestMQTTLedgerQoS0(t *testing.T) {
	l := newMQTTLedger(testRun, 1, 4, 2, false)
	for seq := range 4 {
		l.markSent(0, seq)
	}
	for _, seq := range []int{0, 1, 2, 3} {
		l.receive(0, payloadOf(testRun, 0, seq, 0))
	}
	l.receive(1, payloadOf(testRun, 0, 1, 0))
	got := l.counts()
	want := mqttCounts{Sent: 4, Expected: 8, Received: 5, Deliveries: 5, Dropped: 3}
	if got != want {
		t.Fatalf("counts:\n got %+v\nwant %+v", got, want)
	}
	if !got.atMostOnce() {
		t.Fatal("drops at QoS 0 made the run fail")
	}
	l.receive(1, payloadOf(testRun, 0, 1, 0))
	if l.counts().atMostOnce() {
		t.Fatal("a duplicate at QoS 0 passed")
	}
}

func TestExactlyOnce(t *testing.T) {
	ok := mqttCounts{Sent: 10, Acked: 10, Expected: 20, Received: 20, Deliveries: 20}
	if !ok.exactlyOnce() {
		t.Fatal("a clean run is not exactly once")
	}
	for name, c := range map[string]mqttCounts{
		"nothing sent":   {},
		"not all acked":  {Sent: 10, Acked: 9, Expected: 20, Received: 20},
		"not all got it": {Sent: 10, Acked: 10, Expected: 20, Received: 19, Lost: 1},
		"duplicate":      {Sent: 10, Acked: 10, Expected: 20, Received: 20, Duplicates: 1},
	} {
		if c.exactlyOnce() {
			t.Errorf("%s: exactly once", name)
		}
	}
}

// TestPublishCodec checks the client's hand-written PUBLISH against
// mochi's codec, both ways.
func TestPublishCodec(t *testing.T) {
	payload := payloadOf(testRun, 1, 7, 42)
	for _, tc := range []struct {
		topic string
		qos   byte
		pid   uint16
		size  int // payload bytes: crosses the 1- and 2-byte remaining length
	}{
		{"tb/abc/0", 0, 0, 64},
		{"tb/abc/+x", 1, 65535, 64},
		{"a", 1, 1, 200},
		{"tb/" + strings.Repeat("x", 300), 0, 0, 20000},
	} {
		body := append(bytes.Repeat([]byte{'.'}, tc.size-len(payload)), payload...)
		raw := appendPublish(nil, tc.topic, tc.qos, tc.pid, body)

		// Ours -> mochi.
		br := bufio.NewReader(bytes.NewReader(raw))
		hb, _ := br.ReadByte()
		n, _, err := packets.DecodeLength(br)
		if err != nil {
			t.Fatal(err)
		}
		pk := packets.Packet{ProtocolVersion: 4}
		if err := pk.FixedHeader.Decode(hb); err != nil {
			t.Fatal(err)
		}
		rest := make([]byte, n)
		if _, err := io.ReadFull(br, rest); err != nil {
			t.Fatal(err)
		}
		if br.Buffered() != 0 {
			t.Fatalf("%q: %d bytes after the packet", tc.topic, br.Buffered())
		}
		if err := pk.PublishDecode(rest); err != nil {
			t.Fatalf("%q: mochi cannot decode our PUBLISH: %v", tc.topic, err)
		}
		if pk.FixedHeader.Type != packets.Publish || pk.TopicName != tc.topic || pk.FixedHeader.Qos != tc.qos ||
			pk.PacketID != tc.pid || !bytes.Equal(pk.Payload, body) {
			t.Fatalf("%q: mochi decoded topic %q, QoS %d, packet id %d, %d payload bytes", tc.topic, pk.TopicName, pk.FixedHeader.Qos, pk.PacketID, len(pk.Payload))
		}

		// mochi -> ours.
		var buf bytes.Buffer
		out := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: tc.qos},
			TopicName: tc.topic, PacketID: tc.pid, Payload: body, ProtocolVersion: 4}
		if err := out.PublishEncode(&buf); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(buf.Bytes(), raw) {
			t.Fatalf("%q: mochi and we encode different bytes", tc.topic)
		}
		c := &mqttConn{br: bufio.NewReaderSize(bytes.NewReader(buf.Bytes()), 4096)}
		typ, flags, pb, err := c.readPacket()
		if err != nil || typ != packets.Publish {
			t.Fatalf("%q: readPacket = %d, %v", tc.topic, typ, err)
		}
		topic, qos, pid, got, err := parsePublish(flags, pb)
		if err != nil || string(topic) != tc.topic || qos != tc.qos || pid != tc.pid || !bytes.Equal(got, body) {
			t.Fatalf("%q: parsePublish = %q %d %d %v", tc.topic, topic, qos, pid, err)
		}
	}
	for _, bad := range [][]byte{nil, {0}, {0, 5, 'a'}} {
		if _, _, _, _, err := parsePublish(2, bad); err == nil {
			t.Errorf("parsePublish(%x) accepted a malformed body", bad)
		}
	}
}

func TestReadPacketBound(t *testing.T) {
	var b []byte
	b = append(b, packets.Publish<<4)
	b = appendVarint(b, maxMQTTPacket+1)
	c := &mqttConn{br: bufio.NewReaderSize(bytes.NewReader(b), 4096)}
	if _, _, _, err := c.readPacket(); err == nil {
		t.Fatal("a packet over the bound was accepted")
	}
}

func TestParseVmRSS(t *testing.T) {
	status := "Name:\tmosquitto\nVmPeak:\t  20000 kB\nVmRSS:\t    8556 kB\nRssAnon:\t 1000 kB\n"
	if kib, err := parseVmRSS(status); err != nil || kib != 8556 {
		t.Fatalf("parseVmRSS = %d, %v; want 8556", kib, err)
	}
	for _, bad := range []string{"Name:\tkthreadd\n", "VmRSS:\t12 MB\n", "VmRSS:\n"} {
		if _, err := parseVmRSS(bad); err == nil {
			t.Errorf("parseVmRSS(%q) did not fail", bad)
		}
	}
}

func TestThousands(t *testing.T) {
	for v, want := range map[float64]string{0: "0", 999: "999", 1000: "1,000", 121113.4: "121,113", 1516562.6: "1,516,563", -4200: "-4,200"} {
		if got := thousands(v); got != want {
			t.Errorf("thousands(%v) = %q, want %q", v, got, want)
		}
	}
}

func TestSummarizeMQTT(t *testing.T) {
	rate := func(round int, scenario, label string, r float64, ok bool) mqttRow {
		return mqttRow{mqttHeader: mqttHeader{Scenario: scenario, Label: label, Round: round}, SteadyRate: r, OK: ok}
	}
	rows := []mqttRow{
		rate(1, "mqtt-persist", "tandem", 50000, true),
		rate(1, "mqtt-persist", "nats", 25000, true),
		rate(1, "mqtt-fanin", "tandem", 100, true),
		rate(1, "mqtt-fanin", "mochi", 200, true),
		rate(2, "mqtt-persist", "tandem", 60000, false), // faster, but lost messages
		rate(2, "mqtt-persist", "nats", 30000, true),
		{mqttHeader: mqttHeader{Scenario: "mqtt-idle", Label: "tandem", Round: 1}, PerConnBytes: 10240, OK: true},
		{mqttHeader: mqttHeader{Scenario: "mqtt-latency", Label: "nats", Round: 1}, Latency: &latencySummary{P99: 1.5}, OK: true},
	}
	lines, labels := summarizeMQTT(rows)
	if !slices.Equal(labels, []string{"tandem", "nats", "mochi"}) {
		t.Fatalf("labels %v", labels)
	}
	var got []string
	for _, l := range lines {
		got = append(got, fmt.Sprintf("%d %s %q %.2f %v tandem=%s nats=%s", l.round, l.scenario, l.target, l.ratio, l.met, l.values["tandem"], l.values["nats"]))
	}
	want := []string{
		`1 mqtt-fanin "tandem >= mochi" 0.50 false tandem=100/s nats=`,
		`1 mqtt-persist "tandem >= nats" 2.00 true tandem=50,000/s nats=25,000/s`,
		`1 mqtt-latency "" 0.00 false tandem= nats=p99 1.50 ms`,
		`1 mqtt-idle "" 0.00 false tandem=10.0 KiB/conn nats=`,
		`2 mqtt-persist "tandem >= nats" 2.00 false tandem=60,000/s (NOT ok) nats=30,000/s`,
	}
	if !slices.Equal(got, want) {
		t.Fatalf("summary:\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}
