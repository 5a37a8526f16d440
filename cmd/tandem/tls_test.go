package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/eclipse/paho.golang/paho"
	pahov3 "github.com/eclipse/paho.mqtt.golang"
	gostomp "github.com/go-stomp/stomp/v3"
)

// writeCert writes a self-signed certificate for 127.0.0.1 with the given
// serial number, and its key, to certFile and keyFile (through a rename
// each, as a renewal tool would), and returns the certificate.
func writeCert(t *testing.T, certFile, keyFile string, serial int64) *x509.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(serial),
		Subject:               pkix.Name{CommonName: "tandem test"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true, // its own root, for the clients' pools
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []struct {
		name string
		data []byte
	}{
		{keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder})},
		{certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})},
	} {
		tmp := f.name + ".new"
		if err := os.WriteFile(tmp, f.data, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, f.name); err != nil {
			t.Fatal(err)
		}
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

// tlsBroker starts a broker with a certificate (serial 1) and returns it
// with the client configuration that trusts the certificate.
func tlsBroker(t *testing.T, env map[string]string, args ...string) (*inProcess, *tls.Config, string, string) {
	t.Helper()
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	cert := writeCert(t, certFile, keyFile, 1)
	full := map[string]string{"TANDEM_TLS_CERT_FILE": certFile, "TANDEM_TLS_KEY_FILE": keyFile}
	for k, v := range env {
		full[k] = v
	}
	b := startInProcess(t, full, args...)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return b, &tls.Config{RootCAs: pool}, certFile, keyFile
}

func dialTLS(t *testing.T, addr string, cfg *tls.Config) *tls.Conn {
	t.Helper()
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: waitTimeout}, "tcp", addr, cfg)
	if err != nil {
		t.Fatalf("TLS dial %s: %v", addr, err)
	}
	return c
}

// TestTLSListeners runs MQTT 3.1.1 and 5 and STOMP over TLS and over
// wss://, with messages crossing between all of them.
func TestTLSListeners(t *testing.T) {
	b, tlsCfg, _, _ := tlsBroker(t, nil)

	m5 := mqtt5Over(t, dialTLS(t, b.addr(t, "mqtt_tls"), tlsCfg), "tls5", "tls/#")
	m3 := mqtt3At(t, pahov3.NewClientOptions().AddBroker("ssl://"+b.addr(t, "mqtt_tls")).SetTLSConfig(tlsCfg), "tls3", "tls/#")
	wss := "wss://" + b.addr(t, "websocket_tls")
	mw := mqtt3At(t, pahov3.NewClientOptions().AddBroker(wss+"/mqtt").SetTLSConfig(tlsCfg), "wss3", "none")

	sc, err := gostomp.Connect(dialTLS(t, b.addr(t, "stomp_tls"), tlsCfg), gostomp.ConnOpt.HeartBeat(0, 0), gostomp.ConnOpt.Host("/"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sc.Disconnect() })
	sub, err := sc.Subscribe("/topic/tls.*", gostomp.AckAuto)
	if err != nil {
		t.Fatal(err)
	}
	httpc := &http.Client{Transport: &http.Transport{TLSClientConfig: tlsCfg}}
	sw := stompOverWS(t, wss+"/stomp", &websocket.DialOptions{HTTPClient: httpc, Subprotocols: []string{"v12.stomp"}})

	// Each sender in turn; every MQTT subscriber and the STOMP one get it.
	send := []struct {
		from string
		send func(topic string)
	}{
		{"stomp over TLS", func(topic string) {
			if err := sc.Send("/topic/"+strings.ReplaceAll(topic, "/", "."), "", []byte(topic), gostomp.SendOpt.Receipt); err != nil {
				t.Fatal(err)
			}
		}},
		{"stomp over wss", func(topic string) {
			if err := sw.Send("/topic/"+strings.ReplaceAll(topic, "/", "."), "", []byte(topic), gostomp.SendOpt.Receipt); err != nil {
				t.Fatal(err)
			}
		}},
		{"mqtt over wss", func(topic string) {
			if tok := mw.Publish(topic, 1, false, topic); !tok.WaitTimeout(waitTimeout) || tok.Error() != nil {
				t.Fatalf("publish: %v", tok.Error())
			}
		}},
		{"mqtt 5 over TLS", func(topic string) {
			if _, err := m5.Publish(testCtx(t), &paho.Publish{Topic: topic, QoS: 1, Payload: []byte(topic)}); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for i, s := range send {
		topic := "tls/" + string(rune('a'+i))
		s.send(topic)
		if m := m5.next(t); m.Topic != topic || string(m.Payload) != topic {
			t.Fatalf("from %s: MQTT 5 over TLS got %s %q", s.from, m.Topic, m.Payload)
		}
		if m := m3.next(t); m.Topic() != topic {
			t.Fatalf("from %s: MQTT 3.1.1 over TLS got %s", s.from, m.Topic())
		}
		if m := recvSTOMP(t, sub); string(m.Body) != topic {
			t.Fatalf("from %s: STOMP over TLS got %q", s.from, m.Body)
		}
	}

	// Plain TCP to a TLS port is not MQTT: the handshake fails and the
	// connection is closed.
	nc, err := net.Dial("tcp", b.addr(t, "mqtt_tls"))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	if _, err := nc.Write([]byte{0x10, 13, 0, 4, 'M', 'Q', 'T', 'T', 4, 2, 0, 60, 0, 1, 'x'}); err != nil {
		t.Fatal(err)
	}
	if err := nc.SetReadDeadline(time.Now().Add(waitTimeout)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	for i := 0; i < 10; i++ { // a TLS alert, then EOF
		if _, err = nc.Read(buf); err != nil {
			break
		}
	}
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Errorf("plain MQTT on the TLS port was not closed: %v", err)
	}
}

// TestTLSCertificateReload replaces the certificate files under a running
// broker: new connections get the new certificate, and connections made
// before go on.
func TestTLSCertificateReload(t *testing.T) {
	b, tlsCfg, certFile, keyFile := tlsBroker(t, nil)
	addr := b.addr(t, "stomp_tls")
	sc, err := gostomp.Connect(dialTLS(t, addr, tlsCfg), gostomp.ConnOpt.HeartBeat(0, 0), gostomp.ConnOpt.Host("/"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sc.Disconnect() })

	cert2 := writeCert(t, certFile, keyFile, 2)
	tlsCfg.RootCAs.AddCert(cert2)
	// The files are looked at, at most once a second, when a client
	// connects: connect until the new certificate is served.
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	deadline := time.NewTimer(waitTimeout)
	defer deadline.Stop()
	for {
		c := dialTLS(t, addr, tlsCfg)
		serial := c.ConnectionState().PeerCertificates[0].SerialNumber.Int64()
		c.Close()
		if serial == 2 {
			break
		}
		select {
		case <-tick.C:
		case <-deadline.C:
			t.Fatalf("still serving certificate %d %v after the files were replaced", serial, waitTimeout)
		}
	}
	if err := sc.Send("/queue/after-reload", "", []byte("x"), gostomp.SendOpt.Receipt); err != nil {
		t.Fatalf("a connection made before the reload: %v", err)
	}
	found := false
	for _, l := range b.stderr.all() {
		found = found || strings.Contains(l, "certificate reloaded")
	}
	if !found {
		t.Error("the reload was not logged")
	}
}

func TestTLSMinVersion(t *testing.T) {
	b, tlsCfg, _, _ := tlsBroker(t, nil, "--config", writeConfig(t, "tls:\n  min_version: \"1.3\"\n"))
	old := tlsCfg.Clone()
	old.MaxVersion = tls.VersionTLS12
	for _, key := range []string{"mqtt_tls", "stomp_tls", "websocket_tls"} {
		c, err := tls.Dial("tcp", b.addr(t, key), old)
		if err == nil {
			c.Close()
			t.Errorf("%s accepted TLS 1.2 with min_version 1.3", key)
		}
		c = dialTLS(t, b.addr(t, key), tlsCfg)
		if v := c.ConnectionState().Version; v != tls.VersionTLS13 {
			t.Errorf("%s: version %x", key, v)
		}
		c.Close()
	}
}

// TestTLSBadCertificate: certificate files that cannot be used stop the
// broker at startup with one line and exit code 1.
func TestTLSBadCertificate(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name, key, want string
	}{
		{"no key file", "", "tandem: tls: key file: "},
		{"not PEM", "not a key", "tandem: tls: load certificate " + certFile},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if tt.key != "" {
				if err := os.WriteFile(keyFile, []byte(tt.key), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			stderr := newLines()
			env := map[string]string{
				"TANDEM_DATA_DIR": t.TempDir(), "TANDEM_ADMIN_ADDR": "127.0.0.1:0", "TANDEM_STOMP_ADDR": "127.0.0.1:0",
				"TANDEM_MQTT_ADDR": "127.0.0.1:0", "TANDEM_WS_ADDR": "127.0.0.1:0", "TANDEM_MQTT_TLS_ADDR": "127.0.0.1:0",
				"TANDEM_STOMP_TLS_ADDR": "127.0.0.1:0", "TANDEM_WSS_ADDR": "127.0.0.1:0", "TANDEM_LOG_FORMAT": "json",
				"TANDEM_TLS_CERT_FILE": certFile, "TANDEM_TLS_KEY_FILE": keyFile,
			}
			code := run(context.Background(), process{getenv: func(k string) string { return env[k] }, stderr: stderr})
			if code != exitRuntime {
				t.Errorf("exit code %d, want %d", code, exitRuntime)
			}
			all := stderr.all()
			if len(all) == 0 || !strings.HasPrefix(all[len(all)-1], tt.want) {
				t.Errorf("stderr:\n%s\nwant a last line starting %q", strings.Join(all, "\n"), tt.want)
			}
		})
	}
}
