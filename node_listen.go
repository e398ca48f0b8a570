package switchboard

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"time"
)

// The node's socket: its directory, the socket file, and what Close
// removes of them.

// Listen creates the node's socket: its directory is created 0750; a
// socket left by a dead node is replaced, a live node's is not.
func (n *Node) Listen() error {
	if n.o.listener != nil {
		n.mu.Lock()
		defer n.mu.Unlock()
		if n.closed {
			return ErrClosed
		}
		n.ln = n.o.listener
		return nil
	}
	path := n.o.socket
	dir, err := filepath.Abs(filepath.Dir(path)) // Close removes what it creates, wherever it runs from
	if err != nil {
		return fmt.Errorf("switchboard: socket directory: %w", err)
	}
	created := missingDirs(dir)
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return fmt.Errorf("switchboard: socket directory: %w", err)
	}
	if _, err := os.Lstat(path); err == nil {
		c, err := net.DialTimeout("unix", path, time.Second)
		if err == nil {
			c.Close()
			return fmt.Errorf("switchboard: another node serves %s", path)
		}
		if err := os.Remove(path); err != nil {
			removeDirs(created)
			return fmt.Errorf("switchboard: removing stale socket: %w", err)
		}
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		removeDirs(created)
		return fmt.Errorf("switchboard: listen: %w", err)
	}
	ln.SetUnlinkOnClose(true)
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		ln.Close()
		removeDirs(created)
		return ErrClosed
	}
	n.ln, n.createdDirs = ln, created
	return nil
}

// missingDirs returns the directories of dir's path that do not exist yet,
// deepest first: those MkdirAll will create.
func missingDirs(dir string) []string {
	var out []string
	for d := filepath.Clean(dir); ; d = filepath.Dir(d) {
		if _, err := os.Lstat(d); err == nil || !os.IsNotExist(err) {
			return out
		}
		out = append(out, d)
		if filepath.Dir(d) == d {
			return out
		}
	}
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
