package persist

import (
	"bytes"
	"errors"
	"math"
	"testing"

	"github.com/tandem-mq/tandem/engine"
)

func TestStringEncodingTable(t *testing.T) {
	cases := []struct {
		in   string
		want []byte
	}{
		{"", []byte{0, 1}},
		{"a", []byte{'a', 0, 1}},
		{"\x00", []byte{0, 0xff, 0, 1}},
		{"a\x00b", []byte{'a', 0, 0xff, 'b', 0, 1}},
		{"\xff\x01", []byte{0xff, 1, 0, 1}},
	}
	for _, c := range cases {
		if got := appendString(nil, c.in); !bytes.Equal(got, c.want) {
			t.Errorf("appendString(%q) = %x, want %x", c.in, got, c.want)
		}
	}
}

var keyStrings = []string{"", "\x00", "\x00\x00", "\x00\x01", "\x00\xff", "\x01", "a", "a\x00", "a\x00\x00", "a\x00\x01",
	"a\x00b", "a\x00\xff", "a\x01", "a:", "a:b", "ab", "a\xff", "b", "\xff", "\xff\xff"}

func TestStringRoundTripAndOrder(t *testing.T) {
	for _, a := range keyStrings {
		enc := appendString([]byte("p"), a)
		got, rest, err := decodeString(append(enc[1:], "tail"...))
		if err != nil || got != a || string(rest) != "tail" {
			t.Fatalf("decodeString(appendString(%q)) = %q, %q, %v", a, got, rest, err)
		}
		for _, b := range keyStrings {
			checkStringOrder(t, a, b)
		}
	}
}

func checkStringOrder(t testing.TB, a, b string) {
	t.Helper()
	ea, eb := appendString(nil, a), appendString(nil, b)
	if got, want := bytes.Compare(ea, eb), cmpString(a, b); got != want {
		t.Fatalf("order of %q vs %q: encoded %d, strings %d", a, b, got, want)
	}
	// No encoding is a proper prefix of another: tuples are unambiguous.
	if a != b && (bytes.HasPrefix(ea, eb) || bytes.HasPrefix(eb, ea)) {
		t.Fatalf("encodings of %q and %q are prefixes of each other", a, b)
	}
}

func cmpString(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func TestDecodeStringErrors(t *testing.T) {
	for _, b := range [][]byte{nil, {'a'}, {0}, {'a', 0}, {0, 2}, {0, 0}, {0, 0xff}} {
		if _, _, err := decodeString(b); !errors.Is(err, engine.ErrCorrupt) {
			t.Errorf("decodeString(%x) = %v, want ErrCorrupt", b, err)
		}
	}
}

// TestTupleKeysUnambiguous checks the cases a concatenating encoding gets
// wrong: ("a", "b:c") vs ("a:b", "c") and friends.
func TestTupleKeysUnambiguous(t *testing.T) {
	seen := map[string][2]string{}
	for _, a := range keyStrings {
		for _, b := range keyStrings {
			for kind, k := range map[string][]byte{"binding": bindingKey(a, b), "kv": kvKey(a, b)} {
				id := kind + string(k)
				if prev, ok := seen[id]; ok {
					t.Fatalf("%s key of (%q, %q) equals that of (%q, %q)", kind, a, b, prev[0], prev[1])
				}
				seen[id] = [2]string{a, b}
			}
			// Every key of queue a lies inside a's span and outside b's.
			for _, idx := range []engine.Index{engine.Ready, engine.Scheduled} {
				k := entryKey(a, idx, engine.Key{Hi: 1, Lo: 2})
				if idx == engine.Ready {
					k = entryKey(a, idx, engine.Key{Lo: math.MaxUint64})
				}
				p := indexPrefix(b, idx)
				inside := bytes.Compare(k, p) >= 0 && bytes.Compare(k, prefixEnd(p)) < 0
				if inside != (a == b) {
					t.Fatalf("entry key of queue %q inside the span of queue %q: %v", a, b, inside)
				}
			}
			kv := kvKey(a, "k")
			p := kvPrefix(b)
			if inside := bytes.Compare(kv, p) >= 0 && bytes.Compare(kv, prefixEnd(p)) < 0; inside != (a == b) {
				t.Fatalf("kv key of namespace %q inside namespace %q: %v", a, b, inside)
			}
		}
	}
}

func TestEntryKeyOrder(t *testing.T) {
	ks := []engine.Key{{Hi: 0, Lo: 1}, {Hi: 0, Lo: 255}, {Hi: 0, Lo: 256}, {Hi: 1, Lo: 0}, {Hi: 1, Lo: math.MaxUint64},
		{Hi: 256, Lo: 1}, {Hi: math.MaxUint64, Lo: math.MaxUint64}}
	for i := range ks {
		for j := range ks {
			a := entryKey("q", engine.Scheduled, ks[i])
			b := entryKey("q", engine.Scheduled, ks[j])
			if (bytes.Compare(a, b) < 0) != ks[i].Less(ks[j]) {
				t.Fatalf("scheduled key order of %v vs %v is wrong", ks[i], ks[j])
			}
			k, err := decodeEntryKey(a, len(indexPrefix("q", engine.Scheduled)), engine.Scheduled)
			if err != nil || k != ks[i] {
				t.Fatalf("decodeEntryKey = %v, %v, want %v", k, err, ks[i])
			}
		}
		r := engine.Key{Lo: ks[i].Lo}
		k, err := decodeEntryKey(entryKey("q", engine.Ready, r), len(indexPrefix("q", engine.Ready)), engine.Ready)
		if err != nil || k != r {
			t.Fatalf("ready decodeEntryKey = %v, %v, want %v", k, err, r)
		}
	}
	if _, err := decodeEntryKey([]byte{kindReady, 0, 1, 1}, 3, engine.Ready); !errors.Is(err, engine.ErrCorrupt) {
		t.Fatalf("short entry key: %v", err)
	}
}

func TestKindsDistinct(t *testing.T) {
	kinds := []byte{kindVersion, kindQueue, kindCounts, kindReady, kindScheduled, kindBody, kindRef, kindBinding, kindIDFloor, kindKV}
	seen := map[byte]bool{}
	for _, k := range kinds {
		if seen[k] || k == 0xff {
			t.Fatalf("kind 0x%02x reused or 0xff", k)
		}
		seen[k] = true
	}
}

func FuzzKeyRoundTrip(f *testing.F) {
	for _, a := range keyStrings {
		for _, b := range keyStrings[:5] {
			f.Add(a, b, uint64(1), uint64(2))
		}
	}
	f.Fuzz(func(t *testing.T, a, b string, hi, lo uint64) {
		checkStringOrder(t, a, b)
		k := bindingKey(a, b)
		fa, rest, err := decodeString(k[1:])
		if err != nil {
			t.Fatal(err)
		}
		qb, rest, err := decodeString(rest)
		if err != nil || fa != a || qb != b || len(rest) != 0 {
			t.Fatalf("binding key round trip: (%q, %q) -> (%q, %q) rest %x, %v", a, b, fa, qb, rest, err)
		}
		key := engine.Key{Hi: hi, Lo: lo}
		ek := entryKey(a, engine.Scheduled, key)
		got, err := decodeEntryKey(ek, len(indexPrefix(a, engine.Scheduled)), engine.Scheduled)
		if err != nil || got != key {
			t.Fatalf("entry key round trip: %v -> %v, %v", key, got, err)
		}
		// Queue order dominates key order.
		ea, eb := entryKey(a, engine.Ready, engine.Key{Lo: hi}), entryKey(b, engine.Ready, engine.Key{Lo: lo})
		if a != b {
			if got, want := bytes.Compare(ea, eb), cmpString(a, b); got != want {
				t.Fatalf("entry keys of queues %q, %q order %d, want %d", a, b, got, want)
			}
		}
		// decodeString never panics on arbitrary bytes.
		_, _, _ = decodeString([]byte(a))
	})
}
