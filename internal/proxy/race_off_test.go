//go:build !race

package proxy

// raceEnabled is whether the race detector is on.
const raceEnabled = false
