// Package persist implements engine.Store on Pebble.
//
// Every piece of broker state is a Pebble key (see keys.go for the layout and
// codec.go for the values). A Batch becomes one pebble.Batch, so it is atomic
// across a crash. Synced Applies rely on Pebble's commit pipeline, which
// shares one WAL fsync among the batches that are waiting for it (group
// commit); BenchmarkApplySync measures it.
package persist

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/cockroachdb/pebble/v2"
	"github.com/tandem-mq/tandem/engine"
)

// Errors returned by Open.
var (
	// ErrLocked means another process (or another Store in this process)
	// has the data directory open.
	ErrLocked = errors.New("persist: data directory is in use by another process")
	// ErrFormat means the directory holds a database of an unknown format.
	ErrFormat = errors.New("persist: unsupported data format")
	// ErrInvalidBatch is wrapped by the error of an Apply whose batch holds
	// an operation that cannot be applied; nothing of the batch is written.
	ErrInvalidBatch = errors.New("persist: invalid batch")
)

// Store is an engine.Store on a Pebble database. It is safe for concurrent
// use.
type Store struct {
	db   *pebble.DB
	lock *pebble.Lock
	opts Options

	// users counts the calls in progress; closedBit is set by Close, which
	// then waits (on drained) for the calls in progress to finish, so that
	// no call ever touches a closed Pebble database.
	users     atomic.Int64
	drained   chan struct{}
	drainOnce sync.Once

	group committer // synced Applies, combined (see groupcommit.go)
}

const closedBit = int64(1) << 62

var _ engine.Store = (*Store)(nil)

// Open opens (creating if needed) the database in dir.
func Open(dir string, opts Options) (*Store, error) {
	opts.EnsureDefaults()
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	if err := opts.FS.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("persist: create %s: %w", dir, err)
	}
	lock, err := pebble.LockDirectory(dir, opts.FS)
	if err != nil {
		if isLockHeld(err) {
			return nil, fmt.Errorf("%w: %s: %v", ErrLocked, dir, err)
		}
		return nil, fmt.Errorf("persist: lock %s: %w", dir, err)
	}
	cache := pebble.NewCache(opts.CacheSize)
	defer cache.Unref()
	popts := &pebble.Options{
		FS:           opts.FS,
		Cache:        cache,
		MemTableSize: opts.MemTableSize,
		Merger:       merger,
		Lock:         lock,
		Logger:       pebbleLogger{l: opts.Logger},
		EventListener: &pebble.EventListener{
			BackgroundError: func(err error) {
				opts.Logger.Error().Err(err).Msg("persist: pebble background error")
			},
		},
		FormatMajorVersion: pebble.FormatValueSeparation,
	}
	db, err := pebble.Open(dir, popts)
	if err != nil {
		return nil, errors.Join(fmt.Errorf("persist: open %s: %w", dir, err), lock.Close())
	}
	s := &Store{db: db, lock: lock, opts: opts, drained: make(chan struct{})}
	if err := s.checkFormat(); err != nil {
		return nil, errors.Join(err, db.Close(), lock.Close())
	}
	return s, nil
}

// isLockHeld reports whether err from pebble.LockDirectory means another
// holder has the lock: fcntl gives EAGAIN or EACCES across processes, and
// Pebble has its own error within one process.
func isLockHeld(err error) bool {
	return errors.Is(err, syscall.EAGAIN) || errors.Is(err, syscall.EACCES) ||
		strings.Contains(err.Error(), "lock held by current process")
}

// checkFormat writes the format version into a new database and checks it
// in an existing one.
func (s *Store) checkFormat() error {
	v, closer, err := s.db.Get(versionKey())
	switch {
	case errors.Is(err, pebble.ErrNotFound):
		// A new database has no key at all; one without a version key but
		// with data was not written by us.
		iter, err := s.db.NewIter(nil)
		if err != nil {
			return fmt.Errorf("persist: check format: %w", err)
		}
		nonEmpty := iter.First()
		if err := iter.Close(); err != nil {
			return fmt.Errorf("persist: check format: %w", err)
		}
		if nonEmpty {
			return fmt.Errorf("%w: data without a format version", ErrFormat)
		}
		if err := s.db.Set(versionKey(), []byte(formatVersion), pebble.Sync); err != nil {
			return fmt.Errorf("persist: write format version: %w", err)
		}
		return nil
	case err != nil:
		return fmt.Errorf("persist: read format version: %w", err)
	}
	got := string(v)
	if err := closer.Close(); err != nil {
		return fmt.Errorf("persist: read format version: %w", err)
	}
	if got != formatVersion {
		return fmt.Errorf("%w: %q (want %q)", ErrFormat, got, formatVersion)
	}
	return nil
}

// enter registers a call in progress; every successful enter needs an exit.
func (s *Store) enter() error {
	if s.users.Add(1)&closedBit != 0 {
		s.exit()
		return engine.ErrClosed
	}
	return nil
}

func (s *Store) exit() {
	if s.users.Add(-1) == closedBit {
		s.drainOnce.Do(func() { close(s.drained) })
	}
}

// Close waits for the calls in progress, then closes the database. A Scan
// callback must not call Close.
func (s *Store) Close() error {
	old := s.users.Or(closedBit)
	if old&closedBit != 0 {
		return engine.ErrClosed
	}
	if old != 0 {
		<-s.drained
	}
	var errs []error
	if err := s.db.Close(); err != nil {
		errs = append(errs, fmt.Errorf("persist: close: %w", err))
	}
	if err := s.lock.Close(); err != nil {
		errs = append(errs, fmt.Errorf("persist: unlock: %w", err))
	}
	return errors.Join(errs...)
}

// Apply implements engine.Store. The batch becomes one pebble.Batch,
// committed with pebble.Sync when sync is true (and Options.NoSync is not
// set). Pebble's commit pipeline applies batches in order and lets
// concurrent synced commits share one fsync.
func (s *Store) Apply(b *engine.Batch, sync bool) error {
	if err := s.enter(); err != nil {
		return err
	}
	defer s.exit()
	if sync && !s.opts.NoSync {
		return s.applySync(b)
	}
	pb := s.db.NewBatch()
	if err := buildBatch(pb, b); err != nil {
		return errors.Join(err, pb.Close())
	}
	if err := pb.Commit(pebble.NoSync); err != nil {
		return errors.Join(fmt.Errorf("persist: commit: %w", err), pb.Close())
	}
	if err := pb.Close(); err != nil {
		return fmt.Errorf("persist: close batch: %w", err)
	}
	return nil
}
