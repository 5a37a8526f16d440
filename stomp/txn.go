package stomp

import (
	"errors"
	"fmt"

	"github.com/go-stomp/stomp/v3/frame"
	"github.com/tandem-mq/tandem/engine"
)

// txn is an open STOMP transaction: the SENDs and ACKs it holds are applied
// on COMMIT as one engine transaction (one store batch), or not at all.
type txn struct {
	ops   []func(*engine.Txn) error
	after []func() error // NACKs, applied once the transaction committed
}

func (t *txn) add(c *conn, op func(*engine.Txn) error) error {
	if len(t.ops) >= c.s.cfg.MaxTxnFrames {
		return fmt.Errorf("transaction holds too many frames (limit %d)", c.s.cfg.MaxTxnFrames)
	}
	t.ops = append(t.ops, op)
	return nil
}

func (c *conn) onBegin(f *frame.Frame) error {
	id := f.Header.Get(frame.Transaction)
	if id == "" {
		return errorf(f, "BEGIN frame has no transaction header")
	}
	if _, dup := c.txns[id]; dup {
		return errorf(f, "transaction %q already begun", truncate(id))
	}
	if len(c.txns) >= c.s.cfg.MaxTransactions {
		return errorf(f, "too many open transactions (limit %d)", c.s.cfg.MaxTransactions)
	}
	c.txns[id] = &txn{}
	c.receipt(f)
	return nil
}

func (c *conn) onCommit(f *frame.Frame) error {
	id := f.Header.Get(frame.Transaction)
	tx := c.txns[id]
	if tx == nil {
		return errorf(f, "unknown transaction %q", truncate(id))
	}
	delete(c.txns, id)
	etx := c.s.b.Begin()
	for _, op := range tx.ops {
		if err := op(etx); err != nil {
			etx.Abort()
			return errorf(f, "transaction %q: %v", truncate(id), err)
		}
	}
	if err := etx.Commit(); err != nil {
		if errors.Is(err, engine.ErrQueueFull) || errors.Is(err, engine.ErrUnknownTag) {
			return &protoError{msg: "transaction refused", detail: err.Error(), frame: f}
		}
		return err
	}
	for _, fn := range tx.after {
		if err := fn(); err != nil {
			return err
		}
	}
	c.receipt(f)
	return nil
}

func (c *conn) onAbort(f *frame.Frame) error {
	id := f.Header.Get(frame.Transaction)
	if _, ok := c.txns[id]; !ok {
		return errorf(f, "unknown transaction %q", truncate(id))
	}
	delete(c.txns, id)
	c.receipt(f)
	return nil
}
