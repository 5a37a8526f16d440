package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/go-stomp/stomp/v3/frame"
)

// Headers that identify a bench message. A broker passes unknown headers
// through, so a consumer can tell whose message it got without parsing the
// body.
const (
	hdrRun      = "x-bench-run"
	hdrProducer = "x-bench-producer"
	hdrSeq      = "x-bench-seq"
	hdrSentAt   = "x-bench-sent-ns" // nanoseconds since the run's clock base
)

// producer sends up to l.capacity(id) persistent messages on its own
// connection. It puts a receipt on every receiptEvery-th SEND and on its
// last, and never has more than window receipts outstanding, so that it
// cannot run ahead of the broker by more than window*receiptEvery messages.
type producer struct {
	id           int
	broker       brokerOptions
	dest         string
	size         int
	receiptEvery int
	window       int
	stopAt       time.Time    // zero: stop only after the last message
	rate         float64      // messages per second; 0: as fast as receipts allow
	clock        func() int64 // non-nil: stamp hdrSentAt with clock()
	l            *ledger
	flushEach    bool // flush after every SEND, not only after receipted ones
}

// run sends, then waits for every outstanding receipt. It returns the first
// error: a connection failure, an ERROR frame or the end of ctx.
func (p *producer) run(ctx context.Context) error {
	c, err := dial(ctx, p.broker)
	if err != nil {
		return err
	}
	defer c.close()

	slots := make(chan struct{}, p.window) // one per outstanding receipt
	readDone := make(chan struct{})
	var readErr error
	go func() {
		defer close(readDone)
		readErr = p.readReceipts(c, slots)
	}()
	defer func() { c.close(); <-readDone }()
	failed := func() error {
		if readErr == nil || errors.Is(readErr, errBrokerError) {
			return fmt.Errorf("producer %d: %w", p.id, readErr)
		}
		return fmt.Errorf("producer %d: receipts: %w", p.id, readErr)
	}
	// acquire takes a receipt slot, flushing first if it has to wait, since
	// the receipts it waits for may be for frames still in the buffer.
	acquire := func() error {
		select {
		case slots <- struct{}{}:
			return nil
		default:
		}
		if err := c.flush(); err != nil {
			return err
		}
		select {
		case slots <- struct{}{}:
			return nil
		case <-readDone:
			return failed()
		case <-ctx.Done():
			return context.Cause(ctx)
		}
	}

	body := bytes.Repeat([]byte("tandem-bench "), p.size/13+1)[:p.size]
	size := strconv.Itoa(p.size)
	pid := strconv.Itoa(p.id)
	var tick *time.Ticker
	if p.rate > 0 {
		tick = time.NewTicker(time.Millisecond)
		defer tick.Stop()
	}
	start := time.Now()
	n := p.l.capacity(p.id)
	for seq := range n {
		if p.rate > 0 {
			// Wait until seq is due: message seq goes out seq/rate after start.
			for float64(seq) >= time.Since(start).Seconds()*p.rate {
				if err := c.flush(); err != nil {
					return err
				}
				select {
				case <-tick.C:
				case <-readDone:
					return failed()
				case <-ctx.Done():
					return context.Cause(ctx)
				}
			}
		}
		last := seq == n-1 || (!p.stopAt.IsZero() && !time.Now().Before(p.stopAt))
		receipt := last || (seq+1)%p.receiptEvery == 0
		f := frame.New(frame.SEND,
			frame.Destination, p.dest,
			"persistent", "true",
			hdrRun, p.l.run,
			hdrProducer, pid,
			hdrSeq, strconv.Itoa(seq),
			frame.ContentLength, size)
		if receipt {
			if err := acquire(); err != nil {
				return err
			}
			f.Header.Add(frame.Receipt, "r"+strconv.Itoa(seq))
		}
		if p.clock != nil {
			f.Header.Add(hdrSentAt, strconv.FormatInt(p.clock(), 10))
		}
		f.Body = body
		if err := c.write(f); err != nil {
			return fmt.Errorf("producer %d: %w", p.id, err)
		}
		p.l.markSent(p.id, seq)
		if receipt || p.flushEach {
			if err := c.flush(); err != nil {
				return fmt.Errorf("producer %d: %w", p.id, err)
			}
		}
		if last {
			break
		}
	}
	// Every slot free again means every receipt arrived.
	for range p.window {
		select {
		case slots <- struct{}{}:
		case <-readDone:
			return failed()
		case <-ctx.Done():
			return context.Cause(ctx)
		}
	}
	_ = c.send(frame.New(frame.DISCONNECT))
	return nil
}

// readReceipts records each RECEIPT in the ledger and frees its slot. It
// returns when the connection fails or is closed.
func (p *producer) readReceipts(c *stompConn, slots chan struct{}) error {
	for {
		f, err := c.read()
		if err != nil {
			return err
		}
		if f.Command != frame.RECEIPT {
			continue
		}
		seq, err := strconv.Atoi(strings.TrimPrefix(f.Header.Get(frame.ReceiptId), "r"))
		if err != nil {
			return fmt.Errorf("unexpected receipt-id %q", f.Header.Get(frame.ReceiptId))
		}
		p.l.markReceipted(p.id, seq)
		select {
		case <-slots:
		default:
			return fmt.Errorf("receipt %q that was not asked for", f.Header.Get(frame.ReceiptId))
		}
	}
}

// consumer subscribes with ack:client-individual and a prefetch and acks
// every message it gets, counting each in the ledger.
type consumer struct {
	id       int
	broker   brokerOptions
	dest     string
	prefetch int
	l        *ledger
	// first, if set, is called with each message delivered for the first
	// time and the time it was read.
	first func(f *frame.Frame, now time.Time)
}

// run consumes until stop is closed or ctx ends. It closes subscribed once
// the broker has confirmed the SUBSCRIBE. On stop it flushes its acks and
// disconnects.
func (k *consumer) run(ctx context.Context, stop <-chan struct{}, subscribed chan<- struct{}) error {
	c, err := dial(ctx, k.broker)
	if err != nil {
		return err
	}
	defer c.close()
	sub := frame.New(frame.SUBSCRIBE,
		frame.Id, "bench-"+strconv.Itoa(k.id),
		frame.Destination, k.dest,
		frame.Ack, frame.AckClientIndividual,
		"prefetch-count", strconv.Itoa(k.prefetch),
		frame.Receipt, "sub")
	if err := c.send(sub); err != nil {
		return fmt.Errorf("consumer %d: %w", k.id, err)
	}
	var once sync.Once
	// Stopping unblocks the read below; the watcher ends with run.
	done := make(chan struct{})
	watcher := make(chan struct{})
	defer func() { close(done); <-watcher }()
	go func() {
		defer close(watcher)
		select {
		case <-stop:
			_ = c.nc.SetReadDeadline(time.Now())
		case <-done:
		}
	}()
	for {
		f, err := c.read()
		if err != nil {
			select {
			case <-stop:
				_ = c.flush()
				c.disconnect(2 * time.Second)
				return nil
			default:
			}
			return fmt.Errorf("consumer %d: %w", k.id, err)
		}
		switch f.Command {
		case frame.RECEIPT:
			if f.Header.Get(frame.ReceiptId) == "sub" {
				once.Do(func() { close(subscribed) })
			}
		case frame.MESSAGE:
			now := time.Now()
			p, _ := strconv.Atoi(f.Header.Get(hdrProducer))
			seq, err := strconv.Atoi(f.Header.Get(hdrSeq))
			if err != nil {
				seq = -1
			}
			if k.l.receive(f.Header.Get(hdrRun), p, seq) && k.first != nil {
				k.first(f, now)
			}
			if err := c.write(c.ack(f)); err != nil {
				return fmt.Errorf("consumer %d: ack: %w", k.id, err)
			}
		}
		// Acks wait in the buffer while more input is at hand.
		if !c.buffered() {
			if err := c.flush(); err != nil {
				return fmt.Errorf("consumer %d: %w", k.id, err)
			}
		}
	}
}

// startConsumers starts n consumers made by mk and waits until each has
// subscribed. The returned stop ends them and waits for them; it may be
// called more than once. Errors of running consumers go to fail.
func startConsumers(ctx context.Context, n int, mk func(i int) *consumer, fail func(error)) (stop func(), err error) {
	done := make(chan struct{})
	var consumers sync.WaitGroup
	subscribed := make([]chan struct{}, n)
	for i := range n {
		subscribed[i] = make(chan struct{})
		k := mk(i)
		consumers.Go(func() {
			if err := k.run(ctx, done, subscribed[i]); err != nil {
				fail(err)
			}
		})
	}
	stop = sync.OnceFunc(func() { close(done); consumers.Wait() })
	for i := range subscribed {
		select {
		case <-subscribed[i]:
		case <-ctx.Done():
			stop()
			return stop, fmt.Errorf("consumers did not subscribe: %v", context.Cause(ctx))
		}
	}
	return stop, nil
}
