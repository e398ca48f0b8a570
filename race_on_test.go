//go:build race

package switchboard

const raceEnabled = true
