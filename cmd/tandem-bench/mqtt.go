package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"math"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
)

// mqttCommon are the flags of every MQTT scenario.
type mqttCommon struct {
	addr      string
	username  string
	password  string
	keepalive time.Duration
	label     string
	round     int
	out       string
	timeout   time.Duration
}

func (c *mqttCommon) flags(fs *flag.FlagSet) {
	fs.StringVar(&c.addr, "addr", "127.0.0.1:1883", "broker MQTT `host:port`")
	fs.StringVar(&c.username, "username", "", "CONNECT user name (empty: none)")
	fs.StringVar(&c.password, "password", "", "CONNECT password")
	fs.DurationVar(&c.keepalive, "keepalive", 60*time.Second, "CONNECT keepalive; a connection sends PINGREQ when idle for half of it")
	fs.StringVar(&c.label, "label", "", "name of the broker in the report, e.g. tandem or mosquitto")
	fs.IntVar(&c.round, "round", 0, "round number, for the report")
	fs.StringVar(&c.out, "json", "", "append the JSON result to this `file` instead of printing it")
	fs.DurationVar(&c.timeout, "timeout", 10*time.Minute, "hard deadline for the whole scenario")
}

func (c *mqttCommon) validate() error {
	switch {
	case c.timeout <= 0 || c.timeout > 24*time.Hour:
		return errors.New("--timeout must be positive and at most 24h")
	case c.addr == "":
		return errors.New("--addr must not be empty")
	case c.keepalive < 0 || c.keepalive > 65535*time.Second:
		return errors.New("--keepalive must be 0..65535s")
	case c.keepalive > 0 && c.keepalive < 2*time.Second:
		return errors.New("--keepalive must be 0 or at least 2s")
	}
	return nil
}

// mqttHeader opens every MQTT result.
type mqttHeader struct {
	Scenario string `json:"scenario"`
	Label    string `json:"label,omitempty"`
	Round    int    `json:"round,omitempty"`
	Addr     string `json:"addr"`
	Run      string `json:"run"`     // this run's id, in every payload and client id
	Started  string `json:"started"` // RFC 3339
}

func (c *mqttCommon) header(scenario string) (mqttHeader, [6]byte) {
	var id [6]byte
	_, _ = rand.Read(id[:]) // crypto/rand.Read never fails
	return mqttHeader{
		Scenario: scenario,
		Label:    c.label,
		Round:    c.round,
		Addr:     c.addr,
		Run:      hex.EncodeToString(id[:]),
		Started:  time.Now().UTC().Format(time.RFC3339),
	}, id
}

func (c *mqttCommon) dial(clientID string, clean bool) mqttDial {
	return mqttDial{addr: c.addr, clientID: clientID, clean: clean, keepalive: c.keepalive,
		username: c.username, password: c.password}
}

// mqttConfig is one of the message scenarios (everything but mqtt-idle):
// P publishers, S subscribers, one topic per publisher or one shared topic.
type mqttConfig struct {
	mqttCommon
	scenario    string
	publishers  int
	subscribers int
	qos         int  // of the publishes and of the subscriptions: 0 or 1
	persistent  bool // subscribers connect with clean session 0
	wildcard    bool // publisher p publishes to tb/RUN/p, subscribers take tb/RUN/+
	size        int
	count       int           // messages in all, the bound on sending
	duration    time.Duration // the time bound on sending
	rate        int           // messages per second, all publishers together; 0: unpaced
	inflight    int           // QoS 1 publishes a publisher may have unacked
	stamp       bool          // latency: stamp each payload, report percentiles
	warmup      time.Duration
	drain       time.Duration // after the last publish, wait at most this for deliveries
	quiet       time.Duration // ... and stop waiting after this long without one
}

// mqttDefaults are what one scenario's flags default to.
var mqttDefaults = map[string]mqttConfig{
	"mqtt-fanin": {publishers: 4, subscribers: 1, qos: 0, wildcard: true, size: 64,
		count: 2_000_000, duration: 10 * time.Second, inflight: 100, drain: 60 * time.Second, quiet: 3 * time.Second},
	"mqtt-fanout": {publishers: 1, subscribers: 50, qos: 0, size: 64,
		count: 100_000, duration: 10 * time.Second, inflight: 100, drain: 60 * time.Second, quiet: 3 * time.Second},
	"mqtt-persist": {publishers: 4, subscribers: 1, qos: 1, persistent: true, wildcard: true, size: 64,
		count: 200_000, duration: 30 * time.Second, inflight: 100, drain: 60 * time.Second, quiet: 5 * time.Second},
	"mqtt-latency": {publishers: 1, subscribers: 1, qos: 1, persistent: true, size: 64,
		count: 20_000, duration: 20 * time.Second, rate: 1000, inflight: 100, stamp: true, warmup: 2 * time.Second,
		drain: 15 * time.Second, quiet: 5 * time.Second},
}

func (c *mqttConfig) flags(fs *flag.FlagSet) {
	d := mqttDefaults[c.scenario]
	c.mqttCommon.flags(fs)
	fs.IntVar(&c.publishers, "publishers", d.publishers, "publisher connections")
	fs.IntVar(&c.subscribers, "subscribers", d.subscribers, "subscriber connections; each gets every message")
	fs.IntVar(&c.qos, "qos", d.qos, "QoS of the publishes and of the subscriptions, 0 or 1 (2 is not measured)")
	fs.BoolVar(&c.persistent, "persistent", d.persistent, "subscribers connect with clean session 0 (a persistent session; removed after the run)")
	fs.BoolVar(&c.wildcard, "wildcard", d.wildcard, "publisher p publishes to tb/RUN/p and subscribers take tb/RUN/+; else all use tb/RUN/t")
	fs.IntVar(&c.size, "size", d.size, fmt.Sprintf("payload `bytes` (at least %d)", payloadHeader))
	fs.IntVar(&c.count, "count", d.count, "messages to send in all (publishers stop at --count or --duration)")
	fs.DurationVar(&c.duration, "duration", d.duration, "send for at most this long")
	fs.IntVar(&c.rate, "rate", d.rate, "messages per second, all publishers together; 0: as fast as they can")
	fs.IntVar(&c.inflight, "inflight", d.inflight, "QoS 1 publishes a publisher may have without PUBACK")
	fs.DurationVar(&c.warmup, "warmup", d.warmup, "latency: messages sent in this first part are counted but not in the percentiles")
	fs.DurationVar(&c.drain, "drain", d.drain, "after the last publish, wait at most this long for deliveries")
	fs.DurationVar(&c.quiet, "quiet", d.quiet, "... and stop waiting once none arrived for this long (0: wait all of --drain)")
	c.stamp = d.stamp
}

func (c *mqttConfig) validate() error {
	if err := c.mqttCommon.validate(); err != nil {
		return err
	}
	switch {
	case c.qos < 0 || c.qos > 1:
		return errors.New("--qos must be 0 or 1")
	case c.publishers < 1 || c.publishers > 1000 || c.subscribers < 1 || c.subscribers > 10_000:
		return errors.New("--publishers must be 1..1000 and --subscribers 1..10000")
	case c.count < c.publishers:
		return errors.New("--count must be at least --publishers")
	case int64(c.count)*int64(c.subscribers) > 500_000_000:
		return errors.New("--count times --subscribers must be at most 500,000,000")
	case c.size < payloadHeader || c.size > 256<<10:
		return fmt.Errorf("--size must be %d bytes..256 KiB", payloadHeader)
	case c.duration <= 0 || c.rate < 0 || c.inflight < 1 || c.inflight > 65000:
		return errors.New("--duration must be positive, --rate not negative, --inflight 1..65000")
	case c.warmup < 0 || c.warmup >= c.duration || c.drain < 0 || c.quiet < 0:
		return errors.New("--warmup must be shorter than --duration; --drain and --quiet not negative")
	}
	return nil
}

// mqttResult is a message scenario's report.
type mqttResult struct {
	mqttHeader
	Publishers  int    `json:"publishers"`
	Subscribers int    `json:"subscribers"`
	QoS         byte   `json:"qos"`
	Persistent  bool   `json:"persistent"`
	Filter      string `json:"filter"`
	Size        int    `json:"size"`
	Count       int    `json:"count"`
	Duration    string `json:"duration"`
	Rate        int    `json:"rate,omitempty"`
	Inflight    int    `json:"inflight,omitempty"`
	mqttCounts
	// OK: QoS 1, every message PUBACKed and delivered exactly once to
	// every subscriber; QoS 0, deliveries and no duplicates.
	OK           bool            `json:"ok"`
	SendSecs     float64         `json:"send_s"` // publishers' start to their last PUBACK (QoS 1) or write
	AchievedRate float64         `json:"achieved_msgs_per_s"`
	SteadyRate   float64         `json:"steady_msgs_per_s"` // deliveries per second (all subscribers)
	SteadyFrom   float64         `json:"steady_from_s"`
	SteadyTo     float64         `json:"steady_to_s"`
	ElapsedSecs  float64         `json:"elapsed_s"`
	OverallRate  float64         `json:"overall_msgs_per_s"`
	Latency      *latencySummary `json:"latency,omitempty"`
	Errors       []string        `json:"errors,omitempty"`
}

// runMQTT runs a message scenario and returns its report. Errors of single
// connections are in the report; the returned error is for a run that
// could not start.
func runMQTT(ctx context.Context, cfg mqttConfig) (mqttResult, error) {
	ctx, cancel := context.WithTimeoutCause(ctx, cfg.timeout, errors.New("hard deadline (--timeout) reached"))
	defer cancel()
	hdr, run := cfg.header(cfg.scenario)
	res := mqttResult{
		mqttHeader:  hdr,
		Publishers:  cfg.publishers,
		Subscribers: cfg.subscribers,
		QoS:         byte(cfg.qos),
		Persistent:  cfg.persistent,
		Size:        cfg.size,
		Count:       cfg.count,
		Duration:    cfg.duration.String(),
		Rate:        cfg.rate,
	}
	if cfg.qos > 0 {
		res.Inflight = cfg.inflight
	}
	topic := func(p int) string { return "tb/" + hdr.Run + "/t" }
	res.Filter = "tb/" + hdr.Run + "/t"
	if cfg.wildcard {
		topic = func(p int) string { return "tb/" + hdr.Run + "/" + strconv.Itoa(p) }
		res.Filter = "tb/" + hdr.Run + "/+"
	}
	per := (cfg.count + cfg.publishers - 1) / cfg.publishers
	l := newMQTTLedger(run, cfg.publishers, per, cfg.subscribers, cfg.qos > 0)
	var errsMu sync.Mutex
	fail := func(err error) {
		errsMu.Lock()
		defer errsMu.Unlock()
		if len(res.Errors) < 20 {
			res.Errors = append(res.Errors, err.Error())
		}
	}

	// One monotonic clock for the whole process: publishers stamp
	// nanoseconds since base, subscribers subtract.
	base := time.Now()
	clock := func() int64 { return int64(time.Since(base)) }
	var warm atomic.Int64 // stamps before this are warm-up
	warm.Store(math.MaxInt64)
	tlReady := make(chan struct{})
	var tl *timeline

	subs := make([]*mqttSubscriber, cfg.subscribers)
	for i := range subs {
		subs[i] = &mqttSubscriber{id: i, dial: cfg.dial(fmt.Sprintf("tb-%s-s%d", hdr.Run, i), !cfg.persistent),
			filter: res.Filter, qos: byte(cfg.qos), l: l, tlReady: tlReady, tl: &tl}
		if cfg.stamp {
			subs[i].base, subs[i].warm = base, &warm
		}
	}
	stopSubs, err := startSubscribers(ctx, subs, fail)
	defer stopSubs()
	if err != nil {
		return res, fmt.Errorf("%w (%v)", err, res.Errors)
	}

	start := time.Now()
	tl = newTimeline(start, 10*time.Millisecond, cfg.timeout)
	close(tlReady)
	warm.Store(clock() + int64(cfg.warmup))
	stopAt := start.Add(cfg.duration)
	var pubs sync.WaitGroup
	for i := range cfg.publishers {
		p := &mqttPublisher{id: i, dial: cfg.dial(fmt.Sprintf("tb-%s-p%d", hdr.Run, i), true),
			topic: topic(i), qos: byte(cfg.qos), size: cfg.size, inflight: cfg.inflight, stopAt: stopAt, l: l}
		if cfg.rate > 0 {
			p.rate = float64(cfg.rate) / float64(cfg.publishers)
		}
		if cfg.stamp {
			p.clock = clock
		}
		pubs.Go(func() {
			if err := p.run(ctx); err != nil {
				fail(err)
			}
		})
	}
	pubs.Wait()
	sendSecs := time.Since(start).Seconds()
	res.SendSecs = math.Round(sendSecs*1000) / 1000

	waitReceived(ctx, l, cfg.drain, cfg.quiet)
	stopSubs()
	if err := context.Cause(ctx); err != nil && !errors.Is(err, context.Canceled) {
		fail(err)
	}

	res.mqttCounts = l.counts()
	if cfg.qos > 0 {
		res.OK = res.exactlyOnce()
	} else {
		res.OK = res.atMostOnce()
	}
	if sendSecs > 0 {
		res.AchievedRate = math.Round(float64(res.Sent) / sendSecs)
	}
	buckets := tl.snapshot()
	res.ElapsedSecs = (time.Duration(len(buckets)) * tl.width).Seconds()
	rate, from, to := steadyRate(buckets, tl.width, 0.05, 0.95)
	res.SteadyRate = math.Round(rate)
	res.SteadyFrom, res.SteadyTo = from.Seconds(), to.Seconds()
	if res.ElapsedSecs > 0 {
		res.OverallRate = math.Round(float64(res.Received) / res.ElapsedSecs)
	}
	if cfg.stamp {
		var samples []time.Duration
		for _, s := range subs {
			samples = append(samples, s.samples...)
		}
		sum := summarize(samples)
		res.Latency = &sum
	}
	return res, nil
}

// waitReceived waits until every message written reached every subscriber,
// for at most drain, and no longer than quiet (if positive) without a
// delivery; or until ctx ends.
func waitReceived(ctx context.Context, l *mqttLedger, drain, quiet time.Duration) {
	drainTimer := time.NewTimer(drain)
	defer drainTimer.Stop()
	poll := time.NewTicker(5 * time.Millisecond)
	defer poll.Stop()
	want := l.totalSent() * int64(len(l.subs))
	last, lastAt := l.received(), time.Now()
	for last < want {
		select {
		case <-poll.C:
		case <-drainTimer.C:
			return
		case <-ctx.Done():
			return
		}
		if n := l.received(); n != last {
			last, lastAt = n, time.Now()
		} else if quiet > 0 && time.Since(lastAt) >= quiet {
			return
		}
	}
}

// human is the one-line summary.
func (r mqttResult) human() string {
	verdict := "ok"
	if !r.OK {
		verdict = "NOT ok"
	}
	s := fmt.Sprintf("%s %s %s: %dP/%dS QoS %d, %d sent, %d acked, %d/%d received, %d duplicates, %d lost, %d in doubt, %d dropped (%s); "+
		"%.0f deliveries/s steady (%.2f-%.2fs), %.0f overall, sent at %.0f msgs/s in %.2fs",
		r.Scenario, r.Label, r.Addr, r.Publishers, r.Subscribers, r.QoS, r.Sent, r.Acked, r.Received, r.Expected,
		r.Duplicates, r.Lost, r.InDoubt, r.Dropped, verdict,
		r.SteadyRate, r.SteadyFrom, r.SteadyTo, r.OverallRate, r.AchievedRate, r.SendSecs)
	if r.Latency != nil {
		s += fmt.Sprintf("; latency p50 %.3f ms, p99 %.3f ms, p99.9 %.3f ms, max %.3f ms over %d samples",
			r.Latency.P50, r.Latency.P99, r.Latency.P999, r.Latency.Max, r.Latency.Samples)
	}
	if len(r.Errors) > 0 {
		s += fmt.Sprintf("; %d errors, first: %s", len(r.Errors), r.Errors[0])
	}
	return s
}

// ok reports whether the run counted no loss, duplicate or error.
func (r mqttResult) ok() bool { return r.OK && len(r.Errors) == 0 }

// mqttPublisher publishes up to l.per messages on its own connection.
// QoS 1 publishes are pipelined: at most inflight without a PUBACK.
type mqttPublisher struct {
	id       int
	dial     mqttDial
	topic    string
	qos      byte
	size     int
	inflight int
	stopAt   time.Time
	rate     float64      // messages per second; 0: unpaced
	clock    func() int64 // non-nil: stamp each payload with clock()
	l        *mqttLedger
}

// run publishes, then (QoS 1) waits for every PUBACK. It returns the first
// error: a connection failure, a protocol error or the end of ctx.
func (p *mqttPublisher) run(ctx context.Context) error {
	c, _, err := dialMQTT(ctx, p.dial)
	if err != nil {
		return fmt.Errorf("publisher %d: %w", p.id, err)
	}
	defer c.close()

	// pids maps a packet id in flight to its sequence number + 1 (0: free).
	var pids []atomic.Int32
	if p.qos > 0 {
		pids = make([]atomic.Int32, 1<<16)
	}
	slots := make(chan struct{}, p.inflight) // one per PUBLISH without PUBACK
	readDone := make(chan struct{})
	var readErr error
	go func() {
		defer close(readDone)
		readErr = p.readAcks(c, pids, slots)
	}()
	defer func() { c.close(); <-readDone }()
	failed := func() error { return fmt.Errorf("publisher %d: reading: %w", p.id, readErr) }
	// acquire takes a slot, flushing first if it has to wait: the PUBACKs
	// it waits for may be for publishes still in the buffer.
	acquire := func() error {
		select {
		case slots <- struct{}{}:
			return nil
		default:
		}
		if err := c.flush(); err != nil {
			return err
		}
		select {
		case slots <- struct{}{}:
			return nil
		case <-readDone:
			return failed()
		case <-ctx.Done():
			return context.Cause(ctx)
		}
	}

	payload := newPayload(p.size)
	putPayload(payload, p.l.run, p.id, 0, 0)
	var tick *time.Ticker
	if p.rate > 0 {
		tick = time.NewTicker(time.Millisecond)
		defer tick.Stop()
	}
	start := time.Now()
	var pid uint16
	for seq := range p.l.per {
		if p.rate > 0 {
			// Message seq is due seq/rate after start.
			for float64(seq) >= time.Since(start).Seconds()*p.rate {
				if err := c.flush(); err != nil {
					return fmt.Errorf("publisher %d: %w", p.id, err)
				}
				select {
				case <-tick.C:
				case <-readDone:
					return failed()
				case <-ctx.Done():
					return context.Cause(ctx)
				}
			}
		}
		// The clock is read every 256 messages unless paced.
		if (p.rate > 0 || seq%256 == 0) && !time.Now().Before(p.stopAt) {
			break
		}
		if p.qos > 0 {
			if err := acquire(); err != nil {
				return fmt.Errorf("publisher %d: %w", p.id, err)
			}
			for { // a free id exists: fewer than 65535 are in flight
				pid++
				if pid != 0 && pids[pid].Load() == 0 {
					break
				}
			}
			pids[pid].Store(int32(seq) + 1)
		}
		putPayload(payload, p.l.run, p.id, seq, 0)
		if p.clock != nil {
			stampPayload(payload, p.clock())
		}
		if err := c.writePublish(p.topic, p.qos, pid, payload); err != nil {
			return fmt.Errorf("publisher %d: %w", p.id, err)
		}
		p.l.markSent(p.id, seq)
		if p.rate > 0 {
			if err := c.flush(); err != nil {
				return fmt.Errorf("publisher %d: %w", p.id, err)
			}
		}
	}
	if err := c.flush(); err != nil {
		return fmt.Errorf("publisher %d: %w", p.id, err)
	}
	if p.qos > 0 {
		// Every slot free again means every PUBACK arrived.
		for range p.inflight {
			select {
			case slots <- struct{}{}:
			case <-readDone:
				return failed()
			case <-ctx.Done():
				return fmt.Errorf("publisher %d: waiting for PUBACKs: %w", p.id, context.Cause(ctx))
			}
		}
	}
	c.disconnect()
	return nil
}

// readAcks records each PUBACK in the ledger and frees its slot. It
// returns when the connection fails or is closed.
func (p *mqttPublisher) readAcks(c *mqttConn, pids []atomic.Int32, slots chan struct{}) error {
	for {
		typ, _, body, err := c.readPacket()
		if err != nil {
			return err
		}
		switch typ {
		case packets.Puback:
			if pids == nil || len(body) < 2 {
				return fmt.Errorf("unexpected PUBACK")
			}
			pid := uint16(body[0])<<8 | uint16(body[1])
			v := pids[pid].Swap(0)
			if v == 0 {
				return fmt.Errorf("PUBACK for packet id %d, which is not in flight", pid)
			}
			if !p.l.markAcked(p.id, int(v-1)) {
				return fmt.Errorf("second PUBACK for message %d", v-1)
			}
			select {
			case <-slots:
			default:
				return fmt.Errorf("PUBACK %d that was not asked for", pid)
			}
		case packets.Pingresp:
		default:
			return fmt.Errorf("unexpected packet type %d", typ)
		}
	}
}

// mqttSubscriber subscribes to one filter and counts every delivery,
// acking QoS 1 ones with PUBACK.
type mqttSubscriber struct {
	id      int
	dial    mqttDial
	filter  string
	qos     byte
	l       *mqttLedger
	tlReady <-chan struct{} // closed once *tl is set
	tl      **timeline

	// Latency (base non-zero): first deliveries stamped at or after warm
	// go into samples, which only this subscriber's goroutine appends to.
	base    time.Time
	warm    *atomic.Int64
	samples []time.Duration
}

// run consumes until stop is closed or ctx ends. It closes subscribed once
// the broker has sent the SUBACK. On stop it flushes its PUBACKs and
// disconnects; a persistent session is then removed by connecting once
// more with clean session 1.
func (s *mqttSubscriber) run(ctx context.Context, stop <-chan struct{}, subscribed chan<- struct{}) error {
	c, _, err := dialMQTT(ctx, s.dial)
	if err != nil {
		return fmt.Errorf("subscriber %d: %w", s.id, err)
	}
	defer c.close()
	if err := c.subscribe(s.filter, s.qos); err != nil {
		return fmt.Errorf("subscriber %d: %w", s.id, err)
	}
	close(subscribed)
	// Stopping unblocks the read below; the watcher ends with run.
	done := make(chan struct{})
	watcher := make(chan struct{})
	defer func() { close(done); <-watcher }()
	go func() {
		defer close(watcher)
		select {
		case <-stop:
			_ = c.nc.SetReadDeadline(time.Now())
		case <-done:
		}
	}()
	err = s.consume(c)
	select {
	case <-stop:
		_ = c.flush()
		c.disconnect()
		if !s.dial.clean {
			s.dial.clean = true
			if cc, _, err := dialMQTT(ctx, s.dial); err == nil {
				cc.disconnect()
			}
		}
		return nil
	default:
	}
	return fmt.Errorf("subscriber %d: %w", s.id, err)
}

// consume reads deliveries until the connection fails. A read batch (what
// one read from the socket brought) is counted at the time it arrived, and
// PUBACKs are flushed when the batch is done.
func (s *mqttSubscriber) consume(c *mqttConn) error {
	var now time.Time
	firsts := 0
	for {
		if !c.buffered() {
			if firsts > 0 {
				<-s.tlReady
				(*s.tl).addN(now, firsts)
				firsts = 0
			}
			if err := c.flush(); err != nil {
				return err
			}
			now = time.Time{}
		}
		typ, flags, body, err := c.readPacket()
		if err != nil {
			return err
		}
		if now.IsZero() {
			now = time.Now()
		}
		switch typ {
		case packets.Publish:
			_, qos, pid, payload, err := parsePublish(flags, body)
			if err != nil {
				return err
			}
			first, sentNs := s.l.receive(s.id, payload)
			if first {
				firsts++
				if s.warm != nil && sentNs >= s.warm.Load() {
					s.samples = append(s.samples, now.Sub(s.base)-time.Duration(sentNs))
				}
			}
			if qos > 0 {
				if err := c.writePuback(pid); err != nil {
					return err
				}
			}
		case packets.Pingresp, packets.Suback:
		default:
			return fmt.Errorf("unexpected packet type %d", typ)
		}
	}
}

// startSubscribers starts the subscribers and waits until each has its
// SUBACK. The returned stop ends them and waits for them; it may be called
// more than once. Errors of running subscribers go to fail.
func startSubscribers(ctx context.Context, subs []*mqttSubscriber, fail func(error)) (stop func(), err error) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	subscribed := make([]chan struct{}, len(subs))
	ended := make(chan struct{}, len(subs))
	for i, s := range subs {
		subscribed[i] = make(chan struct{})
		wg.Go(func() {
			defer func() { ended <- struct{}{} }()
			if err := s.run(ctx, done, subscribed[i]); err != nil {
				fail(err)
			}
		})
	}
	stop = sync.OnceFunc(func() { close(done); wg.Wait() })
	for i := range subscribed {
		select {
		case <-subscribed[i]:
		case <-ended:
			stop()
			return stop, fmt.Errorf("a subscriber failed while the others subscribed (%d of %d subscribed)", countClosed(subscribed), len(subs))
		case <-ctx.Done():
			stop()
			return stop, fmt.Errorf("subscribers did not subscribe: %v", context.Cause(ctx))
		}
	}
	return stop, nil
}

// countClosed counts the closed channels in chs.
func countClosed(chs []chan struct{}) int {
	n := 0
	for _, ch := range chs {
		select {
		case <-ch:
			n++
		default:
		}
	}
	return n
}
