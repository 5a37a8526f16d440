package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"math"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-stomp/stomp/v3/frame"
)

// latencyConfig is the stomp-latency scenario: a fixed total rate, end-to-end
// latency from SEND to MESSAGE.
type latencyConfig struct {
	common
	producers, consumers int
	size                 int
	rate                 int // messages per second, all producers together
	duration, warmup     time.Duration
	receiptEvery, window int
	prefetch             int
	drain                time.Duration
}

func (c *latencyConfig) flags(fs *flag.FlagSet) {
	c.common.flags(fs, "/queue/bench-latency")
	fs.IntVar(&c.producers, "producers", 1, "producer connections; the rate is split between them")
	fs.IntVar(&c.consumers, "consumers", 1, "consumer connections (ack client-individual)")
	fs.IntVar(&c.size, "size", 128, "message body `bytes`")
	fs.IntVar(&c.rate, "rate", 1000, "messages per second, all producers together")
	fs.DurationVar(&c.duration, "duration", 20*time.Second, "how long to send")
	fs.DurationVar(&c.warmup, "warmup", 2*time.Second, "messages sent in this first part are delivered and counted but not in the percentiles")
	fs.IntVar(&c.receiptEvery, "receipt-every", 1, "put a receipt on every `n`th SEND of a producer (and on its last)")
	fs.IntVar(&c.window, "window", 10, "receipts a producer may have outstanding")
	fs.IntVar(&c.prefetch, "prefetch", 100, "prefetch-count of each subscription")
	fs.DurationVar(&c.drain, "drain", 15*time.Second, "after the last receipt, wait this long for deliveries before counting the rest lost")
}

func (c *latencyConfig) validate() error {
	if err := c.common.validate(); err != nil {
		return err
	}
	switch {
	case c.producers < 1 || c.consumers < 1:
		return errors.New("--producers and --consumers must be at least 1")
	case c.rate < c.producers || c.duration <= 0:
		return errors.New("--rate must be at least --producers and --duration positive")
	case float64(c.rate)*c.duration.Seconds() > 50_000_000:
		return errors.New("--rate times --duration must be at most 50,000,000 messages")
	case c.warmup < 0 || c.warmup >= c.duration:
		return errors.New("--warmup must be shorter than --duration")
	case c.size < 0 || c.size > 16<<20:
		return errors.New("--size must be 0..16 MiB")
	case c.receiptEvery < 1 || c.window < 1 || c.prefetch < 1 || c.drain < 0:
		return errors.New("--receipt-every, --window and --prefetch must be at least 1")
	}
	return nil
}

// latencyResult is the scenario's report.
type latencyResult struct {
	header
	Producers    int     `json:"producers"`
	Consumers    int     `json:"consumers"`
	Size         int     `json:"size"`
	Rate         int     `json:"rate"`
	Duration     string  `json:"duration"`
	Warmup       string  `json:"warmup"`
	ReceiptEvery int     `json:"receipt_every"`
	Window       int     `json:"window"`
	Prefetch     int     `json:"prefetch"`
	AchievedRate float64 `json:"achieved_msgs_per_s"` // SENDs per second actually written
	counts
	ExactlyOnce bool           `json:"exactly_once"`
	Latency     latencySummary `json:"latency"`
	Errors      []string       `json:"errors,omitempty"`
}

// runLatency runs the scenario and returns its report.
func runLatency(ctx context.Context, cfg latencyConfig) (latencyResult, error) {
	ctx, cancel := context.WithTimeoutCause(ctx, cfg.timeout, errors.New("hard deadline (--timeout) reached"))
	defer cancel()
	res := latencyResult{
		header:       cfg.header("stomp-latency"),
		Producers:    cfg.producers,
		Consumers:    cfg.consumers,
		Size:         cfg.size,
		Rate:         cfg.rate,
		Duration:     cfg.duration.String(),
		Warmup:       cfg.warmup.String(),
		ReceiptEvery: cfg.receiptEvery,
		Window:       cfg.window,
		Prefetch:     cfg.prefetch,
	}
	total := int(float64(cfg.rate) * cfg.duration.Seconds())
	per := total / cfg.producers
	l := newLedger(res.Run, cfg.producers, per)
	var errsMu sync.Mutex
	fail := func(err error) {
		errsMu.Lock()
		defer errsMu.Unlock()
		if len(res.Errors) < 20 {
			res.Errors = append(res.Errors, err.Error())
		}
	}

	// One monotonic clock for the whole process: producers stamp
	// nanoseconds since base, consumers subtract.
	base := time.Now()
	clock := func() int64 { return int64(time.Since(base)) }
	var warm atomic.Int64 // stamps before this are warm-up; set when producers start
	var (
		samplesMu sync.Mutex
		samples   = make([]time.Duration, 0, per*cfg.producers)
	)
	first := func(f *frame.Frame, now time.Time) {
		ts, err := strconv.ParseInt(f.Header.Get(hdrSentAt), 10, 64)
		if err != nil || ts < warm.Load() {
			return
		}
		d := now.Sub(base) - time.Duration(ts)
		samplesMu.Lock()
		samples = append(samples, d)
		samplesMu.Unlock()
	}

	stopConsumers, err := startConsumers(ctx, cfg.consumers, func(i int) *consumer {
		return &consumer{id: i, broker: cfg.broker, dest: cfg.dest, prefetch: cfg.prefetch, l: l, first: first}
	}, fail)
	defer stopConsumers()
	if err != nil {
		return res, fmt.Errorf("%w (%v)", err, res.Errors)
	}

	warm.Store(clock() + int64(cfg.warmup))
	start := time.Now()
	var producers sync.WaitGroup
	for i := range cfg.producers {
		p := &producer{id: i, broker: cfg.broker, dest: cfg.dest, size: cfg.size,
			receiptEvery: cfg.receiptEvery, window: cfg.window,
			rate: float64(cfg.rate) / float64(cfg.producers), clock: clock, l: l, flushEach: true}
		producers.Go(func() {
			if err := p.run(ctx); err != nil {
				fail(err)
			}
		})
	}
	producers.Wait()
	sendSecs := time.Since(start).Seconds()

	l.waitDelivered(ctx, cfg.drain)
	stopConsumers()
	if err := context.Cause(ctx); err != nil && !errors.Is(err, context.Canceled) {
		fail(err)
	}

	res.counts = l.counts()
	res.ExactlyOnce = res.counts.exactlyOnce()
	if sendSecs > 0 {
		res.AchievedRate = math.Round(float64(res.Sent) / sendSecs)
	}
	res.Latency = summarize(samples)
	return res, nil
}

// human is the one-line summary.
func (r latencyResult) human() string {
	verdict := "exactly once"
	if !r.ExactlyOnce {
		verdict = "NOT exactly once"
	}
	return fmt.Sprintf("stomp-latency %s %s: %d msgs/s for %s (achieved %.0f): p50 %.3f ms, p99 %.3f ms, p99.9 %.3f ms, max %.3f ms over %d samples (after %s warm-up); "+
		"%d sent, %d receipted, %d received, %d duplicates, %d lost, %d in doubt (%s); %dP/%dC, %d B, receipt every %d, window %d, prefetch %d",
		r.Label, r.Addr, r.Rate, r.Duration, r.AchievedRate, r.Latency.P50, r.Latency.P99, r.Latency.P999, r.Latency.Max, r.Latency.Samples, r.Warmup,
		r.Sent, r.Receipted, r.Received, r.Duplicates, r.Lost, r.InDoubt, verdict,
		r.Producers, r.Consumers, r.Size, r.ReceiptEvery, r.Window, r.Prefetch)
}

// ok reports whether the run counted no loss, duplicate or error.
func (r latencyResult) ok() bool { return r.ExactlyOnce && len(r.Errors) == 0 }
