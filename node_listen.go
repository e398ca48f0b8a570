package switchboard

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"syscall"
	"time"
)

// The node's socket: its directory, who may replace the socket (nobody
// but the node's uid), who may open it (its mode and group), and what
// Close removes of them.

// WithSocketMode sets the permission bits of the socket the node creates
// (default 0600, or 0660 with WithSocketGroup), whatever the umask:
// connecting needs write permission, so this says who may connect at all,
// before the node's authorization and policy decide by credentials. It
// does not apply to a listener passed with WithListener.
func WithSocketMode(mode os.FileMode) NodeOption {
	return nodeOption(func(o *nodeOptions) error {
		if mode&^os.ModePerm != 0 {
			return fmt.Errorf("switchboard: socket mode %#o: permission bits only, 0 to 0777", uint32(mode))
		}
		o.socketMode = &mode
		return nil
	})
}

// WithSocketGroup gives the socket the node creates to a group, by name or
// by decimal gid, so that its members may connect (with the default mode
// 0660), as systemd's SocketGroup does; the directories Listen creates for
// the socket get the group too, with mode 0750, so that members can reach
// the socket. The node's user must be root or a member of the group. It
// does not apply to a listener passed with WithListener.
func WithSocketGroup(group string) NodeOption {
	return nodeOption(func(o *nodeOptions) error {
		gid, err := lookupGroup(group)
		if err != nil {
			return err
		}
		o.socketGroup = gid
		return nil
	})
}

// lookupGroup returns the gid of a group given by name or decimal gid.
func lookupGroup(group string) (int, error) {
	if group == "" {
		return 0, errors.New("switchboard: socket group: empty name")
	}
	if gid, err := strconv.ParseUint(group, 10, 32); err == nil {
		return int(gid), nil
	}
	g, err := user.LookupGroup(group)
	if err != nil {
		return 0, fmt.Errorf("switchboard: socket group %q: %w", group, err)
	}
	gid, err := strconv.Atoi(g.Gid)
	if err != nil {
		return 0, fmt.Errorf("switchboard: socket group %q: gid %q", group, g.Gid)
	}
	return gid, nil
}

// Listen creates the node's socket. Its directory is created 0750 (with
// the socket group, if any) when missing; it must belong to the node's
// uid, be writable by nobody else, and not be a symbolic link, since
// whoever may write it could replace the socket with one of their own.
// The socket is bound in a private directory, given its mode and group,
// then moved into place, so that nobody can connect before the mode
// applies. A socket left by a dead node is replaced, a live node's is
// not, and anything at the path that is not a socket is refused. With
// WithListener, Listen serves that listener as it is and checks nothing.
func (n *Node) Listen() error {
	if n.o.listener != nil {
		n.mu.Lock()
		defer n.mu.Unlock()
		if n.closed {
			return ErrClosed
		}
		n.ln = n.o.listener
		n.startProcs()
		return nil
	}
	path := n.o.socket
	dir, err := filepath.Abs(filepath.Dir(path)) // Close removes what it creates, wherever it runs from
	if err != nil {
		return fmt.Errorf("switchboard: socket directory: %w", err)
	}
	path = filepath.Join(dir, filepath.Base(path))
	created, err := n.o.makeDirs(dir)
	if err != nil {
		removeDirs(created)
		return err
	}
	if err := n.o.checkSocketDir(dir, filepath.Base(path)); err != nil {
		removeDirs(created)
		return err
	}
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode()&os.ModeSocket == 0 {
			removeDirs(created)
			return fmt.Errorf("switchboard: %s exists and is not a socket (%v): refusing to replace it", path, fi.Mode().Type())
		}
		c, err := net.DialTimeout("unix", path, time.Second)
		if err == nil {
			c.Close()
			return fmt.Errorf("switchboard: another node serves %s", path)
		}
	}
	ln, id, err := n.o.bind(dir, path)
	if err != nil {
		removeDirs(created)
		return err
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		ln.Close()
		unlinkSocket(id)
		removeDirs(created)
		return ErrClosed
	}
	n.ln, n.createdDirs, n.socketID = ln, created, id
	n.startProcs()
	return nil
}

// socketID tells the socket the node bound from one put at its path
// later, by device and inode.
type socketID struct {
	path     string
	dev, ino uint64
}

// bind creates the listening socket in a private directory (0700) inside
// dir, gives it its group and mode there, out of anyone's reach, and
// moves it to path, replacing a dead node's socket. The listener does not
// unlink on Close: unlinkSocket removes what is at path only if it is
// still this socket.
func (o *nodeOptions) bind(dir, path string) (*net.UnixListener, socketID, error) {
	tmp, err := os.MkdirTemp(dir, ".bind-")
	if err != nil {
		return nil, socketID{}, fmt.Errorf("switchboard: socket directory: %w", err)
	}
	defer os.RemoveAll(tmp)
	bound := filepath.Join(tmp, "s")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: bound, Net: "unix"})
	if err != nil {
		return nil, socketID{}, fmt.Errorf("switchboard: listen: %w", err)
	}
	ln.SetUnlinkOnClose(false)
	var st syscall.Stat_t
	err = o.setSocketAccess(bound)
	if err == nil {
		err = syscall.Lstat(bound, &st)
	}
	if err == nil {
		err = os.Rename(bound, path)
	}
	if err != nil {
		ln.Close()
		return nil, socketID{}, fmt.Errorf("switchboard: socket %s: %w", path, err)
	}
	return ln, socketID{path, uint64(st.Dev), st.Ino}, nil
}

// unlinkSocket removes the socket at its path if it is still the one bind
// made.
func unlinkSocket(id socketID) {
	var st syscall.Stat_t
	if id.path != "" && syscall.Lstat(id.path, &st) == nil && uint64(st.Dev) == id.dev && st.Ino == id.ino {
		os.Remove(id.path)
	}
}

// makeDirs creates the missing directories of dir's path, one at a time,
// and returns those it created, deepest first (a directory someone else
// makes meanwhile is not the node's: it is neither changed nor removed).
// Each is made 0700, then given the socket group, if any, and mode 0750
// through a descriptor that cannot follow a link put in its place.
func (o *nodeOptions) makeDirs(dir string) ([]string, error) {
	var missing []string
	for d := filepath.Clean(dir); ; d = filepath.Dir(d) {
		if _, err := os.Lstat(d); err == nil || !os.IsNotExist(err) {
			break
		}
		missing = append(missing, d)
		if filepath.Dir(d) == d {
			break
		}
	}
	var created []string // deepest first, as removeDirs wants
	for i := len(missing) - 1; i >= 0; i-- {
		d := missing[i]
		if err := os.Mkdir(d, 0o700); err != nil {
			if os.IsExist(err) {
				continue // someone else's
			}
			return created, fmt.Errorf("switchboard: socket directory: %w", err)
		}
		created = append([]string{d}, created...)
		if err := o.ownDir(d); err != nil {
			return created, err
		}
	}
	return created, nil
}

// ownDir gives a directory the node just created the socket group, if
// any, and mode 0750, whatever the umask made of it.
func (o *nodeOptions) ownDir(d string) error {
	fd, err := syscall.Open(d, syscall.O_RDONLY|syscall.O_DIRECTORY|syscall.O_NOFOLLOW|syscall.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("switchboard: socket directory %s: %w", d, err)
	}
	defer syscall.Close(fd)
	var st syscall.Stat_t
	if err := syscall.Fstat(fd, &st); err != nil {
		return fmt.Errorf("switchboard: socket directory %s: %w", d, err)
	}
	if int(st.Uid) != os.Geteuid() {
		return fmt.Errorf("switchboard: socket directory %s was replaced by uid %d's while the node created it", d, st.Uid)
	}
	if o.socketGroup >= 0 {
		if err := syscall.Fchown(fd, -1, o.socketGroup); err != nil {
			return fmt.Errorf("switchboard: socket directory: giving it to group %d: %w (the node's user must be root or a member of the group)", o.socketGroup, err)
		}
	}
	if err := syscall.Fchmod(fd, 0o750); err != nil {
		return fmt.Errorf("switchboard: socket directory %s: %w", d, err)
	}
	return nil
}

// checkSocketDir refuses a socket directory that someone other than the
// node's uid could replace the socket in: one another uid owns, one its
// group or others may write (a sticky /tmp included: anyone may put a
// socket at the path while the node is down), or a symbolic link (whoever
// may change the link may move the socket). Only dir itself is checked,
// not its parents. With a socket group, the group must be able to search
// dir, or the group setting would let nobody in.
func (o *nodeOptions) checkSocketDir(dir, name string) error {
	fi, err := os.Lstat(dir)
	if err != nil {
		return fmt.Errorf("switchboard: socket directory: %w", err)
	}
	if fi.Mode()&os.ModeSymlink != 0 {
		target, err := filepath.EvalSymlinks(dir)
		if err != nil {
			target = "its target"
		}
		return fmt.Errorf("switchboard: socket directory %s is a symbolic link (to %s): whoever can change the link could move the socket; use %s itself", dir, target, target)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return fmt.Errorf("switchboard: socket directory %s: no owner to check", dir)
	}
	uid, mode := os.Geteuid(), st.Mode&0o7777
	fix := fmt.Sprintf("use a directory owned by uid %d with mode 0750 or 0755", uid)
	switch {
	case int(st.Uid) != uid:
		return fmt.Errorf("switchboard: socket directory %s is owned by uid %d, not the node's uid %d: that user could replace the socket; %s, or chown %d %s",
			dir, st.Uid, uid, fix, uid, dir)
	case mode&0o1002 == 0o1002:
		return fmt.Errorf("switchboard: socket directory %s is writable by others (mode %04o, sticky): any user could put a socket of their own at the path; the socket must live in a directory of its own, such as %s",
			dir, mode, filepath.Join(dir, "switchboard", name))
	case mode&0o002 != 0:
		return fmt.Errorf("switchboard: socket directory %s is writable by others (mode %04o): any user could replace the socket; %s, or chmod o-w %s",
			dir, mode, fix, dir)
	case mode&0o020 != 0:
		return fmt.Errorf("switchboard: socket directory %s is writable by its group (gid %d, mode %04o): any member could replace the socket; %s, or chmod g-w %s",
			dir, st.Gid, mode, fix, dir)
	}
	if g := o.socketGroup; g >= 0 && mode&0o001 == 0 && (int(st.Gid) != g || mode&0o010 == 0) {
		return fmt.Errorf("switchboard: socket directory %s (gid %d, mode %04o) does not let the socket group %d reach the socket; chgrp %d %s and chmod g+x %s, or let the node create the directory",
			dir, st.Gid, mode, g, g, dir, dir)
	}
	return nil
}

// setSocketAccess gives the socket its group and mode.
func (o *nodeOptions) setSocketAccess(path string) error {
	mode := os.FileMode(0o600)
	if o.socketGroup >= 0 {
		mode = 0o660
		if err := os.Lchown(path, -1, o.socketGroup); err != nil {
			return fmt.Errorf("switchboard: socket group %d: %w (the node's user must be root or a member of the group)", o.socketGroup, err)
		}
	}
	if o.socketMode != nil {
		mode = *o.socketMode
	}
	if err := os.Chmod(path, mode); err != nil {
		return fmt.Errorf("switchboard: socket mode: %w", err)
	}
	return nil
}

// removeDirs removes the directories the node created for its socket,
// deepest first, as long as they are empty (someone else's files keep
// them).
func removeDirs(dirs []string) {
	for _, d := range dirs {
		if os.Remove(d) != nil {
			return
		}
	}
}
