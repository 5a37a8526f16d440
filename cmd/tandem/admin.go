package main

import (
	"context"
	"errors"
	"fmt"
	stdlog "log"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
)

// Limits of the admin HTTP server. It serves small requests from probes
// and operators, so all of them are tight.
const (
	adminReadHeaderTimeout = 5 * time.Second
	adminReadTimeout       = 10 * time.Second
	adminWriteTimeout      = 10 * time.Second
	adminIdleTimeout       = 60 * time.Second
	adminMaxHeaderBytes    = 16 << 10
)

// newAdminHandler serves the health endpoints:
//
//   - /healthz answers 200 "ok" while the process is up, including during
//     recovery, so a supervisor does not kill a broker that is recovering;
//   - /readyz answers 200 "ready" once the store and engine are open, and
//     503 before that and while shutting down.
func newAdminHandler(ready *atomic.Bool) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		writeText(w, http.StatusOK, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !ready.Load() {
			writeText(w, http.StatusServiceUnavailable, "not ready")
			return
		}
		writeText(w, http.StatusOK, "ready")
	})
	return mux
}

// writeText writes a short plain-text response. A write error means the
// client went away; there is no one left to tell.
func writeText(w http.ResponseWriter, code int, body string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(code)
	_, _ = fmt.Fprintln(w, body)
}

// adminServer is the admin HTTP server and the goroutine that serves it.
type adminServer struct {
	srv  *http.Server
	ln   net.Listener
	ops  *operations
	done chan struct{} // closed when the serving goroutine returns
	err  error         // why serving stopped, if not Shutdown; set before done closes
}

// startAdmin listens on addr and serves health, metrics and the admin API
// (api.go) in a goroutine that Shutdown waits for. It reads (or makes) the
// API token and records the bound address in the data directory.
func startAdmin(addr string, ops *operations, ready *atomic.Bool, log zerolog.Logger) (*adminServer, error) {
	ops.log = log
	if err := ops.loadToken(); err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("admin listener: %w", err)
	}
	if err := ops.writeAddr(ln.Addr().String()); err != nil {
		return nil, errors.Join(err, ln.Close())
	}
	a := &adminServer{
		ops: ops,
		srv: &http.Server{
			Handler:           ops.handler(ready),
			ReadHeaderTimeout: adminReadHeaderTimeout,
			ReadTimeout:       adminReadTimeout,
			WriteTimeout:      adminWriteTimeout,
			IdleTimeout:       adminIdleTimeout,
			MaxHeaderBytes:    adminMaxHeaderBytes,
			ErrorLog:          stdlog.New(warnWriter{log}, "", 0),
		},
		ln:   ln,
		done: make(chan struct{}),
	}
	go func() {
		defer close(a.done)
		if err := a.srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			a.err = fmt.Errorf("admin server: %w", err)
		}
	}()
	return a, nil
}

// Addr is the bound address, with the real port when the configured one
// was 0.
func (a *adminServer) Addr() string { return a.ln.Addr().String() }

// Done is closed if the server stops on its own (Err says why).
func (a *adminServer) Done() <-chan struct{} { return a.done }

// Shutdown stops accepting, lets requests in flight finish until ctx ends,
// then closes what is left, and waits for the serving goroutine.
func (a *adminServer) Shutdown(ctx context.Context) error {
	err := a.srv.Shutdown(ctx)
	if err != nil {
		// Requests still running when ctx ended: cut them off.
		err = errors.Join(fmt.Errorf("admin server shutdown: %w", err), a.srv.Close())
	}
	<-a.done
	return errors.Join(a.err, err, a.ops.removeAddr())
}

// warnWriter turns net/http's error log lines into zerolog warnings.
type warnWriter struct{ log zerolog.Logger }

func (w warnWriter) Write(p []byte) (int, error) {
	w.log.Warn().Msg(strings.TrimSpace(string(p)))
	return len(p), nil
}
