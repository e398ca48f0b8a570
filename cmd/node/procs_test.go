package main

import (
	"os"
	"testing"
)

// procs = auto governs the Ps of a node with the cluster on, unless the
// GOMAXPROCS variable is set; adaptive always; fixed never.
func TestAdaptiveProcsChoice(t *testing.T) {
	cases := []struct {
		procs   string
		cluster bool
		env     bool
		want    bool
	}{
		{"auto", true, false, true},
		{"auto", true, true, false},
		{"auto", false, false, false},
		{"adaptive", false, true, true},
		{"fixed", true, false, false},
	}
	for _, tc := range cases {
		if tc.env {
			t.Setenv("GOMAXPROCS", "2")
		} else {
			t.Setenv("GOMAXPROCS", "") // restored after the test
			os.Unsetenv("GOMAXPROCS")
		}
		cfg := &Config{Procs: tc.procs}
		cfg.Cluster.Enabled = tc.cluster
		if got := adaptiveProcs(cfg); got != tc.want {
			t.Errorf("procs %q, cluster %v, GOMAXPROCS set %v: adaptive %v, want %v", tc.procs, tc.cluster, tc.env, got, tc.want)
		}
	}
}
