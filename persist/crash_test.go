package persist_test

import (
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/tandem-mq/tandem/engine"
)

// TestEngineCrashLosesNoConfirmedMessage runs publishers and an acking
// consumer through the engine on a crashable in-memory file system, takes
// crash clones while they run, and recovers each clone: every message whose
// Publish returned before the crash is there unless its ack had started,
// no message whose synced ack returned before the crash comes back, nothing
// is there twice, and nothing is there that was never published.
func TestEngineCrashLosesNoConfirmedMessage(t *testing.T) {
	for _, unsynced := range []int{0, 50, 100} {
		t.Run(fmt.Sprintf("unsynced=%d%%", unsynced), func(t *testing.T) {
			crashOnce(t, unsynced, int64(unsynced)+1)
		})
	}
}

func crashOnce(t *testing.T, unsyncedPercent int, seed int64) {
	fs := vfs.NewCrashableMem()
	b, st := openBroker(t, "db", fs, engine.Config{WindowSize: 32})

	var (
		mu         sync.Mutex
		confirmed  = map[string]bool{} // Publish returned nil
		ackStarted = map[string]bool{}
		acked      = map[string]bool{} // synced Ack returned nil
	)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var published atomic.Int64
	enough := make(chan struct{})
	var enoughOnce sync.Once
	for p := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				body := fmt.Sprintf("p%d-%d", p, i)
				err := b.Publish(&engine.Message{Topic: "q", ToQueue: true, Body: []byte(body), QoS: 1})
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				confirmed[body] = true
				mu.Unlock()
				if published.Add(1) == 2000 {
					enoughOnce.Do(func() { close(enough) })
				}
			}
		}()
	}
	ch := make(chanSink, 1<<16)
	c, err := b.Consume("q", ch, engine.ConsumeOptions{Credit: 64})
	if err != nil {
		t.Fatal(err)
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			case d := <-ch:
				body := string(d.Msg.Body)
				mu.Lock()
				ackStarted[body] = true
				mu.Unlock()
				if err := c.Ack(true, d.Tag); err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				acked[body] = true
				mu.Unlock()
			}
		}
	}()

	// Crash once enough has happened.
	select {
	case <-enough:
	case <-time.After(30 * time.Second):
		t.Fatalf("only %d messages published in 30s", published.Load())
	}
	mu.Lock()
	wantPresent := map[string]bool{}
	for body := range confirmed {
		if !ackStarted[body] {
			wantPresent[body] = true
		}
	}
	mustAbsent := map[string]bool{}
	for body := range acked {
		mustAbsent[body] = true
	}
	// The clone is taken with mu held: the consumer records an ack as
	// started (under mu) before it sends it, so no ack can begin between
	// computing the sets above and the crash. (Taking the clone after
	// unlocking let an ack of a message counted as "must be present" land
	// first, and the test then reported it as lost.)
	clone := fs.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: unsyncedPercent, RNG: rand.New(rand.NewPCG(uint64(seed), 1))})
	mu.Unlock()
	close(stop)
	wg.Wait()
	closeBroker(t, b, st)
	if len(wantPresent) == 0 {
		t.Fatal("no confirmed message to check")
	}

	b2, st2 := openBroker(t, "db", clone, engine.Config{WindowSize: 32})
	defer closeBroker(t, b2, st2)
	info, err := b2.QueueInfo("q")
	if err != nil {
		t.Fatal(err)
	}
	ch2 := make(chanSink, 1<<16)
	c2, err := b2.Consume("q", ch2, engine.ConsumeOptions{Credit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for int64(len(seen)) < info.Messages {
		select {
		case d := <-ch2:
			body := string(d.Msg.Body)
			if seen[body] {
				t.Fatalf("%s delivered twice after recovery", body)
			}
			seen[body] = true
			if err := c2.Ack(false, d.Tag); err != nil {
				t.Fatal(err)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("recovered queue counts %d messages, only %d delivered", info.Messages, len(seen))
		}
	}
	mu.Lock()
	defer mu.Unlock()
	for body := range seen {
		if mustAbsent[body] {
			t.Errorf("%s came back although its synced ack returned before the crash", body)
		}
		if !confirmed[body] && !ackStarted[body] {
			// Published but not yet confirmed at the crash is fine; never
			// published is not. Bodies are only made by publishers, so check
			// the shape and that its publisher got that far.
			var p, i int
			if _, err := fmt.Sscanf(body, "p%d-%d", &p, &i); err != nil {
				t.Errorf("unknown message %q after recovery", body)
			}
		}
	}
	lost := 0
	for body := range wantPresent {
		if !seen[body] {
			lost++
		}
	}
	if lost > 0 {
		t.Fatalf("%d of %d confirmed, unacked messages lost in the crash", lost, len(wantPresent))
	}
	t.Logf("crash with %d%% unsynced data kept: %d confirmed unacked messages all recovered; %d acked ones stayed gone",
		unsyncedPercent, len(wantPresent), len(mustAbsent))
}
