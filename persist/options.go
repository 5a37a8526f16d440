package persist

import (
	"errors"
	"fmt"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/rs/zerolog"
)

// Defaults applied by Options.EnsureDefaults.
const (
	DefaultCacheSize    = 64 << 20
	DefaultMemTableSize = 32 << 20

	// maxMemTableSize is Pebble's limit (memtables are addressed with 32
	// bit offsets).
	maxMemTableSize = 4<<30 - 1
)

// ErrInvalidOptions is wrapped by the errors of Options.Validate.
var ErrInvalidOptions = errors.New("persist: invalid options")

// Options configures a Store.
type Options struct {
	// FS is the file system the database lives in; nil means the operating
	// system's (vfs.Default). Tests use vfs.NewMem or vfs.NewCrashableMem.
	FS vfs.FS
	// Logger receives Pebble's log lines. The zero Logger discards them.
	Logger zerolog.Logger
	// CacheSize is the size in bytes of Pebble's block cache.
	CacheSize int64
	// MemTableSize is the size in bytes of one Pebble memtable.
	MemTableSize uint64
	// NoSync makes every Apply behave as if sync were false, so a crash may
	// lose batches whose Apply returned. It is UNSAFE: it breaks the
	// durability contract and is meant only for tests and benchmarks.
	NoSync bool
	// OnSync, if set, is called after each synced commit (one group commit:
	// one WAL write and fsync shared by the synced Applies that were
	// waiting) with how long the commit took. It runs on the committing
	// goroutine, ahead of the callers' wake-up, so it must be quick: the
	// binary feeds a histogram with it.
	OnSync func(time.Duration)
}

// EnsureDefaults fills in the zero fields of o with defaults and returns o.
func (o *Options) EnsureDefaults() *Options {
	if o.FS == nil {
		o.FS = vfs.Default
	}
	if o.CacheSize == 0 {
		o.CacheSize = DefaultCacheSize
	}
	if o.MemTableSize == 0 {
		o.MemTableSize = DefaultMemTableSize
	}
	return o
}

// Validate reports the first invalid field of o, after defaults.
func (o *Options) Validate() error {
	if o.FS == nil {
		return fmt.Errorf("%w: FS is nil", ErrInvalidOptions)
	}
	if o.CacheSize < 0 {
		return fmt.Errorf("%w: CacheSize %d is negative", ErrInvalidOptions, o.CacheSize)
	}
	if o.MemTableSize == 0 || o.MemTableSize > maxMemTableSize {
		return fmt.Errorf("%w: MemTableSize %d is not in (0, %d]", ErrInvalidOptions, o.MemTableSize, uint64(maxMemTableSize))
	}
	return nil
}

// pebbleLogger adapts a zerolog.Logger to Pebble's Logger interface.
type pebbleLogger struct {
	l zerolog.Logger
}

// Infof implements pebble.Logger.
func (p pebbleLogger) Infof(format string, args ...any) { p.l.Info().Msgf(format, args...) }

// Errorf implements pebble.Logger.
func (p pebbleLogger) Errorf(format string, args ...any) { p.l.Error().Msgf(format, args...) }

// Fatalf implements pebble.Logger. Pebble calls it on broken internal
// invariants and does not expect it to return; it logs at fatal level and
// then panics (instead of exiting, so that deferred cleanup still runs).
func (p pebbleLogger) Fatalf(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	p.l.WithLevel(zerolog.FatalLevel).Msg(msg)
	panic("persist: pebble fatal: " + msg)
}
