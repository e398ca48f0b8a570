package main

import (
	"fmt"
	"strings"
	"testing"

	"github.com/switchboard-ipc/switchboard"
)

func loadPolicy(t *testing.T, toml string) *policy {
	t.Helper()
	c := defaultConfig()
	if err := decodeFile("test.toml", []byte(toml), c); err != nil {
		t.Fatal(err)
	}
	c.Socket = "/nonexistent"
	p, err := c.validate()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestPolicyDecisions(t *testing.T) {
	p := loadPolicy(t, `
[policy]
default = "allow"
[policy.connect]
uids = [1000]
gids = [100]
[policy.bus]
monitor = { uids = [0] }
[[policy.service]]
id = 7
call = { gids = [50] }
[[policy.group]]
group = "sys.*"
publish = { uids = [0] }
subscribe = { all = true }
[[policy.group]]
group = "sys.audit.*"
subscribe = { uids = [0] }
[[policy.group]]
group = "sys.audit.public"
subscribe = { all = true }
[[policy.name]]
name = "org.example.*"
own = { uids = [1000] }
send = { gids = [100] }
`)
	root := switchboard.Cred{UID: 0, GID: 0}
	alice := switchboard.Cred{UID: 1000, GID: 1000}
	bob := switchboard.Cred{UID: 1001, GID: 100}
	carol := switchboard.Cred{UID: 1002, GID: 50}
	for _, tc := range []struct {
		who    switchboard.Cred
		what   switchboard.Action
		target string
		refuse string // "" allowed, else a substring of the refusal
	}{
		{root, switchboard.ActionConnect, "", "policy: uid 0 (gid 0) may not connect"}, // listed uids/gids only
		{alice, switchboard.ActionConnect, "", ""},
		{bob, switchboard.ActionConnect, "", ""}, // by gid
		{carol, switchboard.ActionConnect, "", "may not connect"},
		{carol, switchboard.ActionCall, "7", ""},
		{alice, switchboard.ActionCall, "7", "policy: uid 1000 may not call service 7"},
		{alice, switchboard.ActionCall, "8", ""}, // no rule: default allow
		{root, switchboard.ActionPublish, "sys.x", ""},
		{bob, switchboard.ActionPublish, "sys.x", `policy: uid 1001 may not publish to "sys.x"`},
		{bob, switchboard.ActionPublish, "user.x", ""},
		{bob, switchboard.ActionSubscribe, "sys.x", ""},                                             // sys.*: all
		{bob, switchboard.ActionSubscribe, "sys.audit.log", `may not subscribe to "sys.audit.log"`}, // the longer prefix wins
		{bob, switchboard.ActionSubscribe, "sys.audit.public", ""},                                  // the exact name wins
		{alice, switchboard.ActionOwn, "org.example.svc", ""},
		{bob, switchboard.ActionOwn, "org.example.svc", `policy: uid 1001 may not own "org.example.svc"`},
		{bob, switchboard.ActionSend, "org.example.svc", ""},
		{alice, switchboard.ActionSend, "org.example.svc", `may not send to "org.example.svc"`},
		{alice, switchboard.ActionSend, "n1.c4", ""},
		{root, switchboard.ActionMonitor, "", ""},
		{alice, switchboard.ActionMonitor, "", "policy: uid 1000 may not monitor the bus"},
		{alice, switchboard.ActionList, "", ""},
		{alice, switchboard.ActionList, "sys.x", ""},
	} {
		err := p.Allow(tc.who, tc.what, tc.target)
		switch {
		case tc.refuse == "" && err != nil:
			t.Errorf("uid %d %s %q: refused: %v", tc.who.UID, tc.what, tc.target, err)
		case tc.refuse != "" && (err == nil || !strings.Contains(err.Error(), tc.refuse)):
			t.Errorf("uid %d %s %q: %v, want a refusal with %q", tc.who.UID, tc.what, tc.target, err, tc.refuse)
		}
	}
}

func TestPolicyDefaults(t *testing.T) {
	open := loadPolicy(t, "")
	me := switchboard.Cred{UID: open.nodeUID}
	other := switchboard.Cred{UID: open.nodeUID + 12345}
	if err := open.Allow(me, switchboard.ActionConnect, ""); err != nil {
		t.Errorf("the node's own uid: %v", err)
	}
	if err := open.Allow(other, switchboard.ActionConnect, ""); err == nil {
		t.Error("without [policy.connect], another uid may connect")
	}
	if err := open.Allow(other, switchboard.ActionPublish, "g"); err != nil {
		t.Errorf("default allow: %v", err)
	}
	// Monitoring is privileged even when everything else is allowed.
	if err := open.Allow(other, switchboard.ActionMonitor, ""); err == nil || !strings.Contains(err.Error(), "may not monitor the bus") {
		t.Errorf("another uid may monitor without a rule: %v", err)
	}
	for _, c := range []switchboard.Cred{me, {UID: 0}} {
		if err := open.Allow(c, switchboard.ActionMonitor, ""); err != nil {
			t.Errorf("uid %d may not monitor: %v", c.UID, err)
		}
	}
	byRule := loadPolicy(t, fmt.Sprintf("[policy.bus]\nmonitor = { uids = [%d] }\n", other.UID))
	if err := byRule.Allow(other, switchboard.ActionMonitor, ""); err != nil {
		t.Errorf("a monitor rule naming the uid: %v", err)
	}
	closed := loadPolicy(t, "[policy]\ndefault = \"deny\"\n[[policy.service]]\nid = 65535\ncall = { all = true }\n")
	if err := closed.Allow(other, switchboard.ActionPublish, "g"); err == nil || !strings.Contains(err.Error(), `may not publish to "g"`) {
		t.Errorf("default deny: %v", err)
	}
	if err := closed.Allow(other, switchboard.ActionCall, "65535"); err != nil {
		t.Errorf("default deny, call allowed by a rule: %v", err)
	}
	// Without a monitor rule, root and the node's uid monitor under deny too.
	if err := closed.Allow(me, switchboard.ActionMonitor, ""); err != nil {
		t.Errorf("default deny, the node's uid may not monitor: %v", err)
	}
	if err := closed.Allow(other, switchboard.ActionMonitor, ""); err == nil {
		t.Error("default deny, another uid may monitor")
	}
}

func TestEmbeddedDefaultIsValid(t *testing.T) {
	c := defaultConfig()
	c.Socket = "/nonexistent"
	if _, err := c.validate(); err != nil {
		t.Fatal(err)
	}
	// Every setting has a distinct flag and environment variable.
	seen := map[string]bool{}
	for _, s := range settings {
		for _, n := range []string{"--" + s.flag(), "$" + s.env()} {
			if seen[n] {
				t.Errorf("%s used twice", n)
			}
			seen[n] = true
		}
		if err := s.set(c, s.value(c)); err != nil {
			t.Errorf("%s does not take its own value back: %v", s.key, err)
		}
	}
}

// TestPolicyRemoteNodes: a connection on another node of the cluster is
// admitted by the nodes it is on, never by a uid, a gid or all (another
// host's uids are not this one's), and is never privileged.
func TestPolicyRemoteNodes(t *testing.T) {
	p := loadPolicy(t, `
[policy]
default = "deny"
[[policy.name]]
name = "svc.*"
send = { all = true, uids = [0], nodes = ["n2"] }
[[policy.group]]
group = "*"
publish = { nodes = ["*"] }
`)
	local := switchboard.Cred{UID: 1000}
	remoteRoot := switchboard.Cred{UID: 0, Node: "n3"}
	fromN2 := switchboard.Cred{UID: 4242, Node: "n2"}
	for _, tc := range []struct {
		who    switchboard.Cred
		what   switchboard.Action
		target string
		allow  bool
	}{
		{local, switchboard.ActionSend, "svc.a", true},
		{fromN2, switchboard.ActionSend, "svc.a", true},
		{remoteRoot, switchboard.ActionSend, "svc.a", false}, // uid 0 of n3 is not root here
		{remoteRoot, switchboard.ActionPublish, "g", true},
		{remoteRoot, switchboard.ActionMonitor, "", false},
		{switchboard.Cred{UID: 0}, switchboard.ActionMonitor, "", true},
	} {
		err := p.Allow(tc.who, tc.what, tc.target)
		if (err == nil) != tc.allow {
			t.Errorf("%+v %v %q: %v, want allowed=%v", tc.who, tc.what, tc.target, err, tc.allow)
		}
	}
	c := defaultConfig()
	if err := decodeFile("t.toml", []byte("[policy.connect]\nnodes = [\"a.b\"]\n"), c); err == nil {
		c.Socket = "/nonexistent"
		if _, err := c.validate(); err == nil || !strings.Contains(err.Error(), "nodes") {
			t.Fatalf("a bad node name: %v", err)
		}
	}
}
