//go:build !race

package shm

import "testing"

// TestNoRaceCrossProcessExchange moves a million frames of mixed sizes each
// way between two processes, every byte checked. Too slow under -race.
func TestNoRaceCrossProcessExchange(t *testing.T) { testExchange(t, 1_000_000) }
