package main

import (
	"context"
	"fmt"
	"syscall"
	"time"

	"github.com/rs/zerolog"
	"github.com/tandem-mq/tandem/engine"
)

// diskCheckInterval is how often the free space of the data directory is
// looked at.
const diskCheckInterval = time.Second

// diskFree is the space an unprivileged process may still use on the file
// system of dir.
func diskFree(dir string) (uint64, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return 0, err
	}
	return st.Bavail * uint64(st.Bsize), nil
}

// diskWatch turns the engine's disk alarm on while the data directory's
// free space is under disk_free_limit (DESIGN.md: publishers are refused,
// with a clear error, and nothing confirmed is dropped) and off again
// above it.
type diskWatch struct {
	b     *engine.Broker
	dir   string
	limit uint64
	free  func(string) (uint64, error)
	log   zerolog.Logger
	on    bool
}

// check looks once and sets the alarm.
func (w *diskWatch) check() {
	free, err := w.free(w.dir)
	if err != nil {
		w.log.Warn().Err(err).Msg("cannot read the free disk space")
		return
	}
	switch under := free < w.limit; {
	case under && !w.on:
		w.on = true
		w.b.SetDiskAlarm(fmt.Errorf("%w: %v free on the data directory, disk_free_limit is %v; publishers are refused until space is freed",
			engine.ErrDiskFull, ByteSize(free), ByteSize(w.limit)))
		w.log.Warn().Str("free", ByteSize(free).String()).Str("limit", ByteSize(w.limit).String()).Msg("disk space low: publishes are refused")
	case !under && w.on:
		w.on = false
		w.b.SetDiskAlarm(nil)
		w.log.Info().Str("free", ByteSize(free).String()).Msg("disk space back over the limit: publishes are accepted again")
	}
}

// startDiskWatch checks at once (a broker starting on a full disk refuses
// its first publish) and then every diskCheckInterval until the returned
// stop is called; stop waits for the goroutine.
func startDiskWatch(b *engine.Broker, cfg Config, log zerolog.Logger) (stop func()) {
	w := &diskWatch{b: b, dir: cfg.DataDir, limit: uint64(cfg.DiskFreeLimit), free: diskFree, log: log.With().Str("component", "disk").Logger()}
	w.check()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(diskCheckInterval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				w.check()
			}
		}
	}()
	return func() { cancel(); <-done }
}
