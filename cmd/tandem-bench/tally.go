package main

import (
	"context"
	"math"
	"slices"
	"sync/atomic"
	"time"
)

// ledger counts every message of one run exactly. A message is named by its
// producer p and its sequence number seq on that producer; both travel in
// headers. Consumers and producers update it concurrently.
//
// Receipts are cumulative: a producer puts a receipt on every Nth SEND, and
// a broker processes a connection's frames in order, so the receipt on the
// SEND with sequence k confirms every SEND of that producer up to k.
type ledger struct {
	run       string            // this run's id; other runs' messages are foreign
	seen      [][]atomic.Uint32 // [p][seq]: deliveries of the message
	sent      []atomic.Int64    // [p]: SENDs written
	receipted []atomic.Int64    // [p]: sequence numbers below this are receipted

	deliveries atomic.Int64 // MESSAGE frames of this run, duplicates included
	unique     atomic.Int64 // distinct messages received
	duplicates atomic.Int64 // deliveries of a message already received
	foreign    atomic.Int64 // MESSAGEs of another run or with no bench headers
}

// newLedger makes a ledger for producers producers of at most perProducer
// messages each.
func newLedger(run string, producers, perProducer int) *ledger {
	l := &ledger{
		run:       run,
		seen:      make([][]atomic.Uint32, producers),
		sent:      make([]atomic.Int64, producers),
		receipted: make([]atomic.Int64, producers),
	}
	for p := range l.seen {
		l.seen[p] = make([]atomic.Uint32, perProducer)
	}
	return l
}

// capacity is how many messages producer p may send.
func (l *ledger) capacity(p int) int { return len(l.seen[p]) }

// markSent records that producer p wrote the SEND with sequence seq.
func (l *ledger) markSent(p, seq int) { l.sent[p].Store(int64(seq) + 1) }

// markReceipted records a receipt for producer p's SEND with sequence seq,
// which confirms every earlier one too.
func (l *ledger) markReceipted(p, seq int) {
	for {
		cur := l.receipted[p].Load()
		if int64(seq) < cur || l.receipted[p].CompareAndSwap(cur, int64(seq)+1) {
			return
		}
	}
}

// receive records one delivery and reports whether it was the first of that
// message. A delivery with an unknown run, producer or sequence is foreign.
func (l *ledger) receive(run string, p, seq int) (first bool) {
	if run != l.run || p < 0 || p >= len(l.seen) || seq < 0 || seq >= len(l.seen[p]) {
		l.foreign.Add(1)
		return false
	}
	l.deliveries.Add(1)
	if l.seen[p][seq].Add(1) > 1 {
		l.duplicates.Add(1)
		return false
	}
	l.unique.Add(1)
	return true
}

// counts is the ledger's summary.
type counts struct {
	Sent       int64 `json:"sent"`       // SENDs written
	Receipted  int64 `json:"receipted"`  // SENDs confirmed by a receipt
	Received   int64 `json:"received"`   // distinct messages delivered
	Deliveries int64 `json:"deliveries"` // MESSAGE frames, duplicates included
	Duplicates int64 `json:"duplicates"` // deliveries of a message already delivered
	Lost       int64 `json:"lost"`       // receipted but never delivered
	InDoubt    int64 `json:"in_doubt"`   // sent, not receipted, never delivered
	Foreign    int64 `json:"foreign"`    // MESSAGEs not of this run
}

// totalSent is the number of SENDs written by all producers.
func (l *ledger) totalSent() int64 {
	var n int64
	for p := range l.sent {
		n += l.sent[p].Load()
	}
	return n
}

// counts scans the ledger. Call it once nobody updates the ledger any more.
func (l *ledger) counts() counts {
	c := counts{
		Deliveries: l.deliveries.Load(),
		Received:   l.unique.Load(),
		Duplicates: l.duplicates.Load(),
		Foreign:    l.foreign.Load(),
	}
	for p := range l.seen {
		sent, rcpt := l.sent[p].Load(), l.receipted[p].Load()
		c.Sent += sent
		c.Receipted += rcpt
		for seq := range sent {
			if l.seen[p][seq].Load() > 0 {
				continue
			}
			if seq < rcpt {
				c.Lost++
			} else {
				c.InDoubt++
			}
		}
	}
	return c
}

// timeline counts first deliveries in fixed-width buckets since a start, so
// that the steady rate can be told apart from ramp-up and tail.
type timeline struct {
	start   time.Time
	width   time.Duration
	buckets []atomic.Uint32
}

// newTimeline covers span from start; later deliveries go into the last
// bucket.
func newTimeline(start time.Time, width, span time.Duration) *timeline {
	return &timeline{start: start, width: width, buckets: make([]atomic.Uint32, int(span/width)+1)}
}

// add counts one delivery at now.
func (t *timeline) add(now time.Time) {
	i := int(now.Sub(t.start) / t.width)
	i = max(0, min(i, len(t.buckets)-1))
	t.buckets[i].Add(1)
}

// snapshot returns the bucket counts, trimmed after the last non-empty one.
func (t *timeline) snapshot() []uint32 {
	out := make([]uint32, len(t.buckets))
	last := 0
	for i := range t.buckets {
		out[i] = t.buckets[i].Load()
		if out[i] > 0 {
			last = i + 1
		}
	}
	return out[:last]
}

// steadyRate is the delivery rate (per second) between the moment the lo
// fraction of all deliveries had arrived and the moment the hi fraction had,
// over whole buckets: it leaves out connection set-up, ramp-up and the tail.
// It returns 0 when there are no deliveries.
func steadyRate(buckets []uint32, width time.Duration, lo, hi float64) (rate float64, from, to time.Duration) {
	var total uint64
	for _, b := range buckets {
		total += uint64(b)
	}
	if total == 0 {
		return 0, 0, 0
	}
	loN := uint64(math.Ceil(lo * float64(total)))
	hiN := uint64(math.Ceil(hi * float64(total)))
	i0, i1 := -1, -1
	var cum, before uint64
	for i, b := range buckets {
		prev := cum
		cum += uint64(b)
		if i0 < 0 && cum >= max(loN, 1) {
			i0, before = i, prev
		}
		if i1 < 0 && cum >= max(hiN, 1) {
			i1 = i
			break
		}
	}
	n := cum - before
	from, to = time.Duration(i0)*width, time.Duration(i1+1)*width
	return float64(n) / (to - from).Seconds(), from, to
}

// percentile returns the q-quantile (0 < q <= 1) of sorted by the nearest-rank
// method: the smallest value with at least q of all values at or below it.
func percentile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(math.Ceil(q * float64(len(sorted))))
	return sorted[max(0, min(rank, len(sorted))-1)]
}

// latencySummary is what the latency scenario reports, in milliseconds.
type latencySummary struct {
	Samples int     `json:"samples"`
	P50     float64 `json:"p50_ms"`
	P99     float64 `json:"p99_ms"`
	P999    float64 `json:"p999_ms"`
	Max     float64 `json:"max_ms"`
	Mean    float64 `json:"mean_ms"`
}

// summarize sorts ds in place and summarizes it.
func summarize(ds []time.Duration) latencySummary {
	slices.Sort(ds)
	ms := func(d time.Duration) float64 { return math.Round(float64(d)/1e3) / 1e3 }
	s := latencySummary{Samples: len(ds)}
	if len(ds) == 0 {
		return s
	}
	var sum time.Duration
	for _, d := range ds {
		sum += d
	}
	s.P50 = ms(percentile(ds, 0.50))
	s.P99 = ms(percentile(ds, 0.99))
	s.P999 = ms(percentile(ds, 0.999))
	s.Max = ms(ds[len(ds)-1])
	s.Mean = ms(sum / time.Duration(len(ds)))
	return s
}

// waitDelivered waits until every SEND was delivered, for at most drain
// (or until ctx ends).
func (l *ledger) waitDelivered(ctx context.Context, drain time.Duration) {
	drainTimer := time.NewTimer(drain)
	defer drainTimer.Stop()
	poll := time.NewTicker(5 * time.Millisecond)
	defer poll.Stop()
	sent := l.totalSent()
	for l.unique.Load() < sent {
		select {
		case <-poll.C:
		case <-drainTimer.C:
			return
		case <-ctx.Done():
			return
		}
	}
}

// exactlyOnce reports whether every message sent was receipted and
// delivered exactly once.
func (c counts) exactlyOnce() bool {
	return c.Sent > 0 && c.Received == c.Sent && c.Receipted == c.Sent &&
		c.Duplicates == 0 && c.Lost == 0 && c.InDoubt == 0
}
