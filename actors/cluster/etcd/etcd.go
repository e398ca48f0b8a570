package etcd

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"path"
	"slices"
	"strings"
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
	cfg Config
}

var _ cluster.Discovery = (*Discovery)(nil)

// ConfigError is a Config that New refuses: Field names the setting at
// fault as cmd/node's [cluster] table does after its "etcd_" (endpoints,
// prefix, ttl, timeout, password_file, tls).
type ConfigError struct {
	Field string
	Err   error
}

func (e *ConfigError) Error() string { return "etcd: " + e.Field + ": " + e.Err.Error() }
func (e *ConfigError) Unwrap() error { return e.Err }

// New checks cfg and loads its files; it connects to nothing (Run does).
func New(cfg Config) (*Discovery, error) {
	bad := func(field, format string, args ...any) error {
		return &ConfigError{Field: field, Err: fmt.Errorf(format, args...)}
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
		pem, err := os.ReadFile(ca)
		if err != nil {
			return nil, err
		}
		t.RootCAs = x509.NewCertPool()
		if !t.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("%s holds no PEM certificate", ca)
		}
	}
	return t, nil
}

// Dir is the directory of cluster's keys.
func (d *Discovery) Dir(cluster string) string { return path.Join(d.cfg.Prefix, cluster) + "/" }

// Run registers self under a lease it keeps alive and reports the
// cluster's addresses until ctx is done, when it revokes the lease. It
// returns an error when etcd cannot be reached within the timeout, when
// the lease is lost (etcd unreachable for longer than the TTL, or its data
// lost) or when the watch ends: the Federation calls it again.
func (d *Discovery) Run(ctx context.Context, self cluster.Member, found func([]string)) error {
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   d.cfg.Endpoints,
		DialTimeout: d.cfg.Timeout,
		Username:    d.cfg.Username,
		Password:    d.cfg.Password,
		TLS:         d.cfg.TLS,
		Context:     ctx,
		Logger:      zap.NewNop(),
	})
	if err != nil {
		return fmt.Errorf("etcd: %w", err)
	}
	defer cli.Close()
	dir := d.Dir(self.Cluster)
	key := dir + self.Node + "/" + self.Incarnation

	call, cancel := context.WithTimeout(ctx, d.cfg.Timeout)
	lease, err := cli.Grant(call, int64(d.cfg.TTL/time.Second))
	if err == nil {
		_, err = cli.Put(call, key, self.Address, clientv3.WithLease(lease.ID))
	}
	cancel()
	if err != nil {
		return d.ended(ctx, "registering "+key, err)
	}
	defer func() {
		// Gone at once for the others, rather than after the TTL.
		revoke, cancel := context.WithTimeout(context.Background(), time.Second)
		cli.Revoke(revoke, lease.ID)
		cancel()
	}()
	alive, err := cli.KeepAlive(ctx, lease.ID)
	if err != nil {
		return d.ended(ctx, "keeping the lease alive", err)
	}
	call, cancel = context.WithTimeout(ctx, d.cfg.Timeout)
	got, err := cli.Get(call, dir, clientv3.WithPrefix(), clientv3.WithLimit(maxNodes+1))
	cancel()
	if err != nil {
		return d.ended(ctx, "reading "+dir, err)
	}
	d.logf("etcd: node %s registered as %s (lease %x, TTL %v)", self.Node, key, lease.ID, d.cfg.TTL)
	nodes := directory{d: d, keys: map[string]string{}}
	for _, kv := range got.Kvs {
		nodes.put(string(kv.Key), kv.Value)
	}
	if got.More {
		nodes.ignore("%s holds more than %d keys: the others are ignored", dir, maxNodes)
	}
	found(nodes.addresses())
	watch := cli.Watch(clientv3.WithRequireLeader(ctx), dir, clientv3.WithPrefix(), clientv3.WithRev(got.Header.Revision+1))
	for {
		select {
		case _, ok := <-alive:
			if !ok {
				return d.ended(ctx, "keeping the lease alive", errors.New("the lease expired"))
			}
		case w, ok := <-watch:
			if !ok {
				return d.ended(ctx, "watching "+dir, errors.New("the watch ended"))
			}
			if err := w.Err(); err != nil {
				return d.ended(ctx, "watching "+dir, err)
			}
			for _, ev := range w.Events {
				if ev.Type == clientv3.EventTypeDelete {
					delete(nodes.keys, string(ev.Kv.Key))
				} else {
					nodes.put(string(ev.Kv.Key), ev.Kv.Value)
				}
			}
			found(nodes.addresses())
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
	d        *Discovery
	keys     map[string]string
	ignored  int       // entries ignored since the last log line
	lastWarn time.Time // when the last was logged
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

// ignore logs what was ignored, at most once in ten seconds (with how
// many more were since the last line): anyone who may write the
// directory could otherwise fill the log.
func (n *directory) ignore(format string, args ...any) {
	n.ignored++
	if now := time.Now(); now.Sub(n.lastWarn) >= 10*time.Second {
		n.d.logf("etcd: "+format+" (%d ignored since the last such line)", append(args, n.ignored)...)
		n.ignored, n.lastWarn = 0, now
	}
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
