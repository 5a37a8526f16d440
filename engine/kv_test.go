package engine_test

import (
	"errors"
	"maps"
	"strings"
	"testing"

	"github.com/tandem-mq/tandem/engine"
	"github.com/tandem-mq/tandem/engine/memstore"
)

// kvOf reads a namespace through the broker.
func kvOf(t *testing.T, b *engine.Broker, ns string) map[string]string {
	t.Helper()
	out := map[string]string{}
	if err := b.ScanKV(ns, func(k string, v []byte) error {
		out[k] = string(v)
		return nil
	}); err != nil {
		t.Fatalf("ScanKV(%q): %v", ns, err)
	}
	return out
}

func expectKV(t *testing.T, b *engine.Broker, ns string, want map[string]string) {
	t.Helper()
	if got := kvOf(t, b, ns); !maps.Equal(got, want) {
		t.Fatalf("namespace %q: got %q, want %q", ns, got, want)
	}
}

// TestTxnKVCommitsWithPublishAndAck checks that key-value writes apply
// with the transaction's publishes and acks, survive a restart, and are
// discarded by Abort.
func TestTxnKVCommitsWithPublishAndAck(t *testing.T) {
	h := newHarness(t, engine.Config{})
	if err := h.b.ApplyKV([]engine.KVOp{{NS: "mqtt", Key: "old", Value: []byte("x")}}, true); err != nil {
		t.Fatal(err)
	}
	h.send("in", "job")
	c, r := h.consume("in", engine.ConsumeOptions{})
	d := r.take()[0]

	tx := h.b.Begin()
	if err := tx.Publish(&engine.Message{Topic: "out", ToQueue: true, Body: []byte("result"), QoS: 1}); err != nil {
		t.Fatal(err)
	}
	if err := tx.Ack(c, d.Tag); err != nil {
		t.Fatal(err)
	}
	tx.PutKV("mqtt", "a", []byte("1"))
	tx.PutKV("mqtt", "", []byte("empty key"))
	tx.DeleteKV("mqtt", "old")
	expectKV(t, h.b, "mqtt", map[string]string{"old": "x"}) // nothing before Commit
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	tx.PutKV("mqtt", "late", nil) // after Commit: ignored
	want := map[string]string{"a": "1", "": "empty key"}
	expectKV(t, h.b, "mqtt", want)
	if info, _ := h.b.QueueInfo("in"); info.Messages != 0 {
		t.Fatalf("ack not applied: %+v", info)
	}

	tx = h.b.Begin()
	tx.PutKV("mqtt", "aborted", []byte("no"))
	tx.Abort()
	if err := tx.Commit(); !errors.Is(err, engine.ErrTxnDone) {
		t.Fatalf("commit after abort: %v", err)
	}
	h.restart()
	expectKV(t, h.b, "mqtt", want)
	expectKV(t, h.b, "other", map[string]string{})
}

func TestTxnKVStoreFailureWritesNothing(t *testing.T) {
	fs := &failingStore{Store: memstore.New()}
	b, err := engine.Open(fs, engine.Config{Clock: engine.NewFakeClock(epoch)})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	fs.fail = true
	tx := b.Begin()
	tx.PutKV("ns", "k", []byte("v"))
	_ = tx.Publish(&engine.Message{Topic: "q", ToQueue: true, Body: []byte("x"), QoS: 1})
	if err := tx.Commit(); !errors.Is(err, errDisk) {
		t.Fatalf("commit on failing store: %v", err)
	}
	if err := b.ApplyKV([]engine.KVOp{{NS: "ns", Key: "k2"}}, false); !errors.Is(err, errDisk) {
		t.Fatalf("ApplyKV on failing store: %v", err)
	}
	fs.fail = false
	expectKV(t, b, "ns", map[string]string{})
	if info, _ := b.QueueInfo("q"); info.Messages != 0 {
		t.Fatalf("failed commit left %d messages", info.Messages)
	}
}

func TestKVInvalid(t *testing.T) {
	h := newHarness(t, engine.Config{})
	long := func(n int) string { return strings.Repeat("k", n) }
	bad := []engine.KVOp{
		{NS: "", Key: "k"},
		{NS: long(engine.MaxKVNamespaceLength + 1), Key: "k"},
		{NS: "ns", Key: long(engine.MaxKVKeyLength + 1)},
		{NS: "ns", Key: "k", Value: make([]byte, engine.MaxKVValueLength+1)},
		{NS: "ns", Key: "k", Value: []byte("v"), Delete: true},
	}
	for _, op := range bad {
		// A bad op fails the whole call, the good op before it included.
		err := h.b.ApplyKV([]engine.KVOp{{NS: "ns", Key: "good"}, op}, false)
		if !errors.Is(err, engine.ErrInvalidKV) {
			t.Fatalf("ApplyKV(ns %d bytes, key %d bytes, value %d bytes, delete %v) = %v, want ErrInvalidKV",
				len(op.NS), len(op.Key), len(op.Value), op.Delete, err)
		}
		if op.Delete {
			continue // Txn.DeleteKV cannot carry a value
		}
		tx := h.b.Begin()
		_ = tx.Publish(&engine.Message{Topic: "q", ToQueue: true, Body: []byte("x")})
		tx.PutKV("ns", "good", nil)
		tx.PutKV(op.NS, op.Key, op.Value)
		if err := tx.Commit(); !errors.Is(err, engine.ErrInvalidKV) {
			t.Fatalf("commit with an invalid PutKV = %v, want ErrInvalidKV", err)
		}
	}
	expectKV(t, h.b, "ns", map[string]string{})
	if _, err := h.b.QueueInfo("q"); !errors.Is(err, engine.ErrNoQueue) {
		t.Fatalf("a commit with an invalid KV op published: %v", err)
	}
	// The limits themselves are allowed.
	ok := engine.KVOp{NS: long(engine.MaxKVNamespaceLength), Key: long(engine.MaxKVKeyLength), Value: make([]byte, engine.MaxKVValueLength)}
	if err := h.b.ApplyKV([]engine.KVOp{ok}, false); err != nil {
		t.Fatalf("ApplyKV at the limits: %v", err)
	}
	if err := h.b.ScanKV("", func(string, []byte) error { return nil }); !errors.Is(err, engine.ErrInvalidKV) {
		t.Fatalf("ScanKV of the empty namespace = %v, want ErrInvalidKV", err)
	}
}

func TestKVScanStopsAndLaterOpWins(t *testing.T) {
	h := newHarness(t, engine.Config{})
	if err := h.b.ApplyKV([]engine.KVOp{
		{NS: "ns", Key: "b", Value: []byte("1")},
		{NS: "ns", Key: "a", Value: []byte("1")},
		{NS: "ns", Key: "b", Value: []byte("2")},
		{NS: "ns", Key: "a", Delete: true},
		{NS: "ns", Key: "c", Value: []byte("3")},
	}, false); err != nil {
		t.Fatal(err)
	}
	expectKV(t, h.b, "ns", map[string]string{"b": "2", "c": "3"})
	stop := errors.New("stop")
	var keys []string
	err := h.b.ScanKV("ns", func(k string, _ []byte) error { keys = append(keys, k); return stop })
	if !errors.Is(err, stop) || len(keys) != 1 || keys[0] != "b" {
		t.Fatalf("ScanKV = %v after %q, want the callback's error after [b]", err, keys)
	}
}

func TestKVAfterClose(t *testing.T) {
	h := newHarness(t, engine.Config{})
	if err := h.b.Close(); err != nil {
		t.Fatal(err)
	}
	if err := h.b.ApplyKV([]engine.KVOp{{NS: "ns", Key: "k"}}, true); !errors.Is(err, engine.ErrClosed) {
		t.Fatalf("ApplyKV after Close = %v", err)
	}
	if err := h.b.ScanKV("ns", func(string, []byte) error { return nil }); !errors.Is(err, engine.ErrClosed) {
		t.Fatalf("ScanKV after Close = %v", err)
	}
	tx := h.b.Begin()
	tx.PutKV("ns", "k", nil)
	if err := tx.Commit(); !errors.Is(err, engine.ErrClosed) {
		t.Fatalf("commit after Close = %v", err)
	}
}

// applyLog records every Apply a store is asked for.
type applyLog struct {
	engine.Store
	applies []applied
}

type applied struct {
	kinds []engine.OpKind
	sync  bool
}

func (s *applyLog) Apply(b *engine.Batch, sync bool) error {
	a := applied{sync: sync}
	for _, op := range b.Ops {
		a.kinds = append(a.kinds, op.Kind)
	}
	s.applies = append(s.applies, a)
	return s.Store.Apply(b, sync)
}

func (a applied) has(k engine.OpKind) bool {
	for _, x := range a.kinds {
		if x == k {
			return true
		}
	}
	return false
}

// TestKVSync checks when a commit carrying key-value writes is synced:
// with Txn.Sync, or when a publish or ack of the same commit needs it; and
// that the writes go in the same store batch as the publishes.
func TestKVSync(t *testing.T) {
	log := &applyLog{Store: memstore.New()}
	b, err := engine.Open(log, engine.Config{Clock: engine.NewFakeClock(epoch)})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if err := b.DeclareQueue("durable", engine.QueueOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := b.DeclareQueue("tmp", engine.QueueOptions{Temporary: true}); err != nil {
		t.Fatal(err)
	}
	// Take the first ID lease now: it is a write of its own.
	if err := b.Publish(&engine.Message{Topic: "tmp", ToQueue: true}); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name     string
		txSync   bool
		pub      *engine.Message
		wantSync bool
	}{
		{"kv only", false, nil, false},
		{"kv only, Sync", true, nil, true},
		{"QoS 1 to a durable queue", false, &engine.Message{Topic: "durable", ToQueue: true, QoS: 1}, true},
		{"QoS 0 to a durable queue", false, &engine.Message{Topic: "durable", ToQueue: true}, false},
		{"QoS 0 to a durable queue, Sync", true, &engine.Message{Topic: "durable", ToQueue: true}, true},
		{"QoS 1 to a temporary queue", false, &engine.Message{Topic: "tmp", ToQueue: true, QoS: 1}, false},
	}
	for _, c := range cases {
		for _, batch := range []bool{false, true} {
			log.applies = nil
			tx := b.Begin()
			if batch {
				tx = b.BeginBatch()
			}
			tx.Sync = c.txSync
			if c.pub != nil {
				m := *c.pub
				if err := tx.Publish(&m); err != nil {
					t.Fatal(err)
				}
			}
			tx.PutKV("ns", c.name, []byte("v"))
			if err := tx.Commit(); err != nil {
				t.Fatalf("%s: %v", c.name, err)
			}
			if len(log.applies) != 1 {
				t.Fatalf("%s (batch %v): %d store writes, want 1", c.name, batch, len(log.applies))
			}
			a := log.applies[0]
			if a.sync != c.wantSync || !a.has(engine.OpPutKV) {
				t.Fatalf("%s (batch %v): wrote %v with sync %v, want a KV put with sync %v", c.name, batch, a.kinds, a.sync, c.wantSync)
			}
			if c.pub != nil && c.pub.Topic == "durable" && !a.has(engine.OpPutEntry) {
				t.Fatalf("%s (batch %v): the publish is not in the KV batch: %v", c.name, batch, a.kinds)
			}
		}
	}
	for _, sync := range []bool{false, true} {
		log.applies = nil
		if err := b.ApplyKV([]engine.KVOp{{NS: "ns", Key: "k", Value: []byte("v")}, {NS: "ns", Key: "j", Delete: true}}, sync); err != nil {
			t.Fatal(err)
		}
		if len(log.applies) != 1 || log.applies[0].sync != sync || len(log.applies[0].kinds) != 2 {
			t.Fatalf("ApplyKV(sync %v) wrote %+v", sync, log.applies)
		}
	}
}
