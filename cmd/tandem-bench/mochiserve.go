package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"

	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/listeners"
)

// mochiConfig is the mochi-serve subcommand: a plain mochi broker, the
// same module and version Tandem's MQTT adapter is built on, as a peer in
// the MQTT comparison.
type mochiConfig struct {
	addr string
}

func (c *mochiConfig) flags(fs *flag.FlagSet) {
	fs.StringVar(&c.addr, "addr", "127.0.0.1:1883", "TCP `host:port` to listen on (port 0: any free port)")
}

func (c *mochiConfig) validate() error {
	if c.addr == "" {
		return errors.New("--addr must not be empty")
	}
	return nil
}

// serveMochi runs mochi with its default options, the allow-all auth hook
// and one TCP listener, and nothing else (no storage hook: sessions,
// inflight messages and retained messages live in memory only), until ctx
// ends. ready is called with the bound address once it listens. mochi's
// own log (lifecycle lines; per-client lines are Debug) goes to logw.
func serveMochi(ctx context.Context, cfg mochiConfig, logw io.Writer, ready func(addr string)) error {
	s := mochi.New(&mochi.Options{Logger: slog.New(slog.NewTextHandler(logw, nil))})
	if err := s.AddHook(new(auth.AllowHook), nil); err != nil {
		return err
	}
	tcp := listeners.NewTCP(listeners.Config{ID: "tcp", Address: cfg.addr})
	if err := s.AddListener(tcp); err != nil {
		return fmt.Errorf("listen %s: %w", cfg.addr, err)
	}
	if err := s.Serve(); err != nil {
		_ = s.Close()
		return err
	}
	ready(tcp.Address())
	<-ctx.Done()
	return s.Close()
}
