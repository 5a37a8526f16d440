package engine

// BeginBatch starts a transaction whose publishes are independent: a
// publish that is refused (invalid destination, queue full, …) is left out
// without failing the others, and PublishErr(i) reports it after Commit.
// The acks and key-value writes of the batch still apply atomically with
// the publishes that were accepted, in one store write. Adapters use it to
// commit a connection's pipelined publishes, and the state they keep about
// them, together.
func (b *Broker) BeginBatch() *Txn { return &Txn{b: b, batch: true} }

// PublishErr reports what became of the message of the i-th Publish call
// (counting from 0) of a batch: nil if it was published, why it was refused
// otherwise, or Commit's error if the commit failed as a whole (then nothing
// was published). Before Commit it reports only an invalid destination.
// On a transaction from Begin, whose publishes stand or fall together, it
// returns Commit's error. i must be less than the number of Publish calls.
func (tx *Txn) PublishErr(i int) error {
	if tx.batch && tx.errs[i] != nil {
		return tx.errs[i]
	}
	return tx.err
}

// PublishAll publishes messages independently but with one store write:
// errs[i] (len(errs) == len(ms)) says why ms[i] was not published (nil: it
// was). The returned error is a failure of the whole write (store error,
// ErrClosed), in which case none was published and every errs[i] is set.
// Adapters use it to commit a connection's pipelined publishes together;
// the messages of one call keep their order. It is a batch (BeginBatch)
// of publishes only.
func (b *Broker) PublishAll(ms []*Message, errs []error) error {
	tx := &Txn{b: b, batch: true, pubs: make([]*Message, 0, len(ms)), errs: make([]error, 0, len(ms))}
	for _, m := range ms {
		_ = tx.Publish(m) // recorded for PublishErr
	}
	err := tx.Commit()
	for i := range ms {
		errs[i] = tx.PublishErr(i)
	}
	return err
}
