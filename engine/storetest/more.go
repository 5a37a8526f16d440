package storetest

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"math"
	"reflect"
	"sync"
	"testing"

	"github.com/tandem-mq/tandem/engine"
)

// fullMessage sets every field of Message to something unusual.
func fullMessage(id uint64) *engine.Message {
	return &engine.Message{
		ID:      id,
		Topic:   "a/b\x00/ü/$sys",
		ToQueue: true,
		Props: []engine.Property{
			{Key: "k", Value: "v1"},
			{Key: "k", Value: "v2"}, // repeated key, order kept
			{Key: "empty", Value: ""},
			{Key: "", Value: "empty key"},
			{Key: "nul\x00", Value: "\x00\xff"},
		},
		Body:        []byte("body\x00with\x00nuls\xff"),
		QoS:         2,
		Retain:      true,
		PublishedAt: -1,
		ExpiresAt:   math.MaxInt64,
		NotBefore:   math.MinInt64,
		Origin:      "mqtt:client\x00/ü",
	}
}

func testMessageRoundTrip(t *testing.T, s engine.Store) {
	msgs := []*engine.Message{
		fullMessage(math.MaxUint64),
		{ID: 2},                 // every field zero, nil body
		{ID: 3, Body: []byte{}}, // empty body
		{ID: 4, Props: []engine.Property{}, Body: bytes.Repeat([]byte{0}, 70000)},
		{ID: 5, Origin: "o"}, // origin alone
		{ID: 6, Origin: string(bytes.Repeat([]byte{'x'}, 300)), Topic: "t"}, // origin longer than a one-byte length
	}
	apply(t, s, true, func(b *engine.Batch) {
		for i, m := range msgs {
			seq := uint64(i + 1)
			b.PutEntry("q", engine.Ready, engine.Entry{Key: ready(seq), Seq: seq, MsgID: m.ID, Msg: m})
			shared := *m
			shared.ID = 100 + seq
			b.PutBody(&shared)
			b.PutEntry("q", engine.Scheduled, engine.Entry{Key: sched(1, seq), Seq: seq, MsgID: shared.ID, Shared: true})
		}
	})
	got := scanAll(t, s, "q", engine.Ready)
	gotShared := scanAll(t, s, "q", engine.Scheduled)
	if len(got) != len(msgs) || len(gotShared) != len(msgs) {
		t.Fatalf("got %d and %d entries, want %d", len(got), len(gotShared), len(msgs))
	}
	for i, m := range msgs {
		if !sameMessage(got[i].Msg, m) {
			t.Errorf("message %d:\ngot  %+v\nwant %+v", i, got[i].Msg, m)
		}
		shared := *m
		shared.ID = 100 + uint64(i+1)
		if !sameMessage(gotShared[i].Msg, &shared) {
			t.Errorf("shared message %d:\ngot  %+v\nwant %+v", i, gotShared[i].Msg, &shared)
		}
	}
}

func testEntryFields(t *testing.T, s engine.Store) {
	es := []engine.Entry{
		{Key: ready(math.MaxUint64), Seq: math.MaxUint64, MsgID: math.MaxUint64, Deliveries: math.MaxUint32,
			ExpiresAt: math.MaxInt64, Msg: fullMessage(1)},
		{Key: ready(1), Seq: 1, MsgID: 0, Deliveries: 0, ExpiresAt: math.MinInt64, Msg: &engine.Message{}},
		{Key: ready(2), Seq: 77, MsgID: 5, Deliveries: 1, ExpiresAt: -5, Msg: msg(5, "")},
	}
	apply(t, s, true, func(b *engine.Batch) {
		for _, e := range es {
			b.PutEntry("q", engine.Ready, e)
		}
	})
	checkEntries(t, "entries", scanAll(t, s, "q", engine.Ready), []engine.Entry{es[1], es[2], es[0]})
}

func testNoAliasing(t *testing.T, s engine.Store) {
	m := fullMessage(1)
	shared := fullMessage(2)
	meta := []byte("meta")
	val := []byte("value")
	apply(t, s, true, func(b *engine.Batch) {
		b.PutEntry("q", engine.Ready, engine.Entry{Key: ready(1), Seq: 1, MsgID: 1, Msg: m})
		b.PutBody(shared)
		b.PutEntry("q", engine.Ready, engine.Entry{Key: ready(2), Seq: 2, MsgID: 2, Shared: true})
		b.PutQueue("q", meta)
		b.PutKV("ns", "k", val)
	})
	// Changing what was written must not change the store.
	m.Props[0].Value, m.Body[0], shared.Props[0].Value, shared.Body[0] = "changed", 'X', "changed", 'X'
	meta[0], val[0] = 'X', 'X'
	check := func(what string) {
		t.Helper()
		got := scanAll(t, s, "q", engine.Ready)
		if !sameMessage(got[0].Msg, fullMessage(1)) || !sameMessage(got[1].Msg, fullMessage(2)) {
			t.Fatalf("%s: stored messages changed: %+v %+v", what, got[0].Msg, got[1].Msg)
		}
		if q := load(t, s).Queues[0]; string(q.Meta) != "meta" {
			t.Fatalf("%s: stored meta changed: %q", what, q.Meta)
		}
		if kv := scanKV(t, s, "ns"); kv["k"] != "value" {
			t.Fatalf("%s: stored value changed: %q", what, kv["k"])
		}
	}
	check("after changing the input")
	// Changing what was read must not change the store either.
	for _, e := range scanAll(t, s, "q", engine.Ready) {
		e.Msg.Props[0].Value, e.Msg.Body[0] = "changed", 'X'
	}
	load(t, s).Queues[0].Meta[0] = 'X'
	if err := s.ScanKV("ns", func(_ string, v []byte) error { v[0] = 'X'; return nil }); err != nil {
		t.Fatal(err)
	}
	check("after changing the output")
}

func testBatchOrder(t *testing.T, s engine.Store) {
	apply(t, s, true, func(b *engine.Batch) {
		b.PutQueue("q", nil)
		b.PutEntry("q", engine.Ready, readyEntry(1))
		b.PurgeIndex("q", engine.Ready) // removes the put above
		b.PutEntry("q", engine.Ready, readyEntry(2))
		b.PutEntry("q", engine.Ready, readyEntry(3))
		b.TrimReady("q", 3)
		b.PutEntry("q", engine.Ready, readyEntry(1)) // after the trim: stays
		b.AddCounts("q", 10, 10)
		b.DeleteQueue("q")
		b.PutQueue("q", []byte("again"))
		b.AddCounts("q", 1, 2)
		b.PutEntry("q", engine.Scheduled, entry(sched(1, 1), 1, "x"))
		b.PutKV("ns", "k", []byte("v"))
		b.DeleteKV("ns", "k")
		b.DeleteKV("ns", "k2")
		b.PutKV("ns", "k2", []byte("v2"))
		b.DeleteBinding("f", "q")
		b.PutBinding("f", "q")
		b.PutRef(1, 1)
		b.DeleteRef(1)
	})
	checkKeys(t, "ready", scanAll(t, s, "q", engine.Ready))
	checkKeys(t, "scheduled", scanAll(t, s, "q", engine.Scheduled), sched(1, 1))
	st := load(t, s)
	if len(st.Queues) != 1 || st.Queues[0].Count != 1 || st.Queues[0].Bytes != 2 || string(st.Queues[0].Meta) != "again" {
		t.Fatalf("Queues = %+v, want q with counts 1/2", st.Queues)
	}
	if len(st.Bindings) != 1 || len(st.Refs) != 0 {
		t.Fatalf("Bindings = %v, Refs = %v", st.Bindings, st.Refs)
	}
	if kv := scanKV(t, s, "ns"); !maps.Equal(kv, map[string]string{"k2": "v2"}) {
		t.Fatalf("kv = %q", kv)
	}
	apply(t, s, true, func(b *engine.Batch) {
		b.PutEntry("q", engine.Ready, readyEntry(5))
		b.TrimReady("q", 9)
		b.PutEntry("q", engine.Ready, readyEntry(6))
	})
	checkKeys(t, "ready after trim", scanAll(t, s, "q", engine.Ready), ready(6))
}

func testInvalidBatch(t *testing.T, s engine.Store) {
	invalid := []func(b *engine.Batch){
		func(b *engine.Batch) { b.Ops = append(b.Ops, engine.Op{Kind: 0}) },
		func(b *engine.Batch) { b.Ops = append(b.Ops, engine.Op{Kind: 200}) },
		func(b *engine.Batch) { b.PutEntry("q", 0, readyEntry(9)) },
		func(b *engine.Batch) { b.PutEntry("q", 3, readyEntry(9)) },
		func(b *engine.Batch) { b.PurgeIndex("q", 0) },
		func(b *engine.Batch) { b.PutEntry("q", engine.Ready, entry(sched(1, 9), 9, "x")) },
		func(b *engine.Batch) { b.PutEntry("q", engine.Ready, engine.Entry{Key: ready(9), Seq: 9}) },
		func(b *engine.Batch) { b.Ops = append(b.Ops, engine.Op{Kind: engine.OpPutBody}) },
		func(b *engine.Batch) { b.Ops = append(b.Ops, engine.Op{Kind: engine.OpPutRef, ID: 1, N: -1}) },
		func(b *engine.Batch) {
			b.Ops = append(b.Ops, engine.Op{Kind: engine.OpPutRef, ID: 1, N: math.MaxUint32 + 1})
		},
	}
	for i, bad := range invalid {
		var b engine.Batch
		b.PutQueue(fmt.Sprint("q", i), nil)
		b.PutEntry("q", engine.Ready, readyEntry(uint64(i+1)))
		b.PutKV("ns", "k", []byte("v"))
		b.SetIDFloor(10)
		bad(&b)
		b.PutBinding("f", "q")
		if err := s.Apply(&b, true); err == nil {
			t.Fatalf("invalid batch %d: Apply succeeded", i)
		}
		// Nothing of the batch is visible.
		st := load(t, s)
		if len(st.Queues) != 0 || len(st.Bindings) != 0 || st.IDFloor != 0 {
			t.Fatalf("invalid batch %d was partly applied: %+v", i, st)
		}
		checkKeys(t, "ready", scanAll(t, s, "q", engine.Ready))
		if kv := scanKV(t, s, "ns"); len(kv) != 0 {
			t.Fatalf("invalid batch %d was partly applied: kv %q", i, kv)
		}
	}
}

// names are strings that a naive concatenating encoding would confuse.
var names = []string{"", "a", "a\x00", "a\x00b", "a\x00\x01", "a\x00\xff", "a\x01", "a:b", "a:", ":b", "a/b", "a/", "ab", "a\xff", "\x00", "\xff", "b"}

func testAmbiguousQueueNames(t *testing.T, s engine.Store) {
	apply(t, s, true, func(b *engine.Batch) {
		for i, q := range names {
			b.PutQueue(q, []byte(q))
			b.AddCounts(q, int64(i+1), int64(i+1))
			b.PutEntry(q, engine.Ready, entry(ready(uint64(i+1)), uint64(i+1), q))
			b.PutEntry(q, engine.Scheduled, entry(sched(uint64(i+1), 1), 1, q))
		}
	})
	check := func(skip map[string]bool) {
		t.Helper()
		st := load(t, s)
		got := map[string]engine.QueueState{}
		for _, q := range st.Queues {
			got[q.Name] = q
		}
		for i, q := range names {
			r := scanAll(t, s, q, engine.Ready)
			sc := scanAll(t, s, q, engine.Scheduled)
			if skip[q] {
				if len(r) != 0 || len(sc) != 0 {
					t.Fatalf("queue %q: entries left after delete/purge", q)
				}
				continue
			}
			if len(r) != 1 || len(sc) != 1 || string(r[0].Msg.Body) != q || string(sc[0].Msg.Body) != q ||
				r[0].Key != ready(uint64(i+1)) || sc[0].Key != sched(uint64(i+1), 1) {
				t.Fatalf("queue %q: ready %v scheduled %v: entries of another queue mixed in", q, keys(r), keys(sc))
			}
			if qs, ok := got[q]; !ok || string(qs.Meta) != q || qs.Count != int64(i+1) {
				t.Fatalf("queue %q: Load gave %+v", q, qs)
			}
		}
		if len(st.Queues) != len(names)-len(skip) {
			t.Fatalf("Load gave %d queues, want %d", len(st.Queues), len(names)-len(skip))
		}
		for i := 1; i < len(st.Queues); i++ {
			if st.Queues[i-1].Name >= st.Queues[i].Name {
				t.Fatalf("Queues not sorted by name: %q before %q", st.Queues[i-1].Name, st.Queues[i].Name)
			}
		}
	}
	check(nil)
	apply(t, s, true, func(b *engine.Batch) {
		b.PurgeIndex("a", engine.Ready)
		b.PurgeIndex("a", engine.Scheduled)
		b.TrimReady("a\x00", math.MaxUint64)
		b.PurgeIndex("a\x00", engine.Scheduled)
	})
	for _, q := range []string{"a", "a\x00"} {
		if len(scanAll(t, s, q, engine.Ready))+len(scanAll(t, s, q, engine.Scheduled)) != 0 {
			t.Fatalf("queue %q not purged", q)
		}
	}
	apply(t, s, true, func(b *engine.Batch) {
		b.DeleteQueue("a")
		b.DeleteQueue("a\x00")
		b.PutQueue("a\x00", []byte("a\x00"))
		b.AddCounts("a\x00", 3, 3)
		b.PutEntry("a\x00", engine.Ready, entry(ready(3), 3, "a\x00"))
		b.PutEntry("a\x00", engine.Scheduled, entry(sched(3, 1), 1, "a\x00"))
	})
	check(map[string]bool{"a": true})
}

func testAmbiguousBindings(t *testing.T, s engine.Store) {
	var want []engine.Binding
	apply(t, s, true, func(b *engine.Batch) {
		for _, f := range names {
			for _, q := range names {
				b.PutBinding(f, q)
				want = append(want, engine.Binding{Filter: f, Queue: q})
			}
		}
	})
	got := load(t, s).Bindings
	if len(got) != len(want) {
		t.Fatalf("got %d bindings, want %d", len(got), len(want))
	}
	seen := map[engine.Binding]bool{}
	for _, b := range got {
		seen[b] = true
	}
	for _, b := range want {
		if !seen[b] {
			t.Fatalf("binding %q lost", b)
		}
	}
	apply(t, s, true, func(b *engine.Batch) {
		b.DeleteBinding("a", "\x00b")
		b.DeleteBinding("a:", "b")
	})
	for _, b := range load(t, s).Bindings {
		if b == (engine.Binding{Filter: "a", Queue: "\x00b"}) || b == (engine.Binding{Filter: "a:", Queue: "b"}) {
			t.Fatalf("binding %q not deleted", b)
		}
	}
	if n := len(load(t, s).Bindings); n != len(want)-1 { // ("a", "\x00b") was never bound
		t.Fatalf("got %d bindings after delete, want %d", n, len(want)-1)
	}
}

func testAmbiguousKV(t *testing.T, s engine.Store) {
	apply(t, s, true, func(b *engine.Batch) {
		for _, ns := range names {
			for _, k := range names {
				b.PutKV(ns, k, []byte(ns+"|"+k))
			}
		}
	})
	for _, ns := range names {
		want := map[string]string{}
		for _, k := range names {
			want[k] = ns + "|" + k
		}
		if got := scanKV(t, s, ns); !maps.Equal(got, want) {
			t.Fatalf("namespace %q: got %q, want %q", ns, got, want)
		}
	}
}

// testAtomicVisibility checks that a reader never sees part of a batch.
func testAtomicVisibility(t *testing.T, s engine.Store) {
	const perBatch, batches = 8, 100
	done := make(chan struct{})
	errc := make(chan error, 1)
	go func() {
		defer close(done)
		for i := 0; i < batches; i++ {
			var b engine.Batch
			for j := 0; j < perBatch; j++ {
				seq := uint64(i*perBatch + j + 1)
				b.PutEntry("q", engine.Ready, readyEntry(seq))
				b.PutKV("ns", fmt.Sprintf("%08d", seq), nil)
			}
			if err := s.Apply(&b, i%2 == 0); err != nil {
				errc <- err
				return
			}
		}
	}()
	for finished := false; !finished; {
		select {
		case <-done:
			finished = true
		default:
		}
		if n := len(scanAll(t, s, "q", engine.Ready)); n%perBatch != 0 {
			t.Fatalf("Scan saw %d entries: part of a batch", n)
		}
		if n := len(scanKV(t, s, "ns")); n%perBatch != 0 {
			t.Fatalf("ScanKV saw %d keys: part of a batch", n)
		}
	}
	select {
	case err := <-errc:
		t.Fatal(err)
	default:
	}
	if n := len(scanAll(t, s, "q", engine.Ready)); n != perBatch*batches {
		t.Fatalf("got %d entries, want %d", n, perBatch*batches)
	}
}

func testConcurrentApply(t *testing.T, s engine.Store) {
	const writers, perWriter = 16, 40
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < perWriter; i++ {
				seq := uint64(w*perWriter + i + 1)
				var b engine.Batch
				b.PutEntry("q", engine.Ready, readyEntry(seq))
				b.AddCounts("q", 1, int64(seq))
				b.PutKV(fmt.Sprint("w", w), fmt.Sprint(i), []byte("x"))
				if err := s.Apply(&b, i%3 != 0); err != nil {
					errs <- err
					return
				}
				if i%10 == 0 {
					if err := s.Scan("q", engine.Ready, engine.Key{}, 5, func(engine.Entry) error { return nil }); err != nil {
						errs <- err
						return
					}
				}
			}
		}()
	}
	apply(t, s, true, func(b *engine.Batch) { b.PutQueue("q", nil) })
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	const n = writers * perWriter
	got := scanAll(t, s, "q", engine.Ready)
	if len(got) != n {
		t.Fatalf("got %d entries, want %d", len(got), n)
	}
	for i, e := range got {
		if e.Key != ready(uint64(i+1)) {
			t.Fatalf("entry %d has key %v", i, e.Key)
		}
	}
	q := load(t, s).Queues[0]
	if q.Count != n || q.Bytes != n*(n+1)/2 {
		t.Fatalf("counts = %d/%d, want %d/%d", q.Count, q.Bytes, n, n*(n+1)/2)
	}
}

func testClosed(t *testing.T, s engine.Store) {
	apply(t, s, true, func(b *engine.Batch) { b.PutQueue("q", nil) })
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	var b engine.Batch
	b.PutQueue("q2", nil)
	calls := map[string]error{
		"Apply":  s.Apply(&b, true),
		"Scan":   s.Scan("q", engine.Ready, engine.Key{}, 0, func(engine.Entry) error { return nil }),
		"ScanKV": s.ScanKV("ns", func(string, []byte) error { return nil }),
		"Close":  s.Close(),
	}
	_, err := s.Load()
	calls["Load"] = err
	for name, err := range calls {
		if !errors.Is(err, engine.ErrClosed) {
			t.Errorf("%s after Close = %v, want ErrClosed", name, err)
		}
	}
}

// RunReopen checks that a store keeps its state across Close and open.
// open must open the store kept in dir, creating it if dir is new.
func RunReopen(t *testing.T, open func(t *testing.T, dir string) engine.Store) {
	t.Run("Everything", func(t *testing.T) {
		dir := t.TempDir()
		s := open(t, dir)
		shared := fullMessage(500)
		apply(t, s, true, func(b *engine.Batch) {
			b.PutQueue("q", []byte("meta"))
			b.PutQueue("gone", nil)
			b.AddCounts("q", 3, 30)
			b.PutEntry("q", engine.Ready, engine.Entry{Key: ready(1), Seq: 1, MsgID: 1, Deliveries: 2, ExpiresAt: 9, Msg: fullMessage(1)})
			b.PutEntry("q", engine.Ready, readyEntry(2))
			b.PutEntry("q", engine.Scheduled, engine.Entry{Key: sched(50, 3), Seq: 3, MsgID: 500, Shared: true})
			b.PutBody(shared)
			b.PutRef(500, 1)
			b.PutBinding("a/#", "q")
			b.SetIDFloor(4096)
			b.PutKV("ns", "k", []byte("v"))
		})
		// Unsynced batches survive a clean Close.
		apply(t, s, false, func(b *engine.Batch) {
			b.AddCounts("q", -1, -10)
			b.DeleteQueue("gone")
			b.DeleteEntry("q", engine.Ready, ready(2))
		})
		before := snapshot(t, s)
		if err := s.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
		for round := 0; round < 3; round++ {
			s = open(t, dir)
			if after := snapshot(t, s); !reflect.DeepEqual(before, after) {
				t.Fatalf("round %d: state after reopen:\n%+v\nwant\n%+v", round, after, before)
			}
			// Counts keep summing across reopens.
			apply(t, s, round%2 == 0, func(b *engine.Batch) { b.AddCounts("q", 1, 1) })
			before.state.Queues[0].Count++
			before.state.Queues[0].Bytes++
			if err := s.Close(); err != nil {
				t.Fatalf("Close: %v", err)
			}
		}
	})
}

// dump is a comparable view of a store's whole state, for the reopen tests.
type dump struct {
	state          *engine.State
	ready, sched   []string
	kv             map[string]string
	readyN, schedN int
}

func snapshot(t testing.TB, s engine.Store) dump {
	t.Helper()
	d := dump{state: load(t, s), kv: scanKV(t, s, "ns")}
	for _, e := range scanAll(t, s, "q", engine.Ready) {
		d.ready = append(d.ready, fmt.Sprintf("%v %d %d %d %d %v %+v", e.Key, e.Seq, e.MsgID, e.Deliveries, e.ExpiresAt, e.Shared, *e.Msg))
	}
	for _, e := range scanAll(t, s, "q", engine.Scheduled) {
		d.sched = append(d.sched, fmt.Sprintf("%v %d %d %d %d %v %+v", e.Key, e.Seq, e.MsgID, e.Deliveries, e.ExpiresAt, e.Shared, *e.Msg))
	}
	d.readyN, d.schedN = len(d.ready), len(d.sched)
	return d
}
