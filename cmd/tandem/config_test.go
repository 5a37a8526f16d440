package main

import (
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tandem-mq/tandem/engine"
	"go.yaml.in/yaml/v3"
)

// defaults returns the configuration of "tandem" with no flags.
func defaults() Config {
	var c Config
	c.EnsureDefaults()
	return c
}

func TestDefaults(t *testing.T) {
	c := defaults()
	if err := c.Validate(); err != nil {
		t.Fatalf("defaults do not validate: %v", err)
	}
	checks := []struct {
		name      string
		got, want any
	}{
		{"data_dir", c.DataDir, "./data"},
		{"disk_free_limit", c.DiskFreeLimit, ByteSize(1 << 30)},
		{"shutdown_timeout", c.ShutdownTimeout, 10 * time.Second},
		{"listeners.mqtt", c.Listeners.MQTT, ":1883"},
		{"listeners.stomp", c.Listeners.STOMP, ":61613"},
		{"listeners.websocket", c.Listeners.WebSocket, ":8080"},
		{"listeners.admin", c.Listeners.Admin, "127.0.0.1:9090"},
		{"listeners.mqtt_tls", c.Listeners.MQTTTLS, ":8883"},
		{"listeners.stomp_tls", c.Listeners.STOMPTLS, ":61614"},
		{"listeners.websocket_tls", c.Listeners.WebSocketTLS, ":8443"},
		{"tls.cert_file", c.TLS.CertFile, ""},
		{"tls.enabled", c.TLS.enabled(), false},
		{"tls.min_version", c.TLS.MinVersion, "1.2"},
		{"websocket.allowed_origins", c.WebSocket.AllowedOrigins, []string(nil)},
		// 16MiB of STOMP body + 128 header lines of 8KiB.
		{"websocket.max_message_size", c.WebSocket.MaxMessageSize, ByteSize(17 << 20)},
		{"log.level", c.Log.Level, "info"},
		{"log.format", c.Log.Format, "auto"},
		{"storage.sync", *c.Storage.Sync, true},
		{"queues.default", c.Queues.Default.policy(), engine.DefaultPolicy()},
		{"mqtt.session_expiry_max", c.MQTT.SessionExpiryMax, 7 * 24 * time.Hour},
		{"mqtt.session_expiry_max mapped", c.MQTT.serverConfig().SessionExpiryMax, 7 * 24 * time.Hour},
	}
	for _, ch := range checks {
		if !reflect.DeepEqual(ch.got, ch.want) {
			t.Errorf("%s = %v, want %v", ch.name, ch.got, ch.want)
		}
	}
	// The engine's own defaults and checks agree with ours.
	ec := c.Queues.engineConfig()
	ec.EnsureDefaults()
	if err := ec.Validate(); err != nil {
		t.Errorf("engine rejects the default config: %v", err)
	}
}

func TestEnsureDefaultsKeepsSetValues(t *testing.T) {
	sync := false
	c := Config{
		DataDir: "/var/lib/tandem",
		Storage: StorageConfig{Sync: &sync, CacheSize: 2 << 30},
		Queues:  QueuesConfig{Default: PolicyConfig{MaxDeliveries: 3, TTL: time.Minute}},
	}
	c.EnsureDefaults()
	if c.DataDir != "/var/lib/tandem" || *c.Storage.Sync || c.Storage.CacheSize != 2<<30 {
		t.Errorf("EnsureDefaults overwrote set values: %+v", c)
	}
	if c.Queues.Default.MaxDeliveries != 3 || c.Queues.Default.TTL != time.Minute {
		t.Errorf("default policy overrides lost: %+v", c.Queues.Default)
	}
	if c.Queues.Default.RedeliveryDelay != time.Second {
		t.Errorf("unset policy field not defaulted: %+v", c.Queues.Default)
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name   string
		modify func(*Config)
		want   string // substring of the error
	}{
		{"bad level", func(c *Config) { c.Log.Level = "loud" }, `log.level must be one of trace, debug, info, warn, error, got "loud"`},
		{"bad format", func(c *Config) { c.Log.Format = "xml" }, `log.format must be one of json, console, auto, got "xml"`},
		{"bad addr", func(c *Config) { c.Listeners.MQTT = "1883" }, `listeners.mqtt: want host:port`},
		{"bad port", func(c *Config) { c.Listeners.STOMP = ":99999" }, `listeners.stomp: port must be a number from 0 to 65535`},
		{"same port", func(c *Config) { c.Listeners.WebSocket = "127.0.0.1:1883" }, `listeners.mqtt and listeners.websocket both use port 1883`},
		{"same tls port", func(c *Config) { c.Listeners.STOMPTLS = ":8883" }, `listeners.mqtt_tls and listeners.stomp_tls both use port 8883`},
		{"admin off", func(c *Config) { c.Listeners.Admin = "off" }, `listeners.admin: want host:port`},
		{"cert without key", func(c *Config) { c.TLS.CertFile = "cert.pem" }, `tls.cert_file and tls.key_file must be set together`},
		{"key without cert", func(c *Config) { c.TLS.KeyFile = "key.pem" }, `tls.cert_file and tls.key_file must be set together`},
		{"tls version", func(c *Config) { c.TLS.MinVersion = "1.1" }, `tls.min_version must be 1.2 or 1.3, got "1.1"`},
		{"tiny ws message", func(c *Config) { c.WebSocket.MaxMessageSize = 100 }, `websocket.max_message_size must be between 1KiB and 1TiB, got 100`},
		{"bad origin", func(c *Config) { c.WebSocket.AllowedOrigins = []string{"ok.example", "a["} }, `websocket.allowed_origins[1]: bad pattern "a["`},
		{"negative disk limit", func(c *Config) { c.DiskFreeLimit = -1 }, `disk_free_limit must be positive`},
		{"huge shutdown", func(c *Config) { c.ShutdownTimeout = 2 * time.Hour }, `shutdown_timeout must be between`},
		{"tiny cache", func(c *Config) { c.Storage.CacheSize = 1024 }, `storage.cache_size must be between 1MiB and 1TiB, got 1KiB`},
		{"huge memtable", func(c *Config) { c.Storage.MemTableSize = 4 << 30 }, `storage.memtable_size must be at least 1MiB and less than 4GiB, got 4GiB`},
		{"window size", func(c *Config) { c.Queues.WindowSize = -1 }, `queues.window_size must be between 1 and 1048576`},
		{"window bytes", func(c *Config) { c.Queues.WindowBytes = -5 }, `queues.window_bytes must be positive`},
		{"default max_deliveries", func(c *Config) { c.Queues.Default.MaxDeliveries = -7 }, `queues.default: max_deliveries must be -1 (unlimited) or at least 1, got -7`},
		{"default overflow", func(c *Config) { c.Queues.Default.Overflow = "explode" }, `queues.default: overflow must be`},
		{"rule without match", func(c *Config) { c.Queues.Rules = []RuleConfig{{}} }, `queues.rules[0]: match must not be empty`},
		{"rule bad pattern", func(c *Config) { c.Queues.Rules = []RuleConfig{{Match: "a["}} }, `queues.rules[0]: bad match pattern "a["`},
		{"binding bad filter", func(c *Config) { c.Queues.Bindings = []BindingConfig{{Queue: "q", Topic: "a/#/b"}} }, `queues.bindings[0]: bad topic filter "a/#/b"`},
		{"binding reserved queue", func(c *Config) { c.Queues.Bindings = []BindingConfig{{Queue: "$mqtt/x", Topic: "a"}} }, `queues.bindings[0]: bad queue name "$mqtt/x"`},
		{"rule bad policy", func(c *Config) {
			c.Queues.Rules = []RuleConfig{{Match: "ok"}, {Match: "jobs.*", PolicyConfig: PolicyConfig{RedeliveryJitter: 2}}}
		}, `queues.rules[1] (match "jobs.*"): redelivery_jitter must be between 0 and 1, got 2`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := defaults()
			tt.modify(&c)
			err := c.Validate()
			if err == nil {
				t.Fatalf("Validate() = nil, want error containing %q", tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Validate() = %q, want it to contain %q", err, tt.want)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Fatalf("error is not one line: %q", err)
			}
		})
	}
}

func TestByteSize(t *testing.T) {
	good := []struct {
		in   string
		want ByteSize
	}{
		{"0", 0},
		{"1234", 1234},
		{"8GiB", 8 << 30},
		{"8gib", 8 << 30},
		{"512 MiB", 512 << 20},
		{"1KiB", 1024},
		{"1TiB", 1 << 40},
		{"10B", 10},
		{"2KB", 2000},
		{"3MB", 3e6},
		{"1GB", 1e9},
		{"1TB", 1e12},
	}
	for _, g := range good {
		got, err := ParseByteSize(g.in)
		if err != nil || got != g.want {
			t.Errorf("ParseByteSize(%q) = %d, %v; want %d", g.in, got, err, g.want)
		}
	}
	for _, in := range []string{"", "GiB", "-1", "1.5GiB", "8 parsecs", "9999999999999999999", "9000000TiB"} {
		if got, err := ParseByteSize(in); err == nil {
			t.Errorf("ParseByteSize(%q) = %d, want an error", in, got)
		}
	}
	for _, b := range []ByteSize{0, 1, 1023, 1024, 8 << 30, 3 << 40, 1e9, 1<<20 + 1} {
		got, err := ParseByteSize(b.String())
		if err != nil || got != b {
			t.Errorf("ParseByteSize(%v.String() = %q) = %d, %v", int64(b), b.String(), got, err)
		}
	}
	if s := ByteSize(8 << 30).String(); s != "8GiB" {
		t.Errorf("String() = %q, want 8GiB", s)
	}
}

// writeConfig writes a YAML file into a temporary directory.
func writeConfig(t *testing.T, text string) string {
	t.Helper()
	name := filepath.Join(t.TempDir(), "tandem.yaml")
	if err := os.WriteFile(name, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return name
}

func TestLoadFile(t *testing.T) {
	name := writeConfig(t, `
data_dir: /srv/tandem
disk_free_limit: 2GiB
storage:
  sync: false
  cache_size: 268435456
queues:
  default:
    max_deliveries: 3
    redelivery_delay: 250ms
    max_bytes: 1GiB
  rules:
    - match: "jobs.*"
      max_deliveries: 5
      ttl: 1h
    - match: "*.dlq"
      dead_letter_queue: "-"
`)
	var c Config
	if err := c.LoadFile(name); err != nil {
		t.Fatal(err)
	}
	c.EnsureDefaults()
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if c.DataDir != "/srv/tandem" || c.DiskFreeLimit != 2<<30 || *c.Storage.Sync || c.Storage.CacheSize != 256<<20 {
		t.Errorf("loaded %+v", c)
	}
	ec := c.Queues.engineConfig()
	want := engine.Config{
		Default: func() engine.Policy {
			p := engine.DefaultPolicy()
			p.MaxDeliveries = 3
			p.RedeliveryDelay = 250 * time.Millisecond
			p.MaxBytes = 1 << 30
			return p
		}(),
		Rules: []engine.PolicyRule{
			{Match: "jobs.*", Policy: engine.Policy{MaxDeliveries: 5, TTL: time.Hour}},
			{Match: "*.dlq", Policy: engine.Policy{DeadLetterQueue: "-"}},
		},
		WindowSize:  512,
		WindowBytes: 8 << 20,
		MaxQueues:   1_000_000,
	}
	if !reflect.DeepEqual(ec, want) {
		t.Errorf("engine config:\n got %+v\nwant %+v", ec, want)
	}
}

func TestLoadFileErrors(t *testing.T) {
	tests := []struct {
		name, text, want string
	}{
		{"unknown field", "log:\n  level: info\n  foo: 1\n", "line 3: field foo not found"},
		{"unknown top-level", "data_dir: x\ndatadir: y\n", "line 2: field datadir not found"},
		{"typo in rule", "queues:\n  rules:\n    - match: a\n      max_delivery: 3\n", "line 4: field max_delivery not found"},
		{"bad duration", "queues:\n  default:\n    ttl: soon\n", "line 3: cannot unmarshal !!str `soon` into time.Duration"},
		{"bad byte size", "storage:\n  cache_size: 8 parsecs\n", `line 2: invalid byte size "8 parsecs"`},
		{"bad yaml", "log: [\n", "line 1: did not find expected node content"},
		{"two documents", "log:\n  level: info\n---\nlog:\n  level: debug\n", "line 3: only one YAML document is allowed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			name := writeConfig(t, tt.text)
			var c Config
			err := c.LoadFile(name)
			if err == nil {
				t.Fatalf("LoadFile = nil, want %q", tt.want)
			}
			want := "config " + name + ": " + tt.want
			if !strings.HasPrefix(err.Error(), want) {
				t.Fatalf("LoadFile = %q\nwant prefix  %q", err, want)
			}
			if strings.Contains(err.Error(), "\n") || strings.Contains(err.Error(), "main.") {
				t.Fatalf("error is not one clean line: %q", err)
			}
		})
	}
	var c Config
	if err := c.LoadFile(filepath.Join(t.TempDir(), "missing.yaml")); err == nil || !strings.HasSuffix(err.Error(), "missing.yaml: no such file or directory") {
		t.Errorf("missing file: %v", err)
	}
	if err := c.LoadFile(writeConfig(t, "")); err != nil {
		t.Errorf("empty file: %v", err)
	}
}

func TestPrecedence(t *testing.T) {
	file := writeConfig(t, `
data_dir: from-file
log:
  level: debug
  format: console
listeners:
  mqtt: "127.0.0.1:1001"
  admin: "127.0.0.1:1002"
`)
	env := map[string]string{
		"TANDEM_DATA_DIR":   "from-env",
		"TANDEM_LOG_FORMAT": "json",
		"TANDEM_STOMP_ADDR": "127.0.0.1:2001",
		"TANDEM_WS_ADDR":    "127.0.0.1:2002",
		"TANDEM_ADMIN_ADDR": "127.0.0.1:2003",
		"TANDEM_LOG_LEVEL":  "", // empty is unset
	}
	f, err := parseFlags([]string{"--config", file, "--data", "from-flag", "--log-format", "console"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	c, err := loadConfig(f, func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	got := []string{c.DataDir, c.Log.Level, c.Log.Format, c.Listeners.MQTT, c.Listeners.STOMP, c.Listeners.WebSocket, c.Listeners.Admin}
	want := []string{"from-flag", "debug", "console", "127.0.0.1:1001", "127.0.0.1:2001", "127.0.0.1:2002", "127.0.0.1:2003"}
	if !slices.Equal(got, want) {
		t.Errorf("got  %q\nwant %q", got, want)
	}

	// Without flags, the environment wins over the file.
	c, err = loadConfig(flags{config: file}, func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	if c.DataDir != "from-env" || c.Log.Format != "json" || c.Log.Level != "debug" {
		t.Errorf("env over file: %+v", c)
	}

	// Every documented variable is applied.
	for _, e := range envVars {
		var c Config
		c.ApplyEnv(func(k string) string {
			if k == e.name {
				return "x"
			}
			return ""
		})
		if reflect.DeepEqual(c, Config{}) {
			t.Errorf("%s changed nothing", e.name)
		}
	}
}

func TestLoadConfigErrorsNameTheFile(t *testing.T) {
	file := writeConfig(t, "log:\n  level: loud\n")
	_, err := loadConfig(flags{config: file}, func(string) string { return "" })
	want := "config " + file + `: log.level must be one of trace, debug, info, warn, error, got "loud"`
	if err == nil || err.Error() != want {
		t.Errorf("got %v\nwant %s", err, want)
	}
	_, err = loadConfig(flags{logFormat: "xml"}, func(string) string { return "" })
	if err == nil || !strings.HasPrefix(err.Error(), "config: log.format") {
		t.Errorf("got %v", err)
	}
}

func TestParseFlags(t *testing.T) {
	if _, err := parseFlags([]string{"--nope"}, nil); err == nil || err.Error() != "flag provided but not defined: -nope" {
		t.Errorf("unknown flag: %v", err)
	}
	if _, err := parseFlags([]string{"serve"}, nil); err == nil || !strings.Contains(err.Error(), `unexpected argument "serve"`) {
		t.Errorf("stray argument: %v", err)
	}
	var out strings.Builder
	if _, err := parseFlags([]string{"-h"}, &out); err == nil || !strings.Contains(out.String(), "--config") && !strings.Contains(out.String(), "-config") {
		t.Errorf("-h: %v, %q", err, out.String())
	}
}

// TestPolicyConfigMirrorsEngine checks that PolicyConfig has exactly the
// YAML keys of engine.Policy, so no engine setting is missing from the
// config file.
func TestPolicyConfigMirrorsEngine(t *testing.T) {
	tags := func(typ reflect.Type) []string {
		var out []string
		for f := range typ.Fields() {
			name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
			out = append(out, name)
		}
		slices.Sort(out)
		return out
	}
	got, want := tags(reflect.TypeFor[PolicyConfig]()), tags(reflect.TypeFor[engine.Policy]())
	if !slices.Equal(got, want) {
		t.Errorf("PolicyConfig keys %v\nengine.Policy keys %v", got, want)
	}
	// And converting both ways loses nothing.
	p := engine.Policy{
		MaxDeliveries: 1, RedeliveryDelay: 2, RedeliveryMultiplier: 3, RedeliveryMaxDelay: 4,
		RedeliveryJitter: 0.5, TTL: 6, MaxLength: 7, MaxBytes: 8, Overflow: "o", DeadLetterQueue: "d",
	}
	if back := policyConfigOf(p).policy(); back != p {
		t.Errorf("round trip: %+v != %+v", back, p)
	}
}

// configKeys lists the dotted YAML keys of typ's fields, recursing into
// structs (not into slices, whose elements are documented as one key).
func configKeys(typ reflect.Type, prefix string) []string {
	var keys []string
	for f := range typ.Fields() {
		name, opts, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if opts == "inline" {
			keys = append(keys, configKeys(f.Type, prefix)...)
			continue
		}
		key := prefix + name
		if f.Type.Kind() == reflect.Struct && f.Type != reflect.TypeFor[time.Duration]() {
			keys = append(keys, configKeys(f.Type, key+".")...)
			continue
		}
		keys = append(keys, key)
	}
	return keys
}

// yamlKeys lists the dotted keys of the mappings in n.
func yamlKeys(n *yaml.Node, prefix string, into map[string]bool) {
	if n.Kind == yaml.DocumentNode {
		for _, c := range n.Content {
			yamlKeys(c, prefix, into)
		}
		return
	}
	if n.Kind != yaml.MappingNode {
		return
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		key := prefix + n.Content[i].Value
		into[key] = true
		yamlKeys(n.Content[i+1], key+".", into)
	}
}

// TestConfigsDirectory loads and validates every file in configs/, and
// checks that configs/tandem.yaml sets every option to its default.
func TestConfigsDirectory(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("..", "..", "configs", "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) < 2 {
		t.Fatalf("found %d files in configs/, want at least tandem.yaml and example-policies.yaml", len(files))
	}
	for _, name := range files {
		t.Run(filepath.Base(name), func(t *testing.T) {
			var c Config
			if err := c.LoadFile(name); err != nil {
				t.Fatal(err)
			}
			c.EnsureDefaults()
			if err := c.Validate(); err != nil {
				t.Fatal(err)
			}
			if filepath.Base(name) != "tandem.yaml" {
				return
			}
			if len(c.Queues.Rules) == 0 {
				c.Queues.Rules = nil // "rules: []" is the same as none
			}
			if len(c.Queues.Bindings) == 0 {
				c.Queues.Bindings = nil
			}
			if len(c.Auth.Users) == 0 {
				c.Auth.Users = nil
			}
			if !reflect.DeepEqual(c, defaults()) {
				t.Errorf("configs/tandem.yaml differs from the defaults:\n got %+v\nwant %+v", c, defaults())
			}
			text, err := os.ReadFile(name)
			if err != nil {
				t.Fatal(err)
			}
			var doc yaml.Node
			if err := yaml.Unmarshal(text, &doc); err != nil {
				t.Fatal(err)
			}
			present := map[string]bool{}
			yamlKeys(&doc, "", present)
			for _, k := range configKeys(reflect.TypeFor[Config](), "") {
				if !present[k] {
					t.Errorf("configs/tandem.yaml does not document %s", k)
				}
			}
		})
	}
}

// TestREADMEDocumentsEveryOption checks the configuration reference table.
func TestREADMEDocumentsEveryOption(t *testing.T) {
	text, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	readme := string(text)
	for _, k := range configKeys(reflect.TypeFor[Config](), "") {
		if !strings.Contains(readme, "`"+k+"`") {
			t.Errorf("README.md does not document `%s`", k)
		}
	}
	for _, e := range envVars {
		if !strings.Contains(readme, "`"+e.name+"`") {
			t.Errorf("README.md does not document `%s`", e.name)
		}
	}
}

func TestListenersOff(t *testing.T) {
	c := defaults()
	c.Listeners.MQTT, c.Listeners.STOMP, c.Listeners.WebSocket = "off", "off", "off"
	c.Listeners.MQTTTLS, c.Listeners.STOMPTLS, c.Listeners.WebSocketTLS = "off", "off", "off"
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
}

func TestWebSocketMessageSizeFollowsTheProtocolLimits(t *testing.T) {
	var c Config
	c.STOMP.MaxFrameBody = 64 << 20
	c.EnsureDefaults()
	if want := ByteSize(65 << 20); c.WebSocket.MaxMessageSize != want {
		t.Errorf("max_message_size = %v with a 64MiB STOMP body, want %v", c.WebSocket.MaxMessageSize, want)
	}
	c = Config{}
	c.MQTT.MaxPacketSize = 200 << 20
	c.EnsureDefaults()
	if want := ByteSize(200 << 20); c.WebSocket.MaxMessageSize != want {
		t.Errorf("max_message_size = %v with a 200MiB MQTT packet, want %v", c.WebSocket.MaxMessageSize, want)
	}
	c = Config{WebSocket: WebSocketConfig{MaxMessageSize: 4096}}
	c.EnsureDefaults()
	if c.WebSocket.MaxMessageSize != 4096 {
		t.Errorf("a set max_message_size was replaced: %v", c.WebSocket.MaxMessageSize)
	}
}
