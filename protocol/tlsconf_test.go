package protocol

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

// testCert is a self-signed certificate for 127.0.0.1 and its key, PEM
// encoded.
type testCert struct {
	certPEM, keyPEM []byte
	serial          int64
}

func newTestCert(t *testing.T, serial int64) testCert {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial),
		Subject:      pkix.Name{CommonName: "tandem test"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return testCert{
		certPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		keyPEM:  pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}),
		serial:  serial,
	}
}

// write writes the pair to certFile and keyFile with modification time
// mod, so that a change is seen whatever the file system's time
// resolution.
func (c testCert) write(t *testing.T, certFile, keyFile string, mod time.Time) {
	t.Helper()
	for _, f := range []struct {
		name string
		data []byte
	}{{certFile, c.certPEM}, {keyFile, c.keyPEM}} {
		if err := os.WriteFile(f.name, f.data, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(f.name, mod, mod); err != nil {
			t.Fatal(err)
		}
	}
}

// fakeClock is a clock that moves only when told.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// syncBuffer is a log sink safe for concurrent writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// startTLSServer serves TLS with cfg on 127.0.0.1: each connection does
// its handshake and is closed.
func startTLSServer(t *testing.T, cfg *tls.Config) string {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_ = c.SetDeadline(time.Now().Add(wsWait))
			_ = c.(*tls.Conn).Handshake() // a refused client fails it
			c.Close()
		}
	}()
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	return ln.Addr().String()
}

// servedSerial connects and returns the serial number of the server's
// certificate.
func servedSerial(t *testing.T, addr string) int64 {
	t.Helper()
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: wsWait}, "tcp", addr, &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.ConnectionState().PeerCertificates[0].SerialNumber.Int64()
}

func TestCertReloader(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	mod := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	newTestCert(t, 1).write(t, certFile, keyFile, mod)

	clock := &fakeClock{t: time.Unix(1000, 0)}
	var logs syncBuffer
	r, err := NewCertReloader(certFile, keyFile, zerolog.New(&logs), clock.now)
	if err != nil {
		t.Fatal(err)
	}
	addr := startTLSServer(t, ServerTLSConfig(r, tls.VersionTLS12, nil))
	if got := servedSerial(t, addr); got != 1 {
		t.Fatalf("serial %d, want 1", got)
	}

	// New files: not looked at before the interval has passed, then served.
	newTestCert(t, 2).write(t, certFile, keyFile, mod.Add(time.Minute))
	clock.advance(CertReloadInterval / 2)
	if got := servedSerial(t, addr); got != 1 {
		t.Fatalf("serial %d within the reload interval, want 1", got)
	}
	clock.advance(CertReloadInterval / 2)
	if got := servedSerial(t, addr); got != 2 {
		t.Fatalf("serial %d after the reload interval, want 2", got)
	}
	if !strings.Contains(logs.String(), "certificate reloaded") {
		t.Errorf("reload not logged: %s", logs.String())
	}

	// Bad files: the last good certificate stays, and the error is logged
	// once however many handshakes see it.
	if err := os.WriteFile(certFile, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(certFile, mod.Add(2*time.Minute), mod.Add(2*time.Minute)); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		clock.advance(CertReloadInterval)
		if got := servedSerial(t, addr); got != 2 {
			t.Fatalf("serial %d with bad files, want 2 (the last good one)", got)
		}
	}
	if n := strings.Count(logs.String(), "do not load"); n != 1 {
		t.Errorf("bad files logged %d times, want once: %s", n, logs.String())
	}

	// Missing files: the same.
	if err := os.Remove(keyFile); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		clock.advance(CertReloadInterval)
		if got := servedSerial(t, addr); got != 2 {
			t.Fatalf("serial %d with no key file, want 2", got)
		}
	}
	if n := strings.Count(logs.String(), "keeping the current certificate"); n != 2 {
		t.Errorf("want one line for the bad files and one for the missing one: %s", logs.String())
	}

	// Good files again.
	newTestCert(t, 3).write(t, certFile, keyFile, mod.Add(3*time.Minute))
	clock.advance(CertReloadInterval)
	if got := servedSerial(t, addr); got != 3 {
		t.Fatalf("serial %d after fixing the files, want 3", got)
	}
}

func TestCertReloaderStartErrors(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	log := zerolog.New(zerolog.NewTestWriter(t))
	if _, err := NewCertReloader(certFile, keyFile, log, nil); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing files: %v", err)
	}
	a, b := newTestCert(t, 1), newTestCert(t, 2)
	mod := time.Now()
	a.write(t, certFile, keyFile, mod)
	if err := os.WriteFile(keyFile, b.keyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := NewCertReloader(certFile, keyFile, log, nil); err == nil || !strings.Contains(err.Error(), "load certificate") {
		t.Errorf("mismatched key: %v", err)
	}
}

func TestTLSMinVersion(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	newTestCert(t, 1).write(t, certFile, keyFile, time.Now())
	r, err := NewCertReloader(certFile, keyFile, zerolog.New(zerolog.NewTestWriter(t)), nil)
	if err != nil {
		t.Fatal(err)
	}
	v13, err := ParseTLSVersion("1.3")
	if err != nil {
		t.Fatal(err)
	}
	addr := startTLSServer(t, ServerTLSConfig(r, v13, nil))
	c, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true, MaxVersion: tls.VersionTLS12})
	if err == nil {
		c.Close()
		t.Fatal("a TLS 1.2 client was accepted with min_version 1.3")
	}
	c, err = tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	if v := c.ConnectionState().Version; v != tls.VersionTLS13 {
		t.Errorf("version %x", v)
	}
	c.Close()
	for _, s := range []string{"1.0", "1.1", "", "tls1.2"} {
		if _, err := ParseTLSVersion(s); err == nil {
			t.Errorf("ParseTLSVersion(%q) = nil error", s)
		}
	}
}
