package etcd

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/url"
	"path"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/switchboard-ipc/switchboard/actors/cluster"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// Config configures a Discovery.
type Config struct {
	// Endpoints are etcd's client URLs (http://HOST:PORT, or https://
	// with TLS); at least one.
	Endpoints []string
	// Prefix is the directory the clusters' keys are under (default
	// "/switchboard"); each cluster's under PREFIX/CLUSTER/.
	Prefix string
	// TTL is the lease of a node's key: how long after a node dies its
	// key goes (default 10s, at least 2s, whole seconds).
	TTL time.Duration
	// Timeout bounds each call to etcd (default 5s).
	Timeout time.Duration
	// Username and Password authenticate to etcd, if it wants them;
	// PasswordFile, if set, holds the password instead (a file only its
	// owner may read, as cluster.ReadPrivateFile wants).
	Username, Password, PasswordFile string
	// TLS, if set, is used to reach etcd. Otherwise TLSCA (PEM file) is
	// the CA etcd's certificate chains to (default: the system's), and
	// TLSCert and TLSKey (PEM files, both or neither) are this node's
	// client certificate; any of them set means TLS.
	TLS                    *tls.Config
	TLSCert, TLSKey, TLSCA string
	// Logger receives registrations, losses of the lease and what was
	// ignored (nil: none).
	Logger *slog.Logger
}

// maxNodes bounds the keys one cluster's directory may hold that a node
// reads: past it, the others are ignored (and logged).
const maxNodes = 4096

// maxValue bounds an address read from etcd (longer ones are ignored).
const maxValue = 256

// Discovery is a cluster.Discovery over etcd.
type Discovery struct {
	cfg     Config
	retries atomic.Uint64 // reads and watches failed and done again within a Run
}

var _ cluster.Discovery = (*Discovery)(nil)

// String describes d for the node's status: the endpoints (without any
// user information a URL may carry) and the cluster's directory.
func (d *Discovery) String() string {
	eps := make([]string, len(d.cfg.Endpoints))
	for i, e := range d.cfg.Endpoints {
		eps[i] = "(unreadable URL)"
		if u, err := url.Parse(e); err == nil {
			u.User = nil
			eps[i] = u.String()
		}
	}
	return fmt.Sprintf("etcd %s, prefix %s", strings.Join(eps, ","), d.cfg.Prefix)
}

// New checks cfg and loads its files; it connects to nothing (Run does).
// A Config it refuses is a *cluster.ConfigError whose Field is the key of
// cmd/node's [cluster] table: etcd_endpoints, etcd_prefix, etcd_ttl,
// etcd_timeout, etcd_username, etcd_password_file or etcd_tls.
func New(cfg Config) (*Discovery, error) {
	bad := func(field, format string, args ...any) error {
		return &cluster.ConfigError{Field: "etcd_" + field, Err: fmt.Errorf(format, args...)}
	}
	if cfg.Prefix == "" {
		cfg.Prefix = "/switchboard"
	}
	if cfg.TTL == 0 {
		cfg.TTL = 10 * time.Second
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 5 * time.Second
	}
	switch {
	case len(cfg.Endpoints) == 0:
		return nil, bad("endpoints", "none given")
	case !strings.HasPrefix(cfg.Prefix, "/"):
		return nil, bad("prefix", "must start with '/', not %q", cfg.Prefix)
	case cfg.TTL < 2*time.Second || cfg.TTL%time.Second != 0:
		return nil, bad("ttl", "must be whole seconds, at least 2s, not %v", cfg.TTL)
	case cfg.Timeout < 0:
		return nil, bad("timeout", "negative: %v", cfg.Timeout)
	case cfg.Password != "" && cfg.PasswordFile != "":
		return nil, bad("password_file", "give the password or its file, not both")
	case cfg.Username != "" && cfg.Password == "" && cfg.PasswordFile == "":
		return nil, bad("password_file", "user %q has no password (etcd's client would not authenticate at all)", cfg.Username)
	case cfg.Username == "" && (cfg.Password != "" || cfg.PasswordFile != ""):
		return nil, bad("username", "a password without a user")
	}
	for _, e := range cfg.Endpoints {
		if !strings.HasPrefix(e, "http://") && !strings.HasPrefix(e, "https://") {
			return nil, bad("endpoints", "each is a URL, http:// or https://, not %q", e)
		}
	}
	cfg.Prefix = path.Clean(cfg.Prefix)
	if cfg.PasswordFile != "" {
		b, err := cluster.ReadPrivateFile(cfg.PasswordFile)
		if err != nil {
			return nil, bad("password_file", "%v", err)
		}
		cfg.Password = string(b)
	}
	if cfg.TLS == nil && (cfg.TLSCert != "" || cfg.TLSKey != "" || cfg.TLSCA != "") {
		t, err := loadTLS(cfg.TLSCert, cfg.TLSKey, cfg.TLSCA)
		if err != nil {
			return nil, bad("tls", "%v", err)
		}
		cfg.TLS = t
	}
	return &Discovery{cfg: cfg}, nil
}

// loadTLS makes a client TLS configuration of PEM files: a CA ("" is the
// system's) and a certificate with its key (both or neither).
func loadTLS(cert, key, ca string) (*tls.Config, error) {
	t := &tls.Config{MinVersion: tls.VersionTLS12}
	if (cert == "") != (key == "") {
		return nil, errors.New("give the client certificate and its key, or neither")
	}
	if cert != "" {
		pair, err := tls.LoadX509KeyPair(cert, key)
		if err != nil {
			return nil, err
		}
		t.Certificates = []tls.Certificate{pair}
	}
	if ca != "" {
		var err error
		if t.RootCAs, err = cluster.ReadCA(ca); err != nil {
			return nil, err
		}
	}
	return t, nil
}

// Dir is the directory of cluster's keys.
func (d *Discovery) Dir(cluster string) string {
	return strings.TrimSuffix(d.cfg.Prefix, "/") + "/" + cluster + "/"
}

// maxResponse bounds a response from etcd: whoever may write the
// directory could otherwise make a node read gigabytes (etcd takes values
// of up to 1.5 MiB, and a directory of thousands); past it, the read
// fails and is tried again, logged.
const maxResponse = 16 << 20

// reportEvery is the least time between two reports to found: a key that
// flaps costs the link layer one look at the set in this time.
const reportEvery = 100 * time.Millisecond

// errLeaseLost ends a Run: the node is no longer registered.
var errLeaseLost = errors.New("the lease expired (etcd unreachable for longer than the TTL, or its data lost)")

// Run registers self under a lease it keeps alive and reports the
// cluster's addresses until ctx is done, when it revokes the lease. A
// read or a watch that fails is tried again in the same registration,
// after 1 s doubling to maxRetry; Run returns an error when it cannot register (etcd not
// reached within the timeout) or when the lease is lost: the Federation
// calls it again.
func (d *Discovery) Run(ctx context.Context, self cluster.Member, found func([]string)) error {
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:          d.cfg.Endpoints,
		DialTimeout:        d.cfg.Timeout,
		Username:           d.cfg.Username,
		Password:           d.cfg.Password,
		TLS:                d.cfg.TLS,
		Context:            ctx,
		Logger:             zap.NewNop(),
		MaxCallRecvMsgSize: maxResponse,
	})
	if err != nil {
		return fmt.Errorf("etcd: %w", err)
	}
	defer cli.Close()
	s := &session{d: d, cli: cli, self: self, found: found, dir: d.Dir(self.Cluster),
		nodes: directory{d: d, keys: map[string]string{}}}
	s.key = s.dir + self.Node + "/" + self.Incarnation
	call, cancel := context.WithTimeout(ctx, d.cfg.Timeout)
	lease, err := cli.Grant(call, int64(d.cfg.TTL/time.Second))
	cancel()
	if err != nil {
		return d.ended(ctx, "registering "+s.key, err)
	}
	s.lease = lease.ID
	defer func() {
		// Gone at once for the others, rather than after the TTL.
		revoke, cancel := context.WithTimeout(context.Background(), time.Second)
		cli.Revoke(revoke, lease.ID)
		cancel()
	}()
	if err := s.register(ctx); err != nil {
		return d.ended(ctx, "registering "+s.key, err)
	}
	if s.alive, err = cli.KeepAlive(ctx, lease.ID); err != nil {
		return d.ended(ctx, "keeping the lease alive", err)
	}
	d.logf("etcd: node %s registered as %s (lease %x, TTL %v)", self.Node, s.key, lease.ID, d.cfg.TTL)
	defer s.stopTimer()
	var backoff time.Duration
	var retries quietLog
	for {
		s.watched = false
		err := s.follow(ctx)
		if ctx.Err() != nil || errors.Is(err, errLeaseLost) {
			return d.ended(ctx, "keeping the lease alive", err)
		}
		d.retries.Add(1)
		if s.watched { // it worked a while: a new episode
			backoff = 0
		}
		backoff = min(max(2*backoff, time.Second), maxRetry)
		retries.logf(d, "etcd: %v: reading %s again in %v", err, s.dir, backoff)
		if err := s.pause(ctx, backoff); err != nil {
			return d.ended(ctx, "keeping the lease alive", err)
		}
	}
}

// maxRetry bounds the wait before a read or watch that failed is done
// again within a registration: from a second, doubling to this.
const maxRetry = 30 * time.Second

// Failures returns how many times a read or a watch of the directory
// failed and was done again within a registration (cluster.Stats counts
// them among DiscoveryFailures).
func (d *Discovery) Failures() uint64 { return d.retries.Load() }

// session is one Run's registration: its client, lease and what it knows
// of the directory.
type session struct {
	d          *Discovery
	cli        *clientv3.Client
	self       cluster.Member
	dir, key   string
	lease      clientv3.LeaseID
	alive      <-chan *clientv3.LeaseKeepAliveResponse
	nodes      directory
	found      func([]string)
	last       []string    // the set reported last
	reported   bool        // whether any was
	reportedAt time.Time   // when
	timer      *time.Timer // a report held back by reportEvery (nil: none)
	watched    bool        // follow set its watch up
	rewritten  time.Time   // when the node's own key was last written again
}

// register writes the node's key under its lease.
func (s *session) register(ctx context.Context) error {
	call, cancel := context.WithTimeout(ctx, s.d.cfg.Timeout)
	defer cancel()
	_, err := s.cli.Put(call, s.key, s.self.Address, clientv3.WithLease(s.lease))
	return err
}

// follow reads the directory, then watches it from the revision read,
// reporting each change, until the watch fails (an error), the lease is
// lost (errLeaseLost) or ctx is done. The node's own key, if someone
// deleted or changed it, is written again.
func (s *session) follow(ctx context.Context) error {
	call, cancel := context.WithTimeout(ctx, s.d.cfg.Timeout)
	got, err := s.cli.Get(call, s.dir, clientv3.WithPrefix(), clientv3.WithLimit(maxNodes+1))
	cancel()
	if err != nil {
		return fmt.Errorf("reading %s: %w", s.dir, err)
	}
	clear(s.nodes.keys)
	own := false
	for _, kv := range got.Kvs {
		s.nodes.put(string(kv.Key), kv.Value)
		own = own || string(kv.Key) == s.key && string(kv.Value) == s.self.Address && clientv3.LeaseID(kv.Lease) == s.lease
	}
	if got.More {
		s.nodes.ignore("%s holds more than %d keys: the others are ignored", s.dir, maxNodes)
	}
	s.report()
	if !own {
		if err := s.rewrite(ctx); err != nil {
			return err
		}
	}
	wctx, wcancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	made := make(chan clientv3.WatchChan, 1)
	go func() {
		made <- s.cli.Watch(wctx, s.dir, clientv3.WithPrefix(), clientv3.WithRev(got.Header.Revision+1), clientv3.WithProgressNotify())
	}()
	defer func() {
		wcancel()
		if made != nil {
			<-made // Watch returns once wctx is cancelled
		}
	}()
	// Watch waits until etcd takes the watch, for as long as it takes:
	// the lease is watched meanwhile, and the wait bounded.
	var watch clientv3.WatchChan
	deadline := time.NewTimer(s.d.cfg.Timeout)
	defer deadline.Stop()
	for watch == nil {
		select {
		case watch = <-made:
			made = nil
		case _, ok := <-s.alive:
			if !ok {
				return errLeaseLost
			}
		case <-deadline.C:
			return fmt.Errorf("watching %s: not set up within %v", s.dir, s.d.cfg.Timeout)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	s.watched = true
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case _, ok := <-s.alive:
			if !ok {
				return errLeaseLost
			}
		case <-s.timerC():
			s.timer = nil
			s.report()
		case w, ok := <-watch:
			switch {
			case !ok:
				return fmt.Errorf("watching %s: the watch ended", s.dir)
			case w.Err() != nil:
				return fmt.Errorf("watching %s: %w", s.dir, w.Err())
			case w.IsProgressNotify():
				continue
			}
			lost := false
			for _, ev := range w.Events {
				key := string(ev.Kv.Key)
				if ev.Type == clientv3.EventTypeDelete {
					delete(s.nodes.keys, key)
				} else {
					s.nodes.put(key, ev.Kv.Value)
				}
				lost = lost || key == s.key && (ev.Type == clientv3.EventTypeDelete ||
					string(ev.Kv.Value) != s.self.Address || clientv3.LeaseID(ev.Kv.Lease) != s.lease)
			}
			if lost {
				if err := s.rewrite(ctx); err != nil {
					return err
				}
			}
			s.report()
		}
	}
}

// rewrite writes the node's key again, after another deleted it or
// wrote it (without the lease, or another address: a second node of the
// same name and run, or a hasty clean-up). At most once a second: sooner
// is an error, and Run's retries back off, so that two nodes that claim
// the same key do not overwrite each other as fast as etcd answers.
func (s *session) rewrite(ctx context.Context) error {
	if time.Since(s.rewritten) < time.Second {
		return fmt.Errorf("%s was deleted or overwritten again within a second (another node registers as %s?)", s.key, s.self.Node)
	}
	s.rewritten = time.Now()
	s.d.logf("etcd: %s was missing, deleted or overwritten by another: written again", s.key)
	if err := s.register(ctx); err != nil {
		return fmt.Errorf("registering %s again: %w", s.key, err)
	}
	return nil
}

// report calls found with the addresses known, if they changed since the
// last report, and not sooner than reportEvery after it (a report held
// back is made when the timer fires).
func (s *session) report() {
	set := s.nodes.addresses()
	switch {
	case s.reported && slices.Equal(set, s.last):
	case s.timer != nil:
	case s.reported && time.Since(s.reportedAt) < reportEvery:
		s.timer = time.NewTimer(reportEvery - time.Since(s.reportedAt))
	default:
		s.found(set)
		s.last, s.reported, s.reportedAt = set, true, time.Now()
	}
}

func (s *session) timerC() <-chan time.Time {
	if s.timer == nil {
		return nil
	}
	return s.timer.C
}

func (s *session) stopTimer() {
	if s.timer != nil {
		s.timer.Stop()
	}
}

// pause waits d, keeping the lease's channel read; errLeaseLost if the
// lease is lost meanwhile.
func (s *session) pause(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
			return nil
		case <-s.timerC(): // a report held back is not held through a retry
			s.timer = nil
			s.report()
		case _, ok := <-s.alive:
			if !ok {
				return errLeaseLost
			}
		}
	}
}

// ended is Run's end: nil when ctx is done, else what failed.
func (d *Discovery) ended(ctx context.Context, doing string, err error) error {
	if ctx.Err() != nil {
		return nil
	}
	return fmt.Errorf("etcd: %s: %w", doing, err)
}

// directory is what a Run knows of its cluster's keys: key → address.
type directory struct {
	d       *Discovery
	keys    map[string]string
	ignored quietLog // what it ignores: anyone who may write the directory could otherwise fill the log
}

// put records one key's address, unless the directory is full or the
// value is too long to be an address (then the key is forgotten).
func (n *directory) put(key string, value []byte) {
	_, had := n.keys[key]
	switch {
	case len(value) > maxValue:
		delete(n.keys, key)
		n.ignore("%s holds %d bytes, not an address: ignored", key, len(value))
	case !had && len(n.keys) >= maxNodes:
		n.ignore("more than %d nodes registered: %s ignored", maxNodes, key)
	default:
		n.keys[key] = string(value)
	}
}

// ignore logs what was ignored (quietly).
func (n *directory) ignore(format string, args ...any) {
	n.ignored.logf(n.d, "etcd: "+format, args...)
}

// quietLog writes a kind of line at most once in ten seconds, saying how
// many it held back since the last.
type quietLog struct {
	held int       // lines held back since the last written
	last time.Time // when that was
}

func (q *quietLog) logf(d *Discovery, format string, args ...any) {
	if now := time.Now(); now.Sub(q.last) >= 10*time.Second {
		d.logf(format+" (%d more such since the last line)", append(args, q.held)...)
		q.held, q.last = 0, now
		return
	}
	q.held++
}

// addresses returns the distinct addresses, sorted.
func (n *directory) addresses() []string {
	return slices.Compact(slices.Sorted(maps.Values(n.keys)))
}

func (d *Discovery) logf(format string, args ...any) {
	if d.cfg.Logger != nil {
		d.cfg.Logger.Info(fmt.Sprintf(format, args...))
	}
}
