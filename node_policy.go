package switchboard

import (
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/switchboard-ipc/switchboard/shm"
)

// WithPolicy sets the node's policy. Without one, every action of a
// connected client is allowed but monitoring the bus, which only root and
// the node's uid may do (who may connect is then WithAuthorize's decision
// alone). A policy and WithAuthorize both apply to connecting.
func WithPolicy(p Policy) NodeOption {
	return nodeOption(func(o *nodeOptions) error { o.policy = p; return nil })
}

// SetPolicy replaces the node's policy at once, without dropping any
// connection (cmd/node calls it on SIGHUP); nil allows everything but
// monitoring (see WithPolicy).
// Actions already decided stand; subscriptions and names held stay held.
func (n *Node) SetPolicy(p Policy) {
	n.policy.Store(&policyBox{p})
	n.direct.policyGen.Add(1)
	n.directRevokeWhere(nil) // the channels were allowed by the old policy
}

type policyBox struct{ p Policy }

// credOf is a local process's credentials.
func credOf(k shm.Cred) Cred { return Cred{PID: k.PID, UID: k.UID, GID: k.GID} }

// allow asks the current policy (decide); a refusal is counted and
// logged (see refuse).
func (n *Node) allow(who Cred, what Action, target string) error {
	err := n.decide(who, what, target)
	if err != nil {
		n.refuse(who, what, target, err)
	}
	return err
}

// decide asks the current policy, and counts nothing. Without a policy,
// everything is allowed but monitoring, which only root and the node's uid
// may do.
func (n *Node) decide(who Cred, what Action, target string) error {
	if b := n.policy.Load(); b != nil && b.p != nil {
		return b.p.Allow(who, what, target)
	}
	if what == ActionMonitor && (who.Node != "" || who.UID != 0 && who.UID != uint32(os.Geteuid())) {
		return fmt.Errorf("uid %d may not monitor the bus", who.UID)
	}
	return nil
}

// refuse counts a refusal by action and logs it at warn, with who asked
// what: at most refusalLines a second, so that a flood of refusals cannot
// fill the log (the next line says how many were left out).
func (n *Node) refuse(who Cred, what Action, target string, why error) {
	if what >= 0 && int(what) < len(n.refusals) {
		n.refusals[what].Add(1)
	}
	ok, skipped := n.refusalLog.allow(time.Now())
	if !ok {
		return
	}
	attrs := []any{slog.String("action", what.String()), slog.String("target", target),
		slog.Int("uid", int(who.UID)), slog.Int("gid", int(who.GID)), slog.Int("pid", int(who.PID)), slog.String("reason", why.Error())}
	if skipped > 0 {
		attrs = append(attrs, slog.Uint64("refusals_not_logged", skipped))
	}
	n.o.logger.Warn("refused", attrs...)
}

// logLimiter lets refusalLines lines a second through and counts the
// others.
type logLimiter struct {
	mu      sync.Mutex
	second  int64
	lines   int
	skipped uint64
}

// allow reports whether a line may be written now, and how many were
// left out since the last one written.
func (l *logLimiter) allow(now time.Time) (bool, uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if s := now.Unix(); s != l.second {
		l.second, l.lines = s, 0
	}
	if l.lines >= refusalLines {
		l.skipped++
		return false, 0
	}
	l.lines++
	skipped := l.skipped
	l.skipped = 0
	return true, skipped
}

// refusalLines is how many refusals a second the log shows.
const refusalLines = 10
