package protocol

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// Authentication (issue 6). Users come from the config or a users file,
// each with a bcrypt hash and permission rules (perm.go); both adapters ask
// the same Authenticator, so STOMP login/passcode and MQTT
// username/password name the same users.
//
// Anonymous clients (no user name) are allowed as AnonymousMode says; by
// default only from loopback, with every permission, as RabbitMQ's guest
// user is: a broker on a network keeps strangers out until users are
// configured, and a newcomer on the same machine needs nothing.

// ErrNotAuthorized refuses a connection or an operation.
var ErrNotAuthorized = errors.New("not authorized")

// ErrBadCredentials refuses a connection whose user name or password is
// wrong.
var ErrBadCredentials = errors.New("bad user name or password")

// AnonymousMode says who may connect without a user name.
type AnonymousMode string

const (
	AnonymousLoopback AnonymousMode = "loopback" // only from loopback addresses (default)
	AnonymousAny      AnonymousMode = "any"      // from anywhere
	AnonymousNone     AnonymousMode = "none"     // never
)

// User is one configured user.
type User struct {
	Name string
	// Hash is the bcrypt hash of the password ("" for a user that can only
	// authenticate with a client certificate).
	Hash  []byte
	Rules Rules
}

// Identity is who a connection is. Its permission checks read the current
// users, so a reload (SIGHUP) applies to open connections too.
type Identity struct {
	a      *Authenticator
	User   string // "" for anonymous
	Client string // client id, for %c
}

// Anonymous reports whether the identity has no user.
func (id *Identity) Anonymous() bool { return id.User == "" }

// rules returns the identity's current rules; ok false means none (a user
// removed since it connected).
func (id *Identity) rules() (Rules, bool, bool) {
	if id.User == "" {
		return Rules{}, true, true // anonymous: everything
	}
	u := id.a.users.Load().byName[id.User]
	if u == nil {
		return Rules{}, false, false
	}
	return u.Rules, false, true
}

// CanPublishTopic reports whether the identity may publish to topic.
func (id *Identity) CanPublishTopic(topic string) bool {
	rs, all, ok := id.rules()
	return id.count(&id.a.deniedPublish, ok && (all || allowTopic(rs.Publish, id.User, id.Client, topic)))
}

// CanSubscribeFilter reports whether the identity may subscribe to filter
// (every topic it can match).
func (id *Identity) CanSubscribeFilter(filter string) bool {
	rs, all, ok := id.rules()
	return id.count(&id.a.deniedSubscribe, ok && (all || allowFilter(rs.Subscribe, id.User, id.Client, filter)))
}

// CanSendQueue reports whether the identity may send to queue.
func (id *Identity) CanSendQueue(queue string) bool {
	rs, all, ok := id.rules()
	return id.count(&id.a.deniedPublish, ok && (all || allowQueue(rs.Publish, id.User, id.Client, queue)))
}

// CanConsumeQueue reports whether the identity may consume from queue.
func (id *Identity) CanConsumeQueue(queue string) bool {
	rs, all, ok := id.rules()
	return id.count(&id.a.deniedSubscribe, ok && (all || allowQueue(rs.Subscribe, id.User, id.Client, queue)))
}

// count counts a refusal in n and returns allowed.
func (id *Identity) count(n *atomic.Uint64, allowed bool) bool {
	if !allowed {
		n.Add(1)
	}
	return allowed
}

// userSet is an immutable set of users, swapped whole on reload.
type userSet struct {
	byName map[string]*User
}

// Authenticator checks credentials. It is safe for concurrent use.
type Authenticator struct {
	users     atomic.Pointer[userSet]
	anonymous atomic.Value // AnonymousMode

	// Refusals, for metrics.
	failed, deniedPublish, deniedSubscribe atomic.Uint64

	// Failed attempts per remote address slow that address down.
	mu       sync.Mutex
	failures map[netip.Addr]*failure
	now      func() time.Time
	// BaseDelay is the delay after the first failures from one address;
	// it doubles with each further failure up to MaxDelay.
	BaseDelay, MaxDelay time.Duration
}

type failure struct {
	n    int
	last time.Time
}

// Bounds of the failure table: at most maxTracked addresses, each
// forgotten failureMemory after its last failure.
const (
	maxTracked    = 10000
	failureMemory = 10 * time.Minute
	freeFailures  = 3 // failures from an address before it is slowed down
)

// NewAuthenticator returns an authenticator with users and an anonymous
// mode. now may be nil (the real clock).
func NewAuthenticator(users []User, anonymous AnonymousMode, now func() time.Time) (*Authenticator, error) {
	if now == nil {
		now = time.Now
	}
	a := &Authenticator{failures: make(map[netip.Addr]*failure), now: now, BaseDelay: 100 * time.Millisecond, MaxDelay: 5 * time.Second}
	if err := a.SetUsers(users, anonymous); err != nil {
		return nil, err
	}
	return a, nil
}

// SetUsers replaces the users and the anonymous mode (a reload).
func (a *Authenticator) SetUsers(users []User, anonymous AnonymousMode) error {
	switch anonymous {
	case AnonymousLoopback, AnonymousAny, AnonymousNone:
	default:
		return fmt.Errorf("anonymous access must be %q, %q or %q, got %q", AnonymousLoopback, AnonymousAny, AnonymousNone, anonymous)
	}
	set := &userSet{byName: make(map[string]*User, len(users))}
	for i := range users {
		u := users[i]
		if u.Name == "" {
			return errors.New("a user without a name")
		}
		if _, dup := set.byName[u.Name]; dup {
			return fmt.Errorf("user %q is configured twice", u.Name)
		}
		if len(u.Hash) > 0 {
			if _, err := bcrypt.Cost(u.Hash); err != nil {
				return fmt.Errorf("user %q: password hash is not a bcrypt hash (make one with `tandem passwd`)", u.Name)
			}
		}
		set.byName[u.Name] = &u
	}
	a.users.Store(set)
	a.anonymous.Store(anonymous)
	return nil
}

// Refused reports the refusals so far: failed logins ("authentication"),
// publishes and sends ("publish") and subscriptions ("subscribe") the
// rules did not allow.
func (a *Authenticator) Refused() map[string]uint64 {
	return map[string]uint64{
		"authentication": a.failed.Load(),
		"publish":        a.deniedPublish.Load(),
		"subscribe":      a.deniedSubscribe.Load(),
	}
}

// Users reports how many users are configured.
func (a *Authenticator) Users() int { return len(a.users.Load().byName) }

// Credentials are what a client presented.
type Credentials struct {
	Remote   net.Addr
	User     string // "" for none
	Password []byte
	// CertUser is the user named by a verified client certificate, "" for
	// none.
	CertUser string
	Client   string // client id, for %c
}

// Authenticate checks credentials. A refusal is ErrBadCredentials or
// ErrNotAuthorized; when the address has failed before, it returns only
// after a delay that grows with its failures, which slows down guessing.
func (a *Authenticator) Authenticate(c Credentials) (*Identity, error) {
	id, err := a.check(c)
	if err == nil {
		return id, nil
	}
	a.failed.Add(1)
	if d := a.fail(c.Remote); d > 0 {
		time.Sleep(d)
	}
	return nil, err
}

func (a *Authenticator) check(c Credentials) (*Identity, error) {
	users := a.users.Load()
	name := c.User
	if c.CertUser != "" {
		if name != "" && name != c.CertUser {
			return nil, fmt.Errorf("%w: user %q is not the certificate's %q", ErrBadCredentials, name, c.CertUser)
		}
		if users.byName[c.CertUser] == nil {
			return nil, fmt.Errorf("%w: certificate user %q is not configured", ErrNotAuthorized, c.CertUser)
		}
		return &Identity{a: a, User: c.CertUser, Client: c.Client}, nil
	}
	if name != "" && len(users.byName) == 0 && a.anonymousAllowed(c.Remote) {
		// No users at all: a user name means nothing yet, and clients that
		// always send one (guest/guest, admin/admin) connect as anonymous,
		// as they do with Mosquitto's allow_anonymous and no password file.
		name = ""
	}
	if name == "" {
		switch a.anonymous.Load().(AnonymousMode) {
		case AnonymousAny:
			return &Identity{a: a, Client: c.Client}, nil
		case AnonymousLoopback:
			if isLoopback(c.Remote) {
				return &Identity{a: a, Client: c.Client}, nil
			}
			return nil, fmt.Errorf("%w: anonymous clients may connect only from loopback; configure users", ErrNotAuthorized)
		}
		return nil, fmt.Errorf("%w: a user name is required", ErrNotAuthorized)
	}
	u := users.byName[name]
	if u == nil || len(u.Hash) == 0 {
		// Spend the time a check would, so that a missing user does not
		// answer faster than a wrong password.
		_ = bcrypt.CompareHashAndPassword(dummyHash(), c.Password)
		return nil, ErrBadCredentials
	}
	if err := bcrypt.CompareHashAndPassword(u.Hash, c.Password); err != nil {
		return nil, ErrBadCredentials
	}
	return &Identity{a: a, User: name, Client: c.Client}, nil
}

// anonymousAllowed reports whether anonymous access covers remote.
func (a *Authenticator) anonymousAllowed(remote net.Addr) bool {
	switch a.anonymous.Load().(AnonymousMode) {
	case AnonymousAny:
		return true
	case AnonymousLoopback:
		return isLoopback(remote)
	}
	return false
}

// dummyHash is compared against for unknown users (made on first use:
// bcrypt is slow on purpose).
var dummyHash = sync.OnceValue(func() []byte {
	h, _ := bcrypt.GenerateFromPassword([]byte("tandem"), bcrypt.DefaultCost)
	return h
})

// fail records a failure from remote and returns how long to delay its
// answer.
func (a *Authenticator) fail(remote net.Addr) time.Duration {
	ip, ok := addrOf(remote)
	if !ok {
		return a.BaseDelay
	}
	now := a.now()
	a.mu.Lock()
	defer a.mu.Unlock()
	f := a.failures[ip]
	if f == nil || now.Sub(f.last) > failureMemory {
		if len(a.failures) >= maxTracked {
			a.evictLocked(now)
		}
		f = &failure{}
		a.failures[ip] = f
	}
	f.n++
	f.last = now
	return a.delayFor(f.n)
}

// delayFor is the delay after n failures from one address.
func (a *Authenticator) delayFor(n int) time.Duration {
	if n <= freeFailures {
		return 0
	}
	d := a.BaseDelay
	for i := freeFailures + 1; i < n && d < a.MaxDelay; i++ {
		d *= 2
	}
	return min(d, a.MaxDelay)
}

// evictLocked forgets old failures, or the oldest half when none is old.
func (a *Authenticator) evictLocked(now time.Time) {
	for ip, f := range a.failures {
		if now.Sub(f.last) > failureMemory {
			delete(a.failures, ip)
		}
	}
	for ip := range a.failures {
		if len(a.failures) < maxTracked/2 {
			break
		}
		delete(a.failures, ip)
	}
}

// Failures reports the failures recorded for remote's address.
func (a *Authenticator) Failures(remote net.Addr) int {
	ip, ok := addrOf(remote)
	if !ok {
		return 0
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if f := a.failures[ip]; f != nil {
		return f.n
	}
	return 0
}

func addrOf(a net.Addr) (netip.Addr, bool) {
	if a == nil {
		return netip.Addr{}, false
	}
	ap, err := netip.ParseAddrPort(a.String())
	if err != nil {
		return netip.Addr{}, false
	}
	return ap.Addr().Unmap(), true
}

func isLoopback(a net.Addr) bool {
	ip, ok := addrOf(a)
	return ok && ip.IsLoopback()
}

// HashPassword returns the bcrypt hash of a password (`tandem passwd`).
func HashPassword(password []byte) ([]byte, error) {
	return bcrypt.GenerateFromPassword(password, bcrypt.DefaultCost)
}
