package protocol

import (
	"errors"
	"testing"
)

func TestParseSTOMP(t *testing.T) {
	cases := []struct {
		dest   string
		filter bool
		want   Destination
		err    bool
	}{
		{"/topic/a.b.c", false, Destination{Topic, "a/b/c"}, false},
		{"/topic/v1/2.temp", false, Destination{Topic, "v1.2/temp"}, false},
		{"/topic/a.*.#", true, Destination{Topic, "a/+/#"}, false},
		{"/topic/a.*", false, Destination{Topic, "a/*"}, false}, // a literal level when publishing
		{"/topic/a.#", false, Destination{}, true},
		{"/topic/a.+", true, Destination{}, true},
		{"/topic/a#.b", true, Destination{}, true},
		{"/topic/", false, Destination{}, true},
		{"/queue/jobs", false, Destination{Queue, "jobs"}, false},
		{"/queue/jobs.dlq", true, Destination{Queue, "jobs.dlq"}, false},
		{"/queue/", false, Destination{}, true},
		{"/temp-queue/reply", false, Destination{TempQueue, "reply"}, false},
		{"/queue/$tmp/7/reply", false, Destination{Queue, "$tmp/7/reply"}, false}, // a reply-to
		{"/queue/$tmp/7/reply", true, Destination{}, true},
		{"/queue/$share/g/a/#", false, Destination{}, true},
		{"/queue/$mqtt/device-1", true, Destination{}, true},
		{"/exchange/amq.topic/x", false, Destination{}, true},
		{"jobs", false, Destination{}, true},
	}
	for _, c := range cases {
		got, err := ParseSTOMP(c.dest, c.filter)
		if c.err {
			if !errors.Is(err, ErrBadDestination) {
				t.Errorf("ParseSTOMP(%q, %v) = %+v, %v; want ErrBadDestination", c.dest, c.filter, got, err)
			}
			continue
		}
		if err != nil || got != c.want {
			t.Errorf("ParseSTOMP(%q, %v) = %+v, %v; want %+v", c.dest, c.filter, got, err, c.want)
		}
	}
}

func TestSTOMPNamesRoundTrip(t *testing.T) {
	for _, topic := range []string{"a/b/c", "v1.2/temp", "sensors/room.1/t", "a", "x..y/z//w", "$SYS/uptime"} {
		d := STOMPDestination(topic, false)
		got, err := ParseSTOMP(d, false)
		if err != nil || got.Kind != Topic || got.Name != topic {
			t.Errorf("engine %q -> %q -> %+v, %v", topic, d, got, err)
		}
	}
	if d := STOMPDestination("jobs", true); d != "/queue/jobs" {
		t.Errorf("queue destination %q", d)
	}
}

func FuzzSwapSeparators(f *testing.F) {
	for _, s := range []string{"a/b.c", "", "...", "///", "a.b/c.d"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if got := SwapSeparators(SwapSeparators(s)); got != s {
			t.Fatalf("swap twice: %q -> %q", s, got)
		}
	})
}

func TestSharedSubscriptionQueue(t *testing.T) {
	q, err := SharedSubscriptionQueue("g", "a/+/#")
	if err != nil || q != "$share/g/a/+/#" {
		t.Fatalf("got %q %v", q, err)
	}
	for _, bad := range []string{"", "a/b", "a+", "#"} {
		if _, err := SharedSubscriptionQueue(bad, "f"); !errors.Is(err, ErrBadDestination) {
			t.Errorf("name %q accepted", bad)
		}
	}
}
