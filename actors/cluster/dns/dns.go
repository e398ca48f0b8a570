package dns

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/switchboard-ipc/switchboard/actors/cluster"
)

// Config configures a Discovery.
type Config struct {
	// Name is the DNS name whose A records are the cluster's nodes.
	Name string
	// Port is the port the nodes' links listen on (0: this node's own
	// advertised port, as when every node listens on the same).
	Port int
	// Interval is how often Name is resolved (default 5s, at least
	// 100ms).
	Interval time.Duration
	// Resolver resolves Name (nil: net.DefaultResolver).
	Resolver *net.Resolver
	// Logger receives what the lookups found and why they failed (nil:
	// none); failures are logged when they begin and when they end.
	Logger *slog.Logger
}

// maxNodes bounds the addresses one lookup may give (the link layer takes
// no more from a discovery); past it, the rest (in address order) are
// ignored.
const maxNodes = 1024

// Discovery is a cluster.Discovery over DNS.
type Discovery struct {
	cfg      Config
	failures atomic.Uint64 // lookups failed (not NXDOMAIN)
}

// Failures returns how many lookups failed otherwise than by the name not
// existing (cluster.Stats counts them among DiscoveryFailures).
func (d *Discovery) Failures() uint64 { return d.failures.Load() }

var _ cluster.Discovery = (*Discovery)(nil)

// String describes d for the node's status: the name it resolves, the
// port it dials ("own": the node's own) and how often.
func (d *Discovery) String() string {
	port := "own"
	if d.cfg.Port != 0 {
		port = strconv.Itoa(d.cfg.Port)
	}
	return fmt.Sprintf("dns %s, port %s, every %v", d.cfg.Name, port, d.cfg.Interval)
}

// New checks cfg; it resolves nothing (Run does). A Config it refuses is
// a *cluster.ConfigError whose Field is the key of cmd/node's [cluster]
// table: dns_name, dns_port or dns_interval.
func New(cfg Config) (*Discovery, error) {
	if cfg.Interval == 0 {
		cfg.Interval = 5 * time.Second
	}
	if cfg.Resolver == nil {
		// Go's own resolver, strict: with the system's (cgo, through
		// nsswitch) or lenient errors, a lookup that failed for one of
		// the search domains could pass for a name that does not exist,
		// and drop every node.
		cfg.Resolver = &net.Resolver{PreferGo: true, StrictErrors: true}
	}
	bad := func(field, format string, args ...any) error {
		return &cluster.ConfigError{Field: "dns_" + field, Err: fmt.Errorf(format, args...)}
	}
	switch {
	case !validName(cfg.Name):
		return nil, bad("name", "must be a DNS name (labels of letters, digits, '-' and '_', 1 to 63 bytes each, 253 in all), not %q", cfg.Name)
	case cfg.Port < 0 || cfg.Port > 65535:
		return nil, bad("port", "must be in [0, 65535], not %d", cfg.Port)
	case cfg.Interval < 100*time.Millisecond:
		return nil, bad("interval", "must be at least 100ms, not %v", cfg.Interval)
	}
	return &Discovery{cfg: cfg}, nil
}

// validName reports whether name is a DNS name: dot-separated labels of
// letters, digits, '-' and '_' (a trailing dot allowed).
func validName(name string) bool {
	name = strings.TrimSuffix(name, ".")
	if name == "" || len(name) > 253 {
		return false
	}
	for _, l := range strings.Split(name, ".") {
		if l == "" || len(l) > 63 {
			return false
		}
		for _, r := range l {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
				return false
			}
		}
	}
	return true
}

// Run resolves the name every Interval until ctx is done, reporting the
// set of addresses each time it changes. It returns nil when ctx is done,
// and an error only when self's address has no port to dial the others at.
func (d *Discovery) Run(ctx context.Context, self cluster.Member, found func([]string)) error {
	port := strconv.Itoa(d.cfg.Port)
	if d.cfg.Port == 0 {
		_, p, err := net.SplitHostPort(self.Address)
		if err != nil {
			return fmt.Errorf("dns: no port given, and this node's address %q has none: %w", self.Address, err)
		}
		port = p
	}
	var last []string
	reported, failing := false, false
	t := time.NewTicker(d.cfg.Interval)
	defer t.Stop()
	for {
		addrs, err := d.lookup(ctx, port)
		switch {
		case ctx.Err() != nil:
			return nil
		case err != nil:
			d.failures.Add(1)
			if !failing {
				d.logf("dns: resolving %s failed (what it found last is kept): %v", d.cfg.Name, err)
			}
			failing = true
		default:
			if failing {
				d.logf("dns: resolving %s works again", d.cfg.Name)
			}
			failing = false
			if !reported || !slices.Equal(addrs, last) {
				d.logf("dns: %s lists %d nodes", d.cfg.Name, len(addrs))
				found(addrs)
				last, reported = addrs, true
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// lookup returns the name's IPv4 addresses with port, sorted; none when
// the name does not exist.
func (d *Discovery) lookup(ctx context.Context, port string) ([]string, error) {
	lctx, cancel := context.WithTimeout(ctx, max(d.cfg.Interval, time.Second))
	defer cancel()
	ips, err := d.cfg.Resolver.LookupIP(lctx, "ip4", d.cfg.Name)
	var dnsErr *net.DNSError
	if errors.As(err, &dnsErr) && dnsErr.IsNotFound {
		return []string{}, nil
	}
	if err != nil {
		return nil, err
	}
	addrs := make([]string, 0, len(ips))
	for _, ip := range ips {
		addrs = append(addrs, net.JoinHostPort(ip.String(), port))
	}
	slices.Sort(addrs)
	addrs = slices.Compact(addrs)
	if len(addrs) > maxNodes { // the same ones whatever order the server gave
		addrs = addrs[:maxNodes]
	}
	return addrs, nil
}

func (d *Discovery) logf(format string, args ...any) {
	if d.cfg.Logger != nil {
		d.cfg.Logger.Info(fmt.Sprintf(format, args...))
	}
}
