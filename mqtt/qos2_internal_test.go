package mqtt

import "testing"

// FuzzQoS2Records: stored QoS 2 keys and records decode to what was
// encoded, and any stored bytes decode or fail without a panic.
func FuzzQoS2Records(f *testing.F) {
	f.Add("dev/1", uint16(7), "$mqtt/dev/1", uint64(42), true, []byte{1, 2, 'q'})
	f.Add("", uint16(1), "", uint64(0), false, []byte{})
	f.Fuzz(func(t *testing.T, client string, id uint16, queue string, seq uint64, released bool, raw []byte) {
		_, _ = decodeOutRec(raw)
		if id == 0 {
			return
		}
		c, got, ok := parseQoS2Key(qos2Key(client, id))
		if !ok || c != client || got != id {
			t.Fatalf("key of (%q, %d) parses to (%q, %d, %v)", client, id, c, got, ok)
		}
		r := outRec{queue: queue, seq: seq, released: released}
		back, err := decodeOutRec(encodeOutRec(r))
		if err != nil || back != r {
			t.Fatalf("record %+v decodes to %+v, %v", r, back, err)
		}
	})
}
