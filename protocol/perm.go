package protocol

import (
	"fmt"
	"path"
	"strings"

	"github.com/tandem-mq/tandem/engine"
)

// Permissions (issue 6, DESIGN.md "protocol: identity and permissions").
//
// A user's rules name engine addresses, the same for MQTT and STOMP:
//
//	sensors/%u/#        a topic filter (MQTT form)
//	/topic/sensors.#    the same in STOMP form ('*' one level, '#' the rest)
//	queue:jobs.*        queue names, a path.Match pattern ('*' any run of
//	/queue/jobs.*       characters except '/'); the STOMP form is the same
//
// %u is replaced by the user name and %c by the client id (MQTT client id,
// STOMP client-id header, or the connection's id). A name that contains a
// character with a meaning in rules ('/', '+', '#', '*', '?', '[', '\')
// makes the rules that use it match nothing: a user called "#" gets no
// more than anyone else.
//
// Publishing to a topic is allowed when a publish rule's filter matches the
// topic; subscribing to a filter when a subscribe rule's filter covers every
// topic the filter can match; sending to or consuming from a queue when a
// queue rule's pattern matches the name.

// Rule is one parsed permission rule.
type Rule struct {
	queue   bool   // a queue-name pattern, else a topic filter
	pattern string // with %u and %c still in it
}

// ParseRule parses a rule in one of the forms above.
func ParseRule(s string) (Rule, error) {
	var r Rule
	switch {
	case strings.HasPrefix(s, "queue:"):
		r = Rule{queue: true, pattern: s[len("queue:"):]}
	case strings.HasPrefix(s, STOMPQueuePrefix):
		r = Rule{queue: true, pattern: s[len(STOMPQueuePrefix):]}
	case strings.HasPrefix(s, STOMPTopicPrefix):
		r = Rule{pattern: stompFilter(s[len(STOMPTopicPrefix):])}
	case strings.HasPrefix(s, "topic:"):
		r = Rule{pattern: s[len("topic:"):]}
	default:
		r = Rule{pattern: s}
	}
	if r.pattern == "" {
		return Rule{}, fmt.Errorf("permission %q: empty", s)
	}
	probe := strings.NewReplacer("%u", "u", "%c", "c").Replace(r.pattern)
	if r.queue {
		if _, err := path.Match(probe, ""); err != nil {
			return Rule{}, fmt.Errorf("permission %q: bad queue pattern", s)
		}
	} else if err := engine.ValidateFilter(probe); err != nil {
		return Rule{}, fmt.Errorf("permission %q: %v", s, err)
	}
	return r, nil
}

// stompFilter turns a STOMP topic filter (without /topic/) into an engine
// filter: separators swapped, '*' levels to '+'.
func stompFilter(s string) string {
	levels := strings.Split(SwapSeparators(s), "/")
	for i, l := range levels {
		if l == "*" {
			levels[i] = "+"
		}
	}
	return strings.Join(levels, "/")
}

// String returns the rule in its canonical form.
func (r Rule) String() string {
	if r.queue {
		return "queue:" + r.pattern
	}
	return r.pattern
}

// expand substitutes the user and client id; false if one of them holds a
// character that would change what the rule means.
func (r Rule) expand(user, client string) (string, bool) {
	const special = "/+#*?[\\"
	out := r.pattern
	if strings.Contains(out, "%u") {
		if user == "" || strings.ContainsAny(user, special) {
			return "", false
		}
		out = strings.ReplaceAll(out, "%u", user)
	}
	if strings.Contains(out, "%c") {
		if client == "" || strings.ContainsAny(client, special) {
			return "", false
		}
		out = strings.ReplaceAll(out, "%c", client)
	}
	return out, true
}

// Rules is a user's publish and subscribe rules.
type Rules struct {
	Publish, Subscribe []Rule
}

// ParseRules parses publish and subscribe rule lists.
func ParseRules(publish, subscribe []string) (Rules, error) {
	var rs Rules
	for _, s := range publish {
		r, err := ParseRule(s)
		if err != nil {
			return Rules{}, err
		}
		rs.Publish = append(rs.Publish, r)
	}
	for _, s := range subscribe {
		r, err := ParseRule(s)
		if err != nil {
			return Rules{}, err
		}
		rs.Subscribe = append(rs.Subscribe, r)
	}
	return rs, nil
}

// allowTopic reports whether a rule's filter matches topic.
func allowTopic(rules []Rule, user, client, topic string) bool {
	for _, r := range rules {
		if r.queue {
			continue
		}
		if f, ok := r.expand(user, client); ok && engine.MatchTopic(f, topic) {
			return true
		}
	}
	return false
}

// allowFilter reports whether a rule covers every topic filter can match.
func allowFilter(rules []Rule, user, client, filter string) bool {
	for _, r := range rules {
		if r.queue {
			continue
		}
		if f, ok := r.expand(user, client); ok && FilterCovers(f, filter) {
			return true
		}
	}
	return false
}

// allowQueue reports whether a rule's pattern matches queue.
func allowQueue(rules []Rule, user, client, queue string) bool {
	for _, r := range rules {
		if !r.queue {
			continue
		}
		if p, ok := r.expand(user, client); ok {
			if m, _ := path.Match(p, queue); m {
				return true
			}
		}
	}
	return false
}

// FilterCovers reports whether every topic matched by filter f is matched
// by rule filter r. Both are valid engine filters.
func FilterCovers(r, f string) bool {
	rl, fl := strings.Split(r, "/"), strings.Split(f, "/")
	// A filter starting with a wildcard does not match topics starting
	// with '$' [MQTT-4.7.2-1]: a rule starting with one does not cover a
	// filter for them.
	if len(fl) > 0 && strings.HasPrefix(fl[0], "$") && (rl[0] == "+" || rl[0] == "#") {
		return false
	}
	for i, r := range rl {
		switch {
		case r == "#":
			return true // the rest, whatever f asks for
		case i >= len(fl):
			return false
		case fl[i] == "#":
			return false // f asks for more levels than r allows
		case r == "+":
			continue // one level: f's literal or '+'
		case r != fl[i]:
			return false
		}
	}
	return len(fl) == len(rl)
}
