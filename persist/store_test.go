package persist

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/rs/zerolog"
	"github.com/tandem-mq/tandem/engine"
	"github.com/tandem-mq/tandem/engine/storetest"
)

func testOptions(t testing.TB, fs vfs.FS) Options {
	return Options{FS: fs, Logger: zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel),
		CacheSize: 1 << 20, MemTableSize: 1 << 20}
}

func mustOpen(t testing.TB, dir string, opts Options) *Store {
	t.Helper()
	s, err := Open(dir, opts)
	if err != nil {
		t.Fatalf("Open(%s): %v", dir, err)
	}
	return s
}

func TestStoreMem(t *testing.T) {
	storetest.Run(t, func(t *testing.T) engine.Store {
		return mustOpen(t, "db", testOptions(t, vfs.NewMem()))
	})
}

func TestStoreDisk(t *testing.T) {
	storetest.Run(t, func(t *testing.T) engine.Store {
		return mustOpen(t, t.TempDir(), testOptions(t, nil))
	})
}

func TestReopenMem(t *testing.T) {
	fs := vfs.NewMem()
	storetest.RunReopen(t, func(t *testing.T, dir string) engine.Store {
		return mustOpen(t, dir, testOptions(t, fs))
	})
}

func TestReopenDisk(t *testing.T) {
	storetest.RunReopen(t, func(t *testing.T, dir string) engine.Store {
		return mustOpen(t, dir, testOptions(t, nil))
	})
}

func TestOptions(t *testing.T) {
	var o Options
	o.EnsureDefaults()
	if err := o.Validate(); err != nil {
		t.Fatalf("defaults: %v", err)
	}
	for _, bad := range []Options{
		{FS: vfs.Default, CacheSize: -1, MemTableSize: 1},
		{FS: vfs.Default, MemTableSize: 1 << 32},
		{CacheSize: 1, MemTableSize: 1},
	} {
		if err := bad.Validate(); !errors.Is(err, ErrInvalidOptions) {
			t.Errorf("Validate(%+v) = %v, want ErrInvalidOptions", bad, err)
		}
	}
	if _, err := Open("db", Options{FS: vfs.NewMem(), CacheSize: -1}); !errors.Is(err, ErrInvalidOptions) {
		t.Errorf("Open with bad options = %v, want ErrInvalidOptions", err)
	}
}

func TestLockedSameProcess(t *testing.T) {
	dir := t.TempDir()
	s := mustOpen(t, dir, testOptions(t, nil))
	_, err := Open(dir, testOptions(t, nil))
	if !errors.Is(err, ErrLocked) || !strings.Contains(err.Error(), "in use by another process") {
		t.Fatalf("second Open = %v, want ErrLocked", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// Once closed, the directory can be opened again.
	s = mustOpen(t, dir, testOptions(t, nil))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestLockedMemFS(t *testing.T) {
	fs := vfs.NewMem()
	s := mustOpen(t, "db", testOptions(t, fs))
	defer func() {
		if err := s.Close(); err != nil {
			t.Error(err)
		}
	}()
	if _, err := Open("db", testOptions(t, fs)); !errors.Is(err, ErrLocked) {
		t.Fatalf("second Open = %v, want ErrLocked", err)
	}
}

// TestLockedOtherProcess opens a directory that a child process (this test
// binary, re-run as a helper) holds open.
func TestLockedOtherProcess(t *testing.T) {
	if dir := os.Getenv("TANDEM_PERSIST_LOCK_HELPER"); dir != "" {
		s, err := Open(dir, Options{})
		if err != nil {
			fmt.Println("open failed:", err)
			os.Exit(1)
		}
		fmt.Println("ready")
		// Hold the lock until the parent closes stdin.
		_, _ = os.Stdin.Read(make([]byte, 1))
		if err := s.Close(); err != nil {
			os.Exit(1)
		}
		os.Exit(0)
	}
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestLockedOtherProcess$")
	cmd.Env = append(os.Environ(), "TANDEM_PERSIST_LOCK_HELPER="+dir)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := stdin.Close(); err != nil {
			t.Error(err)
		}
		if err := cmd.Wait(); err != nil {
			t.Errorf("helper: %v", err)
		}
	}()
	line := make([]byte, 64)
	n, err := stdout.Read(line)
	if err != nil || !strings.HasPrefix(string(line[:n]), "ready") {
		t.Fatalf("helper said %q, %v", line[:n], err)
	}
	_, err = Open(dir, testOptions(t, nil))
	if !errors.Is(err, ErrLocked) {
		t.Fatalf("Open of a directory held by another process = %v, want ErrLocked", err)
	}
	t.Logf("error: %v", err)
}

func TestFormatVersionChecked(t *testing.T) {
	fs := vfs.NewMem()
	s := mustOpen(t, "db", testOptions(t, fs))
	if err := s.db.Set(versionKey(), []byte("tandem.v999"), nil); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := Open("db", testOptions(t, fs)); !errors.Is(err, ErrFormat) {
		t.Fatalf("Open of a future format = %v, want ErrFormat", err)
	}
}

func TestCorruptValue(t *testing.T) {
	s := mustOpen(t, "db", testOptions(t, vfs.NewMem()))
	defer func() {
		if err := s.Close(); err != nil {
			t.Error(err)
		}
	}()
	if err := s.db.Set(entryKey("q", engine.Ready, engine.Key{Lo: 1}), []byte{1, 0, 5}, nil); err != nil {
		t.Fatal(err)
	}
	err := s.Scan("q", engine.Ready, engine.Key{}, 0, func(engine.Entry) error { return nil })
	if !errors.Is(err, engine.ErrCorrupt) {
		t.Fatalf("Scan of a truncated entry = %v, want ErrCorrupt", err)
	}
	if err := s.db.Set(refKey(1), []byte{0xff}, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Load(); !errors.Is(err, engine.ErrCorrupt) {
		t.Fatalf("Load with a bad ref = %v, want ErrCorrupt", err)
	}
}

// TestCloseWaitsForCalls closes the store while writers run: every Apply
// either succeeds or returns ErrClosed, and nothing touches a closed Pebble.
func TestCloseWaitsForCalls(t *testing.T) {
	s := mustOpen(t, "db", testOptions(t, vfs.NewMem()))
	var wg sync.WaitGroup
	var applied atomic.Int64
	started := make(chan struct{}, 8)
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				var b engine.Batch
				b.PutKV("ns", fmt.Sprint(w, "/", i), nil)
				err := s.Apply(&b, false)
				if errors.Is(err, engine.ErrClosed) {
					return
				}
				if err != nil {
					t.Error(err)
					return
				}
				if applied.Add(1) == 1 || i == 0 {
					started <- struct{}{}
				}
			}
		}()
	}
	<-started
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
}

// writeAcked is one acknowledged synced batch of the crash test.
type writeAcked struct {
	writer, i int
}

// TestCrashSyncedBatchesSurvive runs many concurrent writers of synced
// batches and takes crash clones of the file system while they run: every
// batch whose Apply returned before the clone must be in it, whole.
func TestCrashSyncedBatchesSurvive(t *testing.T) {
	for _, unsynced := range []int{0, 50, 100} {
		t.Run(fmt.Sprintf("unsynced=%d", unsynced), func(t *testing.T) {
			crashTest(t, unsynced)
		})
	}
}

func crashTest(t *testing.T, unsyncedPercent int) {
	const writers, perWriter, clones = 16, 60, 3
	fs := vfs.NewCrashableMem()
	s := mustOpen(t, "db", testOptions(t, fs))
	var mu sync.Mutex
	var acked []writeAcked
	progress := make(chan struct{}, writers*perWriter)
	var wg sync.WaitGroup
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < perWriter; i++ {
				var b engine.Batch
				seq := uint64(w*perWriter + i + 1)
				m := &engine.Message{ID: seq, Topic: "t", Body: []byte(fmt.Sprint("body ", seq))}
				b.PutEntry("q1", engine.Ready, engine.Entry{Key: engine.Key{Lo: seq}, Seq: seq, MsgID: seq, Msg: m})
				b.PutEntry("q2", engine.Ready, engine.Entry{Key: engine.Key{Lo: seq}, Seq: seq, MsgID: seq, Msg: m})
				b.AddCounts("q1", 1, 1)
				b.PutKV("w", fmt.Sprint(seq), []byte("x"))
				if err := s.Apply(&b, true); err != nil {
					t.Error(err)
					return
				}
				// An unsynced batch in between: it may be lost, but never
				// out of order with a later synced one.
				var nb engine.Batch
				nb.PutKV("unsynced", fmt.Sprint(seq), nil)
				if err := s.Apply(&nb, false); err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				acked = append(acked, writeAcked{w, i})
				mu.Unlock()
				progress <- struct{}{}
			}
		}()
	}
	rng := rand.New(rand.NewPCG(1, 2))
	type clone struct {
		fs    *vfs.MemFS
		acked []writeAcked
	}
	var cl []clone
	total := writers * perWriter
	for c := 1; c <= clones; c++ {
		// Wait for a share of the writes, then crash while the rest run.
		deadline := time.After(time.Minute)
		for n := 0; n < total*c/(clones+1)-total*(c-1)/(clones+1); n++ {
			select {
			case <-progress:
			case <-deadline:
				t.Fatal("writers made no progress")
			}
		}
		mu.Lock()
		ack := append([]writeAcked(nil), acked...)
		mu.Unlock()
		cfs := fs.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: unsyncedPercent, RNG: rng})
		cl = append(cl, clone{cfs, ack})
	}
	wg.Wait()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	for ci, c := range cl {
		cs := mustOpen(t, "db", testOptions(t, c.fs))
		present := map[uint64]bool{}
		for _, q := range []string{"q1", "q2"} {
			err := cs.Scan(q, engine.Ready, engine.Key{}, 0, func(e engine.Entry) error {
				if want := fmt.Sprint("body ", e.Seq); string(e.Msg.Body) != want {
					return fmt.Errorf("entry %d has body %q", e.Seq, e.Msg.Body)
				}
				if q == "q1" {
					present[e.Seq] = true
				} else if !present[e.Seq] {
					return fmt.Errorf("entry %d in q2 but not q1: batch torn", e.Seq)
				}
				return nil
			})
			if err != nil {
				t.Fatalf("clone %d: %v", ci, err)
			}
		}
		for _, a := range c.acked {
			if seq := uint64(a.writer*perWriter + a.i + 1); !present[seq] {
				t.Fatalf("clone %d: acknowledged batch %d (writer %d #%d) lost", ci, seq, a.writer, a.i)
			}
		}
		st, err := cs.Load()
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		if err := cs.ScanKV("w", func(string, []byte) error { n++; return nil }); err != nil {
			t.Fatal(err)
		}
		if len(st.Queues) > 0 {
			t.Fatalf("clone %d: unexpected queue records %+v", ci, st.Queues)
		}
		if n != len(present) {
			t.Fatalf("clone %d: %d kv keys but %d entries: batch torn", ci, n, len(present))
		}
		// Per writer, the surviving batches are a prefix of what it wrote
		// (batches are never applied out of order), and an unsynced batch
		// never survives without the synced batch written before it.
		for w := 0; w < writers; w++ {
			last := -1
			for i := 0; i < perWriter; i++ {
				if present[uint64(w*perWriter+i+1)] {
					if last != i-1 {
						t.Fatalf("clone %d: writer %d has batch %d but not %d", ci, w, i, last+1)
					}
					last = i
				}
			}
		}
		unsyncedOK := map[string]bool{}
		if err := cs.ScanKV("unsynced", func(k string, _ []byte) error { unsyncedOK[k] = true; return nil }); err != nil {
			t.Fatal(err)
		}
		for k := range unsyncedOK {
			var seq uint64
			if _, err := fmt.Sscan(k, &seq); err != nil || !present[seq] {
				t.Fatalf("clone %d: unsynced batch %s survived without the synced batch before it", ci, k)
			}
		}
		t.Logf("clone %d: %d acked before the crash, %d present after", ci, len(c.acked), len(present))
		if err := cs.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

func TestOpenCreatesDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "a", "b")
	s := mustOpen(t, dir, testOptions(t, nil))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
}
