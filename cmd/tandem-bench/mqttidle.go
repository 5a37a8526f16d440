package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"math"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
)

// idleConfig is the mqtt-idle scenario: many idle connections, the
// broker's resident memory per connection.
type idleConfig struct {
	mqttCommon
	conns    int
	parallel int
	pid      int
	settle   time.Duration
}

func (c *idleConfig) flags(fs *flag.FlagSet) {
	c.mqttCommon.flags(fs)
	fs.IntVar(&c.conns, "conns", 5000, "idle connections to open (each CONNECTs with the keepalive and stays silent but for PINGREQ)")
	fs.IntVar(&c.parallel, "parallel", 32, "connections being opened at once")
	fs.IntVar(&c.pid, "pid", 0, "broker process whose VmRSS (/proc/PID/status) is read before and after; 0: none")
	fs.DurationVar(&c.settle, "settle", 2*time.Second, "wait this long after the last CONNACK before reading VmRSS again")
}

func (c *idleConfig) validate() error {
	if err := c.mqttCommon.validate(); err != nil {
		return err
	}
	switch {
	case c.conns < 1 || c.conns > 100_000:
		return errors.New("--conns must be 1..100000")
	case c.parallel < 1 || c.parallel > 1000:
		return errors.New("--parallel must be 1..1000")
	case c.pid < 0 || c.settle < 0:
		return errors.New("--pid and --settle must not be negative")
	}
	return nil
}

// idleResult is the mqtt-idle report.
type idleResult struct {
	mqttHeader
	Conns        int      `json:"conns"`
	Keepalive    string   `json:"keepalive"`
	Connected    int      `json:"connected"`     // CONNACKed
	Alive        int      `json:"alive"`         // answered a PINGREQ after the settle
	ConnectSecs  float64  `json:"connect_s"`     // first dial to last CONNACK
	PID          int      `json:"pid,omitempty"` // the broker process measured
	RSSBeforeKiB int64    `json:"rss_before_kib,omitempty"`
	RSSAfterKiB  int64    `json:"rss_after_kib,omitempty"`
	PerConnBytes float64  `json:"rss_per_conn_bytes,omitempty"` // (after - before) / alive
	OK           bool     `json:"ok"`                           // every connection opened and still served
	Errors       []string `json:"errors,omitempty"`
}

// rss reads the VmRSS of process pid in KiB.
func rss(pid int) (int64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, err
	}
	return parseVmRSS(string(b))
}

// runIdle opens the connections, waits, measures, checks that each is
// still served, and closes them all.
func runIdle(ctx context.Context, cfg idleConfig) (idleResult, error) {
	ctx, cancel := context.WithTimeoutCause(ctx, cfg.timeout, errors.New("hard deadline (--timeout) reached"))
	defer cancel()
	hdr, _ := cfg.header("mqtt-idle")
	res := idleResult{mqttHeader: hdr, Conns: cfg.conns, Keepalive: cfg.keepalive.String(), PID: cfg.pid}
	var errsMu sync.Mutex
	fail := func(err error) {
		errsMu.Lock()
		defer errsMu.Unlock()
		if len(res.Errors) < 20 {
			res.Errors = append(res.Errors, err.Error())
		}
	}
	if cfg.pid > 0 {
		kib, err := rss(cfg.pid)
		if err != nil {
			return res, fmt.Errorf("broker process %d: %w", cfg.pid, err)
		}
		res.RSSBeforeKiB = kib
	}

	conns := make([]*mqttConn, cfg.conns)
	defer func() {
		var wg sync.WaitGroup
		for w := range cfg.parallel {
			wg.Go(func() {
				for i := w; i < len(conns); i += cfg.parallel {
					if conns[i] != nil {
						conns[i].disconnect()
					}
				}
			})
		}
		wg.Wait()
	}()
	start := time.Now()
	each(cfg.parallel, cfg.conns, func(i int) {
		if ctx.Err() != nil {
			return
		}
		d := cfg.dial(fmt.Sprintf("tb-%s-i%d", hdr.Run, i), true)
		d.bufSize = 512 // idle: keep the client small too
		c, _, err := dialMQTT(ctx, d)
		if err != nil {
			fail(err)
			return
		}
		conns[i] = c
	})
	res.ConnectSecs = math.Round(time.Since(start).Seconds()*1000) / 1000
	for _, c := range conns {
		if c != nil {
			res.Connected++
		}
	}
	if res.Connected < cfg.conns {
		fail(fmt.Errorf("%d of %d connections opened", res.Connected, cfg.conns))
	}

	t := time.NewTimer(cfg.settle)
	select {
	case <-t.C:
	case <-ctx.Done():
		t.Stop()
		return res, context.Cause(ctx)
	}
	if cfg.pid > 0 {
		kib, err := rss(cfg.pid)
		if err != nil {
			return res, fmt.Errorf("broker process %d: %w", cfg.pid, err)
		}
		res.RSSAfterKiB = kib
	}

	// Each connection must still be served: a broker that dropped some
	// would look cheaper than it is.
	var aliveMu sync.Mutex
	each(cfg.parallel, cfg.conns, func(i int) {
		c := conns[i]
		if c == nil {
			return
		}
		if err := ping(c); err != nil {
			fail(fmt.Errorf("connection %d: %w", i, err))
			return
		}
		aliveMu.Lock()
		res.Alive++
		aliveMu.Unlock()
	})
	if res.Alive > 0 && cfg.pid > 0 {
		res.PerConnBytes = math.Round(float64(res.RSSAfterKiB-res.RSSBeforeKiB) * 1024 / float64(res.Alive))
	}
	res.OK = res.ok()
	return res, nil
}

// ping sends PINGREQ and waits up to 10 s for a PINGRESP. Only call it
// while nobody else reads c.
func ping(c *mqttConn) error {
	if err := c.send([]byte{packets.Pingreq << 4, 0}); err != nil {
		return err
	}
	_ = c.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	defer c.nc.SetReadDeadline(time.Time{})
	for range 100 { // bounded; the pinger's own PINGRESPs may come first
		typ, _, _, err := c.readPacket()
		if err != nil {
			return err
		}
		if typ == packets.Pingresp {
			return nil
		}
	}
	return errors.New("no PINGRESP")
}

// each calls fn(i) for i in [0, n) on parallel goroutines and waits.
func each(parallel, n int, fn func(i int)) {
	var wg sync.WaitGroup
	for w := range min(parallel, n) {
		wg.Go(func() {
			for i := w; i < n; i += parallel {
				fn(i)
			}
		})
	}
	wg.Wait()
}

// human is the one-line summary.
func (r idleResult) human() string {
	s := fmt.Sprintf("mqtt-idle %s %s: %d/%d connections opened in %.2fs (keepalive %s), %d alive after the settle",
		r.Label, r.Addr, r.Connected, r.Conns, r.ConnectSecs, r.Keepalive, r.Alive)
	if r.PID > 0 {
		s += fmt.Sprintf("; broker pid %d VmRSS %d -> %d KiB: %.0f bytes per connection",
			r.PID, r.RSSBeforeKiB, r.RSSAfterKiB, r.PerConnBytes)
	}
	if len(r.Errors) > 0 {
		s += fmt.Sprintf("; %d errors, first: %s", len(r.Errors), r.Errors[0])
	}
	return s
}

// ok reports whether every connection was opened and still served.
func (r idleResult) ok() bool { return r.Alive == r.Conns && len(r.Errors) == 0 }
