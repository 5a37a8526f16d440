package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	gostomp "github.com/go-stomp/stomp/v3"
)

// clientCert makes a CA and a client certificate it signs for user; it
// writes the CA to caFile and returns the client's certificate and key.
func clientCert(t *testing.T, caFile, user string) tls.Certificate {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test client CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true, IsCA: true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: user},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// With tls.client_ca, a client certificate signed by the CA logs in as the
// user its common name names, with that user's permissions and no
// password; without one, a client must log in as usual.
func TestClientCertificateNamesUser(t *testing.T) {
	dir := t.TempDir()
	caFile, config := filepath.Join(dir, "ca.pem"), filepath.Join(dir, "tandem.yaml")
	cert := clientCert(t, caFile, "device7")
	err := os.WriteFile(config, []byte(`tls:
  client_ca: `+caFile+`
auth:
  anonymous: none
  users:
    - name: device7
      publish: ["devices/%u/#"]
`), 0o600)
	if err != nil {
		t.Fatal(err)
	}
	b, tlsCfg, _, _ := tlsBroker(t, nil, "--config", config)
	withCert := tlsCfg.Clone()
	withCert.Certificates = []tls.Certificate{cert}

	sc, err := gostomp.Connect(dialTLS(t, b.addr(t, "stomp_tls"), withCert), gostomp.ConnOpt.HeartBeat(0, 0), gostomp.ConnOpt.Host("/"))
	if err != nil {
		t.Fatalf("STOMP with a client certificate: %v", err)
	}
	if err := sc.Send("/topic/devices.device7.temp", "", []byte("21"), gostomp.SendOpt.Receipt); err != nil {
		t.Fatalf("publishing as device7: %v", err)
	}
	err = sc.Send("/topic/devices.other.temp", "", []byte("21"), gostomp.SendOpt.Receipt)
	if err == nil || !strings.Contains(err.Error(), "not authorized") {
		t.Fatalf("publishing outside device7's rules: %v, want not authorized", err)
	}
	if _, err := gostomp.Connect(dialTLS(t, b.addr(t, "stomp_tls"), tlsCfg), gostomp.ConnOpt.HeartBeat(0, 0), gostomp.ConnOpt.Host("/")); err == nil {
		t.Fatal("a client without certificate or login was let in")
	}
}

// The same over wss://: the WebSocket TLS listener asks for client
// certificates too, and a verified one names the user.
func TestClientCertificateOverWSS(t *testing.T) {
	dir := t.TempDir()
	caFile, config := filepath.Join(dir, "ca.pem"), filepath.Join(dir, "tandem.yaml")
	cert := clientCert(t, caFile, "device7")
	err := os.WriteFile(config, []byte("tls:\n  client_ca: "+caFile+"\nauth:\n  anonymous: none\n  users:\n    - name: device7\n      publish: [\"devices/%u/#\"]\n"), 0o600)
	if err != nil {
		t.Fatal(err)
	}
	b, tlsCfg, _, _ := tlsBroker(t, nil, "--config", config)
	withCert := tlsCfg.Clone()
	withCert.Certificates = []tls.Certificate{cert}
	httpc := &http.Client{Transport: &http.Transport{TLSClientConfig: withCert}}
	sc := stompOverWS(t, "wss://"+b.addr(t, "websocket_tls")+"/stomp", &websocket.DialOptions{HTTPClient: httpc, Subprotocols: []string{"v12.stomp"}})
	if err := sc.Send("/topic/devices.device7.temp", "", []byte("21"), gostomp.SendOpt.Receipt); err != nil {
		t.Fatalf("publishing as device7 over wss: %v", err)
	}
}
