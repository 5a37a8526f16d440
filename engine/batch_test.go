package engine_test

import (
	"errors"
	"testing"

	"github.com/tandem-mq/tandem/engine"
	"github.com/tandem-mq/tandem/engine/memstore"
)

// TestBatchIndependentPublishesAtomicAcksAndKV checks BeginBatch: refused
// publishes are left out and reported by PublishErr, while the accepted
// ones, the acks and the key-value writes commit together.
func TestBatchIndependentPublishesAtomicAcksAndKV(t *testing.T) {
	h := newHarness(t, engine.Config{Rules: []engine.PolicyRule{{Match: "small", Policy: engine.Policy{MaxLength: 1}}}})
	h.send("in", "job")
	c, r := h.consume("in", engine.ConsumeOptions{})
	d := r.take()[0]

	tx := h.b.BeginBatch()
	pubs := []*engine.Message{
		{Topic: "small", ToQueue: true, Body: []byte("1"), QoS: 1},
		{Topic: "small", ToQueue: true, Body: []byte("2"), QoS: 1}, // refused: full
		{Topic: "bad/#", Body: []byte("3")},                        // refused: invalid topic
		{Topic: "other", ToQueue: true, Body: []byte("4"), QoS: 1},
	}
	for i, m := range pubs {
		err := tx.Publish(m)
		if (i == 2) != (err != nil) {
			t.Fatalf("Publish %d: %v", i, err)
		}
	}
	if err := tx.PublishErr(2); !errors.Is(err, engine.ErrInvalidTopic) {
		t.Fatalf("PublishErr(2) before Commit = %v", err)
	}
	if err := tx.Ack(c, d.Tag); err != nil {
		t.Fatal(err)
	}
	tx.PutKV("mqtt", "qos2/1", []byte("rec"))
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	if tx.PublishErr(0) != nil || !errors.Is(tx.PublishErr(1), engine.ErrQueueFull) ||
		!errors.Is(tx.PublishErr(2), engine.ErrInvalidTopic) || tx.PublishErr(3) != nil {
		t.Fatalf("PublishErr: %v %v %v %v", tx.PublishErr(0), tx.PublishErr(1), tx.PublishErr(2), tx.PublishErr(3))
	}
	_, rs := h.consume("small", engine.ConsumeOptions{})
	expectBodies(t, "small", rs.take(), "1")
	_, ro := h.consume("other", engine.ConsumeOptions{})
	expectBodies(t, "other", ro.take(), "4")
	if info, _ := h.b.QueueInfo("in"); info.Messages != 0 {
		t.Fatalf("ack not applied: %+v", info)
	}
	expectKV(t, h.b, "mqtt", map[string]string{"qos2/1": "rec"})
	if err := tx.Commit(); !errors.Is(err, engine.ErrTxnDone) {
		t.Fatalf("second commit: %v", err)
	}
}

// TestBatchFailsAsAWhole checks that an unknown ack tag fails the whole
// batch: no publish, no key-value write, and PublishErr says why.
func TestBatchFailsAsAWhole(t *testing.T) {
	h := newHarness(t, engine.Config{})
	c, _ := h.consume("in", engine.ConsumeOptions{})
	tx := h.b.BeginBatch()
	_ = tx.Publish(&engine.Message{Topic: "out", ToQueue: true, Body: []byte("x"), QoS: 1})
	_ = tx.Publish(&engine.Message{Topic: "", ToQueue: true})
	_ = tx.Ack(c, 12345)
	tx.PutKV("ns", "k", []byte("v"))
	if err := tx.Commit(); !errors.Is(err, engine.ErrUnknownTag) {
		t.Fatalf("commit: %v", err)
	}
	if err := tx.PublishErr(0); !errors.Is(err, engine.ErrUnknownTag) {
		t.Fatalf("PublishErr(0) = %v, want the commit's error", err)
	}
	if err := tx.PublishErr(1); !errors.Is(err, engine.ErrInvalidQueue) {
		t.Fatalf("PublishErr(1) = %v, want its own refusal", err)
	}
	if info, err := h.b.QueueInfo("out"); err == nil && info.Messages != 0 {
		t.Fatalf("failed batch published: %+v", info)
	}
	expectKV(t, h.b, "ns", map[string]string{})

	// An aborted batch reports ErrTxnDone for every publish.
	tx = h.b.BeginBatch()
	_ = tx.Publish(&engine.Message{Topic: "out", ToQueue: true})
	tx.Abort()
	if err := tx.PublishErr(0); !errors.Is(err, engine.ErrTxnDone) {
		t.Fatalf("PublishErr after Abort = %v", err)
	}
}

// TestBeginPublishErr checks PublishErr on an all-or-nothing transaction:
// it is the commit's result for every publish.
func TestBeginPublishErr(t *testing.T) {
	h := newHarness(t, engine.Config{Rules: []engine.PolicyRule{{Match: "small", Policy: engine.Policy{MaxLength: 1}}}})
	h.send("small", "fills it")
	tx := h.b.Begin()
	_ = tx.Publish(&engine.Message{Topic: "big", ToQueue: true})
	_ = tx.Publish(&engine.Message{Topic: "small", ToQueue: true})
	if err := tx.Commit(); !errors.Is(err, engine.ErrQueueFull) {
		t.Fatalf("commit: %v", err)
	}
	for i := range 2 {
		if err := tx.PublishErr(i); !errors.Is(err, engine.ErrQueueFull) {
			t.Fatalf("PublishErr(%d) = %v", i, err)
		}
	}
}

func TestPublishAllStoreFailure(t *testing.T) {
	fs := &failingStore{Store: memstore.New()}
	b, err := engine.Open(fs, engine.Config{Clock: engine.NewFakeClock(epoch)})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if err := b.DeclareQueue("q", engine.QueueOptions{}); err != nil {
		t.Fatal(err)
	}
	fs.fail = true
	ms := []*engine.Message{
		{Topic: "q", ToQueue: true, Body: []byte("1"), QoS: 1},
		{Topic: "a/+", Body: []byte("2")},
	}
	errs := make([]error, len(ms))
	if err := b.PublishAll(ms, errs); !errors.Is(err, errDisk) {
		t.Fatalf("PublishAll on a failing store: %v", err)
	}
	if !errors.Is(errs[0], errDisk) || !errors.Is(errs[1], engine.ErrInvalidTopic) {
		t.Fatalf("errs %v", errs)
	}
	fs.fail = false
	if info, _ := b.QueueInfo("q"); info.Messages != 0 {
		t.Fatalf("failed PublishAll left %d messages", info.Messages)
	}
}
