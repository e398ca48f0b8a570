//go:build !race

package switchboard

const raceEnabled = false
