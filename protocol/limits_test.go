package protocol

import (
	"errors"
	"testing"
	"time"
)

func TestConnLimiter(t *testing.T) {
	now := time.Unix(0, 0)
	l := NewConnLimiter(ConnLimits{MaxConnections: 4, MaxPerAddress: 2, RatePerAddress: 1, Burst: 3}, func() time.Time { return now })
	a := tcpAddr("192.0.2.1:1")
	admit := func(addr string, want error) func() {
		t.Helper()
		rel, err := l.Admit(tcpAddr(addr))
		if !errors.Is(err, want) || (err == nil) != (rel != nil) {
			t.Fatalf("Admit(%s) = %v, want %v", addr, err, want)
		}
		return rel
	}
	r1 := admit("192.0.2.1:1", nil)
	r2 := admit("192.0.2.1:2", nil)
	admit("192.0.2.1:3", ErrTooManyFromAddress) // per address
	r1()
	r1() // a second release is a no-op
	// The third connection of the burst from .1 is allowed; the fourth
	// comes too soon.
	r3 := admit("192.0.2.1:4", nil)
	r3()
	admit("192.0.2.1:5", ErrConnectionRateExceed)
	now = now.Add(time.Second) // one token back
	r4 := admit("192.0.2.1:6", nil)
	r5 := admit("192.0.2.2:1", nil)
	r6 := admit("192.0.2.3:1", nil)
	admit("192.0.2.4:1", ErrTooManyConnections) // total: r2, r4, r5, r6
	if n := l.Open(); n != 4 {
		t.Fatalf("Open() = %d, want 4", n)
	}
	for _, r := range []func(){r2, r4, r5, r6} {
		r()
	}
	if n := l.Open(); n != 0 {
		t.Fatalf("Open() = %d after every release", n)
	}
	if got := l.Refused(); got["total"] != 1 || got["address"] != 1 || got["rate"] != 1 {
		t.Fatalf("Refused() = %v, want one of each", got)
	}
	// Loopback clients count toward the total only.
	for i := range 4 {
		if _, err := l.Admit(tcpAddr("127.0.0.1:" + string(rune('1'+i)))); err != nil {
			t.Fatalf("loopback connection %d: %v", i, err)
		}
	}
	if _, err := l.Admit(tcpAddr("127.0.0.1:9")); !errors.Is(err, ErrTooManyConnections) {
		t.Fatalf("loopback over the total: %v", err)
	}
	// A nil limiter admits everything.
	var nl *ConnLimiter
	if rel, err := nl.Admit(a); err != nil || rel == nil {
		t.Fatal("nil limiter refused")
	}
}
