//go:build !race

package engine_test

// raceEnabled is true when the tests are built with -race, which changes
// allocation counts (sync.Pool drops items at random).
const raceEnabled = false
