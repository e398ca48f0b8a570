package switchboard

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// TestListenRefusesUnsafeDir: Listen refuses a socket directory someone
// other than the node's uid could replace the socket in, says why, and
// creates no socket there.
func TestListenRefusesUnsafeDir(t *testing.T) {
	cases := []struct {
		name  string
		setup func(t *testing.T, dir string) string // returns the socket's directory
		want  string
	}{
		{"world-writable", chmodDir(0o777), "is writable by others (mode 0777): any user could replace the socket"},
		{"group-writable", chmodDir(0o770), "is writable by its group (gid " + strconv.Itoa(os.Getegid()) + ", mode 0770)"},
		{"sticky", chmodDir(os.ModeSticky | 0o777), "is writable by others (mode 1777, sticky)"},
		{"symlink", func(t *testing.T, dir string) string {
			link := filepath.Join(filepath.Dir(dir), "link")
			if err := os.Symlink(dir, link); err != nil {
				t.Fatal(err)
			}
			return link
		}, "is a symbolic link (to "},
		{"another owner", func(t *testing.T, dir string) string {
			if os.Geteuid() != 0 {
				t.Skip("needs root to give a directory away")
			}
			if err := os.Chown(dir, 65534, 65534); err != nil {
				t.Fatal(err)
			}
			return dir
		}, "is owned by uid 65534, not the node's uid 0: that user could replace the socket; use a directory owned by uid 0 with mode 0750 or 0755"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "sb")
			if err := os.Mkdir(dir, 0o750); err != nil {
				t.Fatal(err)
			}
			sockDir := tc.setup(t, dir)
			n, err := NewNode(WithSocket(filepath.Join(sockDir, "node.sock")))
			if err != nil {
				t.Fatal(err)
			}
			defer n.Close()
			err = n.Listen()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Listen: %v; want an error with %q", err, tc.want)
			}
			if _, err := os.Lstat(filepath.Join(dir, "node.sock")); !os.IsNotExist(err) {
				t.Fatalf("a refused Listen left a socket: %v", err)
			}
		})
	}
}

func chmodDir(mode os.FileMode) func(*testing.T, string) string {
	return func(t *testing.T, dir string) string {
		if err := os.Chmod(dir, mode); err != nil {
			t.Fatal(err)
		}
		return dir
	}
}

// TestListenSetsModes: the directory Listen creates is 0750 whatever the
// umask, the socket 0600 by default, 0660 with a group, or the mode asked
// for; the group goes to both; Close removes the directory.
func TestListenSetsModes(t *testing.T) {
	type want struct {
		dir, sock os.FileMode
		gid       int // -1: the node's
	}
	cases := []struct {
		name  string
		umask int
		opts  []NodeOption
		root  bool
		want  want
	}{
		{"default", 0o022, nil, false, want{0o750, 0o600, -1}},
		{"tight umask", 0o077, nil, false, want{0o750, 0o600, -1}},
		{"no umask", 0, nil, false, want{0o750, 0o600, -1}},
		{"mode", 0o022, []NodeOption{WithSocketMode(0o666)}, false, want{0o750, 0o666, -1}},
		{"group", 0o077, []NodeOption{WithSocketGroup("4242")}, true, want{0o750, 0o660, 4242}},
		{"group and mode", 0o022, []NodeOption{WithSocketGroup("4242"), WithSocketMode(0o620)}, true, want{0o750, 0o620, 4242}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if tc.root && os.Geteuid() != 0 {
				t.Skip("needs root to give the socket to any group")
			}
			dir := filepath.Join(t.TempDir(), "run", "sb")
			sock := filepath.Join(dir, "node.sock")
			old := unix.Umask(tc.umask)
			n, err := NewNode(append([]NodeOption{WithSocket(sock)}, tc.opts...)...)
			if err == nil {
				err = n.Listen()
			}
			unix.Umask(old)
			if err != nil {
				t.Fatal(err)
			}
			gid := os.Getegid()
			if tc.want.gid >= 0 {
				gid = tc.want.gid
			}
			for _, c := range []struct {
				path string
				mode os.FileMode
			}{{dir, tc.want.dir}, {filepath.Dir(dir), tc.want.dir}, {sock, tc.want.sock}} {
				fi, err := os.Lstat(c.path)
				if err != nil {
					t.Fatal(err)
				}
				st := fi.Sys().(*syscall.Stat_t)
				if fi.Mode().Perm() != c.mode || int(st.Gid) != gid {
					t.Errorf("%s: mode %#o gid %d, want %#o gid %d", c.path, fi.Mode().Perm(), st.Gid, c.mode, gid)
				}
			}
			n.Close()
			if _, err := os.Lstat(filepath.Dir(dir)); !os.IsNotExist(err) {
				t.Errorf("the directories Listen created are still there after Close: %v", err)
			}
		})
	}
}

// TestListenGroupMustReachTheSocket: with a socket group, an existing
// directory the group cannot search is refused.
func TestListenGroupMustReachTheSocket(t *testing.T) {
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	n, err := NewNode(WithSocket(filepath.Join(dir, "node.sock")), WithSocketGroup("4242"))
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	if err := n.Listen(); err == nil || !strings.Contains(err.Error(), "does not let the socket group 4242 reach the socket") {
		t.Fatalf("Listen: %v; want the group's reach refused", err)
	}
}

// TestListenerSkipsDirChecks: a listener handed in is served as it is,
// wherever it lives.
func TestListenerSkipsDirChecks(t *testing.T) {
	dir := t.TempDir()
	os.Chmod(dir, 0o777)
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: filepath.Join(dir, "node.sock"), Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	n, err := NewNode(WithListener(ln))
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Listen(); err != nil {
		t.Fatalf("Listen with a listener: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- n.Serve(context.Background()) }()
	n.Close()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// TestSocketOptionsRefuseNonsense: a mode beyond the permission bits, and
// a group that does not exist, fail NewNode.
func TestSocketOptionsRefuseNonsense(t *testing.T) {
	if _, err := NewNode(WithSocketMode(os.ModeSetuid | 0o660)); err == nil {
		t.Error("a setuid socket mode was taken")
	}
	if _, err := NewNode(WithSocketGroup("no-such-group-sb")); err == nil || !strings.Contains(err.Error(), "no-such-group-sb") {
		t.Errorf("an unknown group: %v", err)
	}
	if _, err := NewNode(WithSocketGroup("")); err == nil {
		t.Error("an empty group was taken")
	}
}

// Listen replaces a dead node's socket, never anything else at the path,
// and binds no temporary file it leaves behind.
func TestListenReplacesOnlySockets(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "sb")
	if err := os.Mkdir(dir, 0o750); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "node.sock")
	if err := os.WriteFile(path, []byte("precious"), 0o600); err != nil {
		t.Fatal(err)
	}
	n, err := NewNode(WithSocket(path))
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Listen(); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Fatalf("Listen over a regular file: %v, want a refusal naming it", err)
	}
	n.Close()
	if b, err := os.ReadFile(path); err != nil || string(b) != "precious" {
		t.Fatalf("the file at the path: %q %v", b, err)
	}
	os.Remove(path)
	// A dead node's socket is replaced.
	dead, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	dead.SetUnlinkOnClose(false)
	dead.Close()
	n = startNode(t, WithSocket(path))
	c := dial(t, n)
	if _, err := c.Call(ctx5(t), SystemService, SysPing, nil); err != nil {
		t.Fatal(err)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Fatalf("the socket directory holds %d entries, want the socket alone", len(ents))
	}
	c.Close()
	n.Close()
	if _, err := os.Lstat(path); !os.IsNotExist(err) {
		t.Fatalf("the socket after Close: %v", err)
	}
}
