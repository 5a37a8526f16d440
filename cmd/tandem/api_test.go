package main

import (
	"bytes"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	pahov3 "github.com/eclipse/paho.mqtt.golang"
	gostomp "github.com/go-stomp/stomp/v3"
	"github.com/go-stomp/stomp/v3/frame"
	"github.com/tandem-mq/tandem/protocol"
)

// runCtl runs `tandem ctl args` in this process, as someone would where
// the broker runs: no flags, the data directory from TANDEM_DATA_DIR.
func runCtl(dataDir string, args ...string) (stdout, stderr string, code int) {
	var out, errb bytes.Buffer
	env := map[string]string{"TANDEM_DATA_DIR": dataDir}
	code = ctl(args, func(k string) string { return env[k] }, &out, &errb)
	return out.String(), errb.String(), code
}

// ctlOK runs tandem ctl and fails the test unless it exits 0.
func ctlOK(t *testing.T, dataDir string, args ...string) string {
	t.Helper()
	out, errs, code := runCtl(dataDir, args...)
	if code != 0 {
		t.Fatalf("tandem ctl %s: exit %d: %s", strings.Join(args, " "), code, errs)
	}
	return out
}

// ctlJSON runs tandem ctl --json and decodes its answer into v (a
// pointer, zeroed first).
func ctlJSON(t *testing.T, dataDir string, v any, args ...string) {
	t.Helper()
	reflect.ValueOf(v).Elem().SetZero()
	out := ctlOK(t, dataDir, append(args, "--json")...)
	if err := json.Unmarshal([]byte(out), v); err != nil {
		t.Fatalf("tandem ctl %s --json: %v in %q", strings.Join(args, " "), err, out)
	}
}

// ctlFails runs tandem ctl expecting exit code want and want in stderr.
func ctlFails(t *testing.T, dataDir string, wantCode int, want string, args ...string) {
	t.Helper()
	_, errs, code := runCtl(dataDir, args...)
	if code != wantCode || !strings.Contains(errs, want) {
		t.Fatalf("tandem ctl %s: exit %d, stderr %q; want exit %d and %q", strings.Join(args, " "), code, errs, wantCode, want)
	}
}

// waitCond polls cond until it holds, failing with what after waitTimeout.
func waitCond(t *testing.T, what string, cond func() bool) {
	t.Helper()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	deadline := time.NewTimer(waitTimeout)
	defer deadline.Stop()
	for !cond() {
		select {
		case <-tick.C:
		case <-deadline.C:
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

func msgHeader(m apiMessage, key string) string {
	for _, h := range m.Headers {
		if h.Key == key {
			return h.Value
		}
	}
	return ""
}

// TestAdminOperations drives every admin operation through tandem ctl
// against a broker that real MQTT and STOMP clients use.
func TestAdminOperations(t *testing.T) {
	dataDir := t.TempDir()
	b := startInProcess(t, map[string]string{"TANDEM_DATA_DIR": dataDir})
	stompAddr, mqttAddr := b.addr(t, "stomp"), b.addr(t, "mqtt")
	queue := func(name string) apiQueue {
		t.Helper()
		var q apiQueue
		ctlJSON(t, dataDir, &q, "queue", "show", name)
		return q
	}

	// Create a queue with its own policy, and bind a topic filter to it.
	out := ctlOK(t, dataDir, "queue", "create", "jobs", "--max-deliveries", "2", "--redelivery-delay", "10ms", "--redelivery-max-delay", "10ms")
	if !strings.Contains(out, "queue jobs declared") || !strings.Contains(out, "max_deliveries=2") {
		t.Fatalf("queue create printed %q", out)
	}
	if out := ctlOK(t, dataDir, "queues"); !strings.Contains(out, "NAME") || !strings.Contains(out, "\njobs ") {
		t.Fatalf("queues printed %q", out)
	}
	ctlOK(t, dataDir, "bind", "jobs", "/topic/sensors.#") // STOMP form: engine filter sensors/#
	var bs []apiBinding
	ctlJSON(t, dataDir, &bs, "bindings")
	if !slices.Contains(bs, apiBinding{Queue: "jobs", Topic: "sensors/#"}) {
		t.Fatalf("bindings = %+v", bs)
	}

	// An MQTT device publishes to a bound topic, a STOMP service to the
	// queue itself.
	dev := mqtt3At(t, pahov3.NewClientOptions().AddBroker("tcp://"+mqttAddr), "dev1", "cmd/dev1")
	if tok := dev.Publish("sensors/room1", 1, false, "from mqtt"); !tok.WaitTimeout(waitTimeout) || tok.Error() != nil {
		t.Fatalf("publish: %v", tok.Error())
	}
	svc, err := gostomp.Dial("tcp", stompAddr, gostomp.ConnOpt.HeartBeat(0, 0), gostomp.ConnOpt.Header("client-id", "svc"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = svc.Disconnect() })
	if err := svc.Send("/queue/jobs", "text/plain", []byte("bad job"), gostomp.SendOpt.Receipt); err != nil {
		t.Fatal(err)
	}
	if q := queue("jobs"); q.Messages != 2 || q.Published != 2 || q.Override.MaxDeliveries != 2 {
		t.Fatalf("jobs after two publishes: %+v", q)
	}

	// A worker acks the good job and NACKs the bad one until it is
	// dead-lettered (max_deliveries 2).
	worker, err := gostomp.Dial("tcp", stompAddr, gostomp.ConnOpt.HeartBeat(0, 0))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = worker.Disconnect() })
	sub, err := worker.Subscribe("/queue/jobs", gostomp.AckClientIndividual)
	if err != nil {
		t.Fatal(err)
	}
	for nacks, acked := 0, false; nacks < 2 || !acked; {
		m := recvSTOMP(t, sub)
		switch string(m.Body) {
		case "from mqtt":
			err, acked = worker.Ack(m), true
		case "bad job":
			err = worker.Nack(m)
			nacks++
		default:
			t.Fatalf("worker got %q", m.Body)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	waitCond(t, "the bad job in jobs.dlq", func() bool {
		var qs []apiQueue
		ctlJSON(t, dataDir, &qs, "queues")
		for _, q := range qs {
			if q.Name == "jobs.dlq" && q.Messages == 1 {
				return true
			}
		}
		return false
	})

	// Browse the dead-letter queue twice: nothing is consumed.
	for range 2 {
		var br browsed
		ctlJSON(t, dataDir, &br, "dlq", "browse", "jobs.dlq")
		if len(br.Messages) != 1 {
			t.Fatalf("browse: %+v", br)
		}
		m := br.Messages[0]
		if m.Payload != "bad job" || m.Encoding != "string" || msgHeader(m, "x-death-reason") != "max-deliveries" ||
			msgHeader(m, "x-original-destination") != "jobs" || msgHeader(m, "content-type") != "text/plain" {
			t.Fatalf("browsed dead letter: %+v", m)
		}
	}
	if out := ctlOK(t, dataDir, "dlq", "browse", "jobs.dlq"); !strings.Contains(out, "max-deliveries") || !strings.Contains(out, `"bad job"`) {
		t.Fatalf("dlq browse printed %q", out)
	}

	// Replay it: the worker gets it again, without the death headers.
	if out := ctlOK(t, dataDir, "dlq", "replay", "jobs.dlq"); !strings.Contains(out, "replayed 1 messages from jobs.dlq") {
		t.Fatalf("dlq replay printed %q", out)
	}
	m := recvSTOMP(t, sub)
	if string(m.Body) != "bad job" || m.Header.Get("x-death-reason") != "" || m.Header.Get("x-delivery-count") != "1" {
		t.Fatalf("replayed message %q headers %v", m.Body, m.Header)
	}
	if err := worker.Ack(m); err != nil {
		t.Fatal(err)
	}
	waitCond(t, "jobs and jobs.dlq empty", func() bool { return queue("jobs").Messages == 0 && queue("jobs.dlq").Messages == 0 })

	// Connections of both protocols, with their figures.
	var conns []protocol.ConnInfo
	ctlJSON(t, dataDir, &conns, "connections")
	var svcID string
	for _, c := range conns {
		if c.Protocol == "stomp" && c.ClientID == "svc" {
			svcID = c.ID
		}
	}
	mqttConn := slices.IndexFunc(conns, func(c protocol.ConnInfo) bool { return c.Protocol == "mqtt" && c.ID == "dev1" })
	if len(conns) != 3 || svcID == "" || mqttConn < 0 || conns[mqttConn].Transport != "tcp" ||
		!slices.Equal(conns[mqttConn].Subscriptions, []string{"cmd/dev1"}) {
		t.Fatalf("connections = %+v", conns)
	}
	if out := ctlOK(t, dataDir, "connections"); !strings.Contains(out, "dev1") || !strings.Contains(out, "/queue/jobs") {
		t.Fatalf("connections printed %q", out)
	}

	// Policy changes apply at once: max_length 1 refuses a second message.
	out = ctlOK(t, dataDir, "policy", "set", "jobs", "--max-length", "1", "--overflow", "reject-publish")
	if !strings.Contains(out, "max_length=1") {
		t.Fatalf("policy set printed %q", out)
	}
	var pol apiQueuePolicy
	ctlJSON(t, dataDir, &pol, "policy", "show", "jobs")
	if pol.Override.MaxLength != 1 || pol.Override.MaxDeliveries != 2 || pol.Effective.MaxLength != 1 || pol.Effective.Overflow != "reject-publish" {
		t.Fatalf("policy show = %+v", pol)
	}
	_ = worker.Disconnect()
	waitCond(t, "the worker gone from jobs", func() bool { return queue("jobs").Consumers == 0 })
	if err := svc.Send("/queue/jobs", "", []byte("fits"), gostomp.SendOpt.Receipt); err != nil {
		t.Fatal(err)
	}
	full, err := gostomp.Dial("tcp", stompAddr, gostomp.ConnOpt.HeartBeat(0, 0))
	if err != nil {
		t.Fatal(err)
	}
	if err := full.Send("/queue/jobs", "", []byte("too many"), gostomp.SendOpt.Receipt); err == nil {
		t.Fatal("a publish over max_length 1 was accepted")
	}
	// The ERROR closed that connection: a DISCONNECT would wait for a
	// RECEIPT that cannot come.
	ctlOK(t, dataDir, "policy", "clear", "jobs")
	ctlJSON(t, dataDir, &pol, "policy", "show", "jobs")
	if pol.Override != (apiPolicy{}) || pol.Effective.MaxLength != -1 || pol.Effective.MaxDeliveries != 10 {
		t.Fatalf("after policy clear: %+v", pol)
	}
	if err := svc.Send("/queue/jobs", "", []byte("fits again"), gostomp.SendOpt.Receipt); err != nil {
		t.Fatal(err)
	}

	// Purge.
	if out := ctlOK(t, dataDir, "purge", "jobs"); !strings.Contains(out, "purged 2 messages from jobs") {
		t.Fatalf("purge printed %q", out)
	}
	if q := queue("jobs"); q.Messages != 0 || q.Dropped != 2 {
		t.Fatalf("after purge: %+v", q)
	}

	// Durable subscriptions and MQTT persistent sessions.
	sess := &mqtt3{c: make(chan pahov3.Message, 10)}
	sess.Client = pahov3.NewClient(pahov3.NewClientOptions().AddBroker("tcp://" + mqttAddr).SetClientID("sess1").
		SetProtocolVersion(4).SetCleanSession(false).SetAutoReconnect(false))
	if tok := sess.Connect(); !tok.WaitTimeout(waitTimeout) || tok.Error() != nil {
		t.Fatalf("connect: %v", tok.Error())
	}
	for _, f := range []string{"d/#", "$share/g2/x/#"} {
		if tok := sess.Subscribe(f, 1, nil); !tok.WaitTimeout(waitTimeout) || tok.Error() != nil {
			t.Fatalf("subscribe: %v", tok.Error())
		}
	}
	sess.Disconnect(0)
	durable := []func(*frame.Frame) error{gostomp.SubscribeOpt.Id("grp"), gostomp.SubscribeOpt.Header("durable", "true"), gostomp.SubscribeOpt.Header("auto-delete", "false")}
	if _, err := svc.Subscribe("/topic/alerts.*", gostomp.AckClientIndividual, durable...); err != nil {
		t.Fatal(err)
	}
	if err := svc.Send("/topic/alerts.fire", "", []byte("barrier"), gostomp.SendOpt.Receipt); err != nil {
		t.Fatal(err)
	}
	var subs []apiSubscription
	waitCond(t, "the session released", func() bool {
		ctlJSON(t, dataDir, &subs, "subscriptions")
		return len(subs) == 3 && !subs[0].Connected
	})
	if s := subs[0]; s.Kind != "mqtt-session" || s.Name != "sess1" || s.Queue != "$mqtt/sess1" ||
		!slices.Equal(s.Filters, []string{"$share/g2/x/# (QoS 1)", "d/# (QoS 1)"}) || s.ExpiresAt == nil {
		t.Fatalf("session = %+v", s)
	}
	if s := subs[1]; s.Kind != "shared" || s.Name != "g2" || s.Queue != "$share/g2/x/#" || !slices.Equal(s.Filters, []string{"x/#"}) || s.Connected {
		t.Fatalf("shared subscription = %+v", s)
	}
	if s := subs[2]; s.Kind != "durable" || s.Name != "grp" || !slices.Equal(s.Filters, []string{"alerts/+"}) ||
		!s.Connected || s.Consumers != 1 {
		t.Fatalf("durable subscription = %+v", s)
	}

	// Close a connection of each protocol.
	ctlOK(t, dataDir, "close", "stomp", svcID)
	ctlOK(t, dataDir, "close", "mqtt", "dev1")
	waitCond(t, "both connections closed", func() bool { return !dev.IsConnectionOpen() && len(ctlConnections(t, dataDir)) == 0 })
	ctlFails(t, dataDir, 1, `no mqtt connection "dev1"`, "close", "mqtt", "dev1")

	// Unbind and delete.
	ctlOK(t, dataDir, "unbind", "jobs", "sensors/#")
	ctlJSON(t, dataDir, &bs, "bindings")
	if slices.Contains(bs, apiBinding{Queue: "jobs", Topic: "sensors/#"}) {
		t.Fatalf("still bound: %+v", bs)
	}
	ctlFails(t, dataDir, 1, "no binding", "unbind", "jobs", "sensors/#")
	ctlOK(t, dataDir, "queue", "delete", "jobs")
	ctlFails(t, dataDir, 1, "no such queue", "queue", "show", "jobs")
	ctlFails(t, dataDir, 1, "HTTP 404", "purge", "jobs")

	// Bad requests.
	ctlFails(t, dataDir, 1, "broker's own", "queue", "create", "$mine")
	ctlFails(t, dataDir, 1, "max_deliveries", "queue", "create", "q2", "--max-deliveries", "-3")
	ctlFails(t, dataDir, 2, "unknown command", "frobnicate")
	ctlFails(t, dataDir, 2, "usage: tandem ctl bind QUEUE TOPIC", "bind", "jobs")
	ctlFails(t, dataDir, 2, "--ttl is for queue create and policy set", "purge", "x", "--ttl", "1s")
	ctlFails(t, dataDir, 1, "no broker address", "--data", t.TempDir(), "queues")
}

// ctlConnections lists the connections through tandem ctl.
func ctlConnections(t *testing.T, dataDir string) []protocol.ConnInfo {
	t.Helper()
	var cs []protocol.ConnInfo
	ctlJSON(t, dataDir, &cs, "connections")
	return cs
}

// TestAdminToken checks that the API refuses requests without the token
// of the data directory, that health and metrics stay open, and that the
// token is kept across restarts.
func TestAdminToken(t *testing.T) {
	dataDir := t.TempDir()
	b := startInProcess(t, map[string]string{"TANDEM_DATA_DIR": dataDir})
	admin := b.addr(t, "admin")
	path := filepath.Join(dataDir, tokenFile)
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("%s has mode %v, want 0600", path, st.Mode().Perm())
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	token := strings.TrimSpace(string(raw))
	if len(token) != 64 {
		t.Fatalf("token %q", token)
	}
	if a, err := os.ReadFile(filepath.Join(dataDir, addrFile)); err != nil || strings.TrimSpace(string(a)) != admin {
		t.Fatalf("%s = %q (%v), want %s", addrFile, a, err, admin)
	}

	do := func(method, path, auth string) (int, http.Header, string) {
		t.Helper()
		req, err := http.NewRequest(method, "http://"+admin+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = resp.Body.Close() }()
		var buf bytes.Buffer
		_, _ = buf.ReadFrom(resp.Body)
		return resp.StatusCode, resp.Header, buf.String()
	}
	for _, auth := range []string{"", "Bearer wrong", "Basic " + token, "Bearer " + token[:63]} {
		code, h, body := do("GET", "/api/queues", auth)
		var ae apiError
		if code != http.StatusUnauthorized || !strings.HasPrefix(h.Get("WWW-Authenticate"), "Bearer") ||
			json.Unmarshal([]byte(body), &ae) != nil || !strings.Contains(ae.Error, "admin token") {
			t.Errorf("GET /api/queues with %q: %d %v %s", auth, code, h, body)
		}
	}
	if code, _, body := do("GET", "/api/queues", "Bearer "+token); code != http.StatusOK || !strings.HasPrefix(body, "[") {
		t.Errorf("with the token: %d %s", code, body)
	}
	if code, _, body := do("GET", "/api/nope", "Bearer "+token); code != http.StatusNotFound || !strings.Contains(body, `"error"`) {
		t.Errorf("unknown endpoint: %d %s", code, body)
	}
	if code, _, body := do("POST", "/api/queues", "Bearer "+token); code != http.StatusNotFound || !strings.Contains(body, "no such API endpoint: POST") {
		t.Errorf("POST /api/queues: %d %s", code, body)
	}
	for _, p := range []string{"/healthz", "/readyz", "/metrics"} {
		if code, _, _ := do("GET", p, ""); code != http.StatusOK {
			t.Errorf("GET %s without a token: %d", p, code)
		}
	}

	// The token stays; the address file goes with the broker.
	b.stop(t)
	if _, err := os.Stat(filepath.Join(dataDir, addrFile)); !os.IsNotExist(err) {
		t.Errorf("%s after shutdown: %v", addrFile, err)
	}
	ctlFails(t, dataDir, 1, "no broker address", "queues")
	b = startInProcess(t, map[string]string{"TANDEM_DATA_DIR": dataDir})
	if again, err := os.ReadFile(path); err != nil || strings.TrimSpace(string(again)) != token {
		t.Fatalf("token after restart %q (%v), want %q", again, err, token)
	}
	admin = b.addr(t, "admin")
	if code, _, _ := do("GET", "/api/connections", "Bearer "+token); code != http.StatusOK {
		t.Errorf("old token after restart: %d", code)
	}
	// Flags reach a broker without its data directory.
	out, errs, code := runCtl(t.TempDir(), "--addr", admin, "--token", token, "queues")
	if code != 0 || !strings.Contains(out, "NAME") {
		t.Fatalf("with --addr and --token: exit %d %q %q", code, out, errs)
	}
	_, errs, code = runCtl(t.TempDir(), "--addr", admin, "--token", "wrong", "queues")
	if code != 1 || !strings.Contains(errs, "HTTP 401") {
		t.Fatalf("with a wrong --token: exit %d %q", code, errs)
	}
}

// TestCtlBinaryNoFlags runs the tandem binary twice where an operator
// would: a broker on ./data, and `tandem ctl queues` in the same directory
// with no flag and no TANDEM_* variable.
func TestCtlBinaryNoFlags(t *testing.T) {
	dir := t.TempDir()
	broker := exec.Command(binary, "--log-format", "json")
	broker.Dir = dir
	broker.Env = testEnv("TANDEM_ADMIN_ADDR=127.0.0.1:0")
	logs := newLines()
	broker.Stderr = logs
	if err := broker.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = broker.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = broker.Process.Signal(os.Interrupt)
		select {
		case <-exited:
		case <-time.After(waitTimeout):
			_ = broker.Process.Kill()
			<-exited
		}
	})
	logs.waitFor(t, "ready", exited)

	run := func(args ...string) string {
		t.Helper()
		cmd := exec.Command(binary, append([]string{"ctl"}, args...)...)
		cmd.Dir = dir
		cmd.Env = testEnv()
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("tandem ctl %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	run("queue", "create", "orders")
	if out := run("queues"); !strings.Contains(out, "orders") {
		t.Fatalf("tandem ctl queues printed %q", out)
	}
	if out := run("metrics"); !strings.Contains(out, `tandem_queue_messages{queue="orders"} 0`) {
		t.Fatalf("tandem ctl metrics printed %q", out)
	}
}
