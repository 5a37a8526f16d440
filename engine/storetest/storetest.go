// Package storetest is the one test suite every engine.Store implementation
// runs: memstore and persist call Run (and persist RunReopen) from their
// tests, so both behave the same way.
package storetest

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"math"
	"reflect"
	"slices"
	"testing"

	"github.com/tandem-mq/tandem/engine"
)

// Run runs the suite. open must return a new, empty store; Run closes it
// (or checks that a test closed it).
func Run(t *testing.T, open func(t *testing.T) engine.Store) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s engine.Store)
	}{
		{"Empty", testEmpty},
		{"Queues", testQueues},
		{"DeleteQueue", testDeleteQueue},
		{"EntriesOrder", testEntriesOrder},
		{"ScanAfterLimit", testScanAfterLimit},
		{"ScanStops", testScanStops},
		{"ReplaceEntry", testReplaceEntry},
		{"DeleteEntry", testDeleteEntry},
		{"PurgeIndex", testPurgeIndex},
		{"TrimReady", testTrimReady},
		{"SharedBodies", testSharedBodies},
		{"MissingBody", testMissingBody},
		{"Refs", testRefs},
		{"Counts", testCounts},
		{"Bindings", testBindings},
		{"IDFloor", testIDFloor},
		{"KV", testKV},
		{"MessageRoundTrip", testMessageRoundTrip},
		{"EntryFields", testEntryFields},
		{"NoAliasing", testNoAliasing},
		{"BatchOrder", testBatchOrder},
		{"InvalidBatch", testInvalidBatch},
		{"AmbiguousQueueNames", testAmbiguousQueueNames},
		{"AmbiguousBindings", testAmbiguousBindings},
		{"AmbiguousKV", testAmbiguousKV},
		{"AtomicVisibility", testAtomicVisibility},
		{"ConcurrentApply", testConcurrentApply},
		{"Closed", testClosed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := open(t)
			defer func() {
				if err := s.Close(); err != nil && !errors.Is(err, engine.ErrClosed) {
					t.Errorf("Close: %v", err)
				}
			}()
			tc.fn(t, s)
		})
	}
}

// apply builds a batch with fill and applies it, failing the test on error.
func apply(t testing.TB, s engine.Store, sync bool, fill func(b *engine.Batch)) {
	t.Helper()
	var b engine.Batch
	fill(&b)
	if err := s.Apply(&b, sync); err != nil {
		t.Fatalf("Apply: %v", err)
	}
}

// scan returns the entries Scan gives, failing the test on error.
func scan(t testing.TB, s engine.Store, queue string, idx engine.Index, after engine.Key, limit int) []engine.Entry {
	t.Helper()
	var out []engine.Entry
	if err := s.Scan(queue, idx, after, limit, func(e engine.Entry) error {
		out = append(out, e)
		return nil
	}); err != nil {
		t.Fatalf("Scan(%q, %s, %v, %d): %v", queue, idx, after, limit, err)
	}
	return out
}

func scanAll(t testing.TB, s engine.Store, queue string, idx engine.Index) []engine.Entry {
	t.Helper()
	return scan(t, s, queue, idx, engine.Key{}, 0)
}

func load(t testing.TB, s engine.Store) *engine.State {
	t.Helper()
	st, err := s.Load()
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	return st
}

func keys(es []engine.Entry) []engine.Key {
	out := make([]engine.Key, len(es))
	for i, e := range es {
		out[i] = e.Key
	}
	return out
}

func scanKV(t testing.TB, s engine.Store, ns string) map[string]string {
	t.Helper()
	out := map[string]string{}
	var prev *string
	if err := s.ScanKV(ns, func(k string, v []byte) error {
		if prev != nil && *prev >= k {
			return fmt.Errorf("keys out of order: %q then %q", *prev, k)
		}
		prev = &k
		out[k] = string(v)
		return nil
	}); err != nil {
		t.Fatalf("ScanKV(%q): %v", ns, err)
	}
	return out
}

// msg returns a small message with id and body.
func msg(id uint64, body string) *engine.Message {
	return &engine.Message{ID: id, Topic: "t", Body: []byte(body), PublishedAt: int64(id)}
}

// entry returns an unshared entry at k.
func entry(k engine.Key, seq uint64, body string) engine.Entry {
	return engine.Entry{Key: k, Seq: seq, MsgID: seq, Msg: msg(seq, body)}
}

func ready(seq uint64) engine.Key        { return engine.Key{Lo: seq} }
func sched(due, seq uint64) engine.Key   { return engine.Key{Hi: due, Lo: seq} }
func readyEntry(seq uint64) engine.Entry { return entry(ready(seq), seq, fmt.Sprintf("m%d", seq)) }

// sameMessage compares messages, treating nil and empty slices as equal.
func sameMessage(a, b *engine.Message) bool {
	if a == nil || b == nil {
		return a == b
	}
	if len(a.Props) != len(b.Props) || !bytes.Equal(a.Body, b.Body) {
		return false
	}
	for i := range a.Props {
		if a.Props[i] != b.Props[i] {
			return false
		}
	}
	return a.ID == b.ID && a.Topic == b.Topic && a.ToQueue == b.ToQueue && a.QoS == b.QoS &&
		a.Retain == b.Retain && a.PublishedAt == b.PublishedAt && a.ExpiresAt == b.ExpiresAt &&
		a.NotBefore == b.NotBefore && a.Origin == b.Origin
}

// sameEntry compares entries field by field, messages with sameMessage.
func sameEntry(a, b engine.Entry) bool {
	am, bm := a.Msg, b.Msg
	a.Msg, b.Msg = nil, nil
	return a == b && sameMessage(am, bm)
}

func checkEntries(t testing.TB, what string, got, want []engine.Entry) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: got %d entries %v, want %d %v", what, len(got), keys(got), len(want), keys(want))
	}
	for i := range got {
		if !sameEntry(got[i], want[i]) {
			t.Fatalf("%s: entry %d:\ngot  %+v %+v\nwant %+v %+v", what, i, got[i], got[i].Msg, want[i], want[i].Msg)
		}
	}
}

func checkKeys(t testing.TB, what string, got []engine.Entry, want ...engine.Key) {
	t.Helper()
	if g := keys(got); !slices.Equal(g, want) && !(len(g) == 0 && len(want) == 0) {
		t.Fatalf("%s: got keys %v, want %v", what, g, want)
	}
}

func testEmpty(t *testing.T, s engine.Store) {
	st := load(t, s)
	if len(st.Queues) != 0 || len(st.Bindings) != 0 || len(st.Refs) != 0 || st.IDFloor != 0 {
		t.Fatalf("new store: Load = %+v, want empty", st)
	}
	checkKeys(t, "ready", scanAll(t, s, "q", engine.Ready))
	checkKeys(t, "scheduled", scanAll(t, s, "q", engine.Scheduled))
	if kv := scanKV(t, s, "ns"); len(kv) != 0 {
		t.Fatalf("ScanKV = %v, want empty", kv)
	}
	// An empty batch is fine.
	apply(t, s, true, func(b *engine.Batch) {})
}

func testQueues(t *testing.T, s engine.Store) {
	apply(t, s, true, func(b *engine.Batch) {
		b.PutQueue("b", []byte("meta-b"))
		b.PutQueue("a", []byte("meta-a\x00"))
		b.PutQueue("", nil)
	})
	apply(t, s, true, func(b *engine.Batch) { b.PutQueue("b", []byte("meta-b2")) })
	want := []engine.QueueState{{Name: ""}, {Name: "a", Meta: []byte("meta-a\x00")}, {Name: "b", Meta: []byte("meta-b2")}}
	got := load(t, s).Queues
	if len(got) != len(want) {
		t.Fatalf("Queues = %+v, want %+v", got, want)
	}
	for i := range got {
		if got[i].Name != want[i].Name || !bytes.Equal(got[i].Meta, want[i].Meta) || got[i].Count != 0 || got[i].Bytes != 0 {
			t.Fatalf("Queues[%d] = %+v, want %+v", i, got[i], want[i])
		}
	}
}

func testDeleteQueue(t *testing.T, s engine.Store) {
	for _, q := range []string{"q", "q2"} {
		apply(t, s, true, func(b *engine.Batch) {
			b.PutQueue(q, []byte("m"))
			b.AddCounts(q, 3, 30)
			for seq := uint64(1); seq <= 3; seq++ {
				b.PutEntry(q, engine.Ready, readyEntry(seq))
				b.PutEntry(q, engine.Scheduled, entry(sched(100+seq, seq), seq, "s"))
			}
		})
	}
	apply(t, s, true, func(b *engine.Batch) { b.DeleteQueue("q") })
	st := load(t, s)
	if len(st.Queues) != 1 || st.Queues[0].Name != "q2" || st.Queues[0].Count != 3 || st.Queues[0].Bytes != 30 {
		t.Fatalf("after DeleteQueue(q): Queues = %+v, want only q2 with counts 3/30", st.Queues)
	}
	checkKeys(t, "q ready", scanAll(t, s, "q", engine.Ready))
	checkKeys(t, "q scheduled", scanAll(t, s, "q", engine.Scheduled))
	checkKeys(t, "q2 ready", scanAll(t, s, "q2", engine.Ready), ready(1), ready(2), ready(3))
	checkKeys(t, "q2 scheduled", scanAll(t, s, "q2", engine.Scheduled), sched(101, 1), sched(102, 2), sched(103, 3))

	// A queue recreated under the same name starts from nothing.
	apply(t, s, true, func(b *engine.Batch) {
		b.PutQueue("q", []byte("new"))
		b.AddCounts("q", 1, 5)
	})
	st = load(t, s)
	if len(st.Queues) != 2 || st.Queues[0].Name != "q" || st.Queues[0].Count != 1 || st.Queues[0].Bytes != 5 ||
		string(st.Queues[0].Meta) != "new" {
		t.Fatalf("recreated queue: Queues = %+v", st.Queues)
	}
	checkKeys(t, "recreated q ready", scanAll(t, s, "q", engine.Ready))
	// Deleting a queue that does not exist is not an error.
	apply(t, s, true, func(b *engine.Batch) { b.DeleteQueue("nope") })
}

func testEntriesOrder(t *testing.T, s engine.Store) {
	sk := []engine.Key{sched(5, 9), sched(1, 7), sched(5, 2), sched(math.MaxUint64, 1), sched(1<<32, 3), sched(1, 1<<40), sched(256, 4)}
	rk := []uint64{9, 1, 1 << 40, 256, 255, math.MaxUint64, 2}
	apply(t, s, true, func(b *engine.Batch) {
		for i, k := range sk {
			b.PutEntry("q", engine.Scheduled, entry(k, k.Lo, fmt.Sprint("s", i)))
		}
		for _, seq := range rk {
			b.PutEntry("q", engine.Ready, readyEntry(seq))
		}
	})
	wantS := slices.Clone(sk)
	slices.SortFunc(wantS, func(a, b engine.Key) int {
		if a.Less(b) {
			return -1
		}
		if b.Less(a) {
			return 1
		}
		return 0
	})
	checkKeys(t, "scheduled", scanAll(t, s, "q", engine.Scheduled), wantS...)
	var wantR []engine.Key
	for _, seq := range slices.Sorted(slices.Values(rk)) {
		wantR = append(wantR, ready(seq))
	}
	got := scanAll(t, s, "q", engine.Ready)
	checkKeys(t, "ready", got, wantR...)
	for _, e := range got {
		if want := readyEntry(e.Key.Lo); !sameEntry(e, want) {
			t.Fatalf("ready entry %v = %+v, want %+v", e.Key, e, want)
		}
	}
}

func testScanAfterLimit(t *testing.T, s engine.Store) {
	apply(t, s, true, func(b *engine.Batch) {
		for seq := uint64(10); seq <= 50; seq += 10 {
			b.PutEntry("q", engine.Ready, readyEntry(seq))
			b.PutEntry("q", engine.Scheduled, entry(sched(seq, 1), 1, "a"))
			b.PutEntry("q", engine.Scheduled, entry(sched(seq, 2), 2, "b"))
		}
	})
	r := func(seqs ...uint64) []engine.Key {
		var out []engine.Key
		for _, s := range seqs {
			out = append(out, ready(s))
		}
		return out
	}
	cases := []struct {
		after engine.Key
		limit int
		want  []engine.Key
	}{
		{engine.Key{}, 0, r(10, 20, 30, 40, 50)},
		{engine.Key{}, -1, r(10, 20, 30, 40, 50)},
		{engine.Key{}, 2, r(10, 20)},
		{ready(10), 0, r(20, 30, 40, 50)}, // after is exclusive
		{ready(10), 1, r(20)},
		{ready(11), 2, r(20, 30)}, // after need not exist
		{ready(50), 0, nil},
		{ready(math.MaxUint64), 0, nil},
		{engine.Key{Hi: 1}, 0, nil}, // every Ready key has Hi 0
		{ready(49), 100, r(50)},
	}
	for _, c := range cases {
		checkKeys(t, fmt.Sprintf("ready after %v limit %d", c.after, c.limit),
			scan(t, s, "q", engine.Ready, c.after, c.limit), c.want...)
	}
	sc := []struct {
		after engine.Key
		limit int
		want  []engine.Key
	}{
		{sched(20, 1), 3, []engine.Key{sched(20, 2), sched(30, 1), sched(30, 2)}},
		{sched(20, 2), 1, []engine.Key{sched(30, 1)}},
		{sched(20, math.MaxUint64), 1, []engine.Key{sched(30, 1)}},
		{sched(50, 2), 0, nil},
		{sched(0, 5), 1, []engine.Key{sched(10, 1)}},
		{sched(math.MaxUint64, math.MaxUint64), 0, nil},
	}
	for _, c := range sc {
		checkKeys(t, fmt.Sprintf("scheduled after %v limit %d", c.after, c.limit),
			scan(t, s, "q", engine.Scheduled, c.after, c.limit), c.want...)
	}
}

func testScanStops(t *testing.T, s engine.Store) {
	apply(t, s, true, func(b *engine.Batch) {
		for seq := uint64(1); seq <= 5; seq++ {
			b.PutEntry("q", engine.Ready, readyEntry(seq))
		}
	})
	stop := errors.New("stop")
	n := 0
	err := s.Scan("q", engine.Ready, engine.Key{}, 0, func(engine.Entry) error {
		n++
		if n == 2 {
			return stop
		}
		return nil
	})
	if !errors.Is(err, stop) || n != 2 {
		t.Fatalf("Scan = %v after %d calls, want the callback's error after 2", err, n)
	}
	// The store can be written to from inside a scan callback.
	err = s.Scan("q", engine.Ready, engine.Key{}, 1, func(e engine.Entry) error {
		var b engine.Batch
		b.DeleteEntry("q", engine.Ready, e.Key)
		return s.Apply(&b, false)
	})
	if err != nil {
		t.Fatalf("Scan with Apply in callback: %v", err)
	}
	checkKeys(t, "after delete in callback", scanAll(t, s, "q", engine.Ready), ready(2), ready(3), ready(4), ready(5))
}

func testReplaceEntry(t *testing.T, s engine.Store) {
	e := readyEntry(1)
	apply(t, s, true, func(b *engine.Batch) { b.PutEntry("q", engine.Ready, e) })
	e.Deliveries = 3
	e.ExpiresAt = 99
	apply(t, s, true, func(b *engine.Batch) { b.PutEntry("q", engine.Ready, e) })
	checkEntries(t, "replaced", scanAll(t, s, "q", engine.Ready), []engine.Entry{e})
}

func testDeleteEntry(t *testing.T, s engine.Store) {
	apply(t, s, true, func(b *engine.Batch) {
		for seq := uint64(1); seq <= 3; seq++ {
			b.PutEntry("q", engine.Ready, readyEntry(seq))
			b.PutEntry("q", engine.Scheduled, entry(sched(seq, seq), seq, "x"))
		}
	})
	apply(t, s, true, func(b *engine.Batch) {
		b.DeleteEntry("q", engine.Ready, ready(2))
		b.DeleteEntry("q", engine.Scheduled, sched(3, 3))
		b.DeleteEntry("q", engine.Scheduled, sched(2, 3)) // no such entry
		b.DeleteEntry("other", engine.Ready, ready(1))
	})
	checkKeys(t, "ready", scanAll(t, s, "q", engine.Ready), ready(1), ready(3))
	checkKeys(t, "scheduled", scanAll(t, s, "q", engine.Scheduled), sched(1, 1), sched(2, 2))
}

func testPurgeIndex(t *testing.T, s engine.Store) {
	for _, q := range []string{"q", "q2"} {
		apply(t, s, true, func(b *engine.Batch) {
			b.PutQueue(q, nil)
			b.AddCounts(q, 2, 2)
			for seq := uint64(1); seq <= 2; seq++ {
				b.PutEntry(q, engine.Ready, readyEntry(seq))
				b.PutEntry(q, engine.Scheduled, entry(sched(seq, seq), seq, "x"))
			}
		})
	}
	apply(t, s, true, func(b *engine.Batch) { b.PurgeIndex("q", engine.Scheduled) })
	checkKeys(t, "q scheduled", scanAll(t, s, "q", engine.Scheduled))
	checkKeys(t, "q ready", scanAll(t, s, "q", engine.Ready), ready(1), ready(2))
	checkKeys(t, "q2 scheduled", scanAll(t, s, "q2", engine.Scheduled), sched(1, 1), sched(2, 2))
	apply(t, s, true, func(b *engine.Batch) { b.PurgeIndex("q", engine.Ready) })
	checkKeys(t, "q ready", scanAll(t, s, "q", engine.Ready))
	checkKeys(t, "q2 ready", scanAll(t, s, "q2", engine.Ready), ready(1), ready(2))
	// Purging keeps the queue's record and counts.
	if st := load(t, s); len(st.Queues) != 2 || st.Queues[0].Count != 2 {
		t.Fatalf("after purge: Queues = %+v", st.Queues)
	}
}

func testTrimReady(t *testing.T, s engine.Store) {
	apply(t, s, true, func(b *engine.Batch) {
		for seq := uint64(1); seq <= 6; seq++ {
			b.PutEntry("q", engine.Ready, readyEntry(seq))
			b.PutEntry("q2", engine.Ready, readyEntry(seq))
			b.PutEntry("q", engine.Scheduled, entry(sched(seq, seq), seq, "x"))
			b.PutEntry("q", engine.Scheduled, entry(sched(0, seq), seq, "y"))
		}
	})
	apply(t, s, true, func(b *engine.Batch) { b.TrimReady("q", 0) })
	checkKeys(t, "trim 0", scanAll(t, s, "q", engine.Ready), ready(1), ready(2), ready(3), ready(4), ready(5), ready(6))
	apply(t, s, true, func(b *engine.Batch) { b.TrimReady("q", 4) })
	checkKeys(t, "trim 4", scanAll(t, s, "q", engine.Ready), ready(4), ready(5), ready(6))
	if n := len(scanAll(t, s, "q", engine.Scheduled)); n != 12 {
		t.Fatalf("TrimReady removed scheduled entries: %d left, want 12", n)
	}
	if n := len(scanAll(t, s, "q2", engine.Ready)); n != 6 {
		t.Fatalf("TrimReady removed entries of another queue: %d left, want 6", n)
	}
	apply(t, s, true, func(b *engine.Batch) { b.TrimReady("q", math.MaxUint64) })
	checkKeys(t, "trim max", scanAll(t, s, "q", engine.Ready))
}

func testSharedBodies(t *testing.T, s engine.Store) {
	body := &engine.Message{ID: 7, Topic: "a/b", Props: []engine.Property{{Key: "k", Value: "v"}},
		Body: []byte("shared\x00body"), QoS: 1, PublishedAt: 123}
	apply(t, s, true, func(b *engine.Batch) {
		b.PutBody(body)
		b.PutRef(7, 2)
		for _, q := range []string{"q1", "q2"} {
			// Msg on a shared entry is ignored when writing.
			b.PutEntry(q, engine.Ready, engine.Entry{Key: ready(11), Seq: 11, MsgID: 7, Shared: true, Msg: msg(99, "ignored")})
		}
		b.PutEntry("q1", engine.Scheduled, engine.Entry{Key: sched(5, 12), Seq: 12, MsgID: 7, Shared: true})
	})
	for _, q := range []string{"q1", "q2"} {
		want := []engine.Entry{{Key: ready(11), Seq: 11, MsgID: 7, Shared: true, Msg: body}}
		checkEntries(t, q, scanAll(t, s, q, engine.Ready), want)
	}
	checkEntries(t, "q1 scheduled", scanAll(t, s, "q1", engine.Scheduled),
		[]engine.Entry{{Key: sched(5, 12), Seq: 12, MsgID: 7, Shared: true, Msg: body}})
	if refs := load(t, s).Refs; !maps.Equal(refs, map[uint64]uint32{7: 2}) {
		t.Fatalf("Refs = %v, want {7: 2}", refs)
	}
	apply(t, s, true, func(b *engine.Batch) {
		b.DeleteEntry("q1", engine.Ready, ready(11))
		b.DeleteEntry("q1", engine.Scheduled, sched(5, 12))
		b.DeleteEntry("q2", engine.Ready, ready(11))
		b.DeleteBody(7)
		b.DeleteRef(7)
	})
	if refs := load(t, s).Refs; len(refs) != 0 {
		t.Fatalf("Refs = %v, want empty", refs)
	}
	checkKeys(t, "q1 after delete", scanAll(t, s, "q1", engine.Ready))
}

func testMissingBody(t *testing.T, s engine.Store) {
	apply(t, s, true, func(b *engine.Batch) {
		b.PutEntry("q", engine.Ready, engine.Entry{Key: ready(1), Seq: 1, MsgID: 42, Shared: true})
	})
	err := s.Scan("q", engine.Ready, engine.Key{}, 0, func(engine.Entry) error { return nil })
	if !errors.Is(err, engine.ErrCorrupt) {
		t.Fatalf("Scan of a shared entry without a body = %v, want ErrCorrupt", err)
	}
}

func testRefs(t *testing.T, s engine.Store) {
	apply(t, s, true, func(b *engine.Batch) {
		b.PutRef(1, 3)
		b.PutRef(2, 1)
		b.PutRef(math.MaxUint64, math.MaxUint32)
		b.PutRef(3, 0)
	})
	apply(t, s, true, func(b *engine.Batch) {
		b.PutRef(1, 2)
		b.DeleteRef(2)
		b.DeleteRef(4)
	})
	want := map[uint64]uint32{1: 2, 3: 0, math.MaxUint64: math.MaxUint32}
	if refs := load(t, s).Refs; !maps.Equal(refs, want) {
		t.Fatalf("Refs = %v, want %v", refs, want)
	}
}

func testCounts(t *testing.T, s engine.Store) {
	apply(t, s, true, func(b *engine.Batch) {
		b.PutQueue("q", nil)
		b.PutQueue("r", nil)
	})
	deltas := [][2]int64{{1, 100}, {1, 50}, {-1, -100}, {5, 5}, {0, 0}, {-2, -3}, {1 << 40, 1 << 50}}
	var wc, wb int64
	for _, d := range deltas {
		apply(t, s, true, func(b *engine.Batch) { b.AddCounts("q", d[0], d[1]) })
		wc, wb = wc+d[0], wb+d[1]
	}
	// Several in one batch, and a negative total.
	apply(t, s, false, func(b *engine.Batch) {
		b.AddCounts("q", 2, 2)
		b.AddCounts("q", 3, 3)
		b.AddCounts("r", -4, -40)
	})
	wc, wb = wc+5, wb+5
	st := load(t, s)
	if len(st.Queues) != 2 {
		t.Fatalf("Queues = %+v", st.Queues)
	}
	if q := st.Queues[0]; q.Count != wc || q.Bytes != wb {
		t.Fatalf("q counts = %d/%d, want %d/%d", q.Count, q.Bytes, wc, wb)
	}
	if r := st.Queues[1]; r.Count != -4 || r.Bytes != -40 {
		t.Fatalf("r counts = %d/%d, want -4/-40", r.Count, r.Bytes)
	}
	// Replacing the record keeps the counts.
	apply(t, s, true, func(b *engine.Batch) { b.PutQueue("q", []byte("m2")) })
	if q := load(t, s).Queues[0]; q.Count != wc || q.Bytes != wb {
		t.Fatalf("after PutQueue: q counts = %d/%d, want %d/%d", q.Count, q.Bytes, wc, wb)
	}
}

func testBindings(t *testing.T, s engine.Store) {
	apply(t, s, true, func(b *engine.Batch) {
		b.PutBinding("a/+/c", "q1")
		b.PutBinding("a/#", "q1")
		b.PutBinding("a/#", "q2")
		b.PutBinding("a/#", "q2") // again: no duplicate
		b.PutBinding("", "")
	})
	apply(t, s, true, func(b *engine.Batch) {
		b.DeleteBinding("a/#", "q1")
		b.DeleteBinding("x", "q1")
	})
	want := []engine.Binding{{Filter: "", Queue: ""}, {Filter: "a/#", Queue: "q2"}, {Filter: "a/+/c", Queue: "q1"}}
	if got := load(t, s).Bindings; !reflect.DeepEqual(got, want) {
		t.Fatalf("Bindings = %+v, want %+v", got, want)
	}
}

func testIDFloor(t *testing.T, s engine.Store) {
	apply(t, s, true, func(b *engine.Batch) { b.SetIDFloor(1000) })
	if f := load(t, s).IDFloor; f != 1000 {
		t.Fatalf("IDFloor = %d, want 1000", f)
	}
	apply(t, s, true, func(b *engine.Batch) {
		b.SetIDFloor(math.MaxUint64)
		b.SetIDFloor(5) // the last value wins, even a smaller one
	})
	if f := load(t, s).IDFloor; f != 5 {
		t.Fatalf("IDFloor = %d, want 5", f)
	}
}

func testKV(t *testing.T, s engine.Store) {
	apply(t, s, true, func(b *engine.Batch) {
		b.PutKV("retained", "b", []byte("2"))
		b.PutKV("retained", "a", []byte("1"))
		b.PutKV("retained", "a/b", []byte("3"))
		b.PutKV("retained", "", []byte("empty key"))
		b.PutKV("retained", "z", nil)
		b.PutKV("sessions", "a", []byte("session"))
	})
	apply(t, s, true, func(b *engine.Batch) {
		b.PutKV("retained", "b", []byte("2b"))
		b.DeleteKV("retained", "z")
		b.DeleteKV("retained", "nope")
		b.DeleteKV("other", "a")
	})
	want := map[string]string{"": "empty key", "a": "1", "a/b": "3", "b": "2b"}
	if got := scanKV(t, s, "retained"); !maps.Equal(got, want) {
		t.Fatalf("retained = %q, want %q", got, want)
	}
	if got := scanKV(t, s, "sessions"); !maps.Equal(got, map[string]string{"a": "session"}) {
		t.Fatalf("sessions = %q", got)
	}
	if got := scanKV(t, s, "retaine"); len(got) != 0 {
		t.Fatalf("namespace prefix leaked: %q", got)
	}
	stop := errors.New("stop")
	n := 0
	if err := s.ScanKV("retained", func(string, []byte) error { n++; return stop }); !errors.Is(err, stop) || n != 1 {
		t.Fatalf("ScanKV = %v after %d calls, want the callback's error after 1", err, n)
	}
}
