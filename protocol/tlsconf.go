package protocol

import (
	"crypto/tls"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
)

// CertReloadInterval is how often, at most, a CertReloader looks at its
// files.
const CertReloadInterval = time.Second

// ParseTLSVersion maps "1.2" and "1.3" to their crypto/tls constants.
func ParseTLSVersion(s string) (uint16, error) {
	switch s {
	case "1.2":
		return tls.VersionTLS12, nil
	case "1.3":
		return tls.VersionTLS13, nil
	}
	return 0, fmt.Errorf("tls: version must be 1.2 or 1.3, got %q", s)
}

// CertReloader serves a certificate and key read from two PEM files and
// picks up new files without a restart: during a handshake, at most once
// per CertReloadInterval, it compares the files' modification times and
// sizes with those it loaded, and reloads when they differ. A pair that
// does not load (a half-written file, a key that does not match) is
// logged once and the last good certificate stays in use; the next change
// is tried again.
type CertReloader struct {
	certFile, keyFile string
	log               zerolog.Logger
	now               func() time.Time

	cert atomic.Pointer[tls.Certificate]

	mu      sync.Mutex // guards the fields below
	checked time.Time  // when the files were last looked at
	loaded  certStamp  // the files the current certificate came from
	failed  certStamp  // the files that last failed to load, logged once
	// statFailed is set while the files cannot be read (logged once).
	statFailed bool
}

// certStamp identifies a version of the two files.
type certStamp struct {
	certMod, keyMod   time.Time
	certSize, keySize int64
}

// NewCertReloader loads the certificate and key and returns a reloader
// serving them. now is the clock for the reload interval (nil: time.Now).
func NewCertReloader(certFile, keyFile string, log zerolog.Logger, now func() time.Time) (*CertReloader, error) {
	if now == nil {
		now = time.Now
	}
	r := &CertReloader{certFile: certFile, keyFile: keyFile, log: log, now: now}
	st, err := r.stat()
	if err != nil {
		return nil, err
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("tls: load certificate %s and key %s: %w", certFile, keyFile, err)
	}
	r.cert.Store(&cert)
	r.loaded, r.checked = st, now()
	return r, nil
}

// GetCertificate is tls.Config.GetCertificate: the current certificate,
// reloaded first if its files changed.
func (r *CertReloader) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	r.maybeReload()
	return r.cert.Load(), nil
}

// Certificate returns the certificate in use.
func (r *CertReloader) Certificate() *tls.Certificate {
	return r.cert.Load()
}

func (r *CertReloader) maybeReload() {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.now()
	if now.Sub(r.checked) < CertReloadInterval && !now.Before(r.checked) {
		return
	}
	r.checked = now
	st, err := r.stat()
	if err != nil {
		if !r.statFailed { // report once until the files are back
			r.statFailed = true
			r.log.Error().Err(err).Msg("tls: keeping the current certificate")
		}
		return
	}
	r.statFailed = false
	if st == r.loaded || st == r.failed {
		return
	}
	cert, err := tls.LoadX509KeyPair(r.certFile, r.keyFile)
	if err != nil {
		r.failed = st
		r.log.Error().Err(err).Str("cert_file", r.certFile).Str("key_file", r.keyFile).
			Msg("tls: new certificate files do not load; keeping the current certificate")
		return
	}
	r.cert.Store(&cert)
	r.loaded, r.failed = st, certStamp{}
	r.log.Info().Str("cert_file", r.certFile).Msg("tls: certificate reloaded")
}

func (r *CertReloader) stat() (certStamp, error) {
	cf, err := os.Stat(r.certFile)
	if err != nil {
		return certStamp{}, fmt.Errorf("tls: certificate file: %w", err)
	}
	kf, err := os.Stat(r.keyFile)
	if err != nil {
		return certStamp{}, fmt.Errorf("tls: key file: %w", err)
	}
	return certStamp{certMod: cf.ModTime(), certSize: cf.Size(), keyMod: kf.ModTime(), keySize: kf.Size()}, nil
}

// ServerTLSConfig returns the TLS configuration of a listener serving r's
// certificate with at least minVersion. nextProtos is the ALPN list
// ("http/1.1" for the WebSocket listener, so that browsers do not pick
// HTTP/2; nil for MQTT and STOMP).
func ServerTLSConfig(r *CertReloader, minVersion uint16, nextProtos []string) *tls.Config {
	return &tls.Config{
		GetCertificate: r.GetCertificate,
		MinVersion:     minVersion,
		NextProtos:     nextProtos,
	}
}
