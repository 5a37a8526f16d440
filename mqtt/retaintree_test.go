package mqtt

import (
	"slices"
	"strings"
	"testing"

	"github.com/tandem-mq/tandem/engine"
)

// FuzzRetainTree checks the retained index against engine.MatchTopic: for
// a set of topics (some removed again), a filter finds exactly the
// topics MatchTopic says it matches, and removing every topic leaves the
// tree empty.
func FuzzRetainTree(f *testing.F) {
	f.Add("a/b a a/c $SYS/x /x a//b", "a/#", "a/c")
	f.Add("x +y $a/b $a", "+", "")
	f.Add("a/b/c a/b a", "a/+/c", "a/b")
	f.Add("s/1/t s/2/t s/1/h", "#", "s/2/t")
	f.Fuzz(func(t *testing.T, topics, filter, removed string) {
		if engine.ValidateFilter(filter) != nil {
			return
		}
		var tree retainTree
		present := map[string]*engine.Message{}
		for _, tp := range strings.Fields(topics) {
			if engine.ValidateTopic(tp) != nil {
				continue
			}
			m := &engine.Message{Topic: tp}
			tree.put(tp, m)
			present[tp] = m
		}
		if _, ok := present[removed]; ok {
			tree.put(removed, nil)
			delete(present, removed)
		}
		var want, got []string
		for tp := range present {
			if engine.MatchTopic(filter, tp) {
				want = append(want, tp)
			}
		}
		tree.match(filter, func(m *engine.Message) { got = append(got, m.Topic) })
		slices.Sort(want)
		slices.Sort(got)
		if !slices.Equal(got, want) {
			t.Fatalf("filter %q over %q: got %q, want %q", filter, topics, got, want)
		}
		for tp := range present {
			tree.put(tp, nil)
		}
		if tree.msg != nil || len(tree.children) != 0 {
			t.Fatalf("tree not empty after removing every topic: %+v", tree)
		}
	})
}
