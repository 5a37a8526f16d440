package engine_test

import (
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/tandem-mq/tandem/engine"
	"github.com/tandem-mq/tandem/engine/memstore"
)

func (h *harness) publishTopic(topic, body string, qos uint8) {
	h.t.Helper()
	if err := h.b.Publish(&engine.Message{Topic: topic, Body: []byte(body), QoS: qos}); err != nil {
		h.t.Fatalf("publish %q to %s: %v", body, topic, err)
	}
}

func TestTopicFanOutAndWildcards(t *testing.T) {
	h := newHarness(t, engine.Config{})
	subs := map[string]*recorder{}
	for _, f := range []string{"a/b/c", "a/+/c", "a/#", "#", "+/+", "$SYS/#", "x/y"} {
		r := &recorder{}
		if _, err := h.b.Subscribe(f, r); err != nil {
			t.Fatal(err)
		}
		subs[f] = r
	}
	h.publishTopic("a/b/c", "1", 0)
	h.publishTopic("$SYS/load", "2", 0)
	h.publishTopic("a/b", "3", 0)
	want := map[string][]string{
		"a/b/c": {"1"}, "a/+/c": {"1"}, "a/#": {"1", "3"}, "#": {"1", "3"},
		"+/+": {"3"}, "$SYS/#": {"2"}, "x/y": nil,
	}
	for f, w := range want {
		if got := bodies(subs[f].take()); !slices.Equal(got, w) {
			t.Errorf("subscriber %q got %q, want %q", f, got, w)
		}
	}
}

func TestTopicSubCloseStopsDelivery(t *testing.T) {
	h := newHarness(t, engine.Config{})
	r := &recorder{}
	s, err := h.b.Subscribe("t", r)
	if err != nil {
		t.Fatal(err)
	}
	h.publishTopic("t", "before", 0)
	s.Close()
	h.publishTopic("t", "after", 0)
	expectBodies(t, "sub", r.take(), "before")
}

func TestBindingAndDurableSubscriptionKeepWhileAway(t *testing.T) {
	h := newHarness(t, engine.Config{})
	if err := h.b.DeclareQueue("ingest", engine.QueueOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := h.b.Bind("sensors/#", "ingest"); err != nil {
		t.Fatal(err)
	}
	if err := h.b.Bind("sensors/+/temp", "ingest"); err != nil { // overlapping: still one copy
		t.Fatal(err)
	}
	if err := h.b.DurableSubscription("sub:app", "sensors/+/temp", engine.QueueOptions{}); err != nil {
		t.Fatal(err)
	}
	h.publishTopic("sensors/room1/temp", "21.5", 1)
	h.publishTopic("sensors/room1/hum", "40", 1)
	h.restart() // nobody consumed: both queues keep their messages
	_, ri := h.consume("ingest", engine.ConsumeOptions{})
	expectBodies(t, "ingest", ri.take(), "21.5", "40")
	_, rs := h.consume("sub:app", engine.ConsumeOptions{})
	ds := rs.take()
	expectBodies(t, "durable sub", ds, "21.5")
	if ds[0].Msg.Topic != "sensors/room1/temp" {
		t.Fatalf("delivered topic %q", ds[0].Msg.Topic)
	}
	// Changing the filter re-binds the subscription.
	if err := h.b.DurableSubscription("sub:app", "other/#", engine.QueueOptions{}); err != nil {
		t.Fatal(err)
	}
	h.publishTopic("sensors/room1/temp", "22", 1)
	h.publishTopic("other/x", "o", 1)
	expectBodies(t, "re-bound sub", rs.take(), "o")
}

func TestTransactionAtomic(t *testing.T) {
	h := newHarness(t, engine.Config{})
	h.send("in", "job")
	c, r := h.consume("in", engine.ConsumeOptions{})
	d := r.take()[0]

	tx := h.b.Begin()
	if err := tx.Publish(&engine.Message{Topic: "out", ToQueue: true, Body: []byte("result")}); err != nil {
		t.Fatal(err)
	}
	if err := tx.Ack(c, d.Tag); err != nil {
		t.Fatal(err)
	}
	if info, _ := h.b.QueueInfo("in"); info.Unacked != 1 {
		t.Fatalf("ack applied before commit: %+v", info)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	if info, _ := h.b.QueueInfo("in"); info.Messages != 0 {
		t.Fatalf("after commit, in holds %d", info.Messages)
	}
	_, ro := h.consume("out", engine.ConsumeOptions{})
	expectBodies(t, "out", ro.take(), "result")
	if err := tx.Commit(); !errors.Is(err, engine.ErrTxnDone) {
		t.Fatalf("second commit: %v", err)
	}

	// Abort discards publishes and acks.
	h.send("in", "job2")
	d = r.take()[0]
	tx = h.b.Begin()
	_ = tx.Publish(&engine.Message{Topic: "out", ToQueue: true, Body: []byte("discarded")})
	_ = tx.Ack(c, d.Tag)
	tx.Abort()
	if ds := ro.take(); len(ds) != 0 {
		t.Fatalf("aborted publish delivered: %q", bodies(ds))
	}
	if info, _ := h.b.QueueInfo("in"); info.Unacked != 1 {
		t.Fatalf("aborted ack applied: %+v", info)
	}
}

func TestTransactionAllOrNothingOnRefusal(t *testing.T) {
	h := newHarness(t, engine.Config{Rules: []engine.PolicyRule{{Match: "small", Policy: engine.Policy{MaxLength: 1}}}})
	h.send("small", "fills it")
	tx := h.b.Begin()
	_ = tx.Publish(&engine.Message{Topic: "big", ToQueue: true, Body: []byte("a")})
	_ = tx.Publish(&engine.Message{Topic: "small", ToQueue: true, Body: []byte("b")})
	if err := tx.Commit(); !errors.Is(err, engine.ErrQueueFull) {
		t.Fatalf("commit: %v", err)
	}
	if info, err := h.b.QueueInfo("big"); err != nil || info.Messages != 0 {
		t.Fatalf("big after refused txn: %+v %v", info, err)
	}
}

// failingStore fails every Apply once armed.
type failingStore struct {
	engine.Store
	fail bool
}

var errDisk = errors.New("disk on fire")

func (s *failingStore) Apply(b *engine.Batch, sync bool) error {
	if s.fail {
		return errDisk
	}
	return s.Store.Apply(b, sync)
}

func TestTransactionStoreFailureLeavesNothing(t *testing.T) {
	fs := &failingStore{Store: memstore.New()}
	clock := engine.NewFakeClock(epoch)
	b, err := engine.Open(fs, engine.Config{Clock: clock})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	r := &recorder{}
	c, err := b.Consume("in", r, engine.ConsumeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Publish(&engine.Message{Topic: "in", ToQueue: true, Body: []byte("job"), QoS: 1}); err != nil {
		t.Fatal(err)
	}
	d := r.take()[0]
	if err := b.DeclareQueue("out", engine.QueueOptions{}); err != nil {
		t.Fatal(err)
	}
	fs.fail = true
	tx := b.Begin()
	_ = tx.Publish(&engine.Message{Topic: "out", ToQueue: true, Body: []byte("x"), QoS: 1})
	_ = tx.Ack(c, d.Tag)
	if err := tx.Commit(); !errors.Is(err, errDisk) {
		t.Fatalf("commit on failing store: %v", err)
	}
	fs.fail = false
	if info, _ := b.QueueInfo("out"); info.Messages != 0 {
		t.Fatalf("failed txn left %d messages in out", info.Messages)
	}
	if err := c.Ack(false, d.Tag); err != nil {
		t.Fatalf("delivery should still be unacked after failed txn: %v", err)
	}
}

func TestRecoveryRestoresQueuesCountsDelaysAndDLQ(t *testing.T) {
	h := newHarness(t, engine.Config{Default: engine.Policy{MaxDeliveries: 2, RedeliveryDelay: time.Minute, RedeliveryMaxDelay: time.Minute}})
	for _, b := range seq("m", 5) {
		h.send("jobs", b)
	}
	later := h.clock.Now().Add(time.Hour).UnixNano()
	if err := h.b.Publish(&engine.Message{Topic: "jobs", ToQueue: true, Body: []byte("delayed"), NotBefore: later, QoS: 1}); err != nil {
		t.Fatal(err)
	}
	c, r := h.consume("jobs", engine.ConsumeOptions{Credit: 10})
	ds := r.take()
	expectBodies(t, "first deliveries", ds, seq("m", 5)...)
	if err := c.Ack(false, ds[0].Tag); err != nil {
		t.Fatal(err)
	}
	for _, d := range ds[1:3] { // m1, m2 back in a minute
		if err := c.Nack(d.Tag); err != nil {
			t.Fatal(err)
		}
	}
	h.clock.Advance(time.Minute)
	ds = r.take()
	expectBodies(t, "redelivered", ds, "m1", "m2")
	for _, d := range ds {
		if err := c.Nack(d.Tag); err != nil { // second attempt: to the DLQ
			t.Fatal(err)
		}
	}
	r.take()
	before, _ := h.b.QueueInfo("jobs")
	h.restart()
	after, _ := h.b.QueueInfo("jobs")
	if before.Messages != after.Messages || before.Bytes != after.Bytes {
		t.Fatalf("counts before restart %d/%d, after %d/%d", before.Messages, before.Bytes, after.Messages, after.Bytes)
	}
	dlq, err := h.b.Browse("jobs.dlq", 10)
	if err != nil {
		t.Fatal(err)
	}
	var dead []string
	for _, e := range dlq {
		dead = append(dead, string(e.Msg.Body))
	}
	if !slices.Equal(dead, []string{"m1", "m2"}) {
		t.Fatalf("dlq after restart: %q", dead)
	}
	_, r2 := h.consume("jobs", engine.ConsumeOptions{Credit: 10})
	ds = r2.take()
	// m3 and m4 were unacked at the restart: they come back, redelivered;
	// the delayed message is not due yet.
	expectBodies(t, "after restart", ds, "m3", "m4")
	for _, d := range ds {
		if d.Count != 2 {
			t.Fatalf("%s: delivery count %d after restart, want 2", d.Msg.Body, d.Count)
		}
	}
	h.clock.Advance(time.Hour)
	if got := bodies(r2.take()); !slices.Contains(got, "delayed") {
		t.Fatalf("delayed message not delivered when due after restart: %q", got)
	}
}

func TestDLQBrowseReplayPurge(t *testing.T) {
	h := newHarness(t, engine.Config{Default: engine.Policy{MaxDeliveries: 1}})
	for _, b := range seq("m", 3) {
		h.send("jobs", b)
	}
	c, r := h.consume("jobs", engine.ConsumeOptions{Credit: 10})
	for _, d := range r.take() {
		if err := c.Nack(d.Tag); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	es, err := h.b.Browse("jobs.dlq", 10)
	if err != nil || len(es) != 3 {
		t.Fatalf("browse: %d entries, %v", len(es), err)
	}
	if info, _ := h.b.QueueInfo("jobs.dlq"); info.Messages != 3 {
		t.Fatalf("browse consumed: %+v", info)
	}
	n, err := h.b.Replay("jobs.dlq", 2)
	if err != nil || n != 2 {
		t.Fatalf("replay: %d %v", n, err)
	}
	_, r2 := h.consume("jobs", engine.ConsumeOptions{Credit: 10})
	ds := r2.take()
	expectBodies(t, "replayed", ds, "m0", "m1")
	if ds[0].Count != 1 || prop(ds[0].Msg, engine.HeaderDeathReason) != "" {
		t.Fatalf("replayed delivery count %d props %+v", ds[0].Count, ds[0].Msg.Props)
	}
	n2, err := h.b.Purge("jobs.dlq")
	if err != nil || n2 != 1 {
		t.Fatalf("purge: %d %v", n2, err)
	}
	if info, _ := h.b.QueueInfo("jobs.dlq"); info.Messages != 0 {
		t.Fatalf("after purge: %+v", info)
	}
}

func TestDeleteQueue(t *testing.T) {
	h := newHarness(t, engine.Config{})
	h.send("q", "x")
	if err := h.b.Bind("t/#", "q"); err != nil {
		t.Fatal(err)
	}
	if err := h.b.DeleteQueue("q"); err != nil {
		t.Fatal(err)
	}
	if _, err := h.b.QueueInfo("q"); !errors.Is(err, engine.ErrNoQueue) {
		t.Fatalf("deleted queue still there: %v", err)
	}
	if len(h.b.Bindings()) != 0 {
		t.Fatalf("bindings left: %v", h.b.Bindings())
	}
	h.restart()
	if _, err := h.b.QueueInfo("q"); !errors.Is(err, engine.ErrNoQueue) {
		t.Fatalf("deleted queue back after restart: %v", err)
	}
}

func TestTemporaryQueueNeverStored(t *testing.T) {
	h := newHarness(t, engine.Config{})
	if err := h.b.DeclareQueue("tmp", engine.QueueOptions{Temporary: true}); err != nil {
		t.Fatal(err)
	}
	h.send("tmp", "x")
	st, err := h.store.Load()
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range st.Queues {
		if q.Name == "tmp" {
			t.Fatalf("temporary queue written to the store: %+v", q)
		}
	}
	_, r := h.consume("tmp", engine.ConsumeOptions{})
	expectBodies(t, "tmp", r.take(), "x")
}

// countingStore counts what the engine asks a store to write.
type countingStore struct {
	engine.Store
	bodies, sharedEntries, inlineEntries int
}

func (s *countingStore) Apply(b *engine.Batch, sync bool) error {
	for _, op := range b.Ops {
		switch {
		case op.Kind == engine.OpPutBody:
			s.bodies++
		case op.Kind == engine.OpPutEntry && op.Entry.Shared:
			s.sharedEntries++
		case op.Kind == engine.OpPutEntry:
			s.inlineEntries++
		}
	}
	return s.Store.Apply(b, sync)
}

func TestFanOutStoresBodyOnce(t *testing.T) {
	cs := &countingStore{Store: memstore.New()}
	b, err := engine.Open(cs, engine.Config{Clock: engine.NewFakeClock(epoch)})
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{"a", "b", "c"} {
		if err := b.DurableSubscription(q, "fan/#", engine.QueueOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Publish(&engine.Message{Topic: "fan/out", Body: []byte("payload"), QoS: 1}); err != nil {
		t.Fatal(err)
	}
	if cs.bodies != 1 || cs.sharedEntries != 3 || cs.inlineEntries != 0 {
		t.Fatalf("fan-out to 3 queues wrote %d bodies, %d shared and %d inline entries; want 1, 3, 0",
			cs.bodies, cs.sharedEntries, cs.inlineEntries)
	}
	// The body goes with the last reference.
	for _, q := range []string{"a", "b", "c"} {
		r := &recorder{}
		c, err := b.Consume(q, r, engine.ConsumeOptions{})
		if err != nil {
			t.Fatal(err)
		}
		ds := r.take()
		expectBodies(t, q, ds, "payload")
		if err := c.Ack(false, ds[0].Tag); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	st, err := cs.Load()
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Refs) != 0 {
		t.Fatalf("references left after every queue acked: %v", st.Refs)
	}
}

func TestPublishAllIndependent(t *testing.T) {
	h := newHarness(t, engine.Config{Rules: []engine.PolicyRule{{Match: "small", Policy: engine.Policy{MaxLength: 1}}}})
	ms := []*engine.Message{
		{Topic: "small", ToQueue: true, Body: []byte("1"), QoS: 1},
		{Topic: "small", ToQueue: true, Body: []byte("2"), QoS: 1}, // refused: full
		{Topic: "other", ToQueue: true, Body: []byte("3"), QoS: 1},
		{Topic: "bad/#", Body: []byte("4")}, // refused: invalid topic
		{Topic: "other", ToQueue: true, Body: []byte("5"), QoS: 1},
	}
	errs := make([]error, len(ms))
	if err := h.b.PublishAll(ms, errs); err != nil {
		t.Fatal(err)
	}
	if errs[0] != nil || !errors.Is(errs[1], engine.ErrQueueFull) || errs[2] != nil ||
		!errors.Is(errs[3], engine.ErrInvalidTopic) || errs[4] != nil {
		t.Fatalf("errs %v", errs)
	}
	_, rs := h.consume("small", engine.ConsumeOptions{})
	expectBodies(t, "small", rs.take(), "1")
	_, ro := h.consume("other", engine.ConsumeOptions{})
	expectBodies(t, "other", ro.take(), "3", "5")
}

// gateStore holds the first batch that puts an entry into queue until
// release is closed.
type gateStore struct {
	engine.Store
	queue   string
	held    chan struct{}
	release chan struct{}
	once    sync.Once
}

func (s *gateStore) Apply(b *engine.Batch, sync bool) error {
	for _, op := range b.Ops {
		if op.Kind == engine.OpPutEntry && op.Queue == s.queue {
			s.once.Do(func() {
				close(s.held)
				<-s.release
			})
			break
		}
	}
	return s.Store.Apply(b, sync)
}

func TestDeleteQueueDuringPublishLeavesNoOrphans(t *testing.T) {
	gs := &gateStore{Store: memstore.New(), queue: "q", held: make(chan struct{}), release: make(chan struct{})}
	b, err := engine.Open(gs, engine.Config{Clock: engine.NewFakeClock(epoch)})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if err := b.DeclareQueue("q", engine.QueueOptions{}); err != nil {
		t.Fatal(err)
	}
	published := make(chan error, 1)
	go func() {
		published <- b.Publish(&engine.Message{Topic: "q", ToQueue: true, Body: []byte("late"), QoS: 1})
	}()
	<-gs.held // the publish is reserved, its batch not yet applied
	if err := b.DeleteQueue("q"); err != nil {
		t.Fatal(err)
	}
	close(gs.release)
	if err := <-published; err != nil {
		t.Fatal(err)
	}
	n := 0
	if err := gs.Scan("q", engine.Ready, engine.Key{}, 0, func(engine.Entry) error { n++; return nil }); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Fatalf("%d entries of the deleted queue left in the store", n)
	}
}

// TestTopicPublishSkipsQueueDeletedMidRoute deletes and re-creates a bound
// queue while a publisher publishes to its topic: a queue deleted between
// routing and reserving is skipped, never an error for the publisher.
func TestTopicPublishSkipsQueueDeletedMidRoute(t *testing.T) {
	b, err := engine.Open(memstore.New(), engine.Config{Clock: engine.NewFakeClock(epoch)})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	stop := make(chan struct{})
	churned := make(chan error, 1)
	go func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				churned <- nil
				return
			default:
			}
			if err := b.DurableSubscription("sub", "t/#", engine.QueueOptions{}); err != nil {
				churned <- err
				return
			}
			if err := b.DeleteQueue("sub"); err != nil {
				churned <- err
				return
			}
		}
	}()
	for i := range 3000 {
		if err := b.Publish(&engine.Message{Topic: "t/x", Body: []byte("m"), QoS: 1}); err != nil {
			close(stop)
			<-churned
			t.Fatalf("publish %d: %v", i, err)
		}
	}
	close(stop)
	if err := <-churned; err != nil {
		t.Fatal(err)
	}
}
