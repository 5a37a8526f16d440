//go:build !race

package conformance

// raceEnabled is true when the tests are built with -race; TestMain then
// builds the broker with -race too.
const raceEnabled = false
