package tests

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The node's socket directory and the socket's mode and group (issue 11:
// the node must not be impersonated). Each test runs the cmd/node binary.

// TestSocketDirRefused: the daemon refuses to serve from a directory
// another uid owns or that its group or others may write, exits 3, and
// says why and how to fix it; nothing is created there.
func TestSocketDirRefused(t *testing.T) {
	cases := []struct {
		name  string
		setup func(t *testing.T, dir string)
		want  string
	}{
		{"owned by another uid", func(t *testing.T, dir string) {
			if os.Geteuid() != 0 {
				t.Skip("needs root to give a directory to uid 65534")
			}
			if err := os.Chown(dir, 65534, 65534); err != nil {
				t.Fatal(err)
			}
		}, fmt.Sprintf("is owned by uid 65534, not the node's uid %d: that user could replace the socket", os.Geteuid())},
		{"mode 0777", chmodTo(0o777), "is writable by others (mode 0777): any user could replace the socket; use a directory owned by uid"},
		{"mode 0770", chmodTo(0o770), "is writable by its group (gid "},
		{"sticky 1777", chmodTo(os.ModeSticky | 0o777), "the socket must live in a directory of its own"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(publicDir(t), "sb")
			if err := os.Mkdir(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			tc.setup(t, dir)
			r := runCLI(t, nil, "serve", "--socket", filepath.Join(dir, "node.sock"))
			if r.code != 3 || !strings.Contains(r.stderr, "socket directory "+dir+" ") || !strings.Contains(r.stderr, tc.want) {
				t.Fatalf("exit %d, stderr %q; want exit 3 and %q about %s", r.code, r.stderr, tc.want, dir)
			}
			if ents, _ := os.ReadDir(dir); len(ents) != 0 {
				t.Fatalf("the refused node left %d entries in %s", len(ents), dir)
			}
		})
	}
}

func chmodTo(mode os.FileMode) func(*testing.T, string) {
	return func(t *testing.T, dir string) {
		if err := os.Chmod(dir, mode); err != nil {
			t.Fatal(err)
		}
	}
}

// TestSocketDirCreated: a missing socket directory is created 0750, the
// socket is 0600 by default, and both go when the node stops.
func TestSocketDirCreated(t *testing.T) {
	dir := filepath.Join(publicDir(t), "run", "sb")
	socket := filepath.Join(dir, "node.sock")
	d := startDaemon(t, daemonOpts{args: []string{"--socket", socket}, noWait: true})
	waitSocket(t, d, socket)
	wantModeGid(t, dir, 0o750, os.Getegid())
	wantModeGid(t, filepath.Dir(dir), 0o750, os.Getegid())
	wantModeGid(t, socket, 0o600, os.Getegid())
	if code := d.stop(t); code != 0 {
		t.Fatalf("node exit code %d", code)
	}
	if _, err := os.Lstat(filepath.Dir(dir)); !os.IsNotExist(err) {
		t.Fatalf("the directories the node created are still there: %v", err)
	}
}

// testGroup is the group the socket is given; uid 65534 joins it as a
// supplementary group, or not.
const testGroup = 4242

// TestSocketModeAndGroup: socket_mode and socket_group, from the file, a
// flag or the environment, give the socket its mode and group; a client
// running as uid 65534 connects when the group is one of its
// supplementary groups, and is told it is kept out when it is not.
func TestSocketModeAndGroup(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to give the socket to a group and run clients as another uid")
	}
	const admitAll = "[policy.connect]\nall = true\n"
	g := strconv.Itoa(testGroup)
	cases := []struct {
		name    string
		o       daemonOpts
		subdir  bool // the socket in a directory the node creates
		wantDir bool
	}{
		{name: "file", o: daemonOpts{config: "socket_group = \"" + g + "\"\nsocket_mode = \"0660\"\n" + admitAll}, subdir: true},
		{name: "flag", o: daemonOpts{config: admitAll, args: []string{"--socket-group", g, "--socket-mode", "0660"}}},
		{name: "env", o: daemonOpts{config: admitAll, env: []string{"SWITCHBOARD_SOCKET_GROUP=" + g, "SWITCHBOARD_SOCKET_MODE=0660"}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tc.o.noWait = true
			var socket string
			if tc.subdir {
				socket = filepath.Join(publicDir(t), "sb", "node.sock")
				tc.o.args = append(tc.o.args, "--socket", socket)
			}
			d := startDaemon(t, tc.o)
			if socket == "" {
				socket = d.socket
			}
			waitSocket(t, d, socket)
			wantModeGid(t, socket, 0o660, testGroup)
			if tc.subdir {
				wantModeGid(t, filepath.Dir(socket), 0o750, testGroup)
			}
			for _, groups := range [][]uint32{{testGroup}, {}} {
				cl := startRole(t, "dial", []string{"SB_SOCKET=" + socket},
					&syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534, Groups: groups}})
				if err := cl.cmd.Wait(); err != nil {
					t.Fatalf("client: %v", err)
				}
				out := strings.TrimSpace(cl.stdout.String())
				if len(groups) > 0 && out != "ok" {
					t.Errorf("uid 65534 in group %d: %q, want ok", testGroup, out)
				}
				if len(groups) == 0 && (!strings.Contains(out, "keep uid 65534 out") || !strings.Contains(out, "permission denied")) {
					t.Errorf("uid 65534 outside group %d: %q, want a dial error saying it is kept out", testGroup, out)
				}
			}
		})
	}
}

// waitSocket waits until the daemon accepts on socket.
func waitSocket(t *testing.T, d *daemon, socket string) {
	t.Helper()
	checkFor(t, 15*time.Second, func() error {
		select {
		case <-d.waited:
			t.Fatalf("node exited: %v\n%s", d.cmd.ProcessState, d.log.String())
		default:
		}
		c, err := net.Dial("unix", socket)
		if err != nil {
			return err
		}
		c.Close()
		return nil
	})
}

// wantModeGid checks a file's permission bits and group.
func wantModeGid(t *testing.T, path string, mode os.FileMode, gid int) {
	t.Helper()
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st := fi.Sys().(*syscall.Stat_t); fi.Mode().Perm() != mode || int(st.Gid) != gid {
		t.Errorf("%s: mode %#o gid %d, want %#o gid %d", path, fi.Mode().Perm(), st.Gid, mode, gid)
	}
}
