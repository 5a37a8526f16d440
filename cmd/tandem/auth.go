package main

import (
	"bufio"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/rs/zerolog"
	"github.com/tandem-mq/tandem/protocol"
	"go.yaml.in/yaml/v3"
)

// AuthConfig says who may connect and what each user may do; the same for
// MQTT, STOMP and both WebSocket transports (protocol/auth.go).
type AuthConfig struct {
	// Anonymous says who may connect without a user name: "loopback"
	// (only from 127.0.0.1 / ::1), "any" or "none". Anonymous clients have
	// every permission. While no users are configured, a user name from
	// where anonymous clients may connect is ignored.
	Anonymous string `yaml:"anonymous"`
	// Users are the configured users.
	Users []UserConfig `yaml:"users"`
	// UsersFile is a YAML file with more users, as a list under "users:".
	UsersFile string `yaml:"users_file"`
}

// UserConfig is one user: a bcrypt hash of the password (made with
// `tandem passwd`; empty for a user that logs in only with a TLS client
// certificate) and permission rules over engine addresses (topic filters
// in MQTT or STOMP form, "queue:PATTERN" or "/queue/PATTERN"; %u is the
// user name, %c the client id).
type UserConfig struct {
	Name         string   `yaml:"name"`
	PasswordHash string   `yaml:"password_hash"`
	Publish      []string `yaml:"publish"`
	Subscribe    []string `yaml:"subscribe"`
}

const defaultAnonymous = string(protocol.AnonymousLoopback)

// users reads the configured users (and the users file) into the form the
// authenticator takes.
func (a AuthConfig) users() ([]protocol.User, error) {
	all := append([]UserConfig(nil), a.Users...)
	if a.UsersFile != "" {
		more, err := readUsersFile(a.UsersFile)
		if err != nil {
			return nil, err
		}
		all = append(all, more...)
	}
	out := make([]protocol.User, 0, len(all))
	for i, u := range all {
		if u.Name == "" {
			return nil, fmt.Errorf("auth.users[%d]: name must not be empty", i)
		}
		rules, err := protocol.ParseRules(u.Publish, u.Subscribe)
		if err != nil {
			return nil, fmt.Errorf("user %q: %v", u.Name, err)
		}
		out = append(out, protocol.User{Name: u.Name, Hash: []byte(u.PasswordHash), Rules: rules})
	}
	return out, nil
}

// maxUsersFile bounds the users file.
const maxUsersFile = 16 << 20

func readUsersFile(name string) ([]UserConfig, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, fmt.Errorf("auth.users_file: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxUsersFile+1))
	if err != nil {
		return nil, fmt.Errorf("auth.users_file: %w", err)
	}
	if len(data) > maxUsersFile {
		return nil, fmt.Errorf("auth.users_file %s: larger than %d bytes", name, maxUsersFile)
	}
	var doc struct {
		Users []UserConfig `yaml:"users"`
	}
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("auth.users_file %s: %v", name, err)
	}
	return doc.Users, nil
}

// validate checks the users as the authenticator will take them.
func (a AuthConfig) validate() error {
	users, err := a.users()
	if err != nil {
		return err
	}
	if _, err := protocol.NewAuthenticator(users, protocol.AnonymousMode(a.Anonymous), nil); err != nil {
		return fmt.Errorf("auth: %v", err)
	}
	return nil
}

// newAuthenticator builds the authenticator of cfg.
func newAuthenticator(cfg AuthConfig) (*protocol.Authenticator, error) {
	users, err := cfg.users()
	if err != nil {
		return nil, err
	}
	a, err := protocol.NewAuthenticator(users, protocol.AnonymousMode(cfg.Anonymous), nil)
	if err != nil {
		return nil, fmt.Errorf("auth: %v", err)
	}
	return a, nil
}

// logAccess says in the log who may connect.
func logAccess(a *protocol.Authenticator, cfg AuthConfig, log zerolog.Logger) {
	ev := log.Info().Int("users", a.Users()).Str("anonymous", cfg.Anonymous)
	if a.Users() == 0 && cfg.Anonymous == string(protocol.AnonymousLoopback) {
		ev.Msg("no users configured: only clients on this machine may connect; " +
			"make a password hash with `tandem passwd` and add users under auth.users to let others in")
		return
	}
	ev.Msg("authentication")
}

// watchReloads re-reads the users on each signal of hup (SIGHUP) until ctx
// ends: load returns the configuration as the files now say. A bad
// configuration is logged and the users in force stay.
func watchReloads(ctx context.Context, hup <-chan os.Signal, a *protocol.Authenticator, load func() (Config, error), log zerolog.Logger) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
		}
		cfg, err := load()
		var users []protocol.User
		if err == nil {
			users, err = cfg.Auth.users()
		}
		if err == nil {
			err = a.SetUsers(users, protocol.AnonymousMode(cfg.Auth.Anonymous))
		}
		if err != nil {
			log.Error().Err(err).Msg("reload on SIGHUP failed: the users in force stay")
			continue
		}
		log.Info().Int("users", a.Users()).Str("anonymous", cfg.Auth.Anonymous).Msg("users reloaded")
	}
}

// clientCAs reads the CA certificates that sign client certificates.
func clientCAs(file string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("tls.client_ca: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("tls.client_ca %s: no PEM certificate in it", file)
	}
	return pool, nil
}

// passwd is `tandem passwd`: it reads a password (one line) from stdin and
// prints its bcrypt hash, for auth.users[].password_hash.
func passwd(stdin io.Reader, stdout, stderr io.Writer) int {
	_, _ = fmt.Fprintln(stderr, "password (one line, then Enter):")
	line, err := bufio.NewReader(io.LimitReader(stdin, 1<<10)).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		report(stderr, err)
		return exitRuntime
	}
	pw := strings.TrimRight(line, "\r\n")
	if pw == "" {
		report(stderr, errors.New("empty password"))
		return exitConfig
	}
	hash, err := protocol.HashPassword([]byte(pw))
	if err != nil { // longer than bcrypt's 72 bytes
		report(stderr, err)
		return exitConfig
	}
	_, _ = fmt.Fprintln(stdout, string(hash))
	return exitOK
}
