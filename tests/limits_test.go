package tests

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/switchboard-ipc/switchboard"
)

// TestUIDFloodKeepsOthersIn: a uid that floods the node with connections
// and with handshakes it never finishes is held to its limits, told why
// (ErrLimitExceeded), and a client of another uid still connects at once.
func TestUIDFloodKeepsOthersIn(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to run a client as another uid")
	}
	_, socket := nodeChild(t, "SB_AUTHORIZE=all", "SB_UID_LIMITS=8,4")
	os.Chmod(socket, 0o777)
	flood := startRole(t, "flood", []string{"SB_SOCKET=" + socket}, &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}})
	checkFor(t, 20*time.Second, func() error {
		if !strings.Contains(flood.stdout.String(), "handshakes") {
			return fmt.Errorf("flood not done yet: %q", flood.stdout.String())
		}
		return nil
	})
	out := flood.stdout.String()
	t.Logf("the flood: %s", strings.TrimSpace(out))
	if !strings.Contains(out, "conns 8 limited true") {
		t.Fatalf("the flooding uid got %q; want 8 connections, then ErrLimitExceeded", out)
	}
	if !strings.Contains(out, "refused at 4") {
		t.Fatalf("the flooding uid's handshakes: %q; want the fifth refused", out)
	}
	// Meanwhile root connects, and is served, within a second.
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	c, err := switchboard.Dial(ctx, switchboard.WithSocket(socket))
	if err != nil {
		t.Fatalf("another uid, during the flood: %v", err)
	}
	defer c.Close()
	if _, err := c.Call(ctx, switchboard.SystemService, switchboard.SysPing, nil); err != nil {
		t.Fatalf("another uid, during the flood: %v", err)
	}
	t.Logf("another uid connected and was served in %v during the flood", time.Since(start))
}

// BenchmarkConnectDuringFlood measures, for the closing note of the
// limits work, how fast the node refuses a uid past its connection limit
// and how long a client of another uid takes to connect and be served
// meanwhile (one op: Dial, a ping, Close).
func BenchmarkConnectDuringFlood(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("needs root to run a client as another uid")
	}
	_, socket := nodeChild(b, "SB_AUTHORIZE=all", "SB_UID_LIMITS=8,4")
	os.Chmod(socket, 0o777)
	flood := startRole(b, "dialloop", []string{"SB_SOCKET=" + socket, "SB_SECONDS=3"},
		&syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}})
	time.Sleep(200 * time.Millisecond) // the flood holds its 8 and is dialling
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for range b.N {
		start := time.Now()
		c, err := switchboard.Dial(context.Background(), switchboard.WithSocket(socket))
		if err != nil {
			b.Fatal(err)
		}
		if _, err := c.Call(context.Background(), switchboard.SystemService, switchboard.SysPing, nil); err != nil {
			b.Fatal(err)
		}
		c.Close()
		lat = append(lat, time.Since(start))
	}
	b.StopTimer()
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "median-µs")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(flood.stdout.String(), "refused") && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	b.Logf("flood (uid 65534): %s", strings.TrimSpace(flood.stdout.String()))
}
