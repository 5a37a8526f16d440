package engine

import (
	"fmt"
	"math"
	"math/rand/v2"
	"path"
	"time"
)

// Overflow says what happens when a publish would take a queue past its
// max_length or max_bytes.
type Overflow string

const (
	// OverflowRejectPublish refuses the publish with ErrQueueFull.
	OverflowRejectPublish Overflow = "reject-publish"
	// OverflowDropHead drops the oldest ready message to make room.
	OverflowDropHead Overflow = "drop-head"
	// OverflowDeadLetter moves the oldest ready message to the dead-letter
	// queue to make room.
	OverflowDeadLetter Overflow = "dead-letter"
)

// Policy is a queue's delivery and limit settings. The zero value of a field
// means "not set" when a Policy is used as an override (see Merge).
type Policy struct {
	// MaxDeliveries is how many delivery attempts a message gets before it
	// is dead-lettered. -1 means unlimited.
	MaxDeliveries int `yaml:"max_deliveries" json:"max_deliveries,omitempty"`
	// RedeliveryDelay is the delay before the first redelivery of a NACKed
	// message; each further attempt multiplies it by RedeliveryMultiplier,
	// up to RedeliveryMaxDelay.
	RedeliveryDelay      time.Duration `yaml:"redelivery_delay" json:"redelivery_delay,omitempty"`
	RedeliveryMultiplier float64       `yaml:"redelivery_multiplier" json:"redelivery_multiplier,omitempty"`
	RedeliveryMaxDelay   time.Duration `yaml:"redelivery_max_delay" json:"redelivery_max_delay,omitempty"`
	// RedeliveryJitter spreads each delay by up to this fraction (0 to 1).
	RedeliveryJitter float64 `yaml:"redelivery_jitter" json:"redelivery_jitter,omitempty"`
	// TTL is the queue's message time to live; messages older than that are
	// dead-lettered and never delivered. 0 means none.
	TTL time.Duration `yaml:"ttl" json:"ttl,omitempty"`
	// MaxLength bounds the number of messages (ready and unacked). -1 means
	// no count limit (MaxBytes still applies).
	MaxLength int64 `yaml:"max_length" json:"max_length,omitempty"`
	// MaxBytes bounds the sum of message sizes.
	MaxBytes int64    `yaml:"max_bytes" json:"max_bytes,omitempty"`
	Overflow Overflow `yaml:"overflow" json:"overflow,omitempty"`
	// DeadLetterQueue names the queue dead letters go to; "" means
	// "<queue>.dlq" and "-" means none (dead letters are dropped).
	DeadLetterQueue string `yaml:"dead_letter_queue" json:"dead_letter_queue,omitempty"`
}

// DefaultPolicy returns the defaults DESIGN.md gives.
func DefaultPolicy() Policy {
	return Policy{
		MaxDeliveries:        10,
		RedeliveryDelay:      time.Second,
		RedeliveryMultiplier: 2,
		RedeliveryMaxDelay:   60 * time.Second,
		MaxLength:            -1,
		MaxBytes:             8 << 30,
		Overflow:             OverflowRejectPublish,
	}
}

// Merge returns p with every field that o sets replaced by o's value.
func (p Policy) Merge(o Policy) Policy {
	if o.MaxDeliveries != 0 {
		p.MaxDeliveries = o.MaxDeliveries
	}
	if o.RedeliveryDelay != 0 {
		p.RedeliveryDelay = o.RedeliveryDelay
	}
	if o.RedeliveryMultiplier != 0 {
		p.RedeliveryMultiplier = o.RedeliveryMultiplier
	}
	if o.RedeliveryMaxDelay != 0 {
		p.RedeliveryMaxDelay = o.RedeliveryMaxDelay
	}
	if o.RedeliveryJitter != 0 {
		p.RedeliveryJitter = o.RedeliveryJitter
	}
	if o.TTL != 0 {
		p.TTL = o.TTL
	}
	if o.MaxLength != 0 {
		p.MaxLength = o.MaxLength
	}
	if o.MaxBytes != 0 {
		p.MaxBytes = o.MaxBytes
	}
	if o.Overflow != "" {
		p.Overflow = o.Overflow
	}
	if o.DeadLetterQueue != "" {
		p.DeadLetterQueue = o.DeadLetterQueue
	}
	return p
}

// Validate reports the first setting that is out of range. It checks a
// complete policy (after Merge with the defaults).
func (p Policy) Validate() error {
	switch {
	case p.MaxDeliveries < -1 || p.MaxDeliveries == 0:
		return fmt.Errorf("%w: max_deliveries must be -1 (unlimited) or at least 1, got %d", ErrInvalidPolicy, p.MaxDeliveries)
	case p.RedeliveryDelay < 0:
		return fmt.Errorf("%w: redelivery_delay must not be negative", ErrInvalidPolicy)
	case p.RedeliveryMultiplier < 1 || math.IsInf(p.RedeliveryMultiplier, 0) || math.IsNaN(p.RedeliveryMultiplier):
		return fmt.Errorf("%w: redelivery_multiplier must be at least 1, got %v", ErrInvalidPolicy, p.RedeliveryMultiplier)
	case p.RedeliveryMaxDelay < p.RedeliveryDelay:
		return fmt.Errorf("%w: redelivery_max_delay %v is below redelivery_delay %v", ErrInvalidPolicy, p.RedeliveryMaxDelay, p.RedeliveryDelay)
	case p.RedeliveryJitter < 0 || p.RedeliveryJitter > 1:
		return fmt.Errorf("%w: redelivery_jitter must be between 0 and 1, got %v", ErrInvalidPolicy, p.RedeliveryJitter)
	case p.TTL < 0:
		return fmt.Errorf("%w: ttl must not be negative", ErrInvalidPolicy)
	case p.MaxLength < -1 || p.MaxLength == 0:
		return fmt.Errorf("%w: max_length must be -1 (no count limit) or at least 1, got %d", ErrInvalidPolicy, p.MaxLength)
	case p.MaxBytes <= 0:
		return fmt.Errorf("%w: max_bytes must be positive (every limit is finite), got %d", ErrInvalidPolicy, p.MaxBytes)
	}
	switch p.Overflow {
	case OverflowRejectPublish, OverflowDropHead, OverflowDeadLetter:
	default:
		return fmt.Errorf("%w: overflow must be reject-publish, drop-head or dead-letter, got %q", ErrInvalidPolicy, p.Overflow)
	}
	return nil
}

// RedeliveryBackoff returns how long to hold a message back before its
// next attempt, given the attempts made so far (at least 1). r supplies
// jitter; nil means none.
func (p Policy) RedeliveryBackoff(attempts uint32, r *rand.Rand) time.Duration {
	d := float64(p.RedeliveryDelay)
	for i := uint32(1); i < attempts && d < float64(p.RedeliveryMaxDelay); i++ {
		d *= p.RedeliveryMultiplier
	}
	if d > float64(p.RedeliveryMaxDelay) {
		d = float64(p.RedeliveryMaxDelay)
	}
	if p.RedeliveryJitter > 0 && r != nil {
		d += d * p.RedeliveryJitter * (2*r.Float64() - 1)
	}
	if d < 0 {
		d = 0
	}
	return time.Duration(d)
}

// DeadLetterName returns the dead-letter queue of queue under p, or "" for
// none.
func (p Policy) DeadLetterName(queue string) string {
	switch p.DeadLetterQueue {
	case "":
		return queue + ".dlq"
	case "-":
		return ""
	}
	return p.DeadLetterQueue
}

// PolicyRule applies Policy to the queues whose names match Match, a
// path.Match pattern ("jobs.*", "*.dlq", "mqtt/*").
type PolicyRule struct {
	Match  string `yaml:"match" json:"match"`
	Policy `yaml:",inline" json:",inline"`
}

// Config is the engine's configuration.
type Config struct {
	// Default is the policy of every queue that no rule matches. Unset
	// fields take DefaultPolicy's values.
	Default Policy
	// Rules are tried in order; the first whose Match fits a queue's name
	// is merged over Default.
	Rules []PolicyRule
	// Clock tells time and runs timers. nil means the real clock.
	Clock Clock
	// WindowSize is how many ready messages of one queue are kept in
	// memory; the rest wait on disk. 0 means 512.
	WindowSize int
	// WindowBytes bounds the body bytes of one queue's window. 0 means
	// 8 MiB.
	WindowBytes int64
	// Rand seeds redelivery jitter; nil means a random seed.
	Rand *rand.Rand
	// MaxQueues bounds the queues (of every kind: named, subscription,
	// session and temporary); creating one more fails with
	// ErrTooManyQueues. 0 means 1,000,000.
	MaxQueues int
}

// EnsureDefaults fills unset fields.
func (c *Config) EnsureDefaults() {
	c.Default = DefaultPolicy().Merge(c.Default)
	if c.Clock == nil {
		c.Clock = RealClock{}
	}
	if c.WindowSize == 0 {
		c.WindowSize = 512
	}
	if c.WindowBytes == 0 {
		c.WindowBytes = 8 << 20
	}
	if c.MaxQueues == 0 {
		c.MaxQueues = 1_000_000
	}
	if c.Rand == nil {
		c.Rand = rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))
	}
}

// Validate checks the configuration after EnsureDefaults.
func (c *Config) Validate() error {
	if err := c.Default.Validate(); err != nil {
		return fmt.Errorf("default policy: %w", err)
	}
	for i, r := range c.Rules {
		if _, err := path.Match(r.Match, ""); err != nil || r.Match == "" {
			return fmt.Errorf("%w: rule %d: bad match pattern %q", ErrInvalidPolicy, i, r.Match)
		}
		if err := c.Default.Merge(r.Policy).Validate(); err != nil {
			return fmt.Errorf("rule %d (%s): %w", i, r.Match, err)
		}
	}
	if c.WindowSize < 1 || c.WindowSize > 1<<20 {
		return fmt.Errorf("engine: window size must be between 1 and 1048576, got %d", c.WindowSize)
	}
	if c.WindowBytes < 1 {
		return fmt.Errorf("engine: window bytes must be positive, got %d", c.WindowBytes)
	}
	if c.MaxQueues < 1 {
		return fmt.Errorf("engine: max queues must be positive, got %d", c.MaxQueues)
	}
	return nil
}

// policyFor resolves the policy of queue: the first matching rule over the
// default, then the queue's own override.
func (c *Config) policyFor(queue string, override Policy) Policy {
	p := c.Default
	for _, r := range c.Rules {
		if ok, _ := path.Match(r.Match, queue); ok {
			p = p.Merge(r.Policy)
			break
		}
	}
	return p.Merge(override)
}
