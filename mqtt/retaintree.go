package mqtt

import (
	"strings"

	"github.com/tandem-mq/tandem/engine"
)

// retainTree indexes the retained messages by topic level, so that a
// SUBSCRIBE visits only the topics its filter can match instead of every
// retained message (up to Config.MaxRetained): a client subscribing again
// and again must not cost the others a scan of the whole store each time.
// Guarded by Server.retMu, like the map it mirrors.
type retainTree struct {
	children map[string]*retainTree
	msg      *engine.Message
}

// put sets topic's message; nil removes it, and nodes left empty go.
func (t *retainTree) put(topic string, m *engine.Message) {
	t.set(strings.Split(topic, "/"), m)
}

func (t *retainTree) set(levels []string, m *engine.Message) (empty bool) {
	if len(levels) == 0 {
		t.msg = m
		return m == nil && len(t.children) == 0
	}
	c := t.children[levels[0]]
	if c == nil {
		if m == nil {
			return t.msg == nil && len(t.children) == 0
		}
		if t.children == nil {
			t.children = make(map[string]*retainTree)
		}
		c = &retainTree{}
		t.children[levels[0]] = c
	}
	if c.set(levels[1:], m) {
		delete(t.children, levels[0])
	}
	return t.msg == nil && len(t.children) == 0
}

// match calls fn with every message whose topic filter matches, as
// engine.MatchTopic decides (a leading wildcard skips '$' topics
// [MQTT-4.7.2-1]; '#' matches the parent level too).
func (t *retainTree) match(filter string, fn func(*engine.Message)) {
	t.walk(strings.Split(filter, "/"), true, fn)
}

func (t *retainTree) walk(levels []string, root bool, fn func(*engine.Message)) {
	if len(levels) == 0 {
		if t.msg != nil {
			fn(t.msg)
		}
		return
	}
	switch l := levels[0]; l {
	case "#":
		if t.msg != nil && !root {
			fn(t.msg) // "a/#" matches "a"
		}
		for name, c := range t.children {
			if root && strings.HasPrefix(name, "$") {
				continue
			}
			c.all(fn)
		}
	case "+":
		for name, c := range t.children {
			if root && strings.HasPrefix(name, "$") {
				continue
			}
			c.walk(levels[1:], false, fn)
		}
	default:
		if c := t.children[l]; c != nil {
			c.walk(levels[1:], false, fn)
		}
	}
}

// all calls fn with every message at or under t.
func (t *retainTree) all(fn func(*engine.Message)) {
	if t.msg != nil {
		fn(t.msg)
	}
	for _, c := range t.children {
		c.all(fn)
	}
}
