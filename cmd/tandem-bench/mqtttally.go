package main

import (
	"bytes"
	"encoding/binary"
	"errors"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// An MQTT 3.1.1 message has no headers, so a bench message names itself in
// the first payloadHeader bytes of its payload:
//
//	"TB" | run id (6 bytes) | publisher (2) | sequence (4) | sent-ns (8)
//
// sent-ns is nanoseconds since the run's clock base, 0 when not stamped.
// The rest of the payload is padding.
const payloadHeader = 22

// payloadMagic opens every bench payload.
var payloadMagic = [2]byte{'T', 'B'}

// putPayload writes the header of message (p, seq) of run into b, which
// must hold at least payloadHeader bytes.
func putPayload(b []byte, run [6]byte, p, seq int, sentNs int64) {
	copy(b[0:2], payloadMagic[:])
	copy(b[2:8], run[:])
	binary.BigEndian.PutUint16(b[8:10], uint16(p))
	binary.BigEndian.PutUint32(b[10:14], uint32(seq))
	binary.BigEndian.PutUint64(b[14:22], uint64(sentNs))
}

// stampPayload sets the sent-ns field of a payload put by putPayload.
func stampPayload(b []byte, sentNs int64) {
	binary.BigEndian.PutUint64(b[14:22], uint64(sentNs))
}

// newPayload returns a payload of size bytes (at least payloadHeader),
// padded with text.
func newPayload(size int) []byte {
	size = max(size, payloadHeader)
	return bytes.Repeat([]byte("tandem-bench "), size/13+1)[:size]
}

// mqttLedger counts every message of one MQTT run exactly. A message is
// named by its publisher p and its sequence number seq on that publisher.
// Each publisher records what it wrote and what the broker PUBACKed; each
// subscriber has its own tally, since with n subscribers every message is
// owed n times.
type mqttLedger struct {
	run   [6]byte
	per   int             // messages per publisher at most
	sent  []atomic.Int64  // [p]: sequence numbers below this were written
	acked [][]atomic.Bool // [p][seq]: PUBACKed; nil slices for QoS 0
	subs  []*subTally     // [subscriber]
}

// subTally is one subscriber's view. Only its subscriber's goroutine
// writes seen and the counters; unique is read by the drain wait as it
// grows, the rest once the subscriber has ended.
type subTally struct {
	seen       []uint32 // [p*per+seq]: deliveries of the message
	unique     atomic.Int64
	deliveries int64
	duplicates int64
	foreign    int64
}

// newMQTTLedger makes a ledger for publishers publishers of at most per
// messages each and subscribers subscribers; acks says whether PUBACKs
// are tracked (QoS 1).
func newMQTTLedger(run [6]byte, publishers, per, subscribers int, acks bool) *mqttLedger {
	l := &mqttLedger{
		run:   run,
		per:   per,
		sent:  make([]atomic.Int64, publishers),
		acked: make([][]atomic.Bool, publishers),
		subs:  make([]*subTally, subscribers),
	}
	if acks {
		for p := range l.acked {
			l.acked[p] = make([]atomic.Bool, per)
		}
	}
	for i := range l.subs {
		l.subs[i] = &subTally{seen: make([]uint32, publishers*per)}
	}
	return l
}

// markSent records that publisher p wrote message seq.
func (l *mqttLedger) markSent(p, seq int) { l.sent[p].Store(int64(seq) + 1) }

// markAcked records the PUBACK of publisher p's message seq. It reports
// false for a second PUBACK of one message.
func (l *mqttLedger) markAcked(p, seq int) bool { return !l.acked[p][seq].Swap(true) }

// receive records one delivery to subscriber sub and reports whether it
// was that subscriber's first of the message, and the message's sent-ns.
// A payload of another run, or out of range, is foreign.
func (l *mqttLedger) receive(sub int, payload []byte) (first bool, sentNs int64) {
	t := l.subs[sub]
	if len(payload) < payloadHeader || payload[0] != payloadMagic[0] || payload[1] != payloadMagic[1] ||
		!bytes.Equal(payload[2:8], l.run[:]) {
		t.foreign++
		return false, 0
	}
	p := int(binary.BigEndian.Uint16(payload[8:10]))
	seq := int(binary.BigEndian.Uint32(payload[10:14]))
	if p >= len(l.sent) || seq >= l.per {
		t.foreign++
		return false, 0
	}
	t.deliveries++
	i := p*l.per + seq
	t.seen[i]++
	if t.seen[i] > 1 {
		t.duplicates++
		return false, 0
	}
	t.unique.Add(1)
	return true, int64(binary.BigEndian.Uint64(payload[14:22]))
}

// totalSent is the number of messages written by all publishers.
func (l *mqttLedger) totalSent() int64 {
	var n int64
	for p := range l.sent {
		n += l.sent[p].Load()
	}
	return n
}

// received is the number of first deliveries over all subscribers so far.
func (l *mqttLedger) received() int64 {
	var n int64
	for _, t := range l.subs {
		n += t.unique.Load()
	}
	return n
}

// mqttCounts is the ledger's summary. Deliveries are counted per
// subscriber: with n subscribers a message is owed n times.
type mqttCounts struct {
	Sent       int64 `json:"sent"`       // PUBLISHes written by the publishers
	Acked      int64 `json:"acked"`      // of those, PUBACKed (QoS 1)
	Expected   int64 `json:"expected"`   // deliveries owed: sent times subscribers
	Received   int64 `json:"received"`   // distinct (subscriber, message) deliveries
	Deliveries int64 `json:"deliveries"` // PUBLISHes to subscribers, duplicates included
	Duplicates int64 `json:"duplicates"` // deliveries of a message the subscriber had already
	Lost       int64 `json:"lost"`       // QoS 1: PUBACKed, never delivered (per subscriber)
	InDoubt    int64 `json:"in_doubt"`   // QoS 1: not PUBACKed, never delivered (per subscriber)
	Dropped    int64 `json:"dropped"`    // QoS 0: sent, never delivered (per subscriber); QoS 0 allows it
	Foreign    int64 `json:"foreign"`    // PUBLISHes not of this run
}

// counts scans the ledger. Call it once nobody updates the ledger any more.
func (l *mqttLedger) counts() mqttCounts {
	var c mqttCounts
	acks := len(l.acked) > 0 && l.acked[0] != nil
	for p := range l.sent {
		sent := int(l.sent[p].Load())
		c.Sent += int64(sent)
		for seq := range sent {
			acked := acks && l.acked[p][seq].Load()
			if acked {
				c.Acked++
			}
			for _, t := range l.subs {
				if t.seen[p*l.per+seq] > 0 {
					continue
				}
				switch {
				case !acks:
					c.Dropped++
				case acked:
					c.Lost++
				default:
					c.InDoubt++
				}
			}
		}
	}
	c.Expected = c.Sent * int64(len(l.subs))
	for _, t := range l.subs {
		c.Received += t.unique.Load()
		c.Deliveries += t.deliveries
		c.Duplicates += t.duplicates
		c.Foreign += t.foreign
	}
	return c
}

// exactlyOnce reports, for QoS 1, whether every message was PUBACKed and
// delivered to every subscriber exactly once.
func (c mqttCounts) exactlyOnce() bool {
	return c.Sent > 0 && c.Acked == c.Sent && c.Received == c.Expected &&
		c.Duplicates == 0 && c.Lost == 0 && c.InDoubt == 0
}

// atMostOnce reports, for QoS 0, that something arrived and nothing twice.
func (c mqttCounts) atMostOnce() bool {
	return c.Received > 0 && c.Duplicates == 0 && c.Lost == 0
}

// addN counts n deliveries at now; a subscriber counts a whole read batch
// at once.
func (t *timeline) addN(now time.Time, n int) {
	i := int(now.Sub(t.start) / t.width)
	i = max(0, min(i, len(t.buckets)-1))
	t.buckets[i].Add(uint32(n))
}

// parseVmRSS returns the VmRSS of a /proc/PID/status text in KiB.
func parseVmRSS(status string) (int64, error) {
	for line := range strings.Lines(status) {
		rest, ok := strings.CutPrefix(line, "VmRSS:")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) != 2 || f[1] != "kB" {
			return 0, errors.New("unexpected VmRSS line: " + strings.TrimSpace(line))
		}
		return strconv.ParseInt(f[0], 10, 64)
	}
	return 0, errors.New("no VmRSS line (a kernel thread, or not Linux)")
}
