package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"os"
	"strings"
	"testing"
	"time"
)

// startMochi serves a plain mochi broker (mochi-serve) on a free port for
// the test and returns its address.
func startMochi(t *testing.T) string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	addrCh := make(chan string, 1)
	done := make(chan error, 1)
	go func() {
		done <- serveMochi(ctx, mochiConfig{addr: "127.0.0.1:0"}, io.Discard, func(a string) { addrCh <- a })
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("mochi-serve: %v", err)
		}
	})
	select {
	case a := <-addrCh:
		return a
	case err := <-done:
		t.Fatalf("mochi-serve: %v", err)
	}
	return ""
}

// mqttTestConfig is a small version of a scenario's defaults.
func mqttTestConfig(t *testing.T, scenario, addr string) mqttConfig {
	t.Helper()
	cfg := mqttDefaults[scenario]
	cfg.scenario = scenario
	cfg.mqttCommon = mqttCommon{addr: addr, keepalive: 60 * time.Second, label: "mochi", timeout: time.Minute}
	cfg.count = min(cfg.count, 2000)
	cfg.duration = 30 * time.Second
	cfg.drain, cfg.quiet = 20*time.Second, 0
	if err := cfg.validate(); err != nil {
		t.Fatal(err)
	}
	return cfg
}

// TestMQTTScenarios runs every message scenario against mochi, small.
func TestMQTTScenarios(t *testing.T) {
	addr := startMochi(t)
	for _, tc := range []struct {
		scenario string
		tweak    func(*mqttConfig)
	}{
		{"mqtt-fanin", nil},
		{"mqtt-fanout", func(c *mqttConfig) { c.subscribers = 5 }},
		{"mqtt-persist", nil},
		{"mqtt-persist", func(c *mqttConfig) { c.inflight = 1 }},
		{"mqtt-latency", func(c *mqttConfig) {
			c.count, c.rate, c.duration, c.warmup = 200, 1000, 2*time.Second, 100*time.Millisecond
		}},
	} {
		cfg := mqttTestConfig(t, tc.scenario, addr)
		if tc.tweak != nil {
			tc.tweak(&cfg)
		}
		res, err := runMQTT(context.Background(), cfg)
		if err != nil {
			t.Fatalf("%s: %v", tc.scenario, err)
		}
		t.Log(res.human())
		// mochi does not drop at this size: every scenario is exact here.
		if !res.ok() || res.Received != res.Expected || res.Sent != int64(cfg.count) || res.Foreign != 0 {
			t.Errorf("%s: %s", tc.scenario, res.human())
		}
		if (res.Latency != nil) != cfg.stamp || (res.Latency != nil && res.Latency.Samples == 0) {
			t.Errorf("%s: latency %+v", tc.scenario, res.Latency)
		}
		if res.SteadyRate <= 0 {
			t.Errorf("%s: no steady rate", tc.scenario)
		}
	}
}

// TestMQTTDurationBound checks that publishers stop at --duration well
// before --count.
func TestMQTTDurationBound(t *testing.T) {
	addr := startMochi(t)
	cfg := mqttTestConfig(t, "mqtt-latency", addr)
	cfg.count, cfg.rate, cfg.duration, cfg.warmup = 1_000_000, 200, 300*time.Millisecond, 0
	res, err := runMQTT(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if !res.ok() || res.Sent == 0 || res.Sent > 100 {
		t.Fatalf("sent %d in 300ms at 200/s: %s", res.Sent, res.human())
	}
}

// TestMQTTRefused checks that a scenario against nothing fails fast.
func TestMQTTRefused(t *testing.T) {
	addr := startMochi(t)
	cfg := mqttTestConfig(t, "mqtt-fanin", addr)
	cfg.addr = "127.0.0.1:1" // nothing listens on port 1
	if _, err := runMQTT(context.Background(), cfg); err == nil {
		t.Fatal("no error without a broker")
	}
}

func TestMQTTIdle(t *testing.T) {
	addr := startMochi(t)
	cfg := idleConfig{
		mqttCommon: mqttCommon{addr: addr, keepalive: 60 * time.Second, label: "mochi", timeout: time.Minute},
		conns:      50, parallel: 8, pid: os.Getpid(), // mochi runs in this process
	}
	if err := cfg.validate(); err != nil {
		t.Fatal(err)
	}
	res, err := runIdle(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Log(res.human())
	if !res.ok() || res.Connected != 50 || res.Alive != 50 || res.RSSAfterKiB == 0 {
		t.Fatal(res.human())
	}
}

// TestRunMQTTCommand runs a scenario through the command line and prints
// its result with table.
func TestRunMQTTCommand(t *testing.T) {
	addr := startMochi(t)
	out := t.TempDir() + "/r.jsonl"
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), []string{"mqtt-persist", "--addr", addr, "--label", "mochi", "--round", "2",
		"--count", "500", "--json", out}, &stdout, &stderr)
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	var r mqttRow
	if err := json.Unmarshal(b, &r); err != nil || r.Round != 2 || r.Acked != 500 || !r.OK {
		t.Fatalf("result %s: %v", b, err)
	}
	stdout.Reset()
	if code := run(context.Background(), []string{"table", out}, &stdout, &stderr); code != exitOK {
		t.Fatalf("table: exit %d: %s", code, stderr.String())
	}
	if !strings.Contains(stdout.String(), "| 2 | mochi | mqtt-persist (persistent) | 4/1 | 1 | 500 | 500 | 500/500 |") ||
		!strings.Contains(stdout.String(), "| 2 | mqtt-persist |") {
		t.Fatalf("table:\n%s", stdout.String())
	}
	for _, args := range [][]string{
		{"mqtt-persist", "--qos", "2"},
		{"mqtt-fanin", "--size", "10"},
		{"mqtt-idle", "--conns", "0"},
		{"mochi-serve", "--addr", ""},
	} {
		if code := run(context.Background(), args, io.Discard, io.Discard); code != exitUsage {
			t.Errorf("%v: exit %d, want %d", args, code, exitUsage)
		}
	}
}
