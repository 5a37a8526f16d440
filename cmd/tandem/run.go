package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/rs/zerolog"
	"github.com/tandem-mq/tandem/engine"
	"github.com/tandem-mq/tandem/mqtt"
	"github.com/tandem-mq/tandem/persist"
	"github.com/tandem-mq/tandem/stomp"
)

// Exit codes.
const (
	exitOK      = 0
	exitRuntime = 1 // the broker could not start or failed while running
	exitConfig  = 2 // bad flags or configuration
)

// process is what run needs from the operating system, injected so that
// tests can run it in-process.
type process struct {
	args   []string // without the program name
	getenv func(string) string
	stderr io.Writer
	// stopSignals is called when shutdown begins, so that a second signal
	// takes its default action and kills the process.
	stopSignals func()
}

// run is the whole program. It returns the exit code. ctx is cancelled by
// SIGINT or SIGTERM.
func run(ctx context.Context, p process) int {
	f, err := parseFlags(p.args, p.stderr)
	if errors.Is(err, flag.ErrHelp) {
		return exitOK
	}
	if err != nil {
		report(p.stderr, err)
		return exitConfig
	}
	cfg, err := loadConfig(f, p.getenv)
	if err != nil {
		report(p.stderr, err)
		return exitConfig
	}
	log := newLogger(cfg.Log, p.stderr)
	if err := serve(ctx, cfg, log, p.stopSignals); err != nil {
		report(p.stderr, err)
		return exitRuntime
	}
	log.Info().Msg("stopped")
	return exitOK
}

// report prints err as the one line "tandem: ...".
func report(w io.Writer, err error) {
	msg := strings.ReplaceAll(err.Error(), "\n", "; ")
	// stderr is the last resort: if it cannot be written, nothing can be.
	_, _ = fmt.Fprintf(w, "tandem: %s\n", msg)
}

// serve opens the store, starts the admin server, opens the engine (running
// recovery), reports ready, and on ctx's end shuts down in order: admin
// listener, broker, store. It returns once every goroutine it started has
// ended.
func serve(ctx context.Context, cfg Config, log zerolog.Logger, stopSignals func()) (err error) {
	// The data directory is locked first, so that a second instance on the
	// same directory reports that, rather than a busy admin port.
	start := time.Now()
	store, err := openStore(cfg, log)
	if err != nil {
		return err
	}
	var ready atomic.Bool
	admin, err := startAdmin(cfg.Listeners.Admin, newAdminHandler(&ready), log.With().Str("component", "admin").Logger())
	if err != nil {
		if cerr := store.Close(); cerr != nil {
			err = errors.Join(err, fmt.Errorf("close data directory %s: %w", cfg.DataDir, cerr))
		}
		return err
	}
	log.Debug().Str("admin", admin.Addr()).Msg("admin listening")

	var (
		broker  *engine.Broker
		stompLn *stompListener
		mqttLn  *mqttListener
	)
	defer func() {
		ready.Store(false)
		// The protocol servers close before the engine: every connection
		// ends and every goroutine they started is joined first.
		err = errors.Join(err, mqttLn.close(), stompLn.close(), shutdown(cfg, admin, broker, store))
	}()

	broker, err = engine.Open(store, cfg.Queues.engineConfig())
	if err != nil {
		return fmt.Errorf("start engine on data directory %s: %w", cfg.DataDir, err)
	}

	stompLn, err = startSTOMP(cfg, broker, log)
	if err != nil {
		return err
	}
	mqttLn, err = startMQTT(cfg, broker, log)
	if err != nil {
		return err
	}

	if ctx.Err() == nil {
		ready.Store(true)
		log.Info().
			Str("admin", admin.Addr()).
			Str("stomp", stompLn.addr()).
			Str("mqtt", mqttLn.addr()).
			Str("data_dir", cfg.DataDir).
			Bool("sync", *cfg.Storage.Sync).
			Str("recovery", time.Since(start).Round(time.Microsecond).String()).
			Msg("ready")
		if !*cfg.Storage.Sync {
			log.Warn().Msg("storage.sync is false: a crash can lose confirmed messages")
		}
	}

	select {
	case <-ctx.Done():
		log.Info().Str("reason", context.Cause(ctx).Error()).Msg("shutting down")
	case <-admin.Done():
		// The admin server failed; Shutdown below reports why.
		log.Error().Msg("admin server stopped; shutting down")
	case err := <-stompLn.done:
		return fmt.Errorf("stomp listener %s: %w", stompLn.addr(), err)
	case err := <-mqttLn.done:
		return fmt.Errorf("mqtt listener %s: %w", mqttLn.addr(), err)
	}
	if stopSignals != nil {
		stopSignals()
	}
	return nil
}

// openStore opens the Pebble store in cfg.DataDir, turning a held lock into
// a clear message.
func openStore(cfg Config, log zerolog.Logger) (*persist.Store, error) {
	if err := os.MkdirAll(cfg.DataDir, 0o750); err != nil {
		return nil, fmt.Errorf("data directory %s: %w", cfg.DataDir, unwrapPathError(err))
	}
	store, err := persist.Open(cfg.DataDir, persist.Options{
		FS:           vfs.Default,
		Logger:       log.With().Str("component", "persist").Logger(),
		CacheSize:    int64(cfg.Storage.CacheSize),
		MemTableSize: uint64(cfg.Storage.MemTableSize),
		NoSync:       !*cfg.Storage.Sync,
	})
	if errors.Is(err, persist.ErrLocked) {
		return nil, fmt.Errorf("data directory %s is in use by another tandem process", cfg.DataDir)
	}
	if err != nil {
		return nil, fmt.Errorf("open data directory %s: %w", cfg.DataDir, err)
	}
	return store, nil
}

// shutdown stops the admin server, then closes the broker, then the store;
// broker and store may be nil if startup failed before them.
func shutdown(cfg Config, admin *adminServer, broker *engine.Broker, store *persist.Store) error {
	ctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
	defer cancel()
	errs := []error{admin.Shutdown(ctx)}
	if broker != nil {
		if err := broker.Close(); err != nil {
			errs = append(errs, fmt.Errorf("close engine: %w", err))
		}
	}
	if store != nil {
		if err := store.Close(); err != nil {
			errs = append(errs, fmt.Errorf("close data directory %s: %w", cfg.DataDir, err))
		}
	}
	return errors.Join(errs...)
}

// stompListener is the STOMP server on its TCP listener.
type stompListener struct {
	srv  *stomp.Server
	ln   net.Listener
	done chan error // Serve's result
}

func startSTOMP(cfg Config, b *engine.Broker, log zerolog.Logger) (*stompListener, error) {
	srv, err := stomp.NewServer(b, cfg.STOMP.serverConfig(), log)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", cfg.Listeners.STOMP)
	if err != nil {
		return nil, fmt.Errorf("stomp listener: %w", err)
	}
	l := &stompListener{srv: srv, ln: ln, done: make(chan error, 1)}
	go func() { l.done <- srv.Serve(ln) }()
	return l, nil
}

func (l *stompListener) addr() string { return l.ln.Addr().String() }

// close stops the STOMP server: no new connections, every open one closed
// (unacked messages go back to their queues), all its goroutines joined.
func (l *stompListener) close() error {
	if l == nil {
		return nil
	}
	err := l.srv.Close()
	if serr := <-l.done; !errors.Is(serr, stomp.ErrServerClosed) {
		err = errors.Join(err, serr)
	}
	return err
}

// mqttListener is the MQTT server on its TCP listener.
type mqttListener struct {
	srv  *mqtt.Server
	ln   net.Listener
	done chan error // Serve's result
}

func startMQTT(cfg Config, b *engine.Broker, log zerolog.Logger) (*mqttListener, error) {
	srv, err := mqtt.NewServer(b, cfg.MQTT.serverConfig(), log)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", cfg.Listeners.MQTT)
	if err != nil {
		return nil, fmt.Errorf("mqtt listener: %w", err)
	}
	l := &mqttListener{srv: srv, ln: ln, done: make(chan error, 1)}
	go func() { l.done <- srv.Serve(ln) }()
	return l, nil
}

func (l *mqttListener) addr() string { return l.ln.Addr().String() }

// close stops the MQTT server: no new connections, every open one closed,
// all its goroutines joined.
func (l *mqttListener) close() error {
	if l == nil {
		return nil
	}
	err := l.srv.Close()
	if serr := <-l.done; !errors.Is(serr, mqtt.ErrServerClosed) {
		err = errors.Join(err, serr)
	}
	return err
}
