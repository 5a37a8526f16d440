package persist_test

// Tests and benchmarks of the engine running on the Pebble store: the
// figures the spine issue sets targets for are measured here.

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/tandem-mq/tandem/engine"
	"github.com/tandem-mq/tandem/persist"
)

// chanSink forwards deliveries to a channel.
type chanSink chan engine.Delivery

func (c chanSink) Deliver(d engine.Delivery) { c <- d }

func openBroker(tb testing.TB, dir string, fs vfs.FS, cfg engine.Config) (*engine.Broker, *persist.Store) {
	tb.Helper()
	st, err := persist.Open(dir, persist.Options{FS: fs})
	if err != nil {
		tb.Fatal(err)
	}
	b, err := engine.Open(st, cfg)
	if err != nil {
		st.Close()
		tb.Fatal(err)
	}
	return b, st
}

func closeBroker(tb testing.TB, b *engine.Broker, st *persist.Store) {
	tb.Helper()
	if err := b.Close(); err != nil {
		tb.Error(err)
	}
	if err := st.Close(); err != nil {
		tb.Error(err)
	}
}

// pump publishes n messages of size bytes to queue from publishers
// goroutines while one consumer acks them, and returns when every message
// is acked.
func pump(tb testing.TB, b *engine.Broker, queue string, n, publishers, size int, qos uint8) time.Duration {
	tb.Helper()
	ch := make(chanSink, 4096)
	c, err := b.Consume(queue, ch, engine.ConsumeOptions{Credit: 1000})
	if err != nil {
		tb.Fatal(err)
	}
	defer c.Close()
	start := time.Now()
	body := bytes.Repeat([]byte("x"), size)
	var wg sync.WaitGroup
	per := n / publishers
	for p := range publishers {
		count := per
		if p == publishers-1 {
			count = n - per*(publishers-1)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range count {
				if err := b.Publish(&engine.Message{Topic: queue, ToQueue: true, Body: body, QoS: qos}); err != nil {
					tb.Error(err)
					return
				}
			}
		}()
	}
	tagsBuf := make([]uint64, 0, 1024)
	deadline := time.After(10 * time.Minute)
	for got := 0; got < n; {
		tagsBuf = tagsBuf[:0]
		select {
		case d := <-ch:
			tagsBuf = append(tagsBuf, d.Tag)
		case <-deadline:
			tb.Fatalf("only %d of %d acked", got, n)
		}
	drain:
		for len(tagsBuf) < cap(tagsBuf) {
			select {
			case d := <-ch:
				tagsBuf = append(tagsBuf, d.Tag)
			default:
				break drain
			}
		}
		if err := c.Ack(false, tagsBuf...); err != nil {
			tb.Fatal(err)
		}
		got += len(tagsBuf)
	}
	wg.Wait()
	return time.Since(start)
}

func TestEngineOnPebbleRestartKeepsBacklogInOrder(t *testing.T) {
	fs := vfs.NewMem()
	b, st := openBroker(t, "db", fs, engine.Config{WindowSize: 16})
	for i := range 500 {
		if err := b.Publish(&engine.Message{Topic: "q", ToQueue: true, Body: []byte(strconv.Itoa(i)), QoS: 1}); err != nil {
			t.Fatal(err)
		}
	}
	closeBroker(t, b, st)
	b, st = openBroker(t, "db", fs, engine.Config{WindowSize: 16})
	defer closeBroker(t, b, st)
	ch := make(chanSink, 1000)
	c, err := b.Consume("q", ch, engine.ConsumeOptions{Credit: 7})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 500 {
		select {
		case d := <-ch:
			if string(d.Msg.Body) != strconv.Itoa(i) {
				t.Fatalf("message %d: got %q", i, d.Msg.Body)
			}
			if err := c.Ack(false, d.Tag); err != nil {
				t.Fatal(err)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("message %d never came", i)
		}
	}
	if info, _ := b.QueueInfo("q"); info.Messages != 0 || info.Bytes != 0 {
		t.Fatalf("after acking everything: %+v", info)
	}
}

func TestEngineOnPebbleConcurrentExactlyOnce(t *testing.T) {
	b, st := openBroker(t, "db", vfs.NewMem(), engine.Config{WindowSize: 8})
	defer closeBroker(t, b, st)
	pump(t, b, "q", 3000, 8, 100, 1)
	if info, _ := b.QueueInfo("q"); info.Messages != 0 || info.Stats.Acked != 3000 || info.Stats.Delivered != 3000 {
		t.Fatalf("after pump: %+v", info)
	}
}

// BenchmarkDurablePublishAck measures publish (QoS 1: fsynced before
// Publish returns) plus ack through the engine on Pebble in a real
// directory. Target: 64 publishers reach at least 20x one publisher.
func BenchmarkDurablePublishAck(b *testing.B) {
	for _, p := range []int{1, 64} {
		b.Run(fmt.Sprintf("publishers=%d", p), func(b *testing.B) {
			br, st := openBroker(b, b.TempDir(), nil, engine.Config{})
			defer closeBroker(b, br, st)
			n := max(b.N, p)
			b.ResetTimer()
			d := pump(b, br, "bench", n, p, 1024, 1)
			b.ReportMetric(float64(n)/d.Seconds(), "msgs/s")

		})
	}
}

// rssBytes reads this process's resident set size.
func rssBytes(tb testing.TB) int64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		tb.Skipf("no /proc: %v", err)
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if rest, ok := strings.CutPrefix(s.Text(), "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			if err != nil {
				tb.Fatal(err)
			}
			return kb << 10
		}
	}
	tb.Fatal("VmRSS not found")
	return 0
}

// envInt reads a size override for the long benchmarks.
func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

// BenchmarkBacklogRestart fills one queue with TANDEM_BENCH_BACKLOG (default
// 2,000,000) messages of 1 KiB with nobody consuming, reports how much the
// resident memory grew, then restarts the broker and reports how long the
// first delivery took. Targets: growth under 200 MiB, first delivery
// within 1 s. Run with -benchtime 1x.
func BenchmarkBacklogRestart(b *testing.B) {
	n := envInt("TANDEM_BENCH_BACKLOG", 2_000_000)
	dir := b.TempDir()
	br, st := openBroker(b, dir, nil, engine.Config{})
	before := rssBytes(b)
	const batch = 100
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Random bodies, so that compression does not shrink the backlog.
			r := rand.New(rand.NewPCG(uint64(w), 99))
			for i := w * batch; i < n; i += 4 * batch {
				tx := br.Begin()
				for j := i; j < min(i+batch, n); j++ {
					body := make([]byte, 1024)
					for k := 0; k < len(body); k += 8 {
						binary.LittleEndian.PutUint64(body[k:], r.Uint64())
					}
					if err := tx.Publish(&engine.Message{Topic: "backlog", ToQueue: true, Body: body, QoS: 1}); err != nil {
						b.Error(err)
						return
					}
				}
				if err := tx.Commit(); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	after := rssBytes(b)
	info, _ := br.QueueInfo("backlog")
	if info.Messages != int64(n) {
		b.Fatalf("backlog holds %d, want %d", info.Messages, n)
	}
	closeBroker(b, br, st)

	start := time.Now()
	br, st = openBroker(b, dir, nil, engine.Config{})
	defer closeBroker(b, br, st)
	ch := make(chanSink, 1024)
	if _, err := br.Consume("backlog", ch, engine.ConsumeOptions{Credit: 10}); err != nil {
		b.Fatal(err)
	}
	select {
	case <-ch:
	case <-time.After(time.Minute):
		b.Fatal("no delivery a minute after restart")
	}
	first := time.Since(start)
	b.ReportMetric(float64(after-before)/(1<<20), "rss-growth-MiB")
	b.ReportMetric(float64(first.Milliseconds()), "first-delivery-ms")
	b.ReportMetric(float64(n), "backlog-msgs")
}

// BenchmarkThroughputAfterHistory compares publish+ack throughput on a
// queue that TANDEM_BENCH_HISTORY (default 5,000,000) messages have passed
// through with fresh queues in the same database, measured alternately
// after the history was made. Target: within 20%.
func BenchmarkThroughputAfterHistory(b *testing.B) {
	history := envInt("TANDEM_BENCH_HISTORY", 5_000_000)
	const measure, publishers = 200_000, 16
	br, st := openBroker(b, b.TempDir(), nil, engine.Config{})
	defer closeBroker(b, br, st)
	made := pump(b, br, "old", history, publishers, 64, 0)
	var fresh, old time.Duration
	for i := range 2 {
		fresh += pump(b, br, fmt.Sprintf("fresh-%d", i), measure, publishers, 64, 1)
		old += pump(b, br, "old", measure, publishers, 64, 1)
	}
	b.ReportMetric(float64(history)/made.Seconds(), "history-msgs/s")
	b.ReportMetric(float64(2*measure)/fresh.Seconds(), "fresh-msgs/s")
	b.ReportMetric(float64(2*measure)/old.Seconds(), "after-history-msgs/s")
	b.ReportMetric(fresh.Seconds()/old.Seconds(), "after/fresh")
}
