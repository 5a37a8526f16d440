package main

import (
	"context"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/eclipse/paho.golang/paho"
	gostomp "github.com/go-stomp/stomp/v3"
	"golang.org/x/crypto/bcrypt"
)

// `tandem passwd` reads a password from stdin and prints a bcrypt hash of
// it.
func TestPasswd(t *testing.T) {
	cmd := exec.Command(binary, "passwd")
	cmd.Stdin = strings.NewReader("s3cret\n")
	out, err := cmd.Output()
	if err != nil {
		t.Fatal(err)
	}
	hash := strings.TrimSpace(string(out))
	if err := bcrypt.CompareHashAndPassword([]byte(hash), []byte("s3cret")); err != nil {
		t.Fatalf("printed %q: %v", hash, err)
	}
}

// Users from the config and a users file log in over STOMP and MQTT with
// the same names and passwords; anonymous access "none" refuses a client
// without a login; on SIGHUP the users file is re-read, and a user added
// to it can log in while open connections stay.
func TestUsersAndReload(t *testing.T) {
	hash := func(p string) string {
		h, err := bcrypt.GenerateFromPassword([]byte(p), bcrypt.MinCost)
		if err != nil {
			t.Fatal(err)
		}
		return string(h)
	}
	dir := t.TempDir()
	usersFile := filepath.Join(dir, "users.yaml")
	if err := os.WriteFile(usersFile, []byte("users: []\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	config := filepath.Join(dir, "tandem.yaml")
	err := os.WriteFile(config, []byte(`auth:
  anonymous: none
  users_file: `+usersFile+`
  users:
    - name: alice
      password_hash: "`+hash("pw")+`"
      publish: ["sensors/%u/#"]
      subscribe: ["sensors/#"]
`), 0o600)
	if err != nil {
		t.Fatal(err)
	}
	p := start(t, []string{"--data", filepath.Join(dir, "data"), "--config", config, "--log-format", "json"}, "TANDEM_ADMIN_ADDR=127.0.0.1:0")
	rec := p.stderr.waitFor(t, "ready", p.exited)
	stompAddr, _ := rec["stomp"].(string)
	mqttAddr, _ := rec["mqtt"].(string)

	stompLogin := func(user, pass string) (*gostomp.Conn, error) {
		opts := []func(*gostomp.Conn) error{gostomp.ConnOpt.HeartBeat(0, 0)}
		if user != "" {
			opts = append(opts, gostomp.ConnOpt.Login(user, pass))
		}
		return gostomp.Dial("tcp", stompAddr, opts...)
	}
	alice, err := stompLogin("alice", "pw")
	if err != nil {
		t.Fatalf("alice over STOMP: %v", err)
	}
	defer alice.MustDisconnect()
	if _, err := stompLogin("", ""); err == nil {
		t.Fatal("an anonymous STOMP client was let in with anonymous: none")
	}
	if _, err := stompLogin("bob", "pw2"); err == nil {
		t.Fatal("bob logged in before being added")
	}

	// The same user over MQTT 5: publishing to her own topic is allowed,
	// to another's refused with 0x87.
	m := dialMQTT5Login(t, mqttAddr, "dev", "alice", "pw")
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	for topic, want := range map[string]byte{"sensors/alice/t": 0, "sensors/bob/t": 0x87} {
		r, err := m.Publish(ctx, &paho.Publish{Topic: topic, QoS: 1, Payload: []byte("x")})
		if r == nil || r.ReasonCode != want {
			t.Fatalf("publish %s: %+v %v, want reason %#x", topic, r, err, want)
		}
	}

	if err := os.WriteFile(usersFile, []byte(`users:
  - name: bob
    password_hash: "`+hash("pw2")+`"
`), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	p.stderr.waitFor(t, "users reloaded", p.exited)
	bob, err := stompLogin("bob", "pw2")
	if err != nil {
		t.Fatalf("bob after the reload: %v", err)
	}
	_ = bob.Disconnect()
	// alice's connection is still open.
	if err := alice.Send("/topic/sensors.alice.t", "", []byte("still here"), gostomp.SendOpt.Receipt); err != nil {
		t.Fatalf("alice after the reload: %v", err)
	}
	var se gostomp.Error
	if _, err := stompLogin("alice", "wrong"); !errors.As(err, &se) {
		t.Fatalf("wrong password: %v", err)
	}
}

// dialMQTT5Login connects an MQTT 5 client with a user name and password.
func dialMQTT5Login(t *testing.T, addr, id, user, pass string) *paho.Client {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c := paho.NewClient(paho.ClientConfig{ClientID: id, Conn: nc})
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	ack, err := c.Connect(ctx, &paho.Connect{ClientID: id, CleanStart: true, KeepAlive: 30,
		UsernameFlag: true, Username: user, PasswordFlag: true, Password: []byte(pass)})
	if err != nil {
		t.Fatalf("MQTT connect as %s: %+v %v", user, ack, err)
	}
	t.Cleanup(func() { _ = c.Disconnect(&paho.Disconnect{}) })
	return c
}
