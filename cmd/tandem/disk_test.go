package main

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/eclipse/paho.golang/paho"
	gostomp "github.com/go-stomp/stomp/v3"
	"github.com/rs/zerolog"
	"github.com/tandem-mq/tandem/engine"
	"github.com/tandem-mq/tandem/engine/memstore"
)

// The disk alarm follows the free space: on under the limit, off at or
// over it, and a failed look changes nothing.
func TestDiskWatch(t *testing.T) {
	b, err := engine.Open(memstore.New(), engine.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	var free uint64
	var statErr error
	w := &diskWatch{b: b, dir: "x", limit: 100, free: func(string) (uint64, error) { return free, statErr }, log: zerolog.Nop()}
	publish := func() error { return b.Publish(&engine.Message{Topic: "t", Body: []byte("x")}) }
	for _, step := range []struct {
		free    uint64
		err     error
		refused bool
	}{{200, nil, false}, {99, nil, true}, {0, errors.New("statfs failed"), true}, {100, nil, false}, {50, nil, true}} {
		free, statErr = step.free, step.err
		w.check()
		if err := publish(); errors.Is(err, engine.ErrDiskFull) != step.refused {
			t.Fatalf("free %d (stat error %v): publish %v, want refused %v", step.free, step.err, err, step.refused)
		}
	}
}

// End to end, with a disk_free_limit no disk has free: a STOMP SEND gets
// an ERROR that says why, an MQTT 5 QoS 1 publish PUBACK 0x97, and
// nothing is stored; the broker itself runs.
func TestDiskFreeLimitRefusesPublishes(t *testing.T) {
	config := filepath.Join(t.TempDir(), "tandem.yaml")
	if err := os.WriteFile(config, []byte("disk_free_limit: 1000000TB\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	b := startInProcess(t, nil, "--config", config)
	sc, err := gostomp.Dial("tcp", b.addr(t, "stomp"), gostomp.ConnOpt.HeartBeat(0, 0))
	if err != nil {
		t.Fatal(err)
	}
	err = sc.Send("/queue/full", "", []byte("x"), gostomp.SendOpt.Receipt)
	var se gostomp.Error
	if !errors.As(err, &se) || !strings.Contains(se.Message, "disk") {
		t.Fatalf("STOMP SEND: %v, want an ERROR about the disk", err)
	}
	nc, err := net.Dial("tcp", b.addr(t, "mqtt"))
	if err != nil {
		t.Fatal(err)
	}
	c := paho.NewClient(paho.ClientConfig{ClientID: "m", Conn: nc})
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	if _, err := c.Connect(ctx, &paho.Connect{ClientID: "m", CleanStart: true, KeepAlive: 30}); err != nil {
		t.Fatal(err)
	}
	defer c.Disconnect(&paho.Disconnect{})
	r, err := c.Publish(ctx, &paho.Publish{Topic: "$queue/full", QoS: 1, Payload: []byte("x")})
	if r == nil || r.ReasonCode != 0x97 {
		t.Fatalf("MQTT publish: %+v %v, want PUBACK 0x97", r, err)
	}
	m := scrape(t, b.addr(t, "admin"))
	if got := m[`tandem_refusals_total{reason="disk"}`]; got != 2 {
		t.Errorf("disk refusals %v, want 2", got)
	}
}
