package conformance

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	gostomp "github.com/go-stomp/stomp/v3"
)

// TestREADME_MosquittoPubToSTOMPTopicAndBoundQueue is the README's
// newcomer path, on configs/quickstart.yaml as it is in the repository:
// `mosquitto_pub -t sensors/room1/temp -q 1` is received by a STOMP
// subscriber of /topic/sensors.room1.temp and, through the configured
// binding of queue ingest to sensors/#, by a STOMP consumer of
// /queue/ingest that acks it. A second round after a restart on the same
// data directory gets only its own message on /queue/ingest: the first
// round's ack held, and the binding is in place again.
func TestREADME_MosquittoPubToSTOMPTopicAndBoundQueue(t *testing.T) {
	requireMosquitto(t)
	config, err := os.ReadFile(filepath.Join("..", "configs", "quickstart.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for round := range 2 {
		b := startTandemConfig(t, dir, string(config))
		sc := dialSTOMP(t, b)
		topic, err := sc.Subscribe("/topic/sensors.room1.temp", gostomp.AckAuto)
		if err != nil {
			t.Fatal(err)
		}
		queue, err := sc.Subscribe("/queue/ingest", gostomp.AckClientIndividual)
		if err != nil {
			t.Fatal(err)
		}
		// Frames of one connection are handled in order: this RECEIPT
		// means both SUBSCRIBEs are in place.
		if err := sc.Send("/topic/unrelated", "", []byte("x"), gostomp.SendOpt.Receipt); err != nil {
			t.Fatal(err)
		}
		body := []string{"21.5", "22.0"}[round]
		requirePuback(t, "mqttv311", publish(t, b, "mqttv311", "-t", "sensors/room1/temp", "-q", "1", "-m", body))
		for name, sub := range map[string]*gostomp.Subscription{"/topic/sensors.room1.temp": topic, "/queue/ingest": queue} {
			select {
			case m := <-sub.C:
				if m.Err != nil {
					t.Fatalf("%s: %v", name, m.Err)
				}
				if string(m.Body) != body {
					t.Fatalf("round %d: %s got %q, want %q", round, name, m.Body, body)
				}
				if name == "/queue/ingest" {
					if err := sc.Ack(m); err != nil {
						t.Fatal(err)
					}
				}
			case <-time.After(mqttWait):
				t.Fatalf("round %d: %s got nothing within %v", round, name, mqttWait)
			}
		}
		// The ack is applied before this RECEIPT is written.
		if err := sc.Send("/topic/unrelated", "", []byte("x"), gostomp.SendOpt.Receipt); err != nil {
			t.Fatal(err)
		}
		if err := sc.Disconnect(); err != nil {
			t.Fatal(err)
		}
		b.Stop(t)
	}
}
