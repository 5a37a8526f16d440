package main

import (
	"context"
	"testing"

	"github.com/eclipse/paho.golang/paho"
	gostomp "github.com/go-stomp/stomp/v3"
	"github.com/go-stomp/stomp/v3/frame"
)

// An MQTT $share/GROUP/FILTER group and a STOMP durable subscription named
// GROUP on the same filter are one queue, whose members compete. When the
// last MQTT member (a clean session) leaves, the queue is kept because the
// STOMP durable subscription still holds it: what is published meanwhile
// waits for the STOMP subscriber, which gets it on its return.
func TestSTOMPDurableOutlivesMQTTShareGroup(t *testing.T) {
	p := start(t, []string{"--data", t.TempDir(), "--log-format", "json"}, "TANDEM_ADMIN_ADDR=127.0.0.1:0")
	rec := p.stderr.waitFor(t, "ready", p.exited)
	stompAddr, _ := rec["stomp"].(string)
	mqttAddr, _ := rec["mqtt"].(string)

	// RabbitMQ's dialect: durable:true, auto-delete:false, named by id.
	durable := []func(*frame.Frame) error{gostomp.SubscribeOpt.Id("grp"), gostomp.SubscribeOpt.Header("durable", "true"), gostomp.SubscribeOpt.Header("auto-delete", "false")}
	sc, err := gostomp.Dial("tcp", stompAddr, gostomp.ConnOpt.HeartBeat(0, 0))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sc.Subscribe("/topic/shared.x", gostomp.AckClientIndividual, durable...); err != nil {
		t.Fatal(err)
	}
	if err := sc.Disconnect(); err != nil { // left, not ended: the queue stays
		t.Fatal(err)
	}

	m := dialMQTT5(t, mqttAddr, "member", "$share/grp/shared/x", 1)
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	if _, err := m.Unsubscribe(ctx, &paho.Unsubscribe{Topics: []string{"$share/grp/shared/x"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Publish(ctx, &paho.Publish{Topic: "shared/x", QoS: 1, Payload: []byte("kept")}); err != nil {
		t.Fatal(err)
	}

	sc, err = gostomp.Dial("tcp", stompAddr, gostomp.ConnOpt.HeartBeat(0, 0))
	if err != nil {
		t.Fatal(err)
	}
	defer sc.MustDisconnect()
	sub, err := sc.Subscribe("/topic/shared.x", gostomp.AckClientIndividual, durable...)
	if err != nil {
		t.Fatal(err)
	}
	if msg := recvSTOMP(t, sub); string(msg.Body) != "kept" {
		t.Fatalf("STOMP durable subscriber got %q, want the message published while it was away", msg.Body)
	}
}
