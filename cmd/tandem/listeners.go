package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	stdlog "log"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"
	"github.com/tandem-mq/tandem/mqtt"
	"github.com/tandem-mq/tandem/protocol"
	"github.com/tandem-mq/tandem/stomp"
)

// boundAddr is a listener's bound address and the key that names it in the
// ready line ("mqtt", "stomp_tls", ...).
type boundAddr struct{ key, addr string }

// protoServer is a protocol server (MQTT or STOMP) and the goroutines that
// run its Serve, one per listener: TCP, TLS and WebSocket.
type protoServer struct {
	name      string
	serveLn   func(net.Listener) error
	closeSrv  func() error
	closedErr error // the server's ErrServerClosed

	addrs []boundAddr
	wg    sync.WaitGroup // the Serve goroutines

	mu     sync.Mutex
	err    error         // the first error a Serve stopped with
	failed chan struct{} // closed with err
}

func newProtoServer(name string, serve func(net.Listener) error, closeSrv func() error, closedErr error) *protoServer {
	return &protoServer{name: name, serveLn: serve, closeSrv: closeSrv, closedErr: closedErr, failed: make(chan struct{})}
}

// listen opens addr (with TLS when tlsCfg is set) and serves it; key names
// it in the ready line. "off" opens nothing.
func (p *protoServer) listen(key, addr string, tlsCfg *tls.Config) error {
	if addr == listenerOff {
		return nil
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("%s listener: %w", strings.ReplaceAll(key, "_", " "), err)
	}
	p.addrs = append(p.addrs, boundAddr{key, ln.Addr().String()})
	if tlsCfg != nil {
		ln = tls.NewListener(ln, tlsCfg)
	}
	p.serve(ln)
	return nil
}

// serve runs the server's Serve on ln in a goroutine that shutdown joins.
func (p *protoServer) serve(ln net.Listener) {
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		err := p.serveLn(ln)
		// Serve closes ln only if it got to register it before Close.
		_ = ln.Close()
		if errors.Is(err, p.closedErr) {
			return
		}
		p.mu.Lock()
		defer p.mu.Unlock()
		if p.err == nil {
			p.err = fmt.Errorf("%s listener %s: %w", p.name, ln.Addr(), err)
			close(p.failed)
		}
	}()
}

// Failed is closed when a listener stops on its own; Err says why.
func (p *protoServer) Failed() <-chan struct{} { return p.failed }

// Err is why a listener stopped on its own, nil if none did.
func (p *protoServer) Err() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.err
}

// shutdown stops the server: no new connections, every open one closed,
// all its goroutines and the Serve goroutines joined. p may be nil.
func (p *protoServer) shutdown() error {
	if p == nil {
		return nil
	}
	err := p.closeSrv()
	p.wg.Wait()
	return errors.Join(err, p.Err())
}

// startSTOMP starts the STOMP server on its TCP and TLS listeners and on
// ws, the WebSocket endpoint (nil if none).
func startSTOMP(cfg Config, srv *stomp.Server, tlsCfg *tls.Config, ws *protocol.WSListener) (*protoServer, error) {
	p := newProtoServer("stomp", srv.Serve, srv.Close, stomp.ErrServerClosed)
	return p, p.start("stomp", cfg.Listeners.STOMP, cfg.Listeners.STOMPTLS, tlsCfg, ws)
}

// startMQTT is startSTOMP for MQTT.
func startMQTT(cfg Config, srv *mqtt.Server, tlsCfg *tls.Config, ws *protocol.WSListener) (*protoServer, error) {
	p := newProtoServer("mqtt", srv.Serve, srv.Close, mqtt.ErrServerClosed)
	return p, p.start("mqtt", cfg.Listeners.MQTT, cfg.Listeners.MQTTTLS, tlsCfg, ws)
}

func (p *protoServer) start(key, addr, tlsAddr string, tlsCfg *tls.Config, ws *protocol.WSListener) error {
	if ws != nil {
		p.serve(ws)
	}
	if err := p.listen(key, addr, nil); err != nil {
		return err
	}
	if tlsCfg != nil {
		return p.listen(key+"_tls", tlsAddr, tlsCfg)
	}
	return nil
}

// Limits of the WebSocket HTTP servers, for the requests before the
// upgrade (after it the protocol's own limits apply).
const (
	wsReadHeaderTimeout = 10 * time.Second
	wsIdleTimeout       = 60 * time.Second
	wsMaxHeaderBytes    = 64 << 10
)

// webServer serves the WebSocket endpoints, /mqtt and /stomp, and the
// live page at / when websocket.live_page is on, on the plain and TLS HTTP
// listeners.
type webServer struct {
	mqtt, stomp *protocol.WSListener
	addrs       []boundAddr
	log         zerolog.Logger

	srvs []*http.Server
	wg   sync.WaitGroup // the Serve goroutines

	mu     sync.Mutex
	err    error
	failed chan struct{}
}

// newWebServer builds the two endpoints, or returns nil when both
// WebSocket listeners are off. Nothing listens until start.
func newWebServer(cfg Config, log zerolog.Logger) (*webServer, error) {
	if cfg.Listeners.WebSocket == listenerOff && (!cfg.TLS.enabled() || cfg.Listeners.WebSocketTLS == listenerOff) {
		return nil, nil
	}
	log = log.With().Str("component", "websocket").Logger()
	common := protocol.WSConfig{
		MaxMessageSize: int64(cfg.WebSocket.MaxMessageSize),
		OriginPatterns: cfg.WebSocket.AllowedOrigins,
	}
	mc := common
	// MQTT-6.0.0-3 requires the client to offer "mqtt"; Mosquitto also
	// speaks "mqttv3.1". Mosquitto, EMQX and RabbitMQ refuse a client
	// offering none, and so does Tandem.
	mc.Subprotocols, mc.RequireSubprotocol, mc.Messages = []string{"mqtt", "mqttv3.1"}, true, protocol.WSBinary
	mws, err := protocol.NewWSListener(mc, nil, log.With().Str("path", "/mqtt").Logger())
	if err != nil {
		return nil, err
	}
	sc := common
	// Some STOMP clients offer no subprotocol; RabbitMQ's Web STOMP takes
	// them, and so does Tandem.
	sc.Subprotocols, sc.Messages = []string{"v10.stomp", "v11.stomp", "v12.stomp"}, protocol.WSText
	sws, err := protocol.NewWSListener(sc, nil, log.With().Str("path", "/stomp").Logger())
	if err != nil {
		return nil, err
	}
	return &webServer{mqtt: mws, stomp: sws, log: log, failed: make(chan struct{})}, nil
}

// start listens on the plain WebSocket address and, when tlsCfg is set,
// on the TLS one.
func (w *webServer) start(cfg Config, tlsCfg *tls.Config) error {
	mux := http.NewServeMux()
	mux.Handle("/mqtt", w.mqtt)
	mux.Handle("/stomp", w.stomp)
	if cfg.WebSocket.LivePage {
		// "/" itself only: any other path stays 404.
		mux.Handle("GET /{$}", liveHandler())
		w.log.Info().Msg("live page on, at / of the websocket listeners")
	}
	if err := w.listen(mux, "websocket", cfg.Listeners.WebSocket, nil); err != nil {
		return err
	}
	if tlsCfg != nil {
		return w.listen(mux, "websocket_tls", cfg.Listeners.WebSocketTLS, tlsCfg)
	}
	return nil
}

func (w *webServer) listen(h http.Handler, key, addr string, tlsCfg *tls.Config) error {
	if addr == listenerOff {
		return nil
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("%s listener: %w", strings.ReplaceAll(key, "_", " "), err)
	}
	w.addrs = append(w.addrs, boundAddr{key, ln.Addr().String()})
	if tlsCfg != nil {
		ln = tls.NewListener(ln, tlsCfg)
	}
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: wsReadHeaderTimeout,
		IdleTimeout:       wsIdleTimeout,
		MaxHeaderBytes:    wsMaxHeaderBytes,
		// Failed TLS handshakes and the like: the client's problem.
		ErrorLog: stdlog.New(debugWriter{w.log}, "", 0),
	}
	w.srvs = append(w.srvs, srv)
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			w.mu.Lock()
			defer w.mu.Unlock()
			if w.err == nil {
				w.err = fmt.Errorf("%s listener %s: %w", strings.ReplaceAll(key, "_", " "), ln.Addr(), err)
				close(w.failed)
			}
		}
	}()
	return nil
}

// Failed is closed when an HTTP server stops on its own. w may be nil.
func (w *webServer) Failed() <-chan struct{} {
	if w == nil {
		return nil
	}
	return w.failed
}

// Err is why an HTTP server stopped on its own.
func (w *webServer) Err() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.err
}

// closeHTTP stops the HTTP servers: no new handshakes; requests that are
// not WebSocket connections yet finish until ctx ends. The connections
// already upgraded stay: the protocol servers close them. w may be nil.
func (w *webServer) closeHTTP(ctx context.Context) error {
	if w == nil {
		return nil
	}
	var errs []error
	for _, srv := range w.srvs {
		if err := srv.Shutdown(ctx); err != nil {
			errs = append(errs, fmt.Errorf("websocket server shutdown: %w", err), srv.Close())
		}
	}
	w.wg.Wait()
	w.mu.Lock()
	errs = append(errs, w.err)
	w.mu.Unlock()
	return errors.Join(errs...)
}

// wait waits for the closing handshakes of the WebSocket connections: call
// it once the protocol servers have closed them. w may be nil.
func (w *webServer) wait() {
	if w == nil {
		return
	}
	w.mqtt.Close()
	w.stomp.Close()
	w.mqtt.Wait()
	w.stomp.Wait()
}

// debugWriter turns net/http's error log lines into zerolog debug lines.
type debugWriter struct{ log zerolog.Logger }

func (w debugWriter) Write(p []byte) (int, error) {
	w.log.Debug().Msg(strings.TrimSpace(string(p)))
	return len(p), nil
}
