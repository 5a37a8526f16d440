package mqtt

import (
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/tandem-mq/tandem/engine"
)

// Retained messages (docs/mqtt-design.md §5.2) live in the engine KV,
// namespace "mqtt.retained", key the topic, value the message (JSON), and
// in memory (Server.retained) for SUBSCRIBE. A RETAIN publish sets its
// topic's retained message once the engine accepted the publish; one with
// an empty payload clears it [MQTT-3.3.1-6, -7]. The KV write follows the
// publish's commit, synced for QoS 1 and 2, before the PUBACK or PUBREC: a crash between
// the two leaves the publish unacked, so the client sends it again.
const retainedNS = "mqtt.retained"

// loadRetained reads the retained messages at startup; expired ones are
// deleted.
func (s *Server) loadRetained() error {
	now := s.clock.Now()
	var expired []engine.KVOp
	err := s.b.ScanKV(retainedNS, func(key string, v []byte) error {
		m := new(engine.Message)
		if err := json.Unmarshal(v, m); err != nil {
			return fmt.Errorf("mqtt: retained message %q: %w", key, err)
		}
		if m.Expired(now) {
			expired = append(expired, engine.KVOp{NS: retainedNS, Key: key, Delete: true})
			return nil
		}
		s.retained[key] = m
		s.retTree.put(key, m)
		s.retBytes += int64(len(m.Body))
		return nil
	})
	if err != nil {
		return err
	}
	return s.b.ApplyKV(expired, false)
}

// retainOpsLocked are the KV writes of the accepted RETAIN publishes of a
// batch, and whether one of them needs a sync (QoS 1 or 2). A new retained
// message that would take the store past MaxRetained or MaxRetainedBytes
// is left out (published, not retained), like one too big for the KV.
func (s *Server) retainOpsLocked(batch []pubItem, errs []error) (ops []engine.KVOp, idx []int, sync bool, err error) {
	count, bytes := len(s.retained), s.retBytes
	var batchLen map[string]int64 // payload size retained by this batch so far, -1 for cleared
	size := func(topic string) (int64, bool) {
		if n, ok := batchLen[topic]; ok {
			return n, n >= 0
		}
		if m := s.retained[topic]; m != nil {
			return int64(len(m.Body)), true
		}
		return 0, false
	}
	for i, it := range batch {
		if it.m == nil || !it.m.Retain || it.m.ToQueue || errs[i] != nil {
			continue
		}
		if batchLen == nil {
			batchLen = make(map[string]int64)
		}
		topic := it.m.Topic
		op := engine.KVOp{NS: retainedNS, Key: topic}
		oldLen, had := size(topic)
		if len(it.m.Body) == 0 {
			op.Delete = true
			if had {
				count--
				bytes -= oldLen
			}
			batchLen[topic] = -1
		} else {
			newCount, newBytes := count+1, bytes+int64(len(it.m.Body))
			if had {
				newCount, newBytes = count, newBytes-oldLen
			}
			if newCount > s.cfg.MaxRetained || newBytes > s.cfg.MaxRetainedBytes {
				if s.RetainedRefused.Add(1) == 1 {
					s.log.Warn().Int("max_retained", s.cfg.MaxRetained).Int64("max_retained_bytes", s.cfg.MaxRetainedBytes).
						Msg("retained store full: RETAIN publishes are delivered but not retained")
				}
				continue // the old one, if any, stays
			}
			v, merr := json.Marshal(it.m)
			if merr != nil {
				return nil, nil, false, merr
			}
			if len(v) > engine.MaxKVValueLength {
				continue // too big to retain; published all the same
			}
			op.Value = v
			count, bytes = newCount, newBytes
			batchLen[topic] = int64(len(it.m.Body))
		}
		ops = append(ops, op)
		idx = append(idx, i)
		sync = sync || it.qos > 0
	}
	return ops, idx, sync, nil
}

// storeRetained writes the retained messages of a batch, then updates the
// index. It returns the error of the write (for every one of them).
func (s *Server) storeRetained(batch []pubItem, errs []error) error {
	s.retMu.Lock()
	defer s.retMu.Unlock()
	ops, idx, sync, err := s.retainOpsLocked(batch, errs)
	if err != nil || len(ops) == 0 {
		return err
	}
	if err := s.b.ApplyKV(ops, sync); err != nil {
		return err
	}
	for k, op := range ops {
		if old := s.retained[op.Key]; old != nil {
			s.retBytes -= int64(len(old.Body))
			delete(s.retained, op.Key)
			s.retTree.put(op.Key, nil)
		}
		if !op.Delete {
			m := batch[idx[k]].m
			s.retained[op.Key] = m
			s.retTree.put(op.Key, m)
			s.retBytes += int64(len(m.Body))
		}
	}
	return nil
}

// retainedFor returns the retained messages whose topic matches filter, in
// topic order.
func (s *Server) retainedFor(filter string, now time.Time) []*engine.Message {
	s.retMu.RLock()
	var ms []*engine.Message
	s.retTree.match(filter, func(m *engine.Message) {
		if !m.Expired(now) {
			ms = append(ms, m)
		}
	})
	s.retMu.RUnlock()
	sort.Slice(ms, func(i, j int) bool { return ms[i].Topic < ms[j].Topic })
	return ms
}

// retainedFor returns the retained messages a SUBSCRIBE's granted filters
// get, as their Retain Handling asks (0: always, 1: only for a new
// subscription, 2: never [MQTT-3.3.1-9..11]). None for $share/ [MQTT
// 4.8.2] and $queue/.
//
// It returns them rather than queueing them: subscribe takes this snapshot
// before its SUBACK can be written and queues it right behind the SUBACK.
// Taken after, a message published in between (the client already
// subscribed) would arrive twice, live and retained.
func (c *conn) retainedFor(filters []packets.Subscription, codes []byte, had []bool) []*engine.Message {
	now := time.Now()
	var out []*engine.Message
	for i, f := range filters {
		if codes[i] >= packets.ErrUnspecifiedError.Code || f.RetainHandling == 2 || (f.RetainHandling == 1 && had[i]) {
			continue
		}
		if strings.HasPrefix(f.Filter, sharePrefix) || strings.HasPrefix(f.Filter, queuePrefix) {
			continue
		}
		out = append(out, c.s.retainedFor(f.Filter, now)...)
	}
	return out
}
