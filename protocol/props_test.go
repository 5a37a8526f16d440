package protocol

import (
	"strconv"
	"testing"
	"time"

	"github.com/tandem-mq/tandem/engine"
)

func TestApplyTimeProps(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	m := &engine.Message{Props: []engine.Property{
		{Key: PropExpiration, Value: "5000"},
		{Key: PropExpires, Value: strconv.FormatInt(now.Add(3*time.Second).UnixMilli(), 10)},
		{Key: PropDelayAMQ, Value: "2000"},
	}}
	ApplyTimeProps(m, now)
	if want := now.Add(3 * time.Second).UnixNano(); m.ExpiresAt != want {
		t.Errorf("ExpiresAt %d, want the earlier expiry %d", m.ExpiresAt, want)
	}
	if want := now.Add(2 * time.Second).UnixNano(); m.NotBefore != want {
		t.Errorf("NotBefore %d, want %d", m.NotBefore, want)
	}
	bad := &engine.Message{Props: []engine.Property{{Key: PropExpiration, Value: "soon"}, {Key: PropDelayRabbit, Value: "-5"}}}
	ApplyTimeProps(bad, now)
	if bad.ExpiresAt != 0 || bad.NotBefore != 0 {
		t.Errorf("unparsable properties changed the message: %+v", bad)
	}
}
