package stomp_test

import (
	"fmt"
	"testing"
	"time"

	gostomp "github.com/go-stomp/stomp/v3"
	"github.com/tandem-mq/tandem/engine"
)

// STOMP 1.2 §BEGIN, §COMMIT; DESIGN.md "Transactions": the SENDs of a
// transaction are invisible until COMMIT, then all apply.
func TestTxnSendsApplyOnCommit(t *testing.T) {
	br := startBroker(t, engine.Config{}, nil)
	c := br.dial()
	watch := br.dial()
	sub, err := watch.Subscribe("/queue/tx", gostomp.AckAuto)
	if err != nil {
		t.Fatal(err)
	}
	tx, err := c.BeginWithError()
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		// The receipt says the server has taken the SEND into the
		// transaction.
		if err := tx.Send("/queue/tx", "", []byte(fmt.Sprint(i)), gostomp.SendOpt.Receipt); err != nil {
			t.Fatal(err)
		}
	}
	if qi := br.queueInfo("tx"); qi.Messages != 0 || qi.Stats.Published != 0 {
		t.Fatalf("visible before COMMIT: %+v", qi)
	}
	select {
	case m := <-sub.C:
		t.Fatalf("delivered before COMMIT: %q", m.Body)
	default:
	}
	if err := tx.CommitWithReceipt(); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		if m := recv(t, sub); string(m.Body) != fmt.Sprint(i) {
			t.Fatalf("got %q", m.Body)
		}
	}
}

// STOMP 1.2 §ACK transaction header, §COMMIT: ACKs inside a transaction
// settle nothing until COMMIT.
func TestTxnAcksApplyOnCommit(t *testing.T) {
	br := startBroker(t, engine.Config{}, nil)
	br.fill("txack", 3)
	c := br.dial()
	sub, err := c.Subscribe("/queue/txack", gostomp.AckClientIndividual)
	if err != nil {
		t.Fatal(err)
	}
	var ms []*gostomp.Message
	for i := 0; i < 3; i++ {
		ms = append(ms, recv(t, sub))
	}
	tx, err := c.BeginWithError()
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range ms {
		if err := tx.Ack(m); err != nil {
			t.Fatal(err)
		}
	}
	// Frames are applied in order: this receipt follows the ACKs.
	if err := tx.Send("/queue/txack-out", "", []byte("done"), gostomp.SendOpt.Receipt); err != nil {
		t.Fatal(err)
	}
	if qi := br.queueInfo("txack"); qi.Unacked != 3 || qi.Messages != 3 {
		t.Fatalf("acks applied before COMMIT: %+v", qi)
	}
	if err := tx.CommitWithReceipt(); err != nil {
		t.Fatal(err)
	}
	br.waitMessages("txack", 0)
	br.waitMessages("txack-out", 1)
}

// STOMP 1.2 §ABORT: an aborted transaction's SENDs and ACKs are dropped.
func TestTxnAbortDiscards(t *testing.T) {
	br := startBroker(t, engine.Config{}, nil)
	br.fill("txab", 1)
	c := br.dial()
	sub, err := c.Subscribe("/queue/txab", gostomp.AckClientIndividual)
	if err != nil {
		t.Fatal(err)
	}
	m := recv(t, sub)
	tx, err := c.BeginWithError()
	if err != nil {
		t.Fatal(err)
	}
	if err := tx.Ack(m); err != nil {
		t.Fatal(err)
	}
	if err := tx.Send("/queue/txab-out", "", []byte("x"), gostomp.SendOpt.Receipt); err != nil {
		t.Fatal(err)
	}
	if err := tx.AbortWithReceipt(); err != nil {
		t.Fatal(err)
	}
	if qi := br.queueInfo("txab"); qi.Unacked != 1 {
		t.Fatalf("aborted ACK applied: %+v", qi)
	}
	if qi := br.queueInfo("txab-out"); qi.Messages != 0 {
		t.Fatalf("aborted SEND applied: %+v", qi)
	}
	// The message is still this consumer's to ack outside the transaction.
	if err := c.Ack(m); err != nil {
		t.Fatal(err)
	}
	br.waitMessages("txab", 0)
}

// STOMP 1.2 §DISCONNECT / §BEGIN: "any started transactions which have not
// been committed will be implicitly aborted" when the connection ends.
func TestTxnDisconnectWithoutCommitDiscards(t *testing.T) {
	br := startBroker(t, engine.Config{}, nil)
	br.fill("txdc", 1)
	base := br.srv.Conns()
	rc := br.rawConnect("accept-version:1.2", "host:x")
	rc.send("SUBSCRIBE", nil, "destination:/queue/txdc", "id:s", "ack:client-individual", "receipt:s")
	ms := rc.readUntil("RECEIPT")
	if len(ms) != 1 {
		t.Fatalf("got %d messages", len(ms))
	}
	rc.send("BEGIN", nil, "transaction:t")
	rc.send("ACK", nil, "id:"+ms[0].Get("ack"), "transaction:t")
	rc.send("SEND", []byte("x"), "destination:/queue/txdc-out", "transaction:t", "receipt:in")
	rc.readUntil("RECEIPT")
	rc.send("DISCONNECT", nil, "receipt:bye")
	rc.readUntil("RECEIPT")
	rc.expectClosed(5 * time.Second)
	waitFor(t, "the connection to end", func() bool { return br.srv.Conns() == base })
	if qi := br.queueInfo("txdc-out"); qi.Messages != 0 {
		t.Fatalf("uncommitted SEND applied: %+v", qi)
	}
	// The uncommitted ACK was dropped: the message is back, redelivered.
	c := br.dial()
	sub, err := c.Subscribe("/queue/txdc", gostomp.AckClientIndividual)
	if err != nil {
		t.Fatal(err)
	}
	if m := recv(t, sub); m.Header.Get("redelivered") != "true" {
		t.Fatalf("got %v", m.Header)
	}
}
