package main

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/rs/zerolog"
	"github.com/tandem-mq/tandem/engine"
	"github.com/tandem-mq/tandem/mqtt"
	"github.com/tandem-mq/tandem/persist"
	"github.com/tandem-mq/tandem/protocol"
	"github.com/tandem-mq/tandem/stomp"
	"go.yaml.in/yaml/v3"
)

// Config is everything the tandem binary can be told. Its zero value means
// "all defaults": EnsureDefaults fills every unset field, and Validate
// checks the result. configs/tandem.yaml documents every field with its
// default; a test keeps the two in step.
//
// Values are layered, each layer overriding the ones before it: the
// defaults, then the YAML file given by --config, then TANDEM_* environment
// variables, then command-line flags.
type Config struct {
	// DataDir is the directory of the Pebble database.
	DataDir string `yaml:"data_dir"`
	// DiskFreeLimit is the free disk space (of the data directory's file
	// system) under which publishes are refused (disk.go).
	DiskFreeLimit ByteSize `yaml:"disk_free_limit"`
	// ShutdownTimeout bounds how long a graceful shutdown waits for open
	// connections to finish before closing them.
	ShutdownTimeout time.Duration `yaml:"shutdown_timeout"`

	Listeners ListenersConfig `yaml:"listeners"`
	Log       LogConfig       `yaml:"log"`
	Storage   StorageConfig   `yaml:"storage"`
	Queues    QueuesConfig    `yaml:"queues"`
	STOMP     STOMPConfig     `yaml:"stomp"`
	MQTT      MQTTConfig      `yaml:"mqtt"`
	TLS       TLSConfig       `yaml:"tls"`
	WebSocket WebSocketConfig `yaml:"websocket"`
	Auth      AuthConfig      `yaml:"auth"`
	Limits    LimitsConfig    `yaml:"limits"`
}

// LimitsConfig bounds connections for both protocols and every transport.
// The per-address limits spare loopback clients.
type LimitsConfig struct {
	// MaxConnections bounds the open connections (all protocols).
	MaxConnections int `yaml:"max_connections"`
	// MaxConnectionsPerAddress bounds one client address's connections.
	MaxConnectionsPerAddress int `yaml:"max_connections_per_address"`
	// ConnectionRatePerAddress is how many connections per second one
	// address may open on average, in bursts of up to ConnectionBurst.
	ConnectionRatePerAddress float64 `yaml:"connection_rate_per_address"`
	ConnectionBurst          int     `yaml:"connection_burst"`
}

func (l LimitsConfig) validate() error {
	if l.MaxConnections < 1 || l.MaxConnectionsPerAddress < 1 || l.ConnectionRatePerAddress <= 0 || l.ConnectionBurst < 1 {
		return errors.New("limits: max_connections, max_connections_per_address, connection_rate_per_address and connection_burst must be positive")
	}
	return nil
}

func (l LimitsConfig) limiter() *protocol.ConnLimiter {
	return protocol.NewConnLimiter(protocol.ConnLimits{
		MaxConnections: l.MaxConnections, MaxPerAddress: l.MaxConnectionsPerAddress,
		RatePerAddress: l.ConnectionRatePerAddress, Burst: l.ConnectionBurst,
	}, nil)
}

// MQTTConfig tunes the MQTT adapter. Every limit is finite.
type MQTTConfig struct {
	// MaxPacketSize bounds one packet (checked before it is read).
	MaxPacketSize ByteSize `yaml:"max_packet_size"`
	// ReceiveMaximum is how many QoS 1 publishes a connection may have
	// unacknowledged.
	ReceiveMaximum int `yaml:"receive_maximum"`
	// MaxInflight caps the unacked QoS 1 deliveries of one connection.
	MaxInflight int `yaml:"max_inflight"`
	// KeepaliveMin and KeepaliveMax bound the client's keepalive.
	KeepaliveMin time.Duration `yaml:"keepalive_min"`
	KeepaliveMax time.Duration `yaml:"keepalive_max"`
	// SessionExpiryMax caps a persistent session's expiry interval (MQTT
	// 3.1.1 clean session 0 gets this).
	SessionExpiryMax time.Duration `yaml:"session_expiry_max"`
	// TopicAliasMax is the highest topic alias an MQTT 5 client may use.
	TopicAliasMax int `yaml:"topic_alias_max"`
	// MaxSubscriptions bounds one connection's filters.
	MaxSubscriptions int `yaml:"max_subscriptions"`
	// TopicBuffer bounds one connection's waiting QoS 0 messages.
	TopicBuffer int `yaml:"topic_buffer"`
	// SessionQueueMaxLength and SessionQueueMaxBytes bound a session's
	// QoS 1 backlog: a clean session's in memory (oldest dropped past
	// them), a persistent session's on disk (oldest dead-lettered into
	// mqtt.dlq past them).
	SessionQueueMaxLength int64    `yaml:"session_queue_max_length"`
	SessionQueueMaxBytes  ByteSize `yaml:"session_queue_max_bytes"`
	// MaxRetained and MaxRetainedBytes bound the retained messages; past
	// them a RETAIN publish to a new topic is delivered but not retained.
	MaxRetained      int      `yaml:"max_retained"`
	MaxRetainedBytes ByteSize `yaml:"max_retained_bytes"`
	// ConnectTimeout bounds accept-to-CONNECT.
	ConnectTimeout time.Duration `yaml:"connect_timeout"`
}

// STOMPConfig tunes the STOMP adapter. Every limit is finite.
type STOMPConfig struct {
	// MaxFrameBody bounds a frame's body; MaxHeaderLine its command and
	// header lines; MaxHeaders its header count.
	MaxFrameBody  ByteSize `yaml:"max_frame_body"`
	MaxHeaderLine ByteSize `yaml:"max_header_line"`
	MaxHeaders    int      `yaml:"max_headers"`
	// HeartBeat is the interval the server offers and asks for.
	HeartBeat time.Duration `yaml:"heart_beat"`
	// ConnectTimeout bounds accept-to-CONNECT; FrameTimeout one frame.
	ConnectTimeout time.Duration `yaml:"connect_timeout"`
	FrameTimeout   time.Duration `yaml:"frame_timeout"`
	// DefaultPrefetch is a subscription's credit when the client names
	// none (prefetch-count, activemq.prefetchSize); MaxPrefetch caps it.
	DefaultPrefetch int `yaml:"default_prefetch"`
	MaxPrefetch     int `yaml:"max_prefetch"`
	// TopicBuffer bounds one connection's waiting topic messages; past it
	// they are dropped for that connection and counted.
	TopicBuffer int `yaml:"topic_buffer"`
}

// ListenersConfig holds the "host:port" addresses the broker listens on.
// Port 0 picks a free port; the bound address is logged. "off" turns a
// protocol listener off (not the admin one).
type ListenersConfig struct {
	MQTT  string `yaml:"mqtt"`
	STOMP string `yaml:"stomp"`
	// WebSocket serves MQTT at /mqtt and STOMP at /stomp.
	WebSocket string `yaml:"websocket"`
	// The TLS listeners start only when tls.cert_file is set.
	MQTTTLS      string `yaml:"mqtt_tls"`
	STOMPTLS     string `yaml:"stomp_tls"`
	WebSocketTLS string `yaml:"websocket_tls"`
	// Admin serves /healthz, /readyz, /metrics and the admin API.
	Admin string `yaml:"admin"`
}

// listenerOff is the address that turns a protocol listener off.
const listenerOff = "off"

// TLSConfig is the certificate of the TLS listeners.
type TLSConfig struct {
	// CertFile and KeyFile are PEM files: the certificate (with its
	// chain) and its private key. Empty: the TLS listeners are off. New
	// files are picked up without a restart (checked at most once a
	// second).
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// MinVersion is the oldest TLS version accepted: "1.2" or "1.3".
	MinVersion string `yaml:"min_version"`
	// ClientCA is a PEM file of the CAs that sign client certificates.
	// When set, a client may present a certificate; a verified one logs
	// in as the user its subject's common name names.
	ClientCA string `yaml:"client_ca"`
}

// enabled reports whether the TLS listeners start.
func (t TLSConfig) enabled() bool { return t.CertFile != "" }

// WebSocketConfig tunes the WebSocket listeners.
type WebSocketConfig struct {
	// AllowedOrigins are the browser origins allowed besides the
	// listener's own host: host patterns ("app.example.com",
	// "*.example.com") or "scheme://host" patterns. Requests without an
	// Origin header (not from a browser) are always allowed.
	AllowedOrigins []string `yaml:"allowed_origins"`
	// MaxMessageSize bounds one WebSocket message from a client.
	MaxMessageSize ByteSize `yaml:"max_message_size"`
	// LivePage serves a page at "/" of the WebSocket listeners where a
	// person can subscribe, watch messages arrive and publish.
	LivePage bool `yaml:"live_page"`
}

// LogConfig selects the log level and format.
type LogConfig struct {
	// Level is trace, debug, info, warn or error.
	Level string `yaml:"level"`
	// Format is json, console, or auto (console when stderr is a terminal,
	// JSON otherwise).
	Format string `yaml:"format"`
}

// StorageConfig tunes the Pebble database.
type StorageConfig struct {
	// Sync makes every confirmed write durable (fsynced) before it is
	// acknowledged. nil means true. false is unsafe: a crash can lose
	// messages that were already confirmed to their publishers.
	Sync *bool `yaml:"sync"`
	// CacheSize is the block cache size.
	CacheSize ByteSize `yaml:"cache_size"`
	// MemTableSize is the size of one memtable.
	MemTableSize ByteSize `yaml:"memtable_size"`
}

// QueuesConfig maps onto engine.Config.
type QueuesConfig struct {
	// WindowSize is how many ready messages of one queue are kept in
	// memory; the rest wait on disk.
	WindowSize int `yaml:"window_size"`
	// WindowBytes bounds the body bytes of one queue's in-memory window.
	WindowBytes ByteSize `yaml:"window_bytes"`
	// MaxQueues bounds the queues of every kind (named, durable
	// subscription, MQTT session, temporary).
	MaxQueues int `yaml:"max_queues"`
	// Default is the policy of every queue no rule matches.
	Default PolicyConfig `yaml:"default"`
	// Rules are tried in order; the first whose Match fits a queue's name
	// is applied over Default.
	Rules []RuleConfig `yaml:"rules"`
	// Bindings route topics into queues: at every start each queue is
	// declared (durable) if missing and bound to its topic filter.
	Bindings []BindingConfig `yaml:"bindings"`
}

// BindingConfig binds a queue to a topic filter. Queue is a name or a
// STOMP /queue/ destination; Topic is an MQTT-style filter (sensors/#) or
// a STOMP /topic/ destination (/topic/sensors.#).
type BindingConfig struct {
	Queue string `yaml:"queue"`
	Topic string `yaml:"topic"`
}

// engineBinding returns the engine queue and filter of a binding.
func (bc BindingConfig) engineBinding() (queue, filter string, err error) {
	queue, filter = bc.Queue, bc.Topic
	if strings.HasPrefix(queue, protocol.STOMPQueuePrefix) {
		queue = strings.TrimPrefix(queue, protocol.STOMPQueuePrefix)
	}
	if strings.HasPrefix(filter, protocol.STOMPTopicPrefix) {
		d, err := protocol.ParseSTOMP(filter, true)
		if err != nil {
			return "", "", err
		}
		filter = d.Name
	}
	if err := engine.ValidateQueueName(queue); err != nil || strings.HasPrefix(queue, "$") {
		return "", "", fmt.Errorf("bad queue name %q", bc.Queue)
	}
	if err := engine.ValidateFilter(filter); err != nil {
		return "", "", fmt.Errorf("bad topic filter %q", bc.Topic)
	}
	return queue, filter, nil
}

// PolicyConfig is engine.Policy as written in YAML: the same keys, with
// max_bytes a ByteSize. A zero field is unset. A test checks that it has
// exactly engine.Policy's keys.
type PolicyConfig struct {
	MaxDeliveries        int           `yaml:"max_deliveries"`
	RedeliveryDelay      time.Duration `yaml:"redelivery_delay"`
	RedeliveryMultiplier float64       `yaml:"redelivery_multiplier"`
	RedeliveryMaxDelay   time.Duration `yaml:"redelivery_max_delay"`
	RedeliveryJitter     float64       `yaml:"redelivery_jitter"`
	TTL                  time.Duration `yaml:"ttl"`
	MaxLength            int64         `yaml:"max_length"`
	MaxBytes             ByteSize      `yaml:"max_bytes"`
	Overflow             string        `yaml:"overflow"`
	DeadLetterQueue      string        `yaml:"dead_letter_queue"`
}

// RuleConfig is a policy for the queues whose names match Match, a
// path.Match pattern such as "jobs.*".
type RuleConfig struct {
	Match        string `yaml:"match"`
	PolicyConfig `yaml:",inline"`
}

// Defaults that are not the engine's.
const (
	defaultDataDir         = "./data"
	defaultDiskFreeLimit   = 1 << 30
	defaultShutdownTimeout = 10 * time.Second
	defaultMQTTAddr        = ":1883"
	defaultSTOMPAddr       = ":61613"
	defaultWebSocketAddr   = ":8080"
	defaultMQTTTLSAddr     = ":8883"
	defaultSTOMPTLSAddr    = ":61614"
	defaultWSTLSAddr       = ":8443"
	defaultTLSMinVersion   = "1.2"
	defaultAdminAddr       = "127.0.0.1:9090"
	defaultLogLevel        = "info"
	defaultLogFormat       = "auto"
	defaultCacheSize       = persist.DefaultCacheSize
	defaultMemTableSize    = persist.DefaultMemTableSize
	defaultWindowSize      = 512
	defaultWindowBytes     = 8 << 20
)

// Bounds that keep every setting finite and within what Pebble accepts.
const (
	minStorageSize  = 1 << 20
	maxCacheSize    = 1 << 40
	maxMemTableSize = 4<<30 - 1 // Pebble requires less than 4 GiB
	maxWindowSize   = 1 << 20
	maxShutdownWait = time.Hour
)

// EnsureDefaults fills every unset field with its default.
func (c *Config) EnsureDefaults() {
	setDefault(&c.DataDir, defaultDataDir)
	setDefault(&c.Auth.Anonymous, defaultAnonymous)
	setDefault(&c.Limits.MaxConnections, 100_000)
	setDefault(&c.Limits.MaxConnectionsPerAddress, 1000)
	setDefault(&c.Limits.ConnectionRatePerAddress, 100)
	setDefault(&c.Limits.ConnectionBurst, 200)
	setDefault(&c.DiskFreeLimit, defaultDiskFreeLimit)
	setDefault(&c.ShutdownTimeout, defaultShutdownTimeout)
	setDefault(&c.Listeners.MQTT, defaultMQTTAddr)
	setDefault(&c.Listeners.STOMP, defaultSTOMPAddr)
	setDefault(&c.Listeners.WebSocket, defaultWebSocketAddr)
	setDefault(&c.Listeners.MQTTTLS, defaultMQTTTLSAddr)
	setDefault(&c.Listeners.STOMPTLS, defaultSTOMPTLSAddr)
	setDefault(&c.Listeners.WebSocketTLS, defaultWSTLSAddr)
	setDefault(&c.TLS.MinVersion, defaultTLSMinVersion)
	setDefault(&c.Listeners.Admin, defaultAdminAddr)
	setDefault(&c.Log.Level, defaultLogLevel)
	setDefault(&c.Log.Format, defaultLogFormat)
	if c.Storage.Sync == nil {
		sync := true
		c.Storage.Sync = &sync
	}
	setDefault(&c.Storage.CacheSize, defaultCacheSize)
	setDefault(&c.Storage.MemTableSize, defaultMemTableSize)
	sd := stomp.DefaultConfig()
	setDefault(&c.STOMP.MaxFrameBody, ByteSize(sd.Limits.MaxBody))
	setDefault(&c.STOMP.MaxHeaderLine, ByteSize(sd.Limits.MaxLine))
	setDefault(&c.STOMP.MaxHeaders, sd.Limits.MaxHeaders)
	setDefault(&c.STOMP.HeartBeat, sd.HeartBeatSend)
	setDefault(&c.STOMP.ConnectTimeout, sd.ConnectTimeout)
	setDefault(&c.STOMP.FrameTimeout, sd.FrameTimeout)
	setDefault(&c.STOMP.DefaultPrefetch, sd.DefaultPrefetch)
	setDefault(&c.STOMP.MaxPrefetch, sd.MaxPrefetch)
	setDefault(&c.STOMP.TopicBuffer, sd.TopicBuffer)
	md := mqtt.DefaultConfig()
	setDefault(&c.MQTT.MaxPacketSize, ByteSize(md.MaxPacketSize))
	setDefault(&c.MQTT.ReceiveMaximum, md.ReceiveMaximum)
	setDefault(&c.MQTT.MaxInflight, md.MaxInflight)
	setDefault(&c.MQTT.KeepaliveMin, md.KeepaliveMin)
	setDefault(&c.MQTT.KeepaliveMax, md.KeepaliveMax)
	setDefault(&c.MQTT.SessionExpiryMax, md.SessionExpiryMax)
	setDefault(&c.MQTT.TopicAliasMax, md.TopicAliasMax)
	setDefault(&c.MQTT.MaxSubscriptions, md.MaxSubscriptions)
	setDefault(&c.MQTT.TopicBuffer, md.TopicBuffer)
	setDefault(&c.MQTT.SessionQueueMaxLength, md.SessionQueueMaxLength)
	setDefault(&c.MQTT.SessionQueueMaxBytes, ByteSize(md.SessionQueueMaxBytes))
	setDefault(&c.MQTT.MaxRetained, md.MaxRetained)
	setDefault(&c.MQTT.MaxRetainedBytes, ByteSize(md.MaxRetainedBytes))
	setDefault(&c.MQTT.ConnectTimeout, md.ConnectTimeout)
	setDefault(&c.Queues.WindowSize, defaultWindowSize)
	setDefault(&c.Queues.WindowBytes, defaultWindowBytes)
	setDefault(&c.Queues.MaxQueues, 1_000_000)
	setDefault(&c.WebSocket.MaxMessageSize, c.defaultWSMessageSize())
	if len(c.WebSocket.AllowedOrigins) == 0 {
		c.WebSocket.AllowedOrigins = nil // "allowed_origins: []" is the same as none
	}
	c.Queues.Default = policyConfigOf(engine.DefaultPolicy().Merge(c.Queues.Default.policy()))
}

// setDefault sets *p to def if *p is the zero value.
func setDefault[T comparable](p *T, def T) {
	var zero T
	if *p == zero {
		*p = def
	}
}

// Validate reports the first setting that is out of range, naming it as the
// YAML file does. It expects EnsureDefaults to have run.
func (c *Config) Validate() error {
	if c.DataDir == "" {
		return errors.New("data_dir must not be empty")
	}
	if c.DiskFreeLimit <= 0 {
		return fmt.Errorf("disk_free_limit must be positive, got %v", c.DiskFreeLimit)
	}
	if c.ShutdownTimeout <= 0 || c.ShutdownTimeout > maxShutdownWait {
		return fmt.Errorf("shutdown_timeout must be between 1ns and %v, got %v", maxShutdownWait, c.ShutdownTimeout)
	}
	if err := c.Listeners.validate(); err != nil {
		return err
	}
	if err := c.Log.validate(); err != nil {
		return err
	}
	if err := c.Storage.validate(); err != nil {
		return err
	}
	if err := c.Queues.validate(); err != nil {
		return err
	}
	if err := c.STOMP.validate(); err != nil {
		return err
	}
	if err := c.TLS.validate(); err != nil {
		return err
	}
	if err := c.WebSocket.validate(); err != nil {
		return err
	}
	if err := c.Auth.validate(); err != nil {
		return err
	}
	if err := c.Limits.validate(); err != nil {
		return err
	}
	return c.MQTT.validate()
}

// defaultWSMessageSize is websocket.max_message_size when unset: room for
// the largest MQTT packet and for the largest STOMP frame (body plus
// header lines), so that a client sending one frame or packet per message
// meets the same limits as over TCP. It expects the mqtt and stomp
// sections to have their defaults.
func (c *Config) defaultWSMessageSize() ByteSize {
	stompFrame := c.STOMP.MaxFrameBody + c.STOMP.MaxHeaderLine*ByteSize(c.STOMP.MaxHeaders)
	return min(max(c.MQTT.MaxPacketSize, stompFrame), maxWSMessageSize)
}

// Bounds of websocket.max_message_size.
const (
	minWSMessageSize = 1 << 10
	maxWSMessageSize = 1 << 40
)

func (t TLSConfig) validate() error {
	if (t.CertFile == "") != (t.KeyFile == "") {
		return errors.New("tls.cert_file and tls.key_file must be set together")
	}
	if _, err := protocol.ParseTLSVersion(t.MinVersion); err != nil {
		return fmt.Errorf("tls.min_version must be 1.2 or 1.3, got %q", t.MinVersion)
	}
	if t.ClientCA != "" && t.CertFile == "" {
		return errors.New("tls.client_ca needs tls.cert_file and tls.key_file")
	}
	return nil
}

func (w WebSocketConfig) validate() error {
	if w.MaxMessageSize < minWSMessageSize || w.MaxMessageSize > maxWSMessageSize {
		return fmt.Errorf("websocket.max_message_size must be between %v and %v, got %v", ByteSize(minWSMessageSize), ByteSize(maxWSMessageSize), w.MaxMessageSize)
	}
	for i, o := range w.AllowedOrigins {
		if err := protocol.ValidateOriginPattern(o); err != nil {
			return fmt.Errorf("websocket.allowed_origins[%d]: bad pattern %q", i, o)
		}
	}
	return nil
}

func (m MQTTConfig) validate() error {
	sc := m.serverConfig()
	if err := sc.Validate(); err != nil {
		return err // "mqtt: ..." names the setting
	}
	return nil
}

// serverConfig maps the section onto mqtt.Config.
func (m MQTTConfig) serverConfig() mqtt.Config {
	c := mqtt.DefaultConfig()
	c.MaxPacketSize = int(min(m.MaxPacketSize, 1<<40))
	c.ReceiveMaximum, c.MaxInflight = m.ReceiveMaximum, m.MaxInflight
	c.KeepaliveMin, c.KeepaliveMax = m.KeepaliveMin, m.KeepaliveMax
	c.SessionExpiryMax = m.SessionExpiryMax
	c.TopicAliasMax = m.TopicAliasMax
	c.MaxSubscriptions, c.TopicBuffer = m.MaxSubscriptions, m.TopicBuffer
	c.SessionQueueMaxLength, c.SessionQueueMaxBytes = m.SessionQueueMaxLength, int64(m.SessionQueueMaxBytes)
	c.MaxRetained, c.MaxRetainedBytes = m.MaxRetained, int64(m.MaxRetainedBytes)
	c.ConnectTimeout = m.ConnectTimeout
	return c
}

// maxFrameBody caps stomp.max_frame_body.
const maxFrameBody = 1 << 30

func (s STOMPConfig) validate() error {
	if s.MaxFrameBody < 1 || s.MaxFrameBody > maxFrameBody {
		return fmt.Errorf("stomp.max_frame_body must be between 1 and %d bytes, got %d", maxFrameBody, s.MaxFrameBody)
	}
	if s.MaxHeaderLine < 256 || s.MaxHeaderLine > 1<<20 {
		return fmt.Errorf("stomp.max_header_line must be between 256 bytes and 1MiB, got %d", s.MaxHeaderLine)
	}
	if s.MaxHeaders < 8 || s.MaxHeaders > 10000 {
		return fmt.Errorf("stomp.max_headers must be between 8 and 10000, got %d", s.MaxHeaders)
	}
	if s.HeartBeat < 0 {
		return fmt.Errorf("stomp.heart_beat must not be negative, got %v", s.HeartBeat)
	}
	sc := s.serverConfig()
	if err := sc.Validate(); err != nil {
		return fmt.Errorf("stomp: %w", err)
	}
	return nil
}

// serverConfig maps the section onto stomp.Config.
func (s STOMPConfig) serverConfig() stomp.Config {
	c := stomp.DefaultConfig()
	c.Limits = stomp.Limits{MaxLine: int(s.MaxHeaderLine), MaxHeaders: s.MaxHeaders, MaxBody: int(s.MaxFrameBody)}
	c.HeartBeatSend, c.HeartBeatRecv = s.HeartBeat, s.HeartBeat
	c.ConnectTimeout, c.FrameTimeout = s.ConnectTimeout, s.FrameTimeout
	c.DefaultPrefetch, c.MaxPrefetch = s.DefaultPrefetch, s.MaxPrefetch
	c.TopicBuffer = s.TopicBuffer
	return c
}

func (l ListenersConfig) validate() error {
	addrs := []struct {
		key, addr string
		canBeOff  bool
	}{
		{"listeners.mqtt", l.MQTT, true},
		{"listeners.stomp", l.STOMP, true},
		{"listeners.websocket", l.WebSocket, true},
		{"listeners.mqtt_tls", l.MQTTTLS, true},
		{"listeners.stomp_tls", l.STOMPTLS, true},
		{"listeners.websocket_tls", l.WebSocketTLS, true},
		{"listeners.admin", l.Admin, false},
	}
	ports := map[int]string{}
	for _, a := range addrs {
		if a.canBeOff && a.addr == listenerOff {
			continue
		}
		_, portStr, err := net.SplitHostPort(a.addr)
		if err != nil {
			return fmt.Errorf("%s: want host:port (such as \":1883\" or \"127.0.0.1:9090\"), got %q", a.key, a.addr)
		}
		port, err := strconv.Atoi(portStr)
		if err != nil || port < 0 || port > 65535 {
			return fmt.Errorf("%s: port must be a number from 0 to 65535, got %q", a.key, portStr)
		}
		if port == 0 {
			continue
		}
		if other, ok := ports[port]; ok {
			return fmt.Errorf("%s and %s both use port %d", other, a.key, port)
		}
		ports[port] = a.key
	}
	return nil
}

// logLevels are the accepted log.level values.
var logLevels = []string{"trace", "debug", "info", "warn", "error"}

// logFormats are the accepted log.format values.
var logFormats = []string{"json", "console", "auto"}

func (l LogConfig) validate() error {
	if !contains(logLevels, l.Level) {
		return fmt.Errorf("log.level must be one of %s, got %q", strings.Join(logLevels, ", "), l.Level)
	}
	if !contains(logFormats, l.Format) {
		return fmt.Errorf("log.format must be one of %s, got %q", strings.Join(logFormats, ", "), l.Format)
	}
	return nil
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// zerologLevel returns the zerolog level of a validated Level.
func (l LogConfig) zerologLevel() zerolog.Level {
	lvl, err := zerolog.ParseLevel(l.Level)
	if err != nil {
		return zerolog.InfoLevel
	}
	return lvl
}

func (s StorageConfig) validate() error {
	if s.Sync == nil {
		return errors.New("storage.sync is unset (EnsureDefaults was not called)")
	}
	if s.CacheSize < minStorageSize || s.CacheSize > maxCacheSize {
		return fmt.Errorf("storage.cache_size must be between %v and %v, got %v", ByteSize(minStorageSize), ByteSize(maxCacheSize), s.CacheSize)
	}
	if s.MemTableSize < minStorageSize || s.MemTableSize > maxMemTableSize {
		return fmt.Errorf("storage.memtable_size must be at least %v and less than 4GiB, got %v", ByteSize(minStorageSize), s.MemTableSize)
	}
	return nil
}

func (q QueuesConfig) validate() error {
	if q.WindowSize < 1 || q.WindowSize > maxWindowSize {
		return fmt.Errorf("queues.window_size must be between 1 and %d, got %d", maxWindowSize, q.WindowSize)
	}
	if q.WindowBytes <= 0 {
		return fmt.Errorf("queues.window_bytes must be positive, got %v", q.WindowBytes)
	}
	def := engine.DefaultPolicy().Merge(q.Default.policy())
	if err := def.Validate(); err != nil {
		return fmt.Errorf("queues.default: %s", policyProblem(err))
	}
	for i, r := range q.Rules {
		if r.Match == "" {
			return fmt.Errorf("queues.rules[%d]: match must not be empty", i)
		}
		if _, err := path.Match(r.Match, ""); err != nil {
			return fmt.Errorf("queues.rules[%d]: bad match pattern %q", i, r.Match)
		}
		if err := def.Merge(r.policy()).Validate(); err != nil {
			return fmt.Errorf("queues.rules[%d] (match %q): %s", i, r.Match, policyProblem(err))
		}
	}
	for i, bc := range q.Bindings {
		if _, _, err := bc.engineBinding(); err != nil {
			return fmt.Errorf("queues.bindings[%d]: %v", i, err)
		}
	}
	// The engine's own check, in case it knows more than the above.
	ec := q.engineConfig()
	ec.EnsureDefaults()
	if err := ec.Validate(); err != nil {
		return fmt.Errorf("queues: %w", err)
	}
	return nil
}

// policyProblem returns the message of a Policy.Validate error without the
// "engine: invalid policy: " prefix, which adds nothing in a config error.
func policyProblem(err error) string {
	msg := err.Error()
	if errors.Is(err, engine.ErrInvalidPolicy) {
		msg = strings.TrimPrefix(msg, engine.ErrInvalidPolicy.Error()+": ")
	}
	return msg
}

// policy converts p to the engine's type.
func (p PolicyConfig) policy() engine.Policy {
	return engine.Policy{
		MaxDeliveries:        p.MaxDeliveries,
		RedeliveryDelay:      p.RedeliveryDelay,
		RedeliveryMultiplier: p.RedeliveryMultiplier,
		RedeliveryMaxDelay:   p.RedeliveryMaxDelay,
		RedeliveryJitter:     p.RedeliveryJitter,
		TTL:                  p.TTL,
		MaxLength:            p.MaxLength,
		MaxBytes:             int64(p.MaxBytes),
		Overflow:             engine.Overflow(p.Overflow),
		DeadLetterQueue:      p.DeadLetterQueue,
	}
}

// policyConfigOf is the inverse of PolicyConfig.policy.
func policyConfigOf(p engine.Policy) PolicyConfig {
	return PolicyConfig{
		MaxDeliveries:        p.MaxDeliveries,
		RedeliveryDelay:      p.RedeliveryDelay,
		RedeliveryMultiplier: p.RedeliveryMultiplier,
		RedeliveryMaxDelay:   p.RedeliveryMaxDelay,
		RedeliveryJitter:     p.RedeliveryJitter,
		TTL:                  p.TTL,
		MaxLength:            p.MaxLength,
		MaxBytes:             ByteSize(p.MaxBytes),
		Overflow:             string(p.Overflow),
		DeadLetterQueue:      p.DeadLetterQueue,
	}
}

// engineConfig returns the engine's configuration. Clock and Rand are left
// nil: the engine fills them with the real clock and a random seed.
func (q QueuesConfig) engineConfig() engine.Config {
	ec := engine.Config{
		Default:     q.Default.policy(),
		WindowSize:  q.WindowSize,
		WindowBytes: int64(q.WindowBytes),
		MaxQueues:   q.MaxQueues,
	}
	for _, r := range q.Rules {
		ec.Rules = append(ec.Rules, engine.PolicyRule{Match: r.Match, Policy: r.policy()})
	}
	return ec
}

// LoadFile decodes the YAML file at name over c. Unknown keys are errors, so
// a misspelt option is caught. Errors are one line and start with
// "config NAME:".
func (c *Config) LoadFile(name string) error {
	f, err := os.Open(name)
	if err != nil {
		return fmt.Errorf("config %s: %w", name, unwrapPathError(err))
	}
	// The file is only read, so a Close error cannot lose data.
	defer func() { _ = f.Close() }()
	if err := c.decode(f); err != nil {
		return fmt.Errorf("config %s: %w", name, err)
	}
	return nil
}

// decode reads one YAML document from r over c.
func (c *Config) decode(r io.Reader) error {
	dec := yaml.NewDecoder(r)
	dec.KnownFields(true)
	if err := dec.Decode(c); err != nil {
		if errors.Is(err, io.EOF) {
			return nil // an empty file sets nothing
		}
		return yamlProblem(err)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		if err != nil {
			return yamlProblem(err)
		}
		return fmt.Errorf("line %d: only one YAML document is allowed", extra.Line)
	}
	return nil
}

// yamlProblem rewrites a yaml error as one line: "line 3: field foo not
// found", without the Go type names the yaml package adds.
func yamlProblem(err error) error {
	var te *yaml.TypeError
	if errors.As(err, &te) {
		msgs := make([]string, len(te.Errors))
		for i, m := range te.Errors {
			m, _, _ = strings.Cut(m, " in type ")
			msgs[i] = m
		}
		return errors.New(strings.Join(msgs, "; "))
	}
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	return errors.New(strings.ReplaceAll(msg, "\n", " "))
}

// unwrapPathError drops the operation and path of a *os.PathError, which
// the caller already names.
func unwrapPathError(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// envVars are the environment overrides, applied after the config file and
// before flags. An empty value is the same as an unset one.
var envVars = []struct {
	name string
	key  string // the YAML key it overrides
	set  func(c *Config, v string)
}{
	{"TANDEM_DATA_DIR", "data_dir", func(c *Config, v string) { c.DataDir = v }},
	{"TANDEM_LOG_LEVEL", "log.level", func(c *Config, v string) { c.Log.Level = v }},
	{"TANDEM_LOG_FORMAT", "log.format", func(c *Config, v string) { c.Log.Format = v }},
	{"TANDEM_MQTT_ADDR", "listeners.mqtt", func(c *Config, v string) { c.Listeners.MQTT = v }},
	{"TANDEM_STOMP_ADDR", "listeners.stomp", func(c *Config, v string) { c.Listeners.STOMP = v }},
	{"TANDEM_WS_ADDR", "listeners.websocket", func(c *Config, v string) { c.Listeners.WebSocket = v }},
	{"TANDEM_MQTT_TLS_ADDR", "listeners.mqtt_tls", func(c *Config, v string) { c.Listeners.MQTTTLS = v }},
	{"TANDEM_STOMP_TLS_ADDR", "listeners.stomp_tls", func(c *Config, v string) { c.Listeners.STOMPTLS = v }},
	{"TANDEM_WSS_ADDR", "listeners.websocket_tls", func(c *Config, v string) { c.Listeners.WebSocketTLS = v }},
	{"TANDEM_TLS_CERT_FILE", "tls.cert_file", func(c *Config, v string) { c.TLS.CertFile = v }},
	{"TANDEM_TLS_KEY_FILE", "tls.key_file", func(c *Config, v string) { c.TLS.KeyFile = v }},
	{"TANDEM_ADMIN_ADDR", "listeners.admin", func(c *Config, v string) { c.Listeners.Admin = v }},
}

// ApplyEnv applies the TANDEM_* overrides that getenv returns.
func (c *Config) ApplyEnv(getenv func(string) string) {
	for _, e := range envVars {
		if v := getenv(e.name); v != "" {
			e.set(c, v)
		}
	}
}

// loadConfig builds the configuration in precedence order: defaults <
// file < environment < flags. Its errors are configuration errors.
func loadConfig(f flags, getenv func(string) string) (Config, error) {
	var c Config
	if f.config != "" {
		if err := c.LoadFile(f.config); err != nil {
			return Config{}, err
		}
	}
	c.ApplyEnv(getenv)
	f.apply(&c)
	c.EnsureDefaults()
	if err := c.Validate(); err != nil {
		if f.config != "" {
			return Config{}, fmt.Errorf("config %s: %w", f.config, err)
		}
		return Config{}, fmt.Errorf("config: %w", err)
	}
	return c, nil
}
