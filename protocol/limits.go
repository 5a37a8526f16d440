package protocol

import (
	"errors"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// Connection limits (issue 6): connections in total and per address, and
// a connection rate per address. Both adapters ask the same ConnLimiter
// when a client connects (CONNECT), so each refusal can be a protocol
// answer (MQTT CONNACK, STOMP ERROR) rather than a bare close, and
// WebSocket connections count like TCP ones.

// Refusals, each with its own error so adapters can pick a code.
var (
	ErrTooManyConnections   = errors.New("too many connections")
	ErrTooManyFromAddress   = errors.New("too many connections from this address")
	ErrConnectionRateExceed = errors.New("connection rate from this address exceeded")
)

// ConnLimits configures a ConnLimiter. Zero values mean no limit for
// that field; the binary always sets finite ones. The per-address limits
// do not apply to loopback addresses (clients on the broker's machine,
// as trusted as anonymous access from loopback); the total does.
type ConnLimits struct {
	MaxConnections int
	MaxPerAddress  int
	// RatePerAddress is how many connections per second one address may
	// open on average, with bursts up to Burst (at least 1).
	RatePerAddress float64
	Burst          int
}

// ConnLimiter counts open connections. Safe for concurrent use.
type ConnLimiter struct {
	lim ConnLimits
	now func() time.Time

	mu     sync.Mutex
	total  int
	byAddr map[netip.Addr]*addrState

	refusedTotal, refusedAddr, refusedRate atomic.Uint64
}

type addrState struct {
	open   int
	tokens float64
	at     time.Time // when tokens was last brought up to date
}

// maxAddrs bounds the per-address table; addresses with no open
// connection and a full bucket are dropped first.
const maxAddrs = 100000

// NewConnLimiter returns a limiter; now may be nil (the real clock).
func NewConnLimiter(lim ConnLimits, now func() time.Time) *ConnLimiter {
	if now == nil {
		now = time.Now
	}
	if lim.Burst < 1 {
		lim.Burst = 1
	}
	return &ConnLimiter{lim: lim, now: now, byAddr: make(map[netip.Addr]*addrState)}
}

// Admit takes a connection slot for remote. On success the caller must
// call release exactly once when the connection ends.
func (l *ConnLimiter) Admit(remote net.Addr) (release func(), err error) {
	if l == nil {
		return func() {}, nil
	}
	ip, ok := addrOf(remote)
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.lim.MaxConnections > 0 && l.total >= l.lim.MaxConnections {
		l.refusedTotal.Add(1)
		return nil, ErrTooManyConnections
	}
	var st *addrState
	if ok && !ip.IsLoopback() {
		st = l.byAddr[ip]
		if st == nil {
			if len(l.byAddr) >= maxAddrs {
				l.sweepLocked(now)
			}
			st = &addrState{tokens: float64(l.lim.Burst), at: now}
			l.byAddr[ip] = st
		}
		if l.lim.MaxPerAddress > 0 && st.open >= l.lim.MaxPerAddress {
			l.refusedAddr.Add(1)
			return nil, ErrTooManyFromAddress
		}
		if l.lim.RatePerAddress > 0 {
			st.refill(now, l.lim)
			if st.tokens < 1 {
				l.refusedRate.Add(1)
				return nil, ErrConnectionRateExceed
			}
			st.tokens--
		}
		st.open++
	}
	l.total++
	var once sync.Once
	return func() {
		once.Do(func() {
			l.mu.Lock()
			defer l.mu.Unlock()
			l.total--
			if st != nil {
				st.open--
			}
		})
	}, nil
}

func (st *addrState) refill(now time.Time, lim ConnLimits) {
	if d := now.Sub(st.at); d > 0 {
		st.tokens = min(float64(lim.Burst), st.tokens+d.Seconds()*lim.RatePerAddress)
		st.at = now
	}
}

// sweepLocked drops idle addresses whose bucket is full again.
func (l *ConnLimiter) sweepLocked(now time.Time) {
	for ip, st := range l.byAddr {
		if st.open > 0 {
			continue
		}
		st.refill(now, l.lim)
		if l.lim.RatePerAddress == 0 || st.tokens >= float64(l.lim.Burst) {
			delete(l.byAddr, ip)
		}
	}
}

// Open reports the open connections.
func (l *ConnLimiter) Open() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.total
}

// Refused reports the refusals so far by reason: "total", "address",
// "rate".
func (l *ConnLimiter) Refused() map[string]uint64 {
	return map[string]uint64{
		"total":   l.refusedTotal.Load(),
		"address": l.refusedAddr.Load(),
		"rate":    l.refusedRate.Load(),
	}
}
