package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// procs tracks every child process, so that all of them are killed on the
// way out, whatever the way.
type procs struct {
	mu   sync.Mutex
	live map[*proc]bool
	cpus string // taskset CPU list, or ""
}

// proc is one child process. Its stdin is a pipe it reads until EOF (the
// benchpeer and C programs exit then); its stdout is read line by line.
type proc struct {
	name   string
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	lines  chan string
	stderr *tailBuffer
	done   chan struct{}
	err    error // set before done closes
	owner  *procs
}

// tailBuffer keeps the last 4 KiB written to it (a child's stderr).
type tailBuffer struct {
	mu sync.Mutex
	b  []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b = append(t.b, p...)
	if len(t.b) > 4096 {
		t.b = t.b[len(t.b)-4096:]
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return strings.TrimSpace(string(t.b))
}

// start starts argv as a child: in a process group of its own, killed if
// benchrun's thread dies (Pdeathsig), and pinned with taskset when the run
// pins CPUs.
func (ps *procs) start(name string, argv []string, env ...string) (*proc, error) {
	if ps.cpus != "" {
		argv = append([]string{"taskset", "-c", ps.cpus}, argv...)
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	p := &proc{name: name, cmd: cmd, lines: make(chan string, 64), stderr: &tailBuffer{}, done: make(chan struct{}), owner: ps}
	cmd.Stderr = p.stderr
	var err error
	if p.stdin, err = cmd.StdinPipe(); err != nil {
		return nil, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	ps.mu.Lock()
	defer ps.mu.Unlock()
	if ps.live == nil {
		return nil, errors.New("shutting down")
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	ps.live[p] = true
	go func() {
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 64<<10), 16<<20)
		for sc.Scan() {
			// A result line is always passed on (a child prints one);
			// other lines (the ready line, a peer library's chatter) are
			// dropped once nobody reads them, so that a child that talks
			// on stdout cannot block this goroutine and its Wait.
			if line := sc.Text(); strings.HasPrefix(line, "{") {
				p.lines <- line
			} else {
				select {
				case p.lines <- line:
				default:
				}
			}
		}
		close(p.lines)
		p.err = cmd.Wait()
		close(p.done)
		ps.mu.Lock()
		delete(ps.live, p)
		ps.mu.Unlock()
	}()
	return p, nil
}

// pid is the child's process id (taskset execs, so it is the program's).
func (p *proc) pid() int { return p.cmd.Process.Pid }

// fail describes a child that did not do what it should.
func (p *proc) fail(what string) error {
	msg := p.name + ": " + what
	if s := p.stderr.String(); s != "" {
		if i := strings.LastIndexByte(s, '\n'); i >= 0 {
			s = s[i+1:]
		}
		msg += ": " + s
	}
	return errors.New(msg)
}

// ready waits for the child's "ready ADDRESS" line (or, with prefix "",
// any first line) and returns ADDRESS. A JSON line instead is an error
// the child reports.
func (p *proc) ready(prefix string, timeout time.Duration) (string, error) {
	t := time.NewTimer(timeout)
	defer t.Stop()
	for {
		select {
		case line, ok := <-p.lines:
			if !ok {
				return "", p.fail("exited before it was ready")
			}
			if prefix == "" {
				return strings.TrimSpace(line), nil
			}
			if rest, ok := strings.CutPrefix(line, prefix); ok {
				return strings.TrimSpace(rest), nil
			}
			if strings.HasPrefix(line, "{") {
				var r result
				if json.Unmarshal([]byte(line), &r) == nil && r.Err != "" {
					return "", &childError{p.name, r.Err}
				}
			}
		case <-t.C:
			return "", p.fail(fmt.Sprintf("not ready after %v", timeout))
		}
	}
}

// childError is an error a child reported in its result line.
type childError struct{ name, err string }

func (e *childError) Error() string { return e.name + ": " + e.err }

// result waits for the child's JSON result line and for its exit.
func (p *proc) result(timeout time.Duration) (*result, error) {
	t := time.NewTimer(timeout)
	defer t.Stop()
	for {
		select {
		case line, ok := <-p.lines:
			if !ok {
				return nil, p.fail("exited without a result")
			}
			if !strings.HasPrefix(line, "{") {
				continue
			}
			var r result
			if err := json.Unmarshal([]byte(line), &r); err != nil {
				return nil, p.fail("bad result line: " + err.Error())
			}
			if r.Err != "" {
				return &r, &childError{p.name, r.Err}
			}
			return &r, nil
		case <-t.C:
			return nil, p.fail(fmt.Sprintf("no result after %v", timeout))
		}
	}
}

// stop closes the child's stdin (its signal to finish), sends SIGTERM if
// it is still running 100 ms later (dbus-daemon does not read stdin), and
// kills its process group if it has not exited within grace.
func (p *proc) stop(grace time.Duration) {
	p.stdin.Close()
	select {
	case <-p.done:
		return
	case <-time.After(100 * time.Millisecond):
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return
	case <-time.After(grace):
	}
	syscall.Kill(-p.pid(), syscall.SIGKILL)
	<-p.done
}

// killAll kills every child still running and refuses new ones.
func (ps *procs) killAll() {
	ps.mu.Lock()
	live := ps.live
	ps.live = nil
	ps.mu.Unlock()
	for p := range live {
		syscall.Kill(-p.pid(), syscall.SIGKILL)
	}
}

// rssKiB reads a process's resident set (VmRSS) in KiB.
func rssKiB(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for line := range bytes.Lines(b) {
		if rest, ok := bytes.CutPrefix(line, []byte("VmRSS:")); ok {
			f := strings.Fields(string(rest))
			if len(f) > 0 {
				return strconv.ParseInt(f[0], 10, 64)
			}
		}
	}
	return 0, errors.New("no VmRSS")
}

// fdCount counts a process's open descriptors.
func fdCount(pid int) (int, error) {
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	return len(ents), err
}

// manyFds is the descriptor limit benchrun asks for: 10,000 Switchboard
// connections hold four in the node and five in the client each.
const manyFds = 1 << 17

// raiseNoFile raises the soft RLIMIT_NOFILE to manyFds: past the hard
// limit only with the privilege to (root), otherwise to the hard limit.
// A row that needs more than it got fails saying so (noFileLimit). It
// always calls Setrlimit, which is what makes children inherit the limit
// (the Go runtime raises its own at start but gives children the
// original back).
func raiseNoFile() error {
	var l syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
		return err
	}
	if l.Max < manyFds {
		if syscall.Setrlimit(syscall.RLIMIT_NOFILE, &syscall.Rlimit{Cur: manyFds, Max: manyFds}) == nil {
			return nil
		}
	}
	l.Cur = l.Max
	return syscall.Setrlimit(syscall.RLIMIT_NOFILE, &l)
}

// noFileLimit returns the soft RLIMIT_NOFILE the children inherit.
func noFileLimit() uint64 {
	var l syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l) != nil {
		return 0
	}
	return l.Cur
}
