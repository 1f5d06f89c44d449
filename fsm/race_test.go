//go:build race

package fsm_test

// raceEnabled is whether the race detector is on; load tests scale down
// under it.
const raceEnabled = true
