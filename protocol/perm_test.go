package protocol

import (
	"errors"
	"net"
	"testing"
	"time"
)

func TestFilterCovers(t *testing.T) {
	for _, tc := range []struct {
		rule, filter string
		want         bool
	}{
		{"#", "a/b", true},
		{"#", "#", true},
		{"#", "$SYS/x", false}, // a leading wildcard never reaches '$' topics
		{"$SYS/#", "$SYS/x", true},
		{"a/#", "a", true},
		{"a/#", "a/+/c", true},
		{"a/#", "b/#", false},
		{"a/+", "a/b", true},
		{"a/+", "a/+", true},
		{"a/+", "a/#", false},
		{"a/+", "a/b/c", false},
		{"a/+/c", "a/+/c", true},
		{"a/b", "a/+", false},
		{"a/b", "a/b", true},
		{"a/b", "a", false},
		{"+/b", "x/b", true},
		{"+", "+", true},
		{"+", "$x", false},
	} {
		if got := FilterCovers(tc.rule, tc.filter); got != tc.want {
			t.Errorf("FilterCovers(%q, %q) = %v, want %v", tc.rule, tc.filter, got, tc.want)
		}
	}
}

func TestParseRule(t *testing.T) {
	for in, want := range map[string]string{
		"sensors/%u/#":       "sensors/%u/#",
		"topic:a/+":          "a/+",
		"/topic/sensors.*.#": "sensors/+/#",
		"/topic/v1/2.temp":   "v1.2/temp",
		"queue:jobs.*":       "queue:jobs.*",
		"/queue/%u.inbox":    "queue:%u.inbox",
	} {
		r, err := ParseRule(in)
		if err != nil || r.String() != want {
			t.Errorf("ParseRule(%q) = %q, %v; want %q", in, r, err, want)
		}
	}
	for _, bad := range []string{"", "a/#/b", "queue:", "queue:[", "a+"} {
		if _, err := ParseRule(bad); err == nil {
			t.Errorf("ParseRule(%q) accepted", bad)
		}
	}
}

// Rules with %u and %c, for publish and subscribe, topics and queues; a
// user name with a wildcard in it gets nothing from %u rules.
func TestIdentityPermissions(t *testing.T) {
	rules, err := ParseRules(
		[]string{"sensors/%u/#", "queue:jobs", "queue:%c.*"},
		[]string{"sensors/#", "cmd/%u", "queue:jobs"},
	)
	if err != nil {
		t.Fatal(err)
	}
	a, err := NewAuthenticator([]User{{Name: "alice", Rules: rules}, {Name: "x#", Rules: rules}}, AnonymousNone, nil)
	if err != nil {
		t.Fatal(err)
	}
	alice := &Identity{a: a, User: "alice", Client: "dev1"}
	checks := []struct {
		what string
		got  bool
		want bool
	}{
		{"publish own topic", alice.CanPublishTopic("sensors/alice/temp"), true},
		{"publish other's topic", alice.CanPublishTopic("sensors/bob/temp"), false},
		{"subscribe all sensors", alice.CanSubscribeFilter("sensors/+/temp"), true},
		{"subscribe everything", alice.CanSubscribeFilter("#"), false},
		{"subscribe own commands", alice.CanSubscribeFilter("cmd/alice"), true},
		{"subscribe other's commands", alice.CanSubscribeFilter("cmd/+"), false},
		{"send jobs", alice.CanSendQueue("jobs"), true},
		{"send by client id", alice.CanSendQueue("dev1.replies"), true},
		{"send other queue", alice.CanSendQueue("dev2.replies"), false},
		{"consume jobs", alice.CanConsumeQueue("jobs"), true},
		{"consume by client id (publish rule only)", alice.CanConsumeQueue("dev1.replies"), false},
	}
	odd := &Identity{a: a, User: "x#", Client: "c"}
	checks = append(checks, struct {
		what string
		got  bool
		want bool
	}{"wildcard user name", odd.CanPublishTopic("sensors/x/y"), false})
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s: %v, want %v", c.what, c.got, c.want)
		}
	}
	// A reload applies to the identity at once; a removed user loses all.
	if err := a.SetUsers(nil, AnonymousNone); err != nil {
		t.Fatal(err)
	}
	if alice.CanPublishTopic("sensors/alice/temp") {
		t.Error("a removed user may still publish")
	}
}

func tcpAddr(s string) net.Addr {
	a, err := net.ResolveTCPAddr("tcp", s)
	if err != nil {
		panic(err)
	}
	return a
}

func TestAuthenticate(t *testing.T) {
	hash, err := HashPassword([]byte("s3cret"))
	if err != nil {
		t.Fatal(err)
	}
	a, err := NewAuthenticator([]User{{Name: "alice", Hash: hash}, {Name: "device7"}}, AnonymousLoopback, nil)
	if err != nil {
		t.Fatal(err)
	}
	a.BaseDelay = time.Millisecond
	local, remote := tcpAddr("127.0.0.1:5000"), tcpAddr("192.0.2.7:5000")
	for _, tc := range []struct {
		name string
		c    Credentials
		user string
		err  error
	}{
		{"password", Credentials{Remote: remote, User: "alice", Password: []byte("s3cret")}, "alice", nil},
		{"wrong password", Credentials{Remote: remote, User: "alice", Password: []byte("guess")}, "", ErrBadCredentials},
		{"unknown user", Credentials{Remote: remote, User: "mallory", Password: []byte("x")}, "", ErrBadCredentials},
		{"certificate-only user with a password", Credentials{Remote: remote, User: "device7", Password: []byte("")}, "", ErrBadCredentials},
		{"anonymous from loopback", Credentials{Remote: local}, "", nil},
		{"anonymous from the network", Credentials{Remote: remote}, "", ErrNotAuthorized},
		{"certificate", Credentials{Remote: remote, CertUser: "device7"}, "device7", nil},
		{"certificate of an unknown user", Credentials{Remote: remote, CertUser: "nobody"}, "", ErrNotAuthorized},
		{"certificate and another user name", Credentials{Remote: remote, User: "alice", Password: []byte("s3cret"), CertUser: "device7"}, "", ErrBadCredentials},
	} {
		id, err := a.Authenticate(tc.c)
		switch {
		case tc.err != nil && !errorsIs(err, tc.err):
			t.Errorf("%s: err %v, want %v", tc.name, err, tc.err)
		case tc.err == nil && (err != nil || id.User != tc.user):
			t.Errorf("%s: %+v, %v; want user %q", tc.name, id, err, tc.user)
		}
	}
	// With no users at all, a user name from loopback means nothing yet:
	// the client is anonymous; from the network it is refused.
	if err := a.SetUsers(nil, AnonymousLoopback); err != nil {
		t.Fatal(err)
	}
	if id, err := a.Authenticate(Credentials{Remote: local, User: "guest", Password: []byte("guest")}); err != nil || !id.Anonymous() {
		t.Errorf("guest/guest from loopback without users: %+v, %v", id, err)
	}
	if _, err := a.Authenticate(Credentials{Remote: remote, User: "guest", Password: []byte("guest")}); err == nil {
		t.Error("guest/guest from the network without users was let in")
	}
	if err := a.SetUsers(nil, AnonymousNone); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Authenticate(Credentials{Remote: local}); !errorsIs(err, ErrNotAuthorized) {
		t.Errorf("anonymous with mode none: %v", err)
	}
}

// Failures from one address slow it down: none for the first few, then a
// delay doubling up to the maximum; other addresses are not affected.
func TestFailureDelay(t *testing.T) {
	now := time.Unix(1000, 0)
	a, err := NewAuthenticator(nil, AnonymousNone, func() time.Time { return now })
	if err != nil {
		t.Fatal(err)
	}
	a.BaseDelay, a.MaxDelay = 100*time.Millisecond, 400*time.Millisecond
	ip := tcpAddr("192.0.2.1:1")
	var got []time.Duration
	for range 7 {
		got = append(got, a.fail(ip))
	}
	want := []time.Duration{0, 0, 0, 100 * time.Millisecond, 200 * time.Millisecond, 400 * time.Millisecond, 400 * time.Millisecond}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("delays %v, want %v", got, want)
		}
	}
	if d := a.fail(tcpAddr("192.0.2.2:1")); d != 0 {
		t.Errorf("another address delayed %v", d)
	}
	now = now.Add(failureMemory + time.Second)
	if d := a.fail(ip); d != 0 {
		t.Errorf("after %v, delay %v: failures not forgotten", failureMemory, d)
	}
}

func errorsIs(err, target error) bool { return errors.Is(err, target) }
