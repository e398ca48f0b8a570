package tests

import (
	"context"
	"fmt"
	"os"
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
