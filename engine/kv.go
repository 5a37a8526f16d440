package engine

import "fmt"

// Limits on adapter key-value state. Each is finite so that no write can
// exceed what a store batch should hold.
const (
	MaxKVNamespaceLength = 255
	MaxKVKeyLength       = 64 << 10
	MaxKVValueLength     = 16 << 20
)

// KVOp is one write of adapter state (MQTT sessions, retained messages,
// QoS 2 records): Value stored under Key in namespace NS, or Key removed
// when Delete is set (Value must then be nil). Namespaces are the adapter's own: the engine never
// reads them.
type KVOp struct {
	NS, Key string
	Value   []byte
	Delete  bool
}

func (op *KVOp) validate() error {
	switch {
	case op.NS == "":
		return fmt.Errorf("%w: empty namespace", ErrInvalidKV)
	case len(op.NS) > MaxKVNamespaceLength:
		return fmt.Errorf("%w: namespace longer than %d bytes", ErrInvalidKV, MaxKVNamespaceLength)
	case len(op.Key) > MaxKVKeyLength:
		return fmt.Errorf("%w: key longer than %d bytes", ErrInvalidKV, MaxKVKeyLength)
	case len(op.Value) > MaxKVValueLength:
		return fmt.Errorf("%w: value longer than %d bytes", ErrInvalidKV, MaxKVValueLength)
	case op.Delete && op.Value != nil:
		return fmt.Errorf("%w: delete with a value", ErrInvalidKV)
	}
	return nil
}

// addKV appends op to the batch.
func (b *Batch) addKV(op KVOp) {
	if op.Delete {
		b.DeleteKV(op.NS, op.Key)
	} else {
		b.PutKV(op.NS, op.Key, op.Value)
	}
}

// PutKV adds to the transaction the write of value under key in namespace
// ns. value must not change until Commit returns. An invalid write (see
// the MaxKV limits; ns must not be empty) makes Commit fail with
// ErrInvalidKV. After Commit or Abort it does nothing.
func (tx *Txn) PutKV(ns, key string, value []byte) {
	tx.addKV(KVOp{NS: ns, Key: key, Value: value})
}

// DeleteKV adds to the transaction the removal of key from namespace ns,
// as PutKV adds a write.
func (tx *Txn) DeleteKV(ns, key string) {
	tx.addKV(KVOp{NS: ns, Key: key, Delete: true})
}

func (tx *Txn) addKV(op KVOp) {
	if tx.done {
		return
	}
	if err := op.validate(); err != nil {
		if tx.kvErr == nil {
			tx.kvErr = err
		}
		return
	}
	tx.kv = append(tx.kv, op)
}

// ApplyKV writes ops atomically, in order (a later op on the same key
// wins). With sync it returns only once they are on stable storage. An
// invalid op fails the call with ErrInvalidKV and nothing is written.
func (b *Broker) ApplyKV(ops []KVOp, sync bool) error {
	for i := range ops {
		if err := ops[i].validate(); err != nil {
			return err
		}
	}
	if !b.enter() {
		return ErrClosed
	}
	defer b.leave()
	if len(ops) == 0 {
		return nil
	}
	var bt Batch
	for _, op := range ops {
		bt.addKV(op)
	}
	err := b.store.Apply(&bt, sync)
	bt.recycle()
	return err
}

// ScanKV calls fn for every key of namespace ns in key order, with a value
// fn may keep. It sees at least every write whose commit returned before
// ScanKV was called. An error from fn stops the scan and is returned.
func (b *Broker) ScanKV(ns string, fn func(key string, value []byte) error) error {
	if err := (&KVOp{NS: ns}).validate(); err != nil {
		return err
	}
	if !b.enter() {
		return ErrClosed
	}
	defer b.leave()
	return b.store.ScanKV(ns, fn)
}
