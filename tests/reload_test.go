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

const reloadBase = `name = "reload"
[log]
level = "info"
`

// TestReloadPolicy: SIGHUP applies a new policy at once without dropping
// connections; a file that does not load is refused and the policy in
// force kept; settings that cannot change live are reported.
func TestReloadPolicy(t *testing.T) {
	d := startDaemon(t, daemonOpts{config: reloadBase})
	sock := []string{"--socket", d.socket}

	// A client that stays connected across every reload. Its session with
	// the system service is opened now, under the permissive policy.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	held, err := switchboard.Dial(ctx, switchboard.WithSocket(d.socket), switchboard.WithClientName("held"))
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	if _, err := held.Call(ctx, switchboard.SystemService, switchboard.SysPing, nil); err != nil {
		t.Fatal(err)
	}
	if r := runCLI(t, nil, append([]string{"call"}, append(sock, "0xffff", "2", "before")...)...); r.code != 0 || r.stdout != "before" {
		t.Fatalf("call before the reload: exit %d %q %s", r.code, r.stdout, r.stderr)
	}

	// Valid: only uid 4242 may call the system service, and rings.event
	// changes (which needs a restart).
	d.writeConfig(t, reloadBase+`
[rings]
event = 65536
[[policy.service]]
id = 65535
call = { uids = [4242] }
`)
	d.signal(t, syscall.SIGHUP)
	d.waitLog(t, "configuration reloaded", 1)
	r := runCLI(t, nil, append([]string{"call"}, append(sock, "0xffff", "2", "after")...)...)
	if r.code != 1 || !strings.Contains(r.stderr, fmt.Sprintf("policy: uid %d may not call service 65535", os.Geteuid())) {
		t.Fatalf("call after the reload: exit %d, stderr %q; want exit 1 and a policy refusal", r.code, r.stderr)
	}
	if log := d.log.String(); !strings.Contains(log, "needs restart") || !strings.Contains(log, "key=rings.event") {
		t.Errorf("no needs-restart line for rings.event in the log:\n%s", log)
	}
	// The held connection survived, and its open session stands.
	if _, err := held.Call(ctx, switchboard.SystemService, switchboard.SysPing, nil); err != nil {
		t.Fatalf("held connection after the reload: %v", err)
	}

	// Invalid: a file that allows everything again but has a bad key is
	// refused whole; the restrictive policy stays.
	d.writeConfig(t, reloadBase+`
[events]
queue_limit = -1
`)
	d.signal(t, syscall.SIGHUP)
	d.waitLog(t, "configuration refused", 1)
	if log := d.log.String(); !strings.Contains(log, "events.queue_limit: must be >= 0") {
		t.Errorf("the refusal does not name the key:\n%s", log)
	}
	r = runCLI(t, nil, append([]string{"call"}, append(sock, "0xffff", "2", "still")...)...)
	if r.code != 1 || !strings.Contains(r.stderr, fmt.Sprintf("policy: uid %d may not call", os.Geteuid())) {
		t.Fatalf("call after the refused reload: exit %d, stderr %q; want the old policy's refusal", r.code, r.stderr)
	}
	if _, err := held.Call(ctx, switchboard.SystemService, switchboard.SysPing, nil); err != nil {
		t.Fatalf("held connection after the refused reload: %v", err)
	}

	// Connect: only uid 4242 may connect now; root is refused with the
	// policy's reason, and the held connection stays.
	d.writeConfig(t, reloadBase+`
[policy.connect]
uids = [4242]
`)
	d.signal(t, syscall.SIGHUP)
	d.waitLog(t, "configuration reloaded", 2)
	r = runCLI(t, nil, append([]string{"status"}, sock...)...)
	if r.code != 1 || !strings.Contains(r.stderr, fmt.Sprintf("policy: uid %d (gid %d) may not connect", os.Geteuid(), os.Getegid())) {
		t.Fatalf("status under a connect policy that excludes root: exit %d, stderr %q", r.code, r.stderr)
	}
	if _, err := held.Call(ctx, switchboard.SystemService, switchboard.SysPing, nil); err != nil {
		t.Fatalf("held connection after the connect policy: %v", err)
	}

	// Back to the permissive file: everything works again.
	d.writeConfig(t, reloadBase)
	d.signal(t, syscall.SIGHUP)
	d.waitLog(t, "configuration reloaded", 3)
	if r := runCLI(t, nil, append([]string{"call"}, append(sock, "0xffff", "2", "again")...)...); r.code != 0 || r.stdout != "again" {
		t.Fatalf("call after restoring the policy: exit %d %q %s", r.code, r.stdout, r.stderr)
	}
	if code := d.stop(t); code != 0 {
		t.Fatalf("node exit code %d", code)
	}
}
