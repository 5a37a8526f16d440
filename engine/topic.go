package engine

import (
	"fmt"
	"strings"
)

// MaxTopicLength bounds topic names and filters, as MQTT's UTF-8 string
// length does.
const MaxTopicLength = 65535

// ValidateTopic checks a topic name a message can be published to: not
// empty, no wildcard characters, no NUL, at most MaxTopicLength bytes
// [MQTT-4.7.3-1] [MQTT-3.3.2-2].
func ValidateTopic(name string) error {
	if name == "" {
		return fmt.Errorf("%w: empty", ErrInvalidTopic)
	}
	if len(name) > MaxTopicLength {
		return fmt.Errorf("%w: longer than %d bytes", ErrInvalidTopic, MaxTopicLength)
	}
	if i := strings.IndexAny(name, "+#\x00"); i >= 0 {
		return fmt.Errorf("%w: %q not allowed in a topic name", ErrInvalidTopic, name[i])
	}
	return nil
}

// ValidateFilter checks a topic filter: levels split by '/', '+' alone in
// its level, '#' alone in the last level [MQTT-4.7.1-1] [MQTT-4.7.1-2].
func ValidateFilter(filter string) error {
	if filter == "" {
		return fmt.Errorf("%w: empty", ErrInvalidFilter)
	}
	if len(filter) > MaxTopicLength {
		return fmt.Errorf("%w: longer than %d bytes", ErrInvalidFilter, MaxTopicLength)
	}
	if strings.IndexByte(filter, 0) >= 0 {
		return fmt.Errorf("%w: NUL not allowed", ErrInvalidFilter)
	}
	rest := filter
	for {
		level, tail, more := strings.Cut(rest, "/")
		if strings.ContainsAny(level, "+#") && len(level) > 1 {
			return fmt.Errorf("%w: wildcard must fill its whole level in %q", ErrInvalidFilter, filter)
		}
		if level == "#" && more {
			return fmt.Errorf("%w: '#' must be the last level in %q", ErrInvalidFilter, filter)
		}
		if !more {
			return nil
		}
		rest = tail
	}
}

// MatchTopic reports whether filter matches topic, level by level without
// allocating (adapters call it per delivery and subscription). It is also
// the plain reference the trie is tested against; both must be valid.
func MatchTopic(filter, topic string) bool {
	if strings.HasPrefix(topic, "$") && (strings.HasPrefix(filter, "+") || strings.HasPrefix(filter, "#")) {
		return false // [MQTT-4.7.2-1]
	}
	for {
		fl, frest, fmore := strings.Cut(filter, "/")
		if fl == "#" {
			return true // '#' also matches the parent level [MQTT-4.7.1-2]
		}
		tl, trest, tmore := strings.Cut(topic, "/")
		if fl != "+" && fl != tl {
			return false
		}
		switch {
		case fmore && tmore:
			filter, topic = frest, trest
		case fmore:
			return frest == "#" // the topic ended: only "/#" matches its parent
		default:
			return !tmore
		}
	}
}

// trie indexes topic filters for matching. Each subscriber is a value of
// type T stored under its filter. It is not safe for concurrent use; Broker
// guards it with its mutex.
type trie[T comparable] struct {
	root tnode[T]
}

type tnode[T comparable] struct {
	children map[string]*tnode[T]
	plus     *tnode[T]
	hash     *tnode[T]
	subs     []T
}

func (t *trie[T]) add(filter string, v T) {
	n := &t.root
	for _, level := range strings.Split(filter, "/") {
		switch level {
		case "+":
			if n.plus == nil {
				n.plus = &tnode[T]{}
			}
			n = n.plus
		case "#":
			if n.hash == nil {
				n.hash = &tnode[T]{}
			}
			n = n.hash
		default:
			c := n.children[level]
			if c == nil {
				if n.children == nil {
					n.children = make(map[string]*tnode[T])
				}
				c = &tnode[T]{}
				n.children[level] = c
			}
			n = c
		}
	}
	n.subs = append(n.subs, v)
}

// remove deletes one v under filter and prunes empty nodes. It reports
// whether v was there.
func (t *trie[T]) remove(filter string, v T) bool {
	return t.root.remove(strings.Split(filter, "/"), v)
}

func (n *tnode[T]) remove(levels []string, v T) bool {
	if len(levels) == 0 {
		for i, s := range n.subs {
			if s == v {
				n.subs[i] = n.subs[len(n.subs)-1]
				var zero T
				n.subs[len(n.subs)-1] = zero
				n.subs = n.subs[:len(n.subs)-1]
				return true
			}
		}
		return false
	}
	var c *tnode[T]
	switch levels[0] {
	case "+":
		c = n.plus
	case "#":
		c = n.hash
	default:
		c = n.children[levels[0]]
	}
	if c == nil || !c.remove(levels[1:], v) {
		return false
	}
	if c.empty() {
		switch levels[0] {
		case "+":
			n.plus = nil
		case "#":
			n.hash = nil
		default:
			delete(n.children, levels[0])
		}
	}
	return true
}

func (n *tnode[T]) empty() bool {
	return len(n.subs) == 0 && len(n.children) == 0 && n.plus == nil && n.hash == nil
}

// match appends every value whose filter matches topic to out.
func (t *trie[T]) match(topic string, out []T) []T {
	dollar := strings.HasPrefix(topic, "$")
	return t.root.match(topic, dollar, true, out)
}

// match walks the remaining topic. first is true at the root level, where a
// '$' topic is not matched by wildcards.
func (n *tnode[T]) match(topic string, dollar, first bool, out []T) []T {
	if n.hash != nil && !(first && dollar) {
		out = append(out, n.hash.subs...)
	}
	level, rest, more := strings.Cut(topic, "/")
	if c := n.children[level]; c != nil {
		if more {
			out = c.match(rest, dollar, false, out)
		} else {
			out = append(out, c.subs...)
			if c.hash != nil {
				out = append(out, c.hash.subs...) // "a/#" matches "a"
			}
		}
	}
	if n.plus != nil && !(first && dollar) {
		if more {
			out = n.plus.match(rest, dollar, false, out)
		} else {
			out = append(out, n.plus.subs...)
			if n.plus.hash != nil {
				out = append(out, n.plus.hash.subs...)
			}
		}
	}
	return out
}
