package protocol

import (
	"testing"

	"github.com/tandem-mq/tandem/engine"
)

// FuzzFilterCovers checks that FilterCovers is sound against the engine's
// matcher: when rule r covers filter f, every topic f matches, r matches
// too (a permission check that says yes must never let more through).
func FuzzFilterCovers(f *testing.F) {
	for _, s := range [][3]string{
		{"#", "a/b", "a/b"}, {"a/+", "a/b", "a/b"}, {"a/#", "a", "a"}, {"+/b", "$x/b", "$x/b"},
		{"a/+/c", "a/+/c", "a/b/c"}, {"#", "#", "$SYS/x"}, {"a/b", "a/+", "a/c"},
	} {
		f.Add(s[0], s[1], s[2])
	}
	f.Fuzz(func(t *testing.T, r, flt, topic string) {
		if engine.ValidateFilter(r) != nil || engine.ValidateFilter(flt) != nil || engine.ValidateTopic(topic) != nil {
			return
		}
		if FilterCovers(r, flt) && engine.MatchTopic(flt, topic) && !engine.MatchTopic(r, topic) {
			t.Fatalf("FilterCovers(%q, %q) but %q matches the filter and not the rule", r, flt, topic)
		}
	})
}

// FuzzParseRule: any input is parsed or refused without a panic, and a
// parsed rule's canonical form parses to the same rule.
func FuzzParseRule(f *testing.F) {
	for _, s := range []string{"sensors/%u/#", "/topic/a.*.#", "queue:jobs.*", "/queue/%c.in", "topic:a/+", "a/#/b", "queue:["} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := ParseRule(s)
		if err != nil {
			return
		}
		again, err := ParseRule(r.String())
		if err != nil || again != r {
			t.Fatalf("ParseRule(%q) = %q, which parses to %q, %v", s, r, again, err)
		}
	})
}

// FuzzParseSTOMP: any destination is mapped or refused without a panic,
// and a mapped topic or queue maps back to a destination that parses to
// the same address.
func FuzzParseSTOMP(f *testing.F) {
	for _, s := range []string{"/topic/a.b", "/topic/v1/2.*", "/queue/jobs", "/temp-queue/r", "/queue/$tmp/x", "/topic/#", "x"} {
		f.Add(s, true)
		f.Add(s, false)
	}
	f.Fuzz(func(t *testing.T, dest string, filter bool) {
		d, err := ParseSTOMP(dest, filter)
		if err != nil || d.Kind == TempQueue || filter {
			return
		}
		back := STOMPDestination(d.Name, d.Kind == Queue)
		d2, err := ParseSTOMP(back, false)
		if err != nil || d2 != d {
			t.Fatalf("ParseSTOMP(%q) = %+v; %q parses to %+v, %v", dest, d, back, d2, err)
		}
	})
}
