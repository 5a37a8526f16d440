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
		return nil
	})
	if err != nil {
		return err
	}
	return s.b.ApplyKV(expired, false)
}

// retainOps are the KV writes of the accepted RETAIN publishes of a batch,
// and whether one of them needs a sync (QoS 1 or 2).
func retainOps(batch []pubItem, errs []error) (ops []engine.KVOp, idx []int, sync bool, err error) {
	for i, it := range batch {
		if it.m == nil || !it.m.Retain || it.m.ToQueue || errs[i] != nil {
			continue
		}
		op := engine.KVOp{NS: retainedNS, Key: it.m.Topic}
		if len(it.m.Body) == 0 {
			op.Delete = true
		} else {
			v, merr := json.Marshal(it.m)
			if merr != nil {
				return nil, nil, false, merr
			}
			if len(v) > engine.MaxKVValueLength {
				continue // too big to retain; published all the same
			}
			op.Value = v
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
	ops, idx, sync, err := retainOps(batch, errs)
	if err != nil || len(ops) == 0 {
		return err
	}
	s.retMu.Lock()
	defer s.retMu.Unlock()
	if err := s.b.ApplyKV(ops, sync); err != nil {
		return err
	}
	for k, op := range ops {
		if op.Delete {
			delete(s.retained, op.Key)
		} else {
			s.retained[op.Key] = batch[idx[k]].m
		}
	}
	return nil
}

// retainedFor returns the retained messages whose topic matches filter, in
// topic order.
func (s *Server) retainedFor(filter string, now time.Time) []*engine.Message {
	s.retMu.RLock()
	var ms []*engine.Message
	for t, m := range s.retained {
		if engine.MatchTopic(filter, t) && !m.Expired(now) {
			ms = append(ms, m)
		}
	}
	s.retMu.RUnlock()
	sort.Slice(ms, func(i, j int) bool { return ms[i].Topic < ms[j].Topic })
	return ms
}

// sendRetained queues, after a SUBACK, the retained messages of the
// filters that were granted, as their Retain Handling asks (0: always, 1:
// only for a new subscription, 2: never [MQTT-3.3.1-9..11]). None for
// $share/ [MQTT 4.8.2] and $queue/.
func (c *conn) sendRetained(filters []packets.Subscription, codes []byte, had []bool) {
	now := time.Now()
	for i, f := range filters {
		if codes[i] >= packets.ErrUnspecifiedError.Code || f.RetainHandling == 2 || (f.RetainHandling == 1 && had[i]) {
			continue
		}
		if strings.HasPrefix(f.Filter, sharePrefix) || strings.HasPrefix(f.Filter, queuePrefix) {
			continue
		}
		for _, m := range c.s.retainedFor(f.Filter, now) {
			c.out.deliverRetained(m)
		}
	}
}
