package main

import (
	"testing"
	"time"
)

func TestLedgerCounts(t *testing.T) {
	l := newLedger("run1", 2, 10)
	// Producer 0 sends 10, receipts cover 0..7; producer 1 sends 5, receipts cover 0..4.
	for seq := range 10 {
		l.markSent(0, seq)
	}
	l.markReceipted(0, 3)
	l.markReceipted(0, 7)
	l.markReceipted(0, 5) // a late, smaller receipt must not move the mark back
	for seq := range 5 {
		l.markSent(1, seq)
	}
	l.markReceipted(1, 4)

	// Producer 0: 0..5 received, 2 twice; 6 and 7 receipted but missing
	// (lost), 8 received without a receipt, 9 neither (in doubt).
	for _, seq := range []int{0, 1, 2, 2, 3, 4, 5, 8} {
		l.receive("run1", 0, seq)
	}
	// Producer 1: all received, 4 three times.
	for _, seq := range []int{0, 1, 2, 3, 4, 4, 4} {
		l.receive("run1", 1, seq)
	}
	// Foreign: another run, an unknown producer, a sequence out of range.
	if l.receive("run0", 0, 0) || l.receive("run1", 2, 0) || l.receive("run1", 0, 10) || l.receive("run1", 0, -1) {
		t.Fatal("a foreign message counted as a first delivery")
	}

	got := l.counts()
	want := counts{
		Sent:       15,
		Receipted:  8 + 5,
		Received:   7 + 5,
		Deliveries: 8 + 7,
		Duplicates: 1 + 2,
		Lost:       2, // 0/6, 0/7
		InDoubt:    1, // 0/9
		Foreign:    4,
	}
	if got != want {
		t.Fatalf("counts:\n got %+v\nwant %+v", got, want)
	}
	if l.totalSent() != 15 {
		t.Fatalf("totalSent = %d, want 15", l.totalSent())
	}
}

func TestLedgerFirstDelivery(t *testing.T) {
	l := newLedger("r", 1, 1)
	l.markSent(0, 0)
	if !l.receive("r", 0, 0) {
		t.Fatal("first delivery not reported as first")
	}
	if l.receive("r", 0, 0) {
		t.Fatal("second delivery reported as first")
	}
}

func TestPercentile(t *testing.T) {
	ds := make([]time.Duration, 1000)
	for i := range ds {
		ds[i] = time.Duration(1000-i) * time.Microsecond // 1..1000 µs, reversed
	}
	s := summarize(ds)
	// The mean of 1..1000 µs is 500.5 µs, rounded to whole µs: 0.501 ms.
	want := latencySummary{Samples: 1000, P50: 0.5, P99: 0.99, P999: 0.999, Max: 1, Mean: 0.501}
	if s != want {
		t.Fatalf("summary:\n got %+v\nwant %+v", s, want)
	}
	for _, tc := range []struct {
		sorted []time.Duration
		q      float64
		want   time.Duration
	}{
		{nil, 0.99, 0},
		{[]time.Duration{7}, 0.5, 7},
		{[]time.Duration{7}, 0.999, 7},
		{[]time.Duration{1, 2, 3, 4}, 0.5, 2},  // nearest rank: ceil(2) = 2nd
		{[]time.Duration{1, 2, 3, 4}, 0.51, 3}, // ceil(2.04) = 3rd
		{[]time.Duration{1, 2, 3, 4}, 1, 4},
	} {
		if got := percentile(tc.sorted, tc.q); got != tc.want {
			t.Errorf("percentile(%v, %v) = %v, want %v", tc.sorted, tc.q, got, tc.want)
		}
	}
}

func TestSteadyRate(t *testing.T) {
	w := 10 * time.Millisecond
	// A ramp-up bucket, 8 buckets of 100, a tail bucket.
	b := []uint32{5, 100, 100, 100, 100, 100, 100, 100, 100, 3}
	rate, from, to := steadyRate(b, w, 0.05, 0.95)
	// total 808: 5% is the 41st delivery (bucket 1), 95% the 768th (bucket 8).
	if from != 10*time.Millisecond || to != 90*time.Millisecond {
		t.Fatalf("window %v-%v, want 10ms-90ms", from, to)
	}
	if rate != 800/0.08 {
		t.Fatalf("rate %v, want %v", rate, 800/0.08)
	}
	if r, _, _ := steadyRate(nil, w, 0.05, 0.95); r != 0 {
		t.Fatalf("empty timeline rate %v, want 0", r)
	}
	if r, f, to := steadyRate([]uint32{0, 4}, w, 0.05, 0.95); r != 400 || f != w || to != 2*w {
		t.Fatalf("one bucket: %v %v-%v, want 400 10ms-20ms", r, f, to)
	}
}

func TestTimeline(t *testing.T) {
	start := time.Unix(100, 0)
	tl := newTimeline(start, 10*time.Millisecond, 50*time.Millisecond)
	tl.add(start.Add(-time.Second))          // before start: first bucket
	tl.add(start.Add(15 * time.Millisecond)) // bucket 1
	tl.add(start.Add(time.Hour))             // past the span: last bucket
	got := tl.snapshot()
	want := []uint32{1, 1, 0, 0, 0, 1}
	if len(got) != len(want) {
		t.Fatalf("snapshot %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("snapshot %v, want %v", got, want)
		}
	}
}
