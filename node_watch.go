package switchboard

import (
	"log/slog"

	"github.com/switchboard-ipc/switchboard/actors/conn"
)

// sockWatcher returns the node's socket watcher, which reads the control
// sockets of every shared-memory connection on one goroutine: started at
// the first connection, closed by Close once every connection is done. If
// it cannot start (no descriptor for its epoll instance), it returns nil
// and each connection watches its own socket. The caller holds n.mu.
func (n *Node) sockWatcher() *conn.SocketWatcher {
	if n.watch == nil && !n.watchFailed {
		w, err := conn.NewSocketWatcher()
		if err != nil {
			n.watchFailed = true
			n.o.logger.Warn("socket watcher: each connection watches its own socket", slog.Any("err", err))
			return nil
		}
		n.watch = w
	}
	return n.watch
}

// closeWatcher stops the socket watcher, once every connection is done.
func (n *Node) closeWatcher() {
	n.mu.Lock()
	w := n.watch
	n.mu.Unlock()
	if w != nil {
		w.Close()
	}
}
