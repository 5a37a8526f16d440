package conformance

import (
	"context"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	gostomp "github.com/go-stomp/stomp/v3"
	"github.com/go-stomp/stomp/v3/frame"
)

// TestKill9LosesNoConfirmedMessage is the durability contract of DESIGN.md
// ("Delivery semantics"): a RECEIPT for a message routed to a durable queue
// is sent only after that message is fsynced, so `kill -9` loses no
// confirmed message; and an ACK the broker confirmed stays applied.
//
// Producers send persistent messages with a receipt on every SEND and
// record those whose RECEIPT arrived. Consumers ack with confirmation and
// record what the broker confirmed. After a few thousand receipts the
// broker is SIGKILLed mid-traffic and restarted on the same data
// directory, and /queue/durable is drained:
//
//   - every message whose RECEIPT arrived and that no consumer ACKed must
//     be there (zero lost);
//   - no message whose ACK was confirmed may come back.
//
// Messages in flight at the kill (SENT without a RECEIPT yet, ACKed without
// confirmation yet) may go either way; the test counts them.
//
// go-stomp's Conn.Ack takes no receipt option, so the two consumers confirm
// their acks the two ways a STOMP client can:
//   - "tx": go-stomp's client, acking inside a transaction committed with
//     CommitWithReceipt (BEGIN, ACK transaction:t, COMMIT receipt:r);
//   - "raw": go-stomp's frame codec over a socket, sending
//     ACK id:… receipt:r itself, as the spec allows on any client frame.
func TestKill9LosesNoConfirmedMessage(t *testing.T) {
	const (
		producers     = 4
		queue         = "/queue/durable"
		killAfter     = 5000             // receipts before the kill
		maxTraffic    = 60 * time.Second // at most this long of traffic
		perProducer   = 100_000          // bound on messages per producer
		clientTimeout = 20 * time.Second // for clients to notice the kill
		drainTimeout  = 60 * time.Second
	)
	dir := t.TempDir()
	b := startTandem(t, dir)

	l := newLedger()
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	var wg sync.WaitGroup
	for p := range producers {
		wg.Go(func() { produce(ctx, t, b.STOMP, queue, p, perProducer, l) })
	}
	wg.Go(func() { consumeTx(ctx, t, b.STOMP, queue, l) })
	wg.Go(func() { consumeRaw(ctx, t, b.STOMP, queue, l) })

	// Kill once enough receipts arrived, or when the traffic bound ends.
	start := time.Now()
	trafficCap := time.NewTimer(maxTraffic)
	defer trafficCap.Stop()
	func() {
		for {
			select {
			case <-l.changed:
				if l.count() >= killAfter {
					return
				}
			case <-trafficCap.C:
				t.Logf("only %d receipts after %v; killing anyway", l.count(), maxTraffic)
				return
			}
		}
	}()
	b.Kill(t)
	traffic := time.Since(start)
	stop()

	// Every client sees its connection drop; wait for them to record
	// their last results, but not forever (a go-stomp call blocked on a
	// dead connection only delays its own results, which then count as
	// unconfirmed: the safe side for both checks).
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(clientTimeout):
		t.Logf("some clients had not returned %v after the kill; their in-flight operations count as unconfirmed", clientTimeout)
	}
	s := l.freeze()
	t.Logf("traffic %v: %d SENT, %d RECEIPTs; %d delivered, %d ACKs confirmed (tx %d, raw %d), %d ACKs unconfirmed at the kill",
		traffic.Round(time.Millisecond), s.attempted, len(s.confirmed), s.delivered, len(s.acked), s.ackedBy["tx"], s.ackedBy["raw"], s.ackPending)
	if len(s.confirmed) < 1000 {
		t.Logf("note: fewer than 1000 receipts before the kill; the test is weaker on a machine this slow")
	}

	b2 := startTandem(t, dir)
	got := drain(t, b2.STOMP, queue, s, drainTimeout)
	b2.Stop(t)

	// Judge.
	counts := map[string]int{}
	for _, body := range got {
		counts[body]++
	}
	var lost, resurrected, unknown, dups []string
	for body := range s.confirmed {
		if !s.ackSent[body] && counts[body] == 0 {
			lost = append(lost, body)
		}
	}
	unconfirmedPresent, redelivered := 0, 0
	for body, n := range counts {
		if n > 1 {
			dups = append(dups, fmt.Sprintf("%s ×%d", body, n))
		}
		switch {
		case s.acked[body]:
			resurrected = append(resurrected, body)
		case !s.sent[body]:
			unknown = append(unknown, body)
		case !s.confirmed[body]:
			unconfirmedPresent++
		}
		if s.deliveredSet[body] {
			redelivered++
		}
	}
	slices.Sort(lost)
	slices.Sort(resurrected)
	slices.Sort(dups)
	t.Logf("after restart: drained %d messages (%d distinct): lost %d, acked-but-back %d, duplicates %d, "+
		"present without a RECEIPT %d, delivered before the kill and again after %d",
		len(got), len(counts), len(lost), len(resurrected), len(dups), unconfirmedPresent, redelivered)
	if len(dups) > 0 {
		t.Logf("duplicates after restart (first few): %s", firstFew(dups))
	}
	if len(lost) > 0 {
		t.Errorf("kill -9 lost %d messages whose RECEIPT had arrived and that no consumer ever ACKed (DESIGN.md: a RECEIPT is sent only after fsync); first few: %s",
			len(lost), firstFew(lost))
	}
	if len(resurrected) > 0 {
		t.Errorf("%d messages whose ACK the broker had confirmed came back after the restart; first few: %s",
			len(resurrected), firstFew(resurrected))
	}
	if len(unknown) > 0 {
		t.Errorf("drained %d messages nobody sent (corrupted bodies?); first few: %q", len(unknown), unknown[:min(len(unknown), 5)])
	}
}

// ledger is what the clients saw, shared by their goroutines.
type ledger struct {
	mu           sync.Mutex
	frozen       bool            // set by freeze: later results are ignored
	sent         map[string]bool // SENT (RECEIPT or not)
	confirmed    map[string]bool // RECEIPT arrived
	deliveredSet map[string]bool
	ackSent      map[string]bool // ACK sent (confirmed or not)
	acked        map[string]bool // ACK confirmed
	ackedBy      map[string]int
	ackPending   int // ACKs sent whose confirmation had not arrived
	changed      chan struct{}
}

func newLedger() *ledger {
	return &ledger{
		sent: map[string]bool{}, confirmed: map[string]bool{}, deliveredSet: map[string]bool{},
		ackSent: map[string]bool{}, acked: map[string]bool{}, ackedBy: map[string]int{}, changed: make(chan struct{}, 1),
	}
}

func (l *ledger) update(f func()) {
	l.mu.Lock()
	if !l.frozen {
		f()
	}
	l.mu.Unlock()
	select {
	case l.changed <- struct{}{}:
	default:
	}
}

func (l *ledger) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.confirmed)
}

// snapshot is a frozen ledger.
type snapshot struct {
	attempted, delivered int
	ackPending           int
	sent, confirmed      map[string]bool
	deliveredSet, acked  map[string]bool
	ackSent              map[string]bool
	ackedBy              map[string]int
}

func (l *ledger) freeze() snapshot {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.frozen = true
	return snapshot{
		attempted: len(l.sent), delivered: len(l.deliveredSet), ackPending: l.ackPending,
		sent: l.sent, confirmed: l.confirmed, deliveredSet: l.deliveredSet, acked: l.acked, ackSent: l.ackSent, ackedBy: l.ackedBy,
	}
}

// dialOpts keep go-stomp's calls bounded once the broker is gone.
var dialOpts = []func(*gostomp.Conn) error{
	gostomp.ConnOpt.HeartBeat(0, 0),
	gostomp.ConnOpt.MsgSendTimeout(5 * time.Second),
	gostomp.ConnOpt.RcvReceiptTimeout(15 * time.Second),
	gostomp.ConnOpt.AcceptVersion(gostomp.V12),
	// The kill makes every client log "connection closed"; that is the
	// point of the test, not news.
	gostomp.ConnOpt.Logger(quietLogger{}),
}

// quietLogger discards go-stomp's log lines.
type quietLogger struct{}

func (quietLogger) Debugf(string, ...any)   {}
func (quietLogger) Infof(string, ...any)    {}
func (quietLogger) Warningf(string, ...any) {}
func (quietLogger) Errorf(string, ...any)   {}
func (quietLogger) Debug(string)            {}
func (quietLogger) Info(string)             {}
func (quietLogger) Warning(string)          {}
func (quietLogger) Error(string)            {}

// produce sends persistent messages with a receipt each until ctx ends,
// the connection fails (the kill) or n are sent.
func produce(ctx context.Context, t *testing.T, addr, queue string, p, n int, l *ledger) {
	conn, err := gostomp.Dial("tcp", addr, dialOpts...)
	if err != nil {
		t.Errorf("producer %d: %v", p, err)
		return
	}
	defer func() { _ = conn.MustDisconnect() }()
	pad := strings.Repeat("x", 64)
	for i := 0; i < n && ctx.Err() == nil; i++ {
		body := fmt.Sprintf("p%d-%07d %s", p, i, pad)
		l.update(func() { l.sent[body] = true })
		err := conn.Send(queue, "text/plain", []byte(body),
			gostomp.SendOpt.Receipt, gostomp.SendOpt.Header("persistent", "true"))
		if err != nil {
			return // the broker is gone
		}
		l.update(func() { l.confirmed[body] = true })
	}
}

// consumeTx is go-stomp's client: client-individual, each ACK in a
// transaction committed with a receipt.
func consumeTx(ctx context.Context, t *testing.T, addr, queue string, l *ledger) {
	conn, err := gostomp.Dial("tcp", addr, dialOpts...)
	if err != nil {
		t.Errorf("consumer tx: %v", err)
		return
	}
	defer func() { _ = conn.MustDisconnect() }()
	// go-stomp hands MESSAGEs to a channel of 16 from the goroutine that
	// also reads RECEIPTs: with more unacked messages than that in flight,
	// waiting for the COMMIT's receipt would deadlock the client. The
	// prefetch-count keeps the broker from sending more.
	sub, err := conn.Subscribe(queue, gostomp.AckClientIndividual, gostomp.SubscribeOpt.Header("prefetch-count", "8"))
	if err != nil {
		t.Errorf("consumer tx: subscribe: %v", err)
		return
	}
	for {
		var msg *gostomp.Message
		select {
		case msg = <-sub.C:
		case <-ctx.Done():
			return
		}
		if msg == nil || msg.Err != nil {
			return
		}
		body := string(msg.Body)
		l.update(func() { l.deliveredSet[body] = true })
		tx, err := conn.BeginWithError()
		if err != nil {
			return
		}
		if err := tx.Ack(msg); err != nil {
			return
		}
		l.update(func() { l.ackPending++; l.ackSent[body] = true })
		if err := tx.CommitWithReceipt(); err != nil {
			return
		}
		l.update(func() { l.ackPending--; l.acked[body] = true; l.ackedBy["tx"]++ })
	}
}

// consumeRaw speaks STOMP 1.2 with go-stomp's frame codec:
// client-individual, every ACK with its own receipt header.
func consumeRaw(ctx context.Context, t *testing.T, addr, queue string, l *ledger) {
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Errorf("consumer raw: %v", err)
		return
	}
	stop := context.AfterFunc(ctx, func() { _ = nc.Close() })
	defer stop()
	defer nc.Close()
	r, w := frame.NewReader(nc), frame.NewWriter(nc)
	if err := w.Write(frame.New(frame.CONNECT, frame.AcceptVersion, "1.2", frame.Host, "localhost", frame.HeartBeat, "0,0")); err != nil {
		t.Errorf("consumer raw: CONNECT: %v", err)
		return
	}
	if f, err := r.Read(); err != nil || f == nil || f.Command != frame.CONNECTED {
		t.Errorf("consumer raw: want CONNECTED, got %v (%v)", f, err)
		return
	}
	if err := w.Write(frame.New(frame.SUBSCRIBE, frame.Id, "raw", frame.Destination, queue, frame.Ack, "client-individual")); err != nil {
		return
	}
	pending := map[string]string{} // receipt id -> body
	for n := 0; ; {
		f, err := r.Read()
		if err != nil {
			return // the broker is gone
		}
		if f == nil {
			continue // heart-beat
		}
		switch f.Command {
		case frame.MESSAGE:
			body := string(f.Body)
			l.update(func() { l.deliveredSet[body] = true })
			n++
			rid := "ack-" + strconv.Itoa(n)
			pending[rid] = body
			l.update(func() { l.ackPending++; l.ackSent[body] = true })
			if err := w.Write(frame.New(frame.ACK, frame.Id, f.Header.Get(frame.Ack), frame.Receipt, rid)); err != nil {
				return
			}
		case frame.RECEIPT:
			rid := f.Header.Get(frame.ReceiptId)
			body, ok := pending[rid]
			if !ok {
				t.Errorf("consumer raw: RECEIPT for unknown receipt-id %q", rid)
				return
			}
			delete(pending, rid)
			l.update(func() { l.ackPending--; l.acked[body] = true; l.ackedBy["raw"]++ })
		case frame.ERROR:
			t.Errorf("consumer raw: ERROR %s: %s", f.Header.Get(frame.Message), f.Body)
			return
		}
	}
}

// drain reads the queue after the restart until every message it must
// hold has arrived and a marker sent behind them has too (the queue is
// FIFO, so anything else it holds came before the marker).
func drain(t *testing.T, addr, queue string, s snapshot, timeout time.Duration) []string {
	t.Helper()
	want := map[string]bool{}
	for body := range s.confirmed {
		if !s.ackSent[body] {
			want[body] = true
		}
	}
	conn, err := gostomp.Dial("tcp", addr, dialOpts...)
	if err != nil {
		t.Fatalf("drain: %v", err)
	}
	defer func() { _ = conn.Disconnect() }()
	sub, err := conn.Subscribe(queue, gostomp.AckAuto, gostomp.SubscribeOpt.Header("prefetch-count", "1000"))
	if err != nil {
		t.Fatalf("drain: subscribe: %v", err)
	}
	// The marker goes from a second connection: waiting here for a
	// receipt while MESSAGEs pile up unread would block go-stomp's client.
	const marker = "drain-marker"
	pub, err := gostomp.Dial("tcp", addr, dialOpts...)
	if err != nil {
		t.Fatalf("drain: %v", err)
	}
	defer func() { _ = pub.Disconnect() }()
	if err := pub.Send(queue, "text/plain", []byte(marker), gostomp.SendOpt.Receipt); err != nil {
		t.Fatalf("drain: marker: %v", err)
	}
	var got []string
	missing := len(want)
	seenMarker := false
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	// Once the marker is in, a missing message is lost unless the broker
	// broke FIFO order: give stragglers a little time, then stop.
	var grace <-chan time.Time
	for !seenMarker || missing > 0 {
		select {
		case msg := <-sub.C:
			if msg == nil || msg.Err != nil {
				t.Fatalf("drain: subscription ended: %v", msg)
			}
			body := string(msg.Body)
			if body == marker {
				seenMarker = true
				grace = time.After(markerGrace)
				continue
			}
			if seenMarker && want[body] {
				t.Logf("drain: %q arrived after the marker sent behind it (FIFO order broken)", body)
			}
			if want[body] {
				delete(want, body)
				missing--
			}
			got = append(got, body)
		case <-grace:
			return got
		case <-deadline.C:
			t.Logf("drain: gave up after %v (marker seen: %v, %d expected messages missing)", timeout, seenMarker, missing)
			return got
		}
	}
	return got
}

// markerGrace is how long the drain waits for missing messages once the
// marker sent behind them has arrived.
const markerGrace = 3 * time.Second

// firstFew names up to five messages by the first word of their bodies.
func firstFew(s []string) string {
	var names []string
	for _, body := range s[:min(len(s), 5)] {
		name, _, _ := strings.Cut(body, " ")
		names = append(names, name)
	}
	if len(s) > 5 {
		names = append(names, "…")
	}
	return strings.Join(names, ", ")
}
