package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/rs/zerolog"
	"github.com/tandem-mq/tandem/engine"
	"github.com/tandem-mq/tandem/mqtt"
	"github.com/tandem-mq/tandem/persist"
	"github.com/tandem-mq/tandem/protocol"
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
	// hup delivers SIGHUP: the users are re-read. nil in tests that do
	// not reload.
	hup <-chan os.Signal
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
	auth, err := newAuthenticator(cfg.Auth)
	if err != nil {
		report(p.stderr, err)
		return exitConfig
	}
	if p.hup != nil {
		reloadCtx, stopReloads := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() {
			defer close(done)
			watchReloads(reloadCtx, p.hup, auth, func() (Config, error) { return loadConfig(f, p.getenv) }, log)
		}()
		defer func() { stopReloads(); <-done }()
	}
	if err := serve(ctx, cfg, log, p.stopSignals, auth); err != nil {
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
// recovery), starts the STOMP and MQTT servers on their TCP, TLS and
// WebSocket listeners, reports ready, and on ctx's end shuts down in order:
// WebSocket HTTP servers, MQTT and STOMP servers (every connection closed),
// admin listener, broker, store. It returns once every goroutine it started
// has ended.
func serve(ctx context.Context, cfg Config, log zerolog.Logger, stopSignals func(), auth *protocol.Authenticator) (err error) {
	// The data directory is locked first, so that a second instance on the
	// same directory reports that, rather than a busy admin port.
	start := time.Now()
	ops := newOperations(cfg.DataDir)
	store, err := openStore(cfg, log, ops.observeSync)
	if err != nil {
		return err
	}
	var ready atomic.Bool
	admin, err := startAdmin(cfg.Listeners.Admin, ops, &ready, log.With().Str("component", "admin").Logger())
	if err != nil {
		if cerr := store.Close(); cerr != nil {
			err = errors.Join(err, fmt.Errorf("close data directory %s: %w", cfg.DataDir, cerr))
		}
		return err
	}
	log.Debug().Str("admin", admin.Addr()).Msg("admin listening")

	var (
		broker         *engine.Broker
		stompSrv       *protoServer
		mqttSrv        *protoServer
		web            *webServer
		closeWebServer = func() error { return nil }
	)
	defer func() {
		ready.Store(false)
		// The WebSocket HTTP servers stop taking handshakes first; then
		// the protocol servers close, before the engine: every connection
		// ends and every goroutine they started is joined; then the
		// WebSocket closing handshakes are waited for.
		err = errors.Join(err, closeWebServer(), mqttSrv.shutdown(), stompSrv.shutdown())
		web.wait()
		err = errors.Join(err, shutdown(cfg, admin, broker, store))
	}()

	broker, err = engine.Open(store, cfg.Queues.engineConfig())
	if err != nil {
		return fmt.Errorf("start engine on data directory %s: %w", cfg.DataDir, err)
	}
	if err := applyBindings(broker, cfg.Queues.Bindings); err != nil {
		return err
	}
	logAccess(auth, cfg.Auth, log)
	stopDiskWatch := startDiskWatch(broker, cfg, log)
	defer stopDiskWatch() // before the deferred shutdown closes the broker

	var tlsCfg, wssCfg *tls.Config
	if cfg.TLS.enabled() {
		certs, err := protocol.NewCertReloader(cfg.TLS.CertFile, cfg.TLS.KeyFile, log.With().Str("component", "tls").Logger(), nil)
		if err != nil {
			return err
		}
		minVersion, _ := protocol.ParseTLSVersion(cfg.TLS.MinVersion) // validated
		tlsCfg = protocol.ServerTLSConfig(certs, minVersion, nil)
		// HTTP/1.1 only: WebSocket upgrades are HTTP/1.1 requests.
		wssCfg = protocol.ServerTLSConfig(certs, minVersion, []string{"http/1.1"})
		if cfg.TLS.ClientCA != "" {
			pool, err := clientCAs(cfg.TLS.ClientCA)
			if err != nil {
				return err
			}
			// A client may present a certificate; a verified one names
			// its user (protocol.Credentials.CertUser).
			for _, c := range []*tls.Config{tlsCfg, wssCfg} {
				c.ClientCAs, c.ClientAuth = pool, tls.VerifyClientCertIfGiven
			}
		}
	}
	web, err = newWebServer(cfg, log)
	if err != nil {
		return err
	}
	var stompWS, mqttWS *protocol.WSListener
	if web != nil {
		stompWS, mqttWS = web.stomp, web.mqtt
	}

	limiter := cfg.Limits.limiter()
	stompCfg := cfg.STOMP.serverConfig()
	stompCfg.Auth, stompCfg.Limiter = auth, limiter
	ss, err := stomp.NewServer(broker, stompCfg, log)
	if err != nil {
		return err
	}
	stompSrv, err = startSTOMP(cfg, ss, tlsCfg, stompWS)
	if err != nil {
		return err
	}
	mqttCfg := cfg.MQTT.serverConfig()
	mqttCfg.Auth, mqttCfg.Limiter = auth, limiter
	ms, err := mqtt.NewServer(broker, mqttCfg, log)
	if err != nil {
		return err
	}
	mqttSrv, err = startMQTT(cfg, ms, tlsCfg, mqttWS)
	if err != nil {
		return err
	}
	if web != nil {
		closeWebServer = func() error {
			ctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
			defer cancel()
			return web.closeHTTP(ctx)
		}
		if err := web.start(cfg, wssCfg); err != nil {
			return err
		}
	}

	ops.attach(broker, ss, ms, auth, limiter)
	if ctx.Err() == nil {
		ready.Store(true)
		ev := log.Info().Str("admin", admin.Addr())
		for _, a := range readyAddrs(stompSrv, mqttSrv, web) {
			ev = ev.Str(a.key, a.addr)
		}
		ev.Str("data_dir", cfg.DataDir).
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
	case <-stompSrv.Failed():
		return nil // shutdown reports why
	case <-mqttSrv.Failed():
		return nil
	case <-web.Failed():
		return nil
	}
	if stopSignals != nil {
		stopSignals()
	}
	return nil
}

// applyBindings declares and binds the configured bindings (validated
// already). Both steps are idempotent, so this runs at every start.
func applyBindings(b *engine.Broker, bindings []BindingConfig) error {
	for i, bc := range bindings {
		queue, filter, err := bc.engineBinding()
		if err == nil {
			err = b.DeclareQueue(queue, engine.QueueOptions{})
		}
		if err == nil {
			err = b.Bind(filter, queue)
		}
		if err != nil {
			return fmt.Errorf("queues.bindings[%d] (%s -> %s): %w", i, bc.Topic, bc.Queue, err)
		}
	}
	return nil
}

// openStore opens the Pebble store in cfg.DataDir, turning a held lock into
// a clear message. onSync (may be nil) is told each group commit's time.
func openStore(cfg Config, log zerolog.Logger, onSync func(time.Duration)) (*persist.Store, error) {
	if err := os.MkdirAll(cfg.DataDir, 0o750); err != nil {
		return nil, fmt.Errorf("data directory %s: %w", cfg.DataDir, unwrapPathError(err))
	}
	store, err := persist.Open(cfg.DataDir, persist.Options{
		FS:           vfs.Default,
		Logger:       log.With().Str("component", "persist").Logger(),
		CacheSize:    int64(cfg.Storage.CacheSize),
		MemTableSize: uint64(cfg.Storage.MemTableSize),
		NoSync:       !*cfg.Storage.Sync,
		OnSync:       onSync,
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

// readyAddrs lists the bound addresses for the ready line: the protocol
// listeners that are on, in a fixed order.
func readyAddrs(stompSrv, mqttSrv *protoServer, web *webServer) []boundAddr {
	out := append(append([]boundAddr(nil), stompSrv.addrs...), mqttSrv.addrs...)
	if web != nil {
		out = append(out, web.addrs...)
	}
	return out
}
