package persist

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/tandem-mq/tandem/engine"
)

func benchOpen(b *testing.B) *Store {
	b.Helper()
	s, err := Open(b.TempDir(), Options{Logger: zerolog.Nop()})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		if err := s.Close(); err != nil {
			b.Error(err)
		}
	})
	return s
}

// BenchmarkApplySync measures publish+ack throughput on a real directory:
// each message is one synced batch (an entry with a 1 KiB body and its
// counts) and one unsynced batch that deletes it. With many publishers,
// Pebble's commit pipeline shares fsyncs among them (group commit).
func BenchmarkApplySync(b *testing.B) {
	for _, publishers := range []int{1, 64} {
		b.Run(fmt.Sprintf("publishers=%d", publishers), func(b *testing.B) {
			s := benchOpen(b)
			body := make([]byte, 1024)
			var next atomic.Uint64
			var wg sync.WaitGroup
			errs := make(chan error, publishers)
			b.ResetTimer()
			start := time.Now()
			for p := 0; p < publishers; p++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					var pub, ack engine.Batch
					for {
						seq := next.Add(1)
						if seq > uint64(b.N) {
							return
						}
						m := &engine.Message{ID: seq, Topic: "bench", Body: body}
						pub.Reset()
						pub.PutEntry("q", engine.Ready, engine.Entry{Key: engine.Key{Lo: seq}, Seq: seq, MsgID: seq, Msg: m})
						pub.AddCounts("q", 1, int64(len(body)))
						if err := s.Apply(&pub, true); err != nil {
							errs <- err
							return
						}
						ack.Reset()
						ack.DeleteEntry("q", engine.Ready, engine.Key{Lo: seq})
						ack.AddCounts("q", -1, -int64(len(body)))
						if err := s.Apply(&ack, false); err != nil {
							errs <- err
							return
						}
					}
				}()
			}
			wg.Wait()
			elapsed := time.Since(start)
			b.StopTimer()
			close(errs)
			for err := range errs {
				b.Fatal(err)
			}
			b.ReportMetric(float64(b.N)/elapsed.Seconds(), "msgs/s")
		})
	}
}

// BenchmarkScanAfterHistory measures reading the next 100 entries of a queue
// after 1M entries were published, acknowledged (deleted) and trimmed, and
// compares it with a fresh queue.
func BenchmarkScanAfterHistory(b *testing.B) {
	const history, window, batchSize = 1_000_000, 100, 1000
	s := benchOpen(b)
	body := make([]byte, 100)
	put := func(queue string, from, to uint64) {
		var bt engine.Batch
		for seq := from; seq < to; seq++ {
			m := &engine.Message{ID: seq, Topic: "bench", Body: body}
			bt.PutEntry(queue, engine.Ready, engine.Entry{Key: engine.Key{Lo: seq}, Seq: seq, MsgID: seq, Msg: m})
			if bt.Len() == batchSize || seq == to-1 {
				if err := s.Apply(&bt, false); err != nil {
					b.Fatal(err)
				}
				bt.Reset()
			}
		}
	}
	put("old", 1, history+1)
	var bt engine.Batch
	for seq := uint64(1); seq <= history; seq++ {
		bt.DeleteEntry("old", engine.Ready, engine.Key{Lo: seq})
		if bt.Len() == batchSize {
			if err := s.Apply(&bt, false); err != nil {
				b.Fatal(err)
			}
			bt.Reset()
		}
	}
	bt.Reset()
	bt.TrimReady("old", history+1)
	if err := s.Apply(&bt, true); err != nil {
		b.Fatal(err)
	}
	put("old", history+1, history+1+10*window)
	put("fresh", history+1, history+1+10*window)

	run := func(queue string, after engine.Key) func(b *testing.B) {
		return func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				n := 0
				if err := s.Scan(queue, engine.Ready, after, window, func(engine.Entry) error { n++; return nil }); err != nil {
					b.Fatal(err)
				}
				if n != window {
					b.Fatalf("scanned %d entries, want %d", n, window)
				}
			}
		}
	}
	last := engine.Key{Lo: history}
	b.Run("history/after=last-acked", run("old", last))
	b.Run("history/after=zero", run("old", engine.Key{}))
	b.Run("fresh/after=last-acked", run("fresh", last))
	b.Run("fresh/after=zero", run("fresh", engine.Key{}))
}
