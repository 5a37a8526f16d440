package persist_test

import (
	"maps"
	"math/rand/v2"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/tandem-mq/tandem/engine"
)

func scanKV(t *testing.T, b *engine.Broker, ns string) map[string]string {
	t.Helper()
	out := map[string]string{}
	if err := b.ScanKV(ns, func(k string, v []byte) error {
		out[k] = string(v)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

// afterCrash opens a crash clone of fs that keeps no unsynced write and
// returns namespace ns and the bodies and origins of queue q.
func afterCrash(t *testing.T, fs *vfs.MemFS, ns, q string) (map[string]string, []string) {
	t.Helper()
	clone := fs.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: 0, RNG: rand.New(rand.NewPCG(1, 1))})
	b, st := openBroker(t, "db", clone, engine.Config{})
	defer closeBroker(t, b, st)
	kv := scanKV(t, b, ns)
	var msgs []string
	info, err := b.QueueInfo(q)
	if err != nil {
		return kv, nil
	}
	ch := make(chanSink, info.Messages)
	c, err := b.Consume(q, ch, engine.ConsumeOptions{Credit: int(info.Messages)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for range info.Messages {
		d := <-ch
		msgs = append(msgs, string(d.Msg.Body)+" from "+d.Msg.Origin)
	}
	return kv, msgs
}

// TestEngineKVSurvivesCrashWhenSynced commits key-value writes through the
// engine on Pebble and, after each commit, takes a crash clone that loses
// every unsynced write: what a synced commit wrote (Txn.Sync, a QoS 1
// publish to a durable queue in the same commit, ApplyKV with sync) is
// there, with the message of that commit and its Origin.
func TestEngineKVSurvivesCrashWhenSynced(t *testing.T) {
	fs := vfs.NewCrashableMem()
	b, st := openBroker(t, "db", fs, engine.Config{})
	defer closeBroker(t, b, st)
	if err := b.DeclareQueue("q", engine.QueueOptions{}); err != nil {
		t.Fatal(err)
	}
	check := func(step string, wantKV map[string]string, wantMsgs ...string) {
		t.Helper()
		kv, msgs := afterCrash(t, fs, "mqtt", "q")
		if !maps.Equal(kv, wantKV) || len(msgs) != len(wantMsgs) {
			t.Fatalf("%s: after a crash: kv %q, messages %q; want %q, %q", step, kv, msgs, wantKV, wantMsgs)
		}
		for i := range msgs {
			if msgs[i] != wantMsgs[i] {
				t.Fatalf("%s: after a crash: messages %q, want %q", step, msgs, wantMsgs)
			}
		}
	}

	tx := b.Begin()
	tx.PutKV("mqtt", "a", []byte("1"))
	tx.Sync = true
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	check("Txn.Sync", map[string]string{"a": "1"})

	tx = b.BeginBatch()
	if err := tx.Publish(&engine.Message{Topic: "q", ToQueue: true, Body: []byte("m"), QoS: 1, Origin: "mqtt:c1"}); err != nil {
		t.Fatal(err)
	}
	tx.PutKV("mqtt", "b", []byte("2"))
	if err := tx.Commit(); err != nil || tx.PublishErr(0) != nil {
		t.Fatalf("commit: %v, %v", err, tx.PublishErr(0))
	}
	check("QoS 1 publish", map[string]string{"a": "1", "b": "2"}, "m from mqtt:c1")

	if err := b.ApplyKV([]engine.KVOp{{NS: "mqtt", Key: "c", Value: []byte("3")}, {NS: "mqtt", Key: "a", Delete: true}}, true); err != nil {
		t.Fatal(err)
	}
	check("ApplyKV", map[string]string{"b": "2", "c": "3"}, "m from mqtt:c1")
}
