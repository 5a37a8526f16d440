package engine

import (
	"errors"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
)

func TestValidateFilter(t *testing.T) {
	good := []string{"#", "+", "a", "a/b", "a/+", "a/#", "+/+/#", "/", "a//b", "$SYS/#", "sport/tennis/+"}
	bad := []string{"", "a#", "a/#/b", "a+", "+a/b", "a/b#", "#/a", "a/\x00"}
	for _, f := range good {
		if err := ValidateFilter(f); err != nil {
			t.Errorf("ValidateFilter(%q) = %v, want nil", f, err)
		}
	}
	for _, f := range bad {
		if err := ValidateFilter(f); !errors.Is(err, ErrInvalidFilter) {
			t.Errorf("ValidateFilter(%q) = %v, want ErrInvalidFilter", f, err)
		}
	}
	for _, n := range []string{"", "a/+", "#", "a\x00"} {
		if err := ValidateTopic(n); !errors.Is(err, ErrInvalidTopic) {
			t.Errorf("ValidateTopic(%q) = %v, want ErrInvalidTopic", n, err)
		}
	}
}

// TestMatchTopicSpec checks the reference matcher on the examples of MQTT
// 3.1.1 section 4.7.
func TestMatchTopicSpec(t *testing.T) {
	cases := []struct {
		filter, topic string
		want          bool
	}{
		{"sport/tennis/player1/#", "sport/tennis/player1", true},
		{"sport/tennis/player1/#", "sport/tennis/player1/ranking", true},
		{"sport/tennis/player1/#", "sport/tennis/player1/score/wimbledon", true},
		{"sport/#", "sport", true},
		{"sport/tennis/+", "sport/tennis/player1", true},
		{"sport/tennis/+", "sport/tennis/player1/tournament", false},
		{"sport/+", "sport", false},
		{"sport/+", "sport/", true},
		{"+/+", "/finance", true},
		{"/+", "/finance", true},
		{"+", "/finance", false},
		{"#", "$SYS/x", false},   // [MQTT-4.7.2-1]
		{"+/x", "$SYS/x", false}, // [MQTT-4.7.2-1]
		{"$SYS/#", "$SYS/x", true},
		{"$SYS/+", "$SYS/x", true},
		{"a/b", "a/b", true},
		{"a/b", "a/bc", false},
	}
	for _, c := range cases {
		if got := MatchTopic(c.filter, c.topic); got != c.want {
			t.Errorf("MatchTopic(%q, %q) = %v, want %v", c.filter, c.topic, got, c.want)
		}
		var tr trie[int]
		tr.add(c.filter, 1)
		if got := len(tr.match(c.topic, nil)) == 1; got != c.want {
			t.Errorf("trie match(%q, %q) = %v, want %v", c.filter, c.topic, got, c.want)
		}
	}
}

// checkTrieAgainstReference subscribes every filter, matches every topic and
// compares with MatchTopic, then removes every filter and checks the trie is
// empty.
func checkTrieAgainstReference(t *testing.T, filters, topics []string) {
	t.Helper()
	var tr trie[int]
	for i, f := range filters {
		tr.add(f, i)
	}
	for _, topic := range topics {
		got := tr.match(topic, nil)
		slices.Sort(got)
		var want []int
		for i, f := range filters {
			if MatchTopic(f, topic) {
				want = append(want, i)
			}
		}
		if !slices.Equal(got, want) {
			t.Fatalf("topic %q: trie matched %v, reference %v (filters %q)", topic, got, want, filters)
		}
	}
	for i, f := range filters {
		if !tr.remove(f, i) {
			t.Fatalf("remove(%q, %d) found nothing", f, i)
		}
	}
	if !tr.root.empty() {
		t.Fatalf("trie not empty after removing every filter")
	}
}

func randomLevels(r *rand.Rand, wild bool) string {
	words := []string{"a", "b", "", "$x", "c.d"}
	n := 1 + r.IntN(4)
	levels := make([]string, n)
	for i := range levels {
		levels[i] = words[r.IntN(len(words))]
		if wild && r.IntN(3) == 0 {
			levels[i] = "+"
		}
	}
	if wild && r.IntN(4) == 0 {
		levels[n-1] = "#"
	}
	return strings.Join(levels, "/")
}

func TestTrieMatchesReference(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for range 300 {
		var filters, topics []string
		for range 1 + r.IntN(20) {
			filters = append(filters, randomLevels(r, true))
		}
		for range 20 {
			topics = append(topics, randomLevels(r, false))
		}
		checkTrieAgainstReference(t, filters, topics)
	}
}

func FuzzTrieMatch(f *testing.F) {
	f.Add("a/+/c", "a/b/c", "#")
	f.Add("$SYS/#", "$SYS/a", "+/a")
	f.Add("a/#", "a", "a/+")
	f.Add("/+", "/x", "+/+")
	f.Fuzz(func(t *testing.T, f1, topic, f2 string) {
		filters := []string{f1, f2}
		for _, f := range filters {
			if ValidateFilter(f) != nil {
				return
			}
		}
		if ValidateTopic(topic) != nil {
			return
		}
		checkTrieAgainstReference(t, filters, []string{topic})
	})
}

func TestSubSet(t *testing.T) {
	var s subSet
	for _, n := range []int{1, 7, 8, 1000, 3} {
		subs := make([]*TopicSub, n)
		for i := range subs {
			subs[i] = &TopicSub{id: uint64(i * 16)} // ids that share low bits
		}
		s.reset(n)
		for round := range 2 {
			for i, ts := range subs {
				if got := s.add(ts); got != (round == 0) {
					t.Fatalf("n=%d round %d: add(sub %d) = %v", n, round, i, got)
				}
			}
		}
	}
}

// matchTopicSplit is the first, splitting MatchTopic, kept to check the
// allocation-free one against.
func matchTopicSplit(filter, topic string) bool {
	if strings.HasPrefix(topic, "$") && (strings.HasPrefix(filter, "+") || strings.HasPrefix(filter, "#")) {
		return false
	}
	f := strings.Split(filter, "/")
	t := strings.Split(topic, "/")
	for i, level := range f {
		if level == "#" {
			return true
		}
		if i >= len(t) {
			return false
		}
		if level != "+" && level != t[i] {
			return false
		}
	}
	return len(f) == len(t)
}

func FuzzMatchTopicSame(f *testing.F) {
	for _, s := range [][2]string{{"a/#", "a"}, {"a/+/#", "a"}, {"+", ""}, {"a//b", "a//b"}, {"+/+", "a/"}, {"#", "$x"}, {"a/b", "a/b/c"}} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, filter, topic string) {
		if ValidateFilter(filter) != nil || ValidateTopic(topic) != nil {
			return
		}
		if got, want := MatchTopic(filter, topic), matchTopicSplit(filter, topic); got != want {
			t.Fatalf("MatchTopic(%q, %q) = %v, the splitting one says %v", filter, topic, got, want)
		}
	})
}
