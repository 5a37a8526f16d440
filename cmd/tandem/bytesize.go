package main

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// ByteSize is a number of bytes. In YAML it is a plain integer (bytes) or an
// integer with a unit: B, KB, MB, GB, TB (powers of 1000) or KiB, MiB, GiB,
// TiB (powers of 1024), as in "8GiB" or "512 MiB". Units are case-insensitive.
type ByteSize int64

// Binary and decimal units, largest first so String picks the largest exact
// one.
var byteUnits = []struct {
	name string
	size int64
}{
	{"TiB", 1 << 40},
	{"GiB", 1 << 30},
	{"MiB", 1 << 20},
	{"KiB", 1 << 10},
	{"TB", 1e12},
	{"GB", 1e9},
	{"MB", 1e6},
	{"KB", 1e3},
	{"B", 1},
}

// errByteSize is wrapped by every ParseByteSize error.
var errByteSize = errors.New("invalid byte size")

// ParseByteSize parses s as described on ByteSize. Negative sizes and sizes
// that overflow int64 are errors.
func ParseByteSize(s string) (ByteSize, error) {
	t := strings.TrimSpace(s)
	i := 0
	for i < len(t) && t[i] >= '0' && t[i] <= '9' {
		i++
	}
	if i == 0 {
		return 0, fmt.Errorf("%w %q: want a whole number of bytes, optionally followed by a unit such as MiB or GiB", errByteSize, s)
	}
	n, err := strconv.ParseInt(t[:i], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%w %q: number out of range", errByteSize, s)
	}
	unit := strings.TrimSpace(t[i:])
	if unit == "" {
		return ByteSize(n), nil
	}
	for _, u := range byteUnits {
		if strings.EqualFold(unit, u.name) {
			if n > math.MaxInt64/u.size {
				return 0, fmt.Errorf("%w %q: too large", errByteSize, s)
			}
			return ByteSize(n * u.size), nil
		}
	}
	return 0, fmt.Errorf("%w %q: unknown unit %q (use B, KB, MB, GB, TB, KiB, MiB, GiB or TiB)", errByteSize, s, unit)
}

// String formats b with the largest binary unit that divides it exactly,
// so that ParseByteSize(b.String()) == b.
func (b ByteSize) String() string {
	if b == 0 {
		return "0"
	}
	for _, u := range byteUnits[:4] {
		if b%ByteSize(u.size) == 0 {
			return strconv.FormatInt(int64(b)/u.size, 10) + u.name
		}
	}
	return strconv.FormatInt(int64(b), 10)
}

// UnmarshalYAML accepts an integer or a string with a unit.
func (b *ByteSize) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("line %d: a byte size must be a number or a string such as \"8GiB\"", n.Line)
	}
	v, err := ParseByteSize(n.Value)
	if err != nil {
		return fmt.Errorf("line %d: %w", n.Line, err)
	}
	*b = v
	return nil
}

// MarshalYAML writes the String form.
func (b ByteSize) MarshalYAML() (any, error) {
	return b.String(), nil
}
