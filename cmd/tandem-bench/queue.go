package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"math"
	"sync"
	"time"

	"github.com/go-stomp/stomp/v3/frame"
)

// queueConfig is the stomp-queue scenario: durable-queue throughput with
// exact accounting.
type queueConfig struct {
	common
	producers, consumers int
	size                 int
	count                int           // messages in all; also the bound in duration mode
	duration             time.Duration // 0: send count messages
	receiptEvery, window int
	prefetch             int
	drain                time.Duration // how long consumers may lag the last receipt
}

func (c *queueConfig) flags(fs *flag.FlagSet) {
	c.common.flags(fs, "/queue/bench")
	fs.IntVar(&c.producers, "producers", 4, "producer connections")
	fs.IntVar(&c.consumers, "consumers", 4, "consumer connections (ack client-individual)")
	fs.IntVar(&c.size, "size", 128, "message body `bytes`")
	fs.IntVar(&c.count, "count", 200_000, "messages to send in all (an upper bound with --duration)")
	fs.DurationVar(&c.duration, "duration", 0, "send for this long instead (still at most --count)")
	fs.IntVar(&c.receiptEvery, "receipt-every", 100, "put a receipt on every `n`th SEND of a producer (and on its last)")
	fs.IntVar(&c.window, "window", 10, "receipts a producer may have outstanding")
	fs.IntVar(&c.prefetch, "prefetch", 100, "prefetch-count of each subscription")
	fs.DurationVar(&c.drain, "drain", 15*time.Second, "after the last receipt, wait this long for deliveries before counting the rest lost")
}

func (c *queueConfig) validate() error {
	if err := c.common.validate(); err != nil {
		return err
	}
	switch {
	case c.producers < 1 || c.consumers < 1:
		return errors.New("--producers and --consumers must be at least 1")
	case c.count < c.producers:
		return errors.New("--count must be at least --producers")
	case c.count > 100_000_000:
		return errors.New("--count must be at most 100,000,000")
	case c.size < 0 || c.size > 16<<20:
		return errors.New("--size must be 0..16 MiB")
	case c.receiptEvery < 1 || c.window < 1 || c.prefetch < 1:
		return errors.New("--receipt-every, --window and --prefetch must be at least 1")
	case c.duration < 0 || c.drain < 0:
		return errors.New("--duration and --drain must not be negative")
	}
	return nil
}

// queueResult is the scenario's report.
type queueResult struct {
	header
	Producers    int    `json:"producers"`
	Consumers    int    `json:"consumers"`
	Size         int    `json:"size"`
	Count        int    `json:"count"`
	Duration     string `json:"duration,omitempty"`
	ReceiptEvery int    `json:"receipt_every"`
	Window       int    `json:"window"`
	Prefetch     int    `json:"prefetch"`
	counts
	ExactlyOnce bool     `json:"exactly_once"` // every message sent was receipted and received once
	SendSecs    float64  `json:"send_s"`       // producers' start to their last receipt
	ElapsedSecs float64  `json:"elapsed_s"`    // producers' start to the last first delivery
	SteadyRate  float64  `json:"steady_msgs_per_s"`
	SteadyFrom  float64  `json:"steady_from_s"`
	SteadyTo    float64  `json:"steady_to_s"`
	OverallRate float64  `json:"overall_msgs_per_s"`
	Errors      []string `json:"errors,omitempty"`
}

// runQueue runs the scenario and returns its report. Errors of single
// connections are in the report; the returned error is for a run that
// could not start.
func runQueue(ctx context.Context, cfg queueConfig) (queueResult, error) {
	ctx, cancel := context.WithTimeoutCause(ctx, cfg.timeout, errors.New("hard deadline (--timeout) reached"))
	defer cancel()
	res := queueResult{
		header:       cfg.header("stomp-queue"),
		Producers:    cfg.producers,
		Consumers:    cfg.consumers,
		Size:         cfg.size,
		Count:        cfg.count,
		ReceiptEvery: cfg.receiptEvery,
		Window:       cfg.window,
		Prefetch:     cfg.prefetch,
	}
	if cfg.duration > 0 {
		res.Duration = cfg.duration.String()
	}
	per := (cfg.count + cfg.producers - 1) / cfg.producers
	l := newLedger(res.Run, cfg.producers, per)
	var errsMu sync.Mutex
	fail := func(err error) {
		errsMu.Lock()
		defer errsMu.Unlock()
		if len(res.Errors) < 20 {
			res.Errors = append(res.Errors, err.Error())
		}
	}

	// The clock starts when the producers do; the timeline is filled by
	// consumers from then on.
	var tl *timeline
	var tlReady = make(chan struct{})
	first := func(_ *frame.Frame, now time.Time) {
		<-tlReady // messages of this run exist only once producers started
		tl.add(now)
	}

	stopConsumers, err := startConsumers(ctx, cfg.consumers, func(i int) *consumer {
		return &consumer{id: i, broker: cfg.broker, dest: cfg.dest, prefetch: cfg.prefetch, l: l, first: first}
	}, fail)
	defer stopConsumers()
	if err != nil {
		return res, fmt.Errorf("%w (%v)", err, res.Errors)
	}

	start := time.Now()
	tl = newTimeline(start, 10*time.Millisecond, cfg.timeout)
	close(tlReady)
	var stopAt time.Time
	if cfg.duration > 0 {
		stopAt = start.Add(cfg.duration)
	}
	var producers sync.WaitGroup
	for i := range cfg.producers {
		p := &producer{id: i, broker: cfg.broker, dest: cfg.dest, size: cfg.size,
			receiptEvery: cfg.receiptEvery, window: cfg.window, stopAt: stopAt, l: l}
		producers.Go(func() {
			if err := p.run(ctx); err != nil {
				fail(err)
			}
		})
	}
	producers.Wait()
	res.SendSecs = time.Since(start).Seconds()

	l.waitDelivered(ctx, cfg.drain)
	stopConsumers()
	if err := context.Cause(ctx); err != nil && !errors.Is(err, context.Canceled) {
		fail(err)
	}

	res.counts = l.counts()
	res.ExactlyOnce = res.counts.exactlyOnce()
	buckets := tl.snapshot()
	res.ElapsedSecs = (time.Duration(len(buckets)) * tl.width).Seconds()
	rate, from, to := steadyRate(buckets, tl.width, 0.05, 0.95)
	res.SteadyRate = math.Round(rate)
	res.SteadyFrom, res.SteadyTo = from.Seconds(), to.Seconds()
	if res.ElapsedSecs > 0 {
		res.OverallRate = math.Round(float64(res.Received) / res.ElapsedSecs)
	}
	return res, nil
}

// human is the one-line summary.
func (r queueResult) human() string {
	verdict := "exactly once"
	if !r.ExactlyOnce {
		verdict = "NOT exactly once"
	}
	return fmt.Sprintf("stomp-queue %s %s: %d sent, %d receipted, %d received, %d duplicates, %d lost, %d in doubt (%s); "+
		"%.0f msgs/s steady (%.1f-%.1fs), %.0f overall, in %.1fs; %dP/%dC, %d B, receipt every %d, window %d, prefetch %d",
		r.Label, r.Addr, r.Sent, r.Receipted, r.Received, r.Duplicates, r.Lost, r.InDoubt, verdict,
		r.SteadyRate, r.SteadyFrom, r.SteadyTo, r.OverallRate, r.ElapsedSecs,
		r.Producers, r.Consumers, r.Size, r.ReceiptEvery, r.Window, r.Prefetch)
}

// ok reports whether the run counted no loss, duplicate or error.
func (r queueResult) ok() bool { return r.ExactlyOnce && len(r.Errors) == 0 }
