package persist

import (
	"sync"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/tandem-mq/tandem/engine"
)

// TestOnSync checks that every synced commit, and only a synced one, is
// reported to Options.OnSync, and that concurrent synced Applies sharing a
// group commit are reported once per group, not once per Apply.
func TestOnSync(t *testing.T) {
	var (
		mu    sync.Mutex
		syncs []time.Duration
	)
	opts := testOptions(t, vfs.NewMem())
	opts.OnSync = func(d time.Duration) {
		mu.Lock()
		syncs = append(syncs, d)
		mu.Unlock()
	}
	s := mustOpen(t, "db", opts)
	defer func() {
		if err := s.Close(); err != nil {
			t.Error(err)
		}
	}()
	count := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(syncs)
	}
	put := func(sync bool, key string) {
		t.Helper()
		var b engine.Batch
		b.PutKV("ns", key, []byte("v"))
		if err := s.Apply(&b, sync); err != nil {
			t.Fatal(err)
		}
	}
	put(false, "a")
	if n := count(); n != 0 {
		t.Fatalf("an unsynced Apply was reported %d times", n)
	}
	put(true, "b")
	if n := count(); n != 1 {
		t.Fatalf("a synced Apply was reported %d times, want 1", n)
	}
	var wg sync.WaitGroup
	for i := range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var b engine.Batch
			b.PutKV("ns", string(rune('c'+i)), []byte("v"))
			if err := s.Apply(&b, true); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if n := count(); n < 2 || n > 33 {
		t.Fatalf("32 concurrent synced Applies gave %d reports in all, want 2 to 33", n)
	}
	mu.Lock()
	defer mu.Unlock()
	for _, d := range syncs {
		if d < 0 {
			t.Fatalf("reported duration %v", d)
		}
	}
}
