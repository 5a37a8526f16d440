package main

import (
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/rs/zerolog"
	"github.com/tandem-mq/tandem/engine"
	"github.com/tandem-mq/tandem/protocol"
)

// The Prometheus endpoint, /metrics on the admin listener. Every series of
// ours starts with tandem_; the Go runtime's (go_*) and the process's
// (process_*) come with them. Queue and connection figures are read from
// the engine and the adapters at scrape time (brokerCollector); only the
// fsync histogram is fed as things happen, by the store's group commit.
//
// Per-queue series cover the queues operators name: declared ones, dead-
// letter queues, shared and durable subscriptions. The queues the broker
// makes per client (an MQTT persistent session's "$mqtt/<client id>",
// temporary queues) would give a series set per device, so they are
// summed by kind instead (tandem_client_queues*); the admin API lists them
// one by one.

// metrics is the registry behind /metrics.
type metrics struct {
	reg   *prometheus.Registry
	fsync prometheus.Histogram
}

func newMetrics(t *targetsRef) *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		fsync: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "tandem_fsync_duration_seconds",
			Help: "Time of one group commit to the store: the WAL write and fsync shared by the synced writes waiting for it.",
			// 100µs to about 3s.
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16),
		}),
	}
	m.reg.MustRegister(
		m.fsync,
		&brokerCollector{t: t},
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return m
}

// observeSync is persist.Options.OnSync.
func (m *metrics) observeSync(d time.Duration) { m.fsync.Observe(d.Seconds()) }

// handler serves the registry in the Prometheus text (or OpenMetrics)
// format.
func (m *metrics) handler(log zerolog.Logger) http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{
		ErrorLog:      promLogger{log},
		ErrorHandling: promhttp.ContinueOnError,
	})
}

type promLogger struct{ log zerolog.Logger }

func (l promLogger) Println(v ...any) {
	l.log.Warn().Msg(strings.TrimSpace(fmt.Sprintln(v...)))
}

// Series descriptions.
var (
	queueLabels = []string{"queue"}

	descQueueMessages = prometheus.NewDesc("tandem_queue_messages",
		"Messages a queue holds (its depth): ready, scheduled for redelivery or delay, and unacked.", queueLabels, nil)
	descQueueReady = prometheus.NewDesc("tandem_queue_messages_ready",
		"Messages of a queue waiting for a consumer (ready or scheduled).", queueLabels, nil)
	descQueueUnacked = prometheus.NewDesc("tandem_queue_messages_unacked",
		"Messages of a queue delivered and not yet acknowledged.", queueLabels, nil)
	descQueueBytes = prometheus.NewDesc("tandem_queue_bytes",
		"Bytes (bodies and properties) of the messages a queue holds.", queueLabels, nil)
	descQueueConsumers = prometheus.NewDesc("tandem_queue_consumers",
		"Consumers attached to a queue.", queueLabels, nil)
	descQueueOldest = prometheus.NewDesc("tandem_queue_oldest_message_age_seconds",
		"Age of the oldest message a queue holds (0 when it is empty).", queueLabels, nil)

	queueCounters = []struct {
		desc *prometheus.Desc
		get  func(engine.QueueStats) uint64
	}{
		{prometheus.NewDesc("tandem_queue_published_total", "Messages put into a queue (published, routed by a binding, dead-lettered or replayed into it).", queueLabels, nil),
			func(s engine.QueueStats) uint64 { return s.Published }},
		{prometheus.NewDesc("tandem_queue_delivered_total", "Deliveries from a queue, redeliveries included.", queueLabels, nil),
			func(s engine.QueueStats) uint64 { return s.Delivered }},
		{prometheus.NewDesc("tandem_queue_acked_total", "Messages acknowledged (or auto-acked) and removed from a queue.", queueLabels, nil),
			func(s engine.QueueStats) uint64 { return s.Acked }},
		{prometheus.NewDesc("tandem_queue_redelivered_total", "Deliveries from a queue of messages delivered before.", queueLabels, nil),
			func(s engine.QueueStats) uint64 { return s.Redelivered }},
		{prometheus.NewDesc("tandem_queue_dead_lettered_total", "Messages moved out of a queue to its dead-letter queue (max deliveries, overflow), or dropped when it has none.", queueLabels, nil),
			func(s engine.QueueStats) uint64 { return s.DeadLettered }},
		{prometheus.NewDesc("tandem_queue_expired_total", "Messages of a queue that expired (TTL) and were dead-lettered.", queueLabels, nil),
			func(s engine.QueueStats) uint64 { return s.Expired }},
		{prometheus.NewDesc("tandem_queue_dropped_total", "Messages dropped from a queue: overflow drop-head and purges.", queueLabels, nil),
			func(s engine.QueueStats) uint64 { return s.Dropped }},
	}

	descClientQueues = prometheus.NewDesc("tandem_client_queues",
		"Queues the broker keeps per client, by kind (mqtt_session: an MQTT persistent session's queue; temporary: in-memory reply and clean-session queues).", []string{"kind"}, nil)
	descClientQueueMessages = prometheus.NewDesc("tandem_client_queue_messages",
		"Messages held by the per-client queues, by kind.", []string{"kind"}, nil)

	connLabels      = []string{"protocol", "transport"}
	descConnections = prometheus.NewDesc("tandem_connections",
		"Open client connections, by protocol (mqtt, stomp) and transport (tcp, tls, websocket, wss).", connLabels, nil)
	descConnectionsOpened = prometheus.NewDesc("tandem_connections_opened_total",
		"Client connections accepted since the broker started.", connLabels, nil)
	descRefusals = prometheus.NewDesc("tandem_refusals_total",
		"Requests refused by a limit or a permission, by reason: connections_total, connections_per_address, connection_rate "+
			"(limits.*), authentication (failed logins), publish and subscribe (permission rules), subscriptions "+
			"(per-connection limit), queues (queues.max_queues), disk (publishes refused under disk_free_limit).", []string{"reason"}, nil)
	descTopicDropped = prometheus.NewDesc("tandem_topic_messages_dropped_total",
		"Non-durable topic messages dropped for subscribers too slow to take them (their connection's buffer was full).", []string{"protocol"}, nil)
)

// brokerCollector reads the engine's and the adapters' figures at scrape
// time. Before the broker is ready it reports nothing.
type brokerCollector struct{ t *targetsRef }

func (c *brokerCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descQueueMessages, descQueueReady, descQueueUnacked, descQueueBytes,
		descQueueConsumers, descQueueOldest, descClientQueues, descClientQueueMessages,
		descConnections, descConnectionsOpened, descTopicDropped, descRefusals} {
		ch <- d
	}
	for _, qc := range queueCounters {
		ch <- qc.desc
	}
}

func (c *brokerCollector) Collect(ch chan<- prometheus.Metric) {
	t := c.t.get()
	if t == nil {
		return
	}
	metric := func(d *prometheus.Desc, t prometheus.ValueType, v float64, labels ...string) {
		m, err := prometheus.NewConstMetric(d, t, v, labels...)
		if err != nil {
			m = prometheus.NewInvalidMetric(d, err) // the scrape reports it; it never panics
		}
		ch <- m
	}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) { metric(d, prometheus.GaugeValue, v, labels...) }
	counter := func(d *prometheus.Desc, v float64, labels ...string) {
		metric(d, prometheus.CounterValue, v, labels...)
	}

	now := time.Now()
	clientQueues := map[string]*[2]int64{"mqtt_session": {}, "temporary": {}}
	for _, qi := range t.broker.Queues() {
		if kind := clientQueueKind(qi); kind != "" {
			clientQueues[kind][0]++
			clientQueues[kind][1] += qi.Messages
			continue
		}
		// The oldest message costs more to find: only for the queues
		// exported one by one.
		if f, err := t.broker.QueueFigure(qi.Name); err == nil {
			qi = f
		}
		// Label values must be UTF-8; a STOMP client may name a queue
		// otherwise.
		name := strings.ToValidUTF8(qi.Name, "\uFFFD")
		gauge(descQueueMessages, float64(qi.Messages), name)
		gauge(descQueueReady, float64(qi.Messages-int64(qi.Unacked)), name)
		gauge(descQueueUnacked, float64(qi.Unacked), name)
		gauge(descQueueBytes, float64(qi.Bytes), name)
		gauge(descQueueConsumers, float64(qi.Consumers), name)
		gauge(descQueueOldest, oldestAge(qi, now).Seconds(), name)
		for _, qc := range queueCounters {
			counter(qc.desc, float64(qc.get(qi.Stats)), name)
		}
	}
	for kind, n := range clientQueues {
		gauge(descClientQueues, float64(n[0]), kind)
		gauge(descClientQueueMessages, float64(n[1]), kind)
	}

	for _, p := range []struct {
		name    string
		counts  []protocol.TransportCount
		dropped uint64
	}{
		{"mqtt", t.mqtt.ConnCounts(), t.mqtt.Dropped.Load()},
		{"stomp", t.stomp.ConnCounts(), t.stomp.Dropped.Load()},
	} {
		for _, tc := range p.counts {
			gauge(descConnections, float64(tc.Open), p.name, tc.Transport)
			counter(descConnectionsOpened, float64(tc.Opened), p.name, tc.Transport)
		}
		counter(descTopicDropped, float64(p.dropped), p.name)
	}

	refusals := map[string]uint64{
		"subscriptions": t.mqtt.SubscriptionsRefused.Load() + t.stomp.SubscriptionsRefused.Load(),
		"queues":        t.broker.QueuesRefused(),
		"disk":          t.broker.DiskRefused(),
	}
	if t.limiter != nil {
		for k, v := range t.limiter.Refused() {
			refusals[map[string]string{"total": "connections_total", "address": "connections_per_address", "rate": "connection_rate"}[k]] = v
		}
	}
	if t.auth != nil {
		for k, v := range t.auth.Refused() {
			refusals[k] = v
		}
	}
	for reason, v := range refusals {
		counter(descRefusals, float64(v), reason)
	}
}

// clientQueueKind says which kind of per-client queue qi is, or "" for a
// queue exported on its own.
func clientQueueKind(qi engine.QueueInfo) string {
	switch {
	case !qi.Durable:
		return "temporary"
	case strings.HasPrefix(qi.Name, "$mqtt/"):
		return "mqtt_session"
	}
	return ""
}

// oldestAge is how old the oldest message of qi is at now, 0 for none.
func oldestAge(qi engine.QueueInfo, now time.Time) time.Duration {
	if qi.Oldest == 0 {
		return 0
	}
	return max(now.Sub(time.Unix(0, qi.Oldest)), 0)
}
